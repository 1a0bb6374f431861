"""The candidates in flight: a `Trial` is one between `Search.ask` and `Search.tell`, and `InFlight` keeps
them, with the trials that follow another one's evaluation (the same code, asked while it ran)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from nasloop.candidate import EvalResult, Failure, FailureKind, Proposal, Purpose
from nasloop.evaluate.job import EvalJob


@dataclass
class Trial:
    """One candidate between `Search.ask` and `Search.tell`: evaluate `job` and tell the result.

    `table` holds a benchmark table's figures, merged into the sandbox's result by `tell`. A trial whose
    `follows` is set needs no evaluation: the candidate in flight with the same code is evaluated, and
    this one is told with it.
    """

    id: int
    iteration: int
    proposal: Proposal
    code: str
    code_hash: str
    staleness: int
    job: EvalJob | None = None
    table: EvalResult | None = None
    follows: int | None = None
    timeout_s: float = math.inf  # the evaluation's timeout: shorter than the run's when the budget cut it
    asked: float = field(default_factory=time.time)


def cut_by_budget(result: EvalResult) -> EvalResult:
    """A timeout that the wall-clock budget imposed says so (the candidate may be fine)."""
    failure = result.failure
    if failure is None or failure.kind is not FailureKind.TIMEOUT:
        return result
    message = "the run's wall-clock budget ended during this evaluation: " + failure.message
    return replace(result, failure=Failure(failure.kind, message, failure.traceback))


class InFlight:
    """The trials asked and not told yet; a trial with the code of one of them follows it (`follow`)."""

    def __init__(self) -> None:
        self.trials: dict[int, Trial] = {}
        self.followers: dict[int, list[Trial]] = {}  # trial id -> the trials told with it

    def __len__(self) -> int:
        return len(self.trials)

    def __iter__(self) -> Iterator[Trial]:
        return iter(self.trials.values())

    def add(self, trial: Trial) -> None:
        self.trials[trial.id] = trial

    def twin(self, code_hash: str) -> Trial | None:
        """The trial being evaluated with this code, if any."""
        return next((t for t in self.trials.values() if t.code_hash == code_hash and t.follows is None), None)

    def follow(self, trial: Trial, twin: Trial) -> None:
        """`trial` takes `twin`'s result when it comes (and its timeout)."""
        trial.follows, trial.timeout_s = twin.id, twin.timeout_s
        self.add(trial)
        self.followers.setdefault(twin.id, []).append(trial)

    def done(self, trial: Trial) -> list[Trial]:
        """Take `trial` out, with its followers, which are returned."""
        self.trials.pop(trial.id, None)
        followers = self.followers.pop(trial.id, [])
        for follower in followers:
            self.trials.pop(follower.id, None)
        return followers

    def iterations(self) -> int:
        """How many of the trials count as iterations."""
        return sum(1 for trial in self.trials.values() if trial.proposal.purpose.counts_as_iteration)

    def has_seed(self) -> bool:
        return any(trial.proposal.purpose is Purpose.SEED for trial in self.trials.values())


__all__ = ["InFlight", "Trial", "cut_by_budget"]
