"""The strategy contract (docs/architecture.md).

A strategy decides what to evaluate next; it never touches storage, processes or files. The engine calls

1. `propose(ctx)` when it has room for more work: return one or more `Proposal`s (code, or a point of the
   configured structured space). LLM calls go through `ctx.llm`, which records every call.
2. `observe(observations)` with the outcome of evaluated proposals, in completion order, each carrying
   the stored candidate (its id, state, metrics or failure).
3. `state_dict()` after every `observe`; the engine stores it, and `load_state_dict` restores it on
   `nasloop resume`. Everything a strategy needs to continue must be in that JSON-able dict.

A strategy that `takes_seed` first observes the run's seed network (purpose `seed`, evaluated by the
engine before any `propose`). Each proposal says why it was made (`Proposal.purpose`: search, repair,
retry) and from which candidate (`Proposal.parent`); only `search` proposals count as iterations.

`propose` may be called again before earlier proposals were observed when the engine pipelines
evaluation (a strategy that cannot work that way sets `sequential = True`, and then only sees `propose`
after the previous proposals were observed).
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from nasloop.candidate import Proposal, State
from nasloop.llm.base import Message, Sampling
from nasloop.llm.recording import Reply
from nasloop.store.sqlite import CandidateRecord
from nasloop.strict import Strict


@dataclass(frozen=True)
class Task:
    """What is being searched for, as strategies and prompts describe it."""

    dataset: str
    in_shape: tuple[int, int, int]
    num_classes: int
    metric: str = "val_acc"
    max_params: int | None = None
    recipe: str = ""
    train_images: int = 0
    #: the run's objectives ('val_acc:max', ...) and hard constraints ('params<=1e6'), from the config
    objectives: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    #: the model the LLM backend runs (`llm.model`), for defaults that depend on it (`edit_format`)
    llm_model: str = ""


class LLM(Protocol):
    """The LLM as a strategy sees it (`nasloop.llm.recording.RecordingLLM`): a role, the messages, the
    sampling settings; the answer comes back as a `Reply` with the id of the stored call."""

    def complete(self, role: str, messages: list[Message], sampling: Sampling) -> Reply: ...


@dataclass
class Context:
    """What `propose` may use: the recording LLM, the run history, a per-iteration RNG and the task."""

    llm: LLM
    history: Sequence[CandidateRecord]
    rng: random.Random
    iteration: int
    task: Task
    render: Callable[..., str]
    space: Any = None


@dataclass(frozen=True)
class Ranking:
    """Candidates best first with their scores, and what the scores are (a metric name, or "cm")."""

    scored: list[tuple[CandidateRecord, float]]
    by: str

    @property
    def best(self) -> CandidateRecord | None:
        return self.scored[0][0] if self.scored else None


@dataclass(frozen=True)
class Observation:
    """The outcome of one proposal, as stored."""

    proposal: Proposal
    record: CandidateRecord


class NoOptions(Strict):
    """Options of a strategy that has none."""


class Strategy(ABC):
    """Base of every search strategy; register subclasses in `nasloop.registry.strategies`."""

    #: pydantic model of the strategy's options (config key `strategy_options`); unknown keys are errors
    Options: ClassVar[type[Strict]] = NoOptions
    #: whether proposals must wait for the previous observation (feedback loops) or may be pipelined
    sequential: ClassVar[bool] = True
    #: whether the strategy calls the LLM at all
    uses_llm: ClassVar[bool] = True
    #: whether the strategy needs a structured space (`space` config key)
    needs_space: ClassVar[bool] = False

    @classmethod
    def resolve_options(cls, options: dict[str, Any], config: Any) -> dict[str, Any]:
        """The strategy's options (`strategy_options`, as the user wrote them) with defaults that depend on
        the run (a `SearchConfig`) filled in; called once, before the run starts (`nasloop.resolve`)."""
        return options

    @classmethod
    def needs(cls, options: Any, config: Any) -> dict[str, str]:
        """The metrics every candidate must carry for this strategy, each with the option that asks for
        it (for error messages); the run's stages and proxies are chosen to produce them. By default the
        run's selection metric."""
        return {config.selection_metric: "objective"}

    @classmethod
    def stored_metric(cls, options: Any, metric: str) -> str:
        """The candidate metric that stands for objective `metric` in this strategy's ranking (reports
        plot it): the metric itself, unless the strategy predicts it from another (a proxy)."""
        return metric

    @classmethod
    def rank(cls, records: Sequence[CandidateRecord], config: Any) -> Ranking:
        """The run's candidates best first, with the score they are ranked by: the one definition of "the
        best" that the engine, `nasloop show`, `export --best` and final training use. By default the
        completed candidates by the run's selection metric (ties: the earlier first)."""
        metric = config.selection_metric
        scored = [
            (record, float(record.metrics[metric]))
            for record in records
            if record.state is State.COMPLETE and math.isfinite(record.metrics.get(metric, math.nan))
        ]
        return Ranking(sorted(scored, key=lambda pair: (-pair[1], pair[0].id)), metric)

    def __init__(self, options: Strict, task: Task, *, space: Any = None, seed: int = 0) -> None:
        self.options = options
        self.task = task
        self.space = space

    @abstractmethod
    def propose(self, ctx: Context) -> list[Proposal]:
        """Return at least one proposal."""

    def observe(self, observations: list[Observation]) -> None:  # noqa: B027 - optional hook
        """Take the outcome of evaluated proposals into account."""

    def finish(self, ctx: Context) -> list[Proposal]:
        """Once the iteration budget is spent: the repairs or retries that complete the last iteration (a
        failed last candidate still gets its repair). Proposals that are not repairs or retries are dropped;
        the engine asks again after each result until this returns none."""
        return []

    def finalize(self, ctx: Context) -> list[Proposal]:
        """Proposals to evaluate once after the budget is spent (e.g. train the top-k of a zero-cost
        search, with `Proposal.stages` set, purpose `final` and the finalist as `parent`). They do not count as
        iterations."""
        return []

    @property
    def max_unobserved(self) -> int | None:
        """How many proposals may await observation when `propose` is called again (None: no bound
        beyond the run's `executor.max_stale`); islands allow one per island."""
        return None

    def takes_seed(self, *, explicit: bool) -> bool:
        """Whether the search starts from a seed network (`seed_model`), which the engine evaluates before
        the first `propose` and the strategy then observes like any candidate (purpose `seed`).
        `explicit`: the user named a file. Open-code strategies say yes; the others never do."""
        return False

    def summary(self) -> list[str]:
        """Lines the run's summary prints after the search (e.g. what a score was normalised against)."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for resume."""
        return {}

    def artifacts(self) -> dict[str, str]:
        """Named texts for people to read (a knowledge base, a front), stored with the state after every
        `observe`; a name that comes back again replaces the stored text, so name snapshots by generation."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what `state_dict` returned."""


def strategy_note(**notes: Any) -> dict[str, Any]:
    """Notes stored with a candidate, without empty values."""
    return {key: value for key, value in notes.items() if value not in (None, "", [], {})}


__all__ = ["LLM", "Context", "NoOptions", "Observation", "Ranking", "Reply", "Strategy", "Task", "strategy_note"]
