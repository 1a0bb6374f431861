"""The options of `niche-pareto`, its constants and its configuration error."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from nasloop.errors import NasloopError
from nasloop.strategies.population import FinalStages
from nasloop.strict import Strict

DEFAULT_OBJECTIVES = ("val_acc:max", "latency_ms:min")
OPERATIONS = ("mutation", "crossover")
SINGLE_NICHE = "all"
# Results kept for a niche's next knowledge update (more accumulate only while its LLM calls fail).
RECENT_RESULTS = 12


class MissingObjectiveError(NasloopError, ValueError):
    """A completed candidate lacks a metric the strategy needs: the run's stages or proxies do not produce
    it. Raised at the first such candidate, so a misconfigured run stops at once."""


class NicheParetoOptions(Strict):
    """Options of `niche-pareto` (the module docstring says what each part does)."""

    objectives: tuple[str, ...] | None = Field(
        default=None, description="'metric:max|min'; None: the run's objectives, else val_acc:max, latency_ms:min"
    )
    constraints: tuple[str, ...] = Field(default=(), description="e.g. 'latency_ms<=20': infeasible members")
    accuracy_metric: str = Field(default="val_acc", description="the objective the predictor supplies")
    predictor: str = Field(default="naswot", description="a zero-cost proxy name, 'regression' or 'measured'")
    regression_proxies: tuple[str, ...] = Field(default=("naswot", "synflow", "zen"), min_length=1)
    regression_min_points: int = Field(default=5, ge=2, description="trained candidates before fitting")
    regression_ridge: float = Field(default=1e-3, ge=0, description="L2 penalty on standardised features")
    partition: bool = Field(default=True, description="False: the no-partitioning ablation (one niche)")
    niche_by: Literal["space", "params", "flops"] = "space"
    niche_bounds: tuple[float, ...] = Field(default=(), description="bin edges for niche_by params or flops")
    llm: bool = Field(default=True, description="False: the no-LLM ablation (random operators)")
    off_front_every: int = Field(
        default=1,
        ge=1,
        description="a niche with no member on the union front gets a turn only every this many generations "
        "(1: every generation, as published)",
    )
    initial_per_niche: int = Field(default=2, ge=1, description="random initial architectures per niche")
    max_parents: int = Field(default=4, ge=1, description="Pareto parents shown to the LLM")
    operation_choice: Literal["llm", "random"] = "llm"
    crossover_probability: float = Field(default=0.5, ge=0, le=1)
    retries: int = Field(default=1, ge=0, description="re-asks of a rejected answer, with the error")
    fallback: bool = Field(
        default=True,
        description="an answer still rejected after the retries becomes a random operator's child in the niche "
        "(False: a failed proposal, as published)",
    )
    enumerate_children: int = Field(
        default=0,
        ge=0,
        description="the answer's architecture is decoded as one of at most this many new, legal, in-niche children "
        "of the parents (an enum in the JSON schema), so it cannot be rejected; 0: any string of the space's "
        "pattern, checked afterwards, as published",
    )
    answer: Literal["architecture", "change"] = Field(
        default="architecture",
        description="what the evolution answer names: the child's `architecture`, or (with enumerate_children) the "
        "`change` that makes it from a parent (`parent 1: position 3: 0 -> 1`), one of a listed set",
    )
    knowledge_rules: int = Field(default=4, ge=1, description="at most this many positive and negative rules")
    rule_chars: int = Field(default=120, gt=0)
    rationale_chars: int = Field(default=200, gt=0)
    temperature: float = Field(default=0.7, ge=0)
    knowledge_temperature: float = Field(default=0.3, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_tokens: int = Field(default=256, gt=0, description="evolution answer")
    knowledge_max_tokens: int = Field(default=512, gt=0, description="room for every rule at full length")
    constrain_pattern: bool = Field(default=True, description="constrain the architecture by the space's pattern")
    random_tries: int = Field(default=64, ge=1, description="no-LLM operator draws before a random sample")
    sample_tries: int = Field(default=5000, ge=1, description="draws when sampling inside a niche")
    latency_metric: str = "latency_ms"
    latency_table: str | None = Field(default=None, description="CSV or JSON file of latencies per architecture")
    latency_device: str | None = Field(default=None, description="the table's device, e.g. edgegpu")
    latency_missing: Literal["error", "measured"] = "error"
    train_front: bool = Field(default=False, description="train the union front once the budget is spent")
    final_max: int | None = Field(default=None, ge=1, description="at most this many front members trained")
    final_stages: FinalStages = ("static", "build", "train")

    @model_validator(mode="after")
    def _consistent(self) -> NicheParetoOptions:
        increasing = bool(self.niche_bounds) and list(self.niche_bounds) == sorted(set(self.niche_bounds))
        if self.niche_by != "space" and self.partition and not increasing:
            raise ValueError(f"niche_by {self.niche_by} needs niche_bounds in increasing order, e.g. [2e5, 5e5]")
        if self.answer == "change" and not self.enumerate_children:
            raise ValueError("answer: change names one of the enumerated children; set enumerate_children above 0")
        if (self.latency_table is None) != (self.latency_device is None):
            raise ValueError("latency_table and latency_device go together (the file and the device in it)")
        return self


__all__ = ["DEFAULT_OBJECTIVES", "OPERATIONS", "RECENT_RESULTS", "SINGLE_NICHE", "MissingObjectiveError",
           "NicheParetoOptions"]  # fmt: skip
