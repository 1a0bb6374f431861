"""Baselines of structured spaces without an LLM: `random` search and regularized `evolution`.

They search the same spaces, with the same evaluations and budgets, as the LLM strategies
(`reflective-zero-cost`, `niche-pareto`), so the value the LLM adds can be measured against them. Both
rank candidates by a metric read from the stored results (option `metric`, default the run's
`objective`: a zero-cost proxy such as `synflow` when the run evaluates with the `zero-cost` stage, or
`val_acc` when it trains) and both finalize like `reflective-zero-cost`: the top-k distinct candidates
that were not trained yet are trained once the budget is spent.

Random samples are drawn without repeating an architecture the run already evaluated (up to
`population.SAMPLE_TRIES` draws each), so no budget goes to duplicates.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from nasloop.candidate import Proposal
from nasloop.registry import strategies
from nasloop.strategies.base import Context, Observation, Strategy, Task, strategy_note
from nasloop.strategies.population import (
    FinalizeOptions,
    Member,
    final_proposals,
    require_metric,
    seen_architectures,
    unseen_samples,
)


class RandomSearchOptions(FinalizeOptions):
    """Options of `random`."""

    metric: str | None = Field(default=None, description="metric to rank by; None: the run's objective")


@strategies.register("random")
class RandomSearch(Strategy):
    """Uniform random points of the space, one per proposal, never repeating an evaluated one."""

    Options = RandomSearchOptions
    sequential = False
    uses_llm = False
    needs_space = True

    @classmethod
    def needs(cls, options: Any, config: Any) -> dict[str, str]:
        if options.metric:
            return {options.metric: "strategy_options.metric"}
        return super().needs(options, config)

    def __init__(self, options: Any, task: Task, *, space: Any = None, seed: int = 0) -> None:
        super().__init__(options, task, space=space, seed=seed)
        self.opts: RandomSearchOptions = options
        self.metric = options.metric or task.metric

    def propose(self, ctx: Context) -> list[Proposal]:
        (architecture,) = unseen_samples(self.space, ctx.rng, 1, seen_architectures(self.space, ctx.history))
        return [Proposal(architecture=architecture, notes={"operator": "random"})]

    def observe(self, observations: list[Observation]) -> None:
        for observation in observations:
            if observation.proposal.final_of is None:
                require_metric(observation.record, self.metric, "random")

    def finalize(self, ctx: Context) -> list[Proposal]:
        return final_proposals(ctx.history, self.metric, self.opts)


class EvolutionOptions(FinalizeOptions):
    """Options of `evolution` (regularized evolution, Real et al. 2019)."""

    population_size: int = Field(default=20, ge=2, description="P: members kept, the oldest removed first")
    sample_size: int = Field(default=5, ge=1, description="S: members drawn for each tournament")
    metric: str | None = Field(default=None, description="fitness; None: the run's objective")

    @model_validator(mode="after")
    def _sample_fits_population(self) -> EvolutionOptions:
        if self.sample_size > self.population_size:
            raise ValueError(f"sample_size ({self.sample_size}) cannot exceed population_size ({self.population_size})")
        return self


@strategies.register("evolution")
class RegularizedEvolution(Strategy):
    """Regularized (aging) evolution: Real, Aggarwal, Huang, Le, "Regularized Evolution for Image
    Classifier Architecture Search", AAAI 2019.

    The first P proposals are random (unseen) points. Afterwards each proposal draws S members
    uniformly without replacement, takes the fittest and proposes `space.mutate` of it. Every
    evaluated child that completed joins the population (a duplicate too: it is a new individual of the
    same genotype) and the oldest member leaves once there are more than P: age, not fitness, decides who
    dies, which keeps the search from resting on one lucky evaluation. Failed children never join.

    Proposals may be pipelined (`sequential = False`): a tournament uses whatever members are
    evaluated so far, and a random point while none is.
    """

    Options = EvolutionOptions
    sequential = False
    uses_llm = False
    needs_space = True

    needs = RandomSearch.needs

    def __init__(self, options: Any, task: Task, *, space: Any = None, seed: int = 0) -> None:
        super().__init__(options, task, space=space, seed=seed)
        self.opts: EvolutionOptions = options
        self.metric = options.metric or task.metric
        self.population: list[Member] = []  # oldest first
        self.initial_observed = 0
        self.initial_outstanding = 0  # proposed, not observed yet; lost (hence not saved) on resume

    def propose(self, ctx: Context) -> list[Proposal]:
        initial_left = self.opts.population_size - self.initial_observed - self.initial_outstanding
        if initial_left > 0 or not self.population:
            self.initial_outstanding += 1
            (architecture,) = unseen_samples(self.space, ctx.rng, 1, seen_architectures(self.space, ctx.history))
            return [Proposal(architecture=architecture, notes={"operator": "initial"})]
        contestants = ctx.rng.sample(self.population, min(self.opts.sample_size, len(self.population)))
        parent = max(contestants, key=lambda member: member.score)
        child = self.space.mutate(parent.architecture, ctx.rng)
        notes = strategy_note(operator="mutation", parent_score=parent.score)
        return [Proposal(architecture=child, parent_ids=(parent.id,), notes=notes)]

    def observe(self, observations: list[Observation]) -> None:
        for observation in observations:
            record = observation.record
            if observation.proposal.final_of is not None:
                continue
            require_metric(record, self.metric, "evolution")
            if observation.proposal.notes.get("operator") == "initial":
                self.initial_observed += 1
                self.initial_outstanding = max(0, self.initial_outstanding - 1)
            score = record.score(self.metric)
            if score is None or record.architecture is None:
                continue
            self.population.append(Member(record.id, self.space.canonical(record.architecture), score))
            if len(self.population) > self.opts.population_size:
                self.population.pop(0)

    def finalize(self, ctx: Context) -> list[Proposal]:
        return final_proposals(ctx.history, self.metric, self.opts)

    def state_dict(self) -> dict[str, Any]:
        return {
            "population": [member.to_dict() for member in self.population],
            "initial_observed": self.initial_observed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.population = [Member.from_dict(item) for item in state.get("population") or []]
        self.initial_observed = int(state.get("initial_observed", 0))
        self.initial_outstanding = 0


__all__ = ["EvolutionOptions", "RandomSearch", "RandomSearchOptions", "RegularizedEvolution"]
