"""`islands`: several independent chains of a sequential strategy, searched in parallel.

A sequential strategy such as `feedback-memory` must see each outcome before it proposes again, so one
chain keeps at most one LLM call and one evaluation busy. `islands` runs N chains ("islands"), each its
own instance of the inner strategy with its own state, its own part of the history and its own RNG.
Whenever the engine asks, every island whose last proposal has been observed proposes, all of them at
once: one thread per island, and while one island waits for the LLM the next one runs, so their LLM
calls are in flight together (the `openai` backend bounds them by `max_concurrency`). The strategies'
own code runs one island at a time, so no strategy needs to be thread-safe (CPython 3.11's `ast`, which
code extraction uses, is not: it fails now and then with "AST constructor recursion depth mismatch").
Each island stays sequential; the wrapper is not (`sequential = False`), and it tells the engine it
can have at most N proposals unobserved (`max_unobserved`).

Migration (`migration_interval` M): after every M iterations an island has observed, before its next
proposal, it observes the best candidate of the other islands if that one beats its own best — for
`feedback-memory` that candidate becomes the island's reference ("best") and latest code. Islands then
share their best design now and then while their memories stay apart.

Every island starts from the run's seed network (for strategies that take one), which the engine
evaluates once. Every candidate's notes carry its `island`; the first proposal after a migration carries `migrated_from`
(the candidate id). `state_dict` holds every island's state.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import Field

from nasloop.candidate import Proposal, Purpose
from nasloop.llm.base import Sampling
from nasloop.registry import strategies
from nasloop.store.sqlite import CandidateRecord
from nasloop.strategies.base import LLM, Context, Observation, Reply, Strategy, Task
from nasloop.strict import Strict


class IslandsOptions(Strict):
    """Options of `islands`."""

    strategy: str = Field(default="feedback-memory", description="the strategy each island runs")
    strategy_options: dict[str, Any] = Field(default_factory=dict, description="its options (shared by all islands)")
    islands: int = Field(default=4, ge=1, description="N: independent chains")
    migration_interval: int | None = Field(
        default=None, gt=0, description="M: every M iterations of an island it adopts the others' best; None: never"
    )


@dataclass
class Island:
    """One chain: its strategy and the wrapper's bookkeeping of it."""

    index: int
    strategy: Strategy
    outstanding: int = 0  # proposals not observed yet (lost, hence not saved, on resume)
    iterations: int = 0  # observed proposals that count as iterations
    since_migration: int = 0
    best: dict[str, Any] | None = None  # {id, score} of the best candidate it observed
    migrated_from: int | None = None  # noted on its next proposal
    migrants: list[int] = field(default_factory=list)  # candidates of other islands it adopted (in its history)

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.strategy.state_dict(),
            "iterations": self.iterations,
            "since_migration": self.since_migration,
            "best": self.best,
            "migrants": list(self.migrants),
        }

    def load(self, data: dict[str, Any]) -> None:
        self.strategy.load_state_dict(data.get("state") or {})
        self.iterations = int(data.get("iterations", 0))
        self.since_migration = int(data.get("since_migration", 0))
        self.best = data.get("best")
        self.migrants = [int(candidate) for candidate in data.get("migrants") or []]
        self.outstanding = 0


class TurnTakingLLM:
    """An island's LLM: the island holds `turn` while its strategy code runs and lets go of it only while
    it waits for a completion, so strategy code runs one island at a time and LLM calls run together."""

    def __init__(self, llm: LLM, turn: threading.Lock) -> None:
        self.llm = llm
        self.turn = turn

    def complete(self, role: str, messages: list[Any], sampling: Sampling) -> Reply:
        self.turn.release()
        try:
            return self.llm.complete(role, messages, sampling)
        finally:
            self.turn.acquire()


def propose_in_turn(strategy: Strategy, ctx: Context, turn: threading.Lock) -> list[Proposal]:
    """`strategy.propose(ctx)` holding `turn` except while it waits for the LLM."""
    with turn:
        return strategy.propose(replace(ctx, llm=TurnTakingLLM(ctx.llm, turn)))


