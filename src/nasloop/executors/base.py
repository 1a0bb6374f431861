"""The executor contract: where evaluation jobs run.

The engine calls `submit(job, on_progress)` and gets a `concurrent.futures.Future` that resolves to the
job's `EvalResult`; it never raises for a candidate's fault (a failure is a result). `on_progress(step,
loss)` is called from a worker thread with each training step the sandbox reports; returning True asks
the executor to stop that evaluation, which then resolves as `State.PRUNED`. `capacity` is how many jobs
can run at once. `shutdown()` stops the workers and is safe to call twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future

from nasloop.candidate import EvalResult
from nasloop.evaluate.job import EvalJob

ProgressCallback = Callable[[int, float], bool]


class Executor(ABC):
    """Runs evaluation jobs; see the module docstring for the contract."""

    capacity: int = 1

    @abstractmethod
    def submit(self, job: EvalJob, on_progress: ProgressCallback | None = None) -> Future[EvalResult]:
        """Start `job`; the future resolves to its result."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop all workers."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
