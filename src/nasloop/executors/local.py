"""The local executor: a pool of warm sandbox workers on this machine."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from nasloop.candidate import EvalResult
from nasloop.config import SearchConfig
from nasloop.evaluate.job import DatasetSpec, EvalJob
from nasloop.executors.base import Executor, ProgressCallback
from nasloop.registry import executors


@executors.register("local")
class LocalExecutor(Executor):
    """`workers` sandboxes, each a warm worker process, driven by one thread each.

    A job takes whichever sandbox is free. Every sandbox keeps the dataset loaded, so jobs for a different
    dataset spec restart it.
    """

    def __init__(self, dataset: DatasetSpec, *, work_dir: Path, workers: int = 1, use_bwrap: bool | str = "auto"):
        from nasloop.evaluate.sandbox import Sandbox

        self.capacity = workers
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nasloop-eval")
        self._idle: queue.Queue[Sandbox] = queue.Queue()
        self._sandboxes: list[Sandbox] = []
        for index in range(workers):
            sandbox = Sandbox(dataset, work_dir=Path(work_dir) / f"worker{index}", use_bwrap=use_bwrap)
            self._sandboxes.append(sandbox)
            self._idle.put(sandbox)
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_config(cls, config: SearchConfig, *, work_dir: Path) -> LocalExecutor:
        return cls(config.dataset, work_dir=work_dir, workers=config.executor.workers)

    def submit(self, job: EvalJob, on_progress: ProgressCallback | None = None) -> Future[EvalResult]:
        return self._threads.submit(self._run, job, on_progress)

    def _run(self, job: EvalJob, on_progress: ProgressCallback | None) -> EvalResult:
        sandbox = self._idle.get()
        try:
            return sandbox.run(job, on_progress=on_progress)
        finally:
            self._idle.put(sandbox)

    def shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._threads.shutdown(wait=True, cancel_futures=True)
        for sandbox in self._sandboxes:
            sandbox.close()
