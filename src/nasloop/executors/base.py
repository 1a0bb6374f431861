"""The executor contract: where evaluation jobs run.

The engine calls `submit(job, on_progress)` and gets a `concurrent.futures.Future` that resolves to the
job's `EvalResult`; it never raises for a candidate's fault (a failure is a result), and a lost worker
(a killed process, a lost node) is a `crash` failure, not an exception. `on_progress(step, loss)` is
called from a worker thread with each training step the sandbox reports; returning True asks the
executor to stop that evaluation, which then resolves as `State.PRUNED`.

`capacity` is how many jobs run at once; jobs submitted beyond it wait in a queue, and `cancel(future)`
withdraws one that has not started (True) — a running job is not interrupted (False). `slots` describes
the resources each running job gets: CPU threads for its training and the GPUs it sees. `shutdown()`
stops the workers and is safe to call twice.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from nasloop.candidate import EvalResult
from nasloop.evaluate.job import EvalJob

ProgressCallback = Callable[[int, float], bool]


@dataclass(frozen=True)
class Slot:
    """The resources of one running job: CPU threads and GPUs.

    `gpu_ids` are entries of `CUDA_VISIBLE_DEVICES` (indices or UUIDs) the job's worker sees; none means
    the job runs on the CPU. `gpu_share` is the fraction of each of those GPUs the job may use (several
    slots share one GPU when it is below 1).
    """

    threads: int
    gpu_ids: tuple[str, ...] = ()
    gpu_share: float = 1.0

    @property
    def device(self) -> str:
        """The torch device of jobs in this slot: "cuda" (the first GPU it sees) or "cpu"."""
        return "cuda" if self.gpu_ids else "cpu"

    def describe(self) -> str:
        gpus = f", GPU {','.join(self.gpu_ids)}" if self.gpu_ids else ""
        share = f" ({self.gpu_share:g} of it)" if self.gpu_ids and self.gpu_share < 1 else ""
        return f"{self.threads} thread(s){gpus}{share}"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity, which containers and `taskset` narrow)."""
    return len(os.sched_getaffinity(0))


def with_threads(job: EvalJob, threads: int) -> EvalJob:
    """`job` with `recipe.threads` set to `threads` unless the recipe already sets it."""
    if job.recipe.threads is not None:
        return job
    return job.model_copy(update={"recipe": job.recipe.model_copy(update={"threads": max(1, threads)})})


class Executor(ABC):
    """Runs evaluation jobs; see the module docstring for the contract."""

    capacity: int = 1
    slots: tuple[Slot, ...] = ()

    @abstractmethod
    def submit(self, job: EvalJob, on_progress: ProgressCallback | None = None) -> Future[EvalResult]:
        """Queue `job`; the future resolves to its result."""

    def cancel(self, future: Future[EvalResult]) -> bool:
        """Withdraw a queued job: True when it had not started (it never will), False when it runs or ran."""
        return future.cancel()

    @abstractmethod
    def shutdown(self) -> None:
        """Stop all workers; queued jobs are cancelled. Safe to call twice."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
