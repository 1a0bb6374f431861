"""Strict, typed configuration of a run: YAML in, resolved YAML saved with the run.

Every model forbids unknown keys, so a typo is an error that names the key instead of a setting silently
ignored. `load_config` merges a YAML file with command-line overrides; `dump_config` writes the resolved
config that `nasloop resume` reads back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from nasloop.data.spec import DatasetSpec
from nasloop.errors import NasloopError
from nasloop.evaluate.job import Limits, Measure, Recipe
from nasloop.llm.config import LLMConfig
from nasloop.strict import Strict


class ConfigError(NasloopError, ValueError):
    """A config file or override that cannot be used; the message names the key and the problem."""


class Budget(Strict):
    """When a search stops: whichever limit is reached first. None means no limit of that kind."""

    iterations: int | None = Field(default=20, gt=0, description="candidates counted as iterations")
    wall_clock_s: float | None = Field(default=None, gt=0)
    llm_tokens: int | None = Field(default=None, gt=0, description="prompt + completion tokens")
    money_usd: float | None = Field(default=None, gt=0, description="needs LLM prices in the llm config")
    target_score: float | None = Field(default=None, description="stop once the selection metric reaches this")


class Pruning(Strict):
    """Early stopping of proxy training (like Optuna's pruners); never active in the `paper` protocol.

    A candidate is stopped at a reported step when it has trained at least `min_fraction` of its steps and
    its smoothed loss is above the worst of the current top-k curves at that step by more than `margin`
    (relative).
    """

    enabled: bool = True
    top_k: int = Field(default=3, gt=0)
    min_fraction: float = Field(default=0.3, ge=0, le=1)
    margin: float = Field(default=0.25, ge=0)
    min_completed: int = Field(default=3, ge=1, description="completed candidates needed before pruning starts")
    min_steps: int = Field(
        default=100,
        ge=0,
        description="never prune a training of fewer steps: it costs less than the score an early stop loses",
    )


class ExecutorConfig(Strict):
    """Where evaluations run."""

    name: str = "local"
    workers: int | None = Field(
        default=None, gt=0, description="parallel evaluations; unset: one per GPU, or one on a CPU-only machine"
    )
    recycle_after: int | None = Field(
        default=None, gt=0, description="replace a local worker process after this many jobs (unset: never)"
    )
    ray_address: str | None = None
    max_stale: int = Field(default=0, ge=0, description="proposals allowed in flight against a stale history")
    gpus_per_job: float = Field(default=1.0, ge=0)
    cpus_per_job: float = Field(default=1.0, gt=0)


class BenchmarkSpec(Strict):
    """A tabular benchmark that scores the run's candidates instead of training them (`nasloop.benchmarks`)."""

    name: str = Field(description="registered benchmark: nb201, nas-bench-macro, channel-bench-resnet")
    dataset: str = Field(default="cifar10", description="the benchmark's dataset: cifar10, cifar100, ImageNet16-120")
    table: str | None = Field(default=None, description="a table file in the shared JSON format instead of nasloop's")
    device_table: str | None = Field(
        default=None, description="device metrics in HW-NAS-Bench's layout instead of nasloop's (NB201 CIFAR-10)"
    )


class SearchConfig(Strict):
    """One search run."""

    strategy: str = "feedback-memory"
    strategy_options: dict[str, Any] = Field(default_factory=dict)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    dataset: DatasetSpec = DatasetSpec()
    recipe: Recipe = Recipe()
    limits: Limits = Limits(timeout_s=600)
    stages: tuple[str, ...] = ("static", "build", "train")
    proxies: tuple[str, ...] = ()
    measure: Measure = Measure()
    budget: Budget = Budget()
    pruning: Pruning = Pruning()
    executor: ExecutorConfig = ExecutorConfig()
    protocol: Literal["default", "paper"] = Field(
        default="default",
        description="paper: select on the test split, as the published feedback-memory method does (for "
        "comparison with published numbers only)",
    )
    objective: str = Field(
        default="val_acc",
        description="metric the search maximises; unset in a run without the train stage: the first proxy",
    )
    objectives: tuple[str, ...] = Field(default=(), description="multi-objective: 'val_acc:max', 'latency_ms:min'")
    constraints: tuple[str, ...] = Field(default=(), description="hard constraints such as 'params<=1e6'")
    space: str | None = Field(default=None, description="structured search space; None for open code")
    benchmark: BenchmarkSpec | None = Field(
        default=None,
        description="score candidates from a tabular benchmark's table (their val_acc, test_acc, params, flops); "
        "the space defaults to the benchmark's",
    )
    space_options: dict[str, Any] = Field(
        default_factory=dict,
        description="arguments of the space (e.g. max_layers for macro); in_shape, "
        "num_classes and max_params default to the run's dataset and limits where the space takes them",
    )
    seed_model: str | None = Field(
        default=None,
        description="open-code searches: the network to start from, a .py file defining Net; 'none' for a "
        "cold start; unset: nasloop's built-in seed (prompt_style paper: a cold start)",
    )
    seed: int = 0
    prompts_dir: str | None = Field(default=None, description="directory of templates overriding the built-in ones")
    run_dir: str | None = None

    @field_validator("stages")
    @classmethod
    def _registered_stages(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        from nasloop.registry import known_names, stages

        return known_names(stages, names)

    @field_validator("proxies")
    @classmethod
    def _registered_proxies(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        from nasloop.registry import known_names, proxies

        return known_names(proxies, names)

    @model_validator(mode="after")
    def _minimum_scores_of_registered_proxies(self) -> SearchConfig:
        from nasloop.registry import known_names, proxies

        try:
            known_names(proxies, self.limits.min_proxy)
        except ValueError as error:
            raise ValueError(f"limits.min_proxy: {error}") from None
        return self

    @model_validator(mode="after")
    def _paper_protocol_means_no_pruning(self) -> SearchConfig:
        if self.protocol == "paper" and self.pruning.enabled:
            return self.model_copy(update={"pruning": self.pruning.model_copy(update={"enabled": False})})
        return self

    @model_validator(mode="after")
    def _untrained_runs_select_on_their_proxy(self) -> SearchConfig:
        if "objective" not in self.model_fields_set and "train" not in self.stages and self.proxies:
            return self.model_copy(update={"objective": self.proxies[0]})
        return self

    @property
    def selection_metric(self) -> str:
        """The metric the search selects on: validation accuracy, or test accuracy in the paper protocol."""
        if self.protocol == "paper" and self.objective == "val_acc":
            return "test_acc"
        return self.objective


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
    node[leaf] = value


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {location}: unknown key")
        else:
            lines.append(f"  {location}: {item['msg']}")
    return "\n".join(lines)


def build_config(data: dict[str, Any], source: str = "config") -> SearchConfig:
    """Validate a plain dict into a `SearchConfig`; errors name every bad key."""
    try:
        return SearchConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, source)) from None


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> SearchConfig:
    """Read a YAML config (or start from defaults) and apply dotted-key overrides such as `budget.iterations`."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
        data, source = loaded, str(path)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, dotted, value)
    return build_config(data, source)


def dump_config(config: SearchConfig) -> str:
    """The resolved config as YAML (every default spelled out), as saved with a run."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