@strategies.register("islands")
class Islands(Strategy):
    """N independent chains of a sequential strategy with optional migration; see the module docstring."""

    Options = IslandsOptions
    sequential = False

    @classmethod
    def needs(cls, options: Any, config: Any) -> dict[str, str]:
        inner_class: type[Strategy] = strategies.get(options.strategy)
        return inner_class.needs(inner_class.Options.model_validate(options.strategy_options), config)

    def __init__(self, options: Any, task: Task, *, space: Any = None, seed: int = 0) -> None:
        super().__init__(options, task, space=space, seed=seed)
        self.opts: IslandsOptions = options
        inner_class: type[Strategy] = strategies.get(options.strategy)
        if inner_class is Islands:
            raise ValueError("islands cannot run islands")
        if inner_class.needs_space and space is None:
            raise ValueError(f"strategy {options.strategy!r} needs a structured space: set `space` (e.g. nb201)")
        inner_options = inner_class.Options.model_validate(options.strategy_options)
        self.islands = [
            Island(index, inner_class(inner_options, task, space=space, seed=seed + index))
            for index in range(options.islands)
        ]
        self.migrations: list[dict[str, int]] = []

    @property
    def max_unobserved(self) -> int:
        """The engine proposes only while fewer proposals than islands await observation."""
        return len(self.islands)

    # -- proposing ----------------------------------------------------------------------------------

    def propose(self, ctx: Context) -> list[Proposal]:
        idle = [island for island in self.islands if island.outstanding == 0]
        if not idle:
            raise RuntimeError("every island awaits an observation; the engine must honour `max_unobserved`")
        for island in idle:
            self._migrate(island, ctx.history)
        contexts = [self._island_context(island, ctx, ctx.rng.getrandbits(64)) for island in idle]
        if len(idle) == 1:
            batches = [idle[0].strategy.propose(contexts[0])]
        else:  # the islands' LLM calls run at once; every thread finishes before the engine goes on
            turn = threading.Lock()
            with ThreadPoolExecutor(max_workers=len(idle), thread_name_prefix="nasloop-island") as pool:
                pairs = zip(idle, contexts, strict=True)
                futures = [pool.submit(propose_in_turn, island.strategy, context, turn) for island, context in pairs]
            batches = [future.result() for future in futures]
        proposals = []
        for island, batch in zip(idle, batches, strict=True):
            for proposal in batch:
                proposal.notes["island"] = island.index
                if island.migrated_from is not None:
                    proposal.notes["migrated_from"] = island.migrated_from
            island.migrated_from = None
            island.outstanding += len(batch)
            proposals += batch
        return proposals

    def _island_context(self, island: Island, ctx: Context, seed: int) -> Context:
        """`ctx` as the island sees it: the seed, its own candidates and those it adopted, its own RNG and
        iteration count."""
        own = tuple(
            record
            for record in ctx.history
            if record.notes.get("island") == island.index
            or record.purpose is Purpose.SEED
            or record.id in island.migrants
        )
        return Context(
            llm=ctx.llm, history=own, rng=random.Random(seed), iteration=island.iterations, task=ctx.task,
            render=ctx.render, space=ctx.space,
        )  # fmt: skip

    def _migrate(self, island: Island, history: Any) -> None:
        """Every `migration_interval` iterations: the island observes the others' best if it beats its own."""
        interval = self.opts.migration_interval
        if interval is None or island.since_migration < interval:
            return
        island.since_migration = 0
        others = [other.best for other in self.islands if other is not island and other.best is not None]
        champion = max(others, key=lambda best: best["score"], default=None)
        if champion is None or (island.best is not None and champion["score"] <= island.best["score"]):
            return
        record = next((record for record in history if record.id == champion["id"]), None)
        if record is None:
            return
        migrant = Proposal(code=record.code, architecture=record.architecture, space=record.space,
                           parent_ids=(record.id,), notes={"migrant": True})  # fmt: skip
        island.strategy.observe([Observation(migrant, record)])
        island.best = dict(champion)
        island.migrated_from = record.id
        island.migrants.append(record.id)
        self.migrations.append({"island": island.index, "candidate": record.id})

    # -- observing ----------------------------------------------------------------------------------

    def takes_seed(self, *, explicit: bool) -> bool:
        return self.islands[0].strategy.takes_seed(explicit=explicit)

    def observe(self, observations: list[Observation]) -> None:
        for observation in observations:
            if observation.record.purpose is Purpose.SEED:  # every island starts from the run's seed
                for island in self.islands:
                    island.strategy.observe([observation])
                    self._update_best(island, observation.record)
                continue
            index = observation.proposal.notes.get("island")
            if not isinstance(index, int) or not 0 <= index < len(self.islands):
                continue  # not proposed by an island (cannot happen through the engine)
            island = self.islands[index]
            island.strategy.observe([observation])
            if observation.proposal.final_of is not None:
                continue
            island.outstanding = max(0, island.outstanding - 1)
            if observation.proposal.purpose.counts_as_iteration:
                island.iterations += 1
                island.since_migration += 1
            self._update_best(island, observation.record)

    def _update_best(self, island: Island, record: CandidateRecord) -> None:
        score = record.score(self.task.metric)
        if score is not None and (island.best is None or score > island.best["score"]):
            island.best = {"id": record.id, "score": score}

    def finalize(self, ctx: Context) -> list[Proposal]:
        proposals = []
        for island in self.islands:
            for proposal in island.strategy.finalize(self._island_context(island, ctx, ctx.rng.getrandbits(64))):
                proposal.notes["island"] = island.index
                proposals.append(proposal)
        return proposals

    # -- resume -------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"islands": [island.to_dict() for island in self.islands], "migrations": list(self.migrations)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("islands") or []
        if len(saved) != len(self.islands):
            raise ValueError(f"the saved run has {len(saved)} islands; the options say {len(self.islands)}")
        for island, data in zip(self.islands, saved, strict=True):
            island.load(data)
        self.migrations = list(state.get("migrations") or [])


__all__ = ["Island", "Islands", "IslandsOptions"]
