"""The local executor: a pool of warm sandbox workers on this machine, one per slot.

On a GPU machine each worker sees its own GPU(s) through `CUDA_VISIBLE_DEVICES` (one candidate per GPU
by default; `gpus_per_job` below 1 packs several workers onto one GPU, above 1 gives a worker several),
so candidates never compete for one device. CPU threads are split evenly: each worker's jobs train with
`cores // workers` threads unless the recipe sets `threads`. Every job runs in a fresh child of its
worker, which returns the GPU memory; `recycle_after` additionally replaces a worker process after that
many jobs (for memory a long-lived worker could accumulate).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nasloop.candidate import EvalResult
from nasloop.config import SearchConfig
from nasloop.data.spec import DatasetSpec
from nasloop.evaluate.job import EvalJob
from nasloop.executors.base import Executor, ProgressCallback, Slot, available_cores, with_threads
from nasloop.registry import executors

if TYPE_CHECKING:
    from nasloop.evaluate.sandbox import Sandbox

log = logging.getLogger("nasloop.executors")


def visible_gpus() -> tuple[str, ...]:
    """The GPUs this process may use, as `CUDA_VISIBLE_DEVICES` entries (its own list when it has one)."""
    import torch

    count = torch.cuda.device_count()  # honours CUDA_VISIBLE_DEVICES
    if count == 0:
        return ()
    listed = [entry.strip() for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()]
    return tuple(listed[:count]) if listed else tuple(str(index) for index in range(count))


def gpu_groups(gpus: tuple[str, ...], gpus_per_job: float) -> list[tuple[tuple[str, ...], float]]:
    """(GPU ids, share) of every job that fits at once: one per GPU for 1, k per GPU for 1/k, a group of
    n GPUs for n; none when `gpus_per_job` is 0 or there are no GPUs."""
    if not gpus or gpus_per_job <= 0:
        return []
    if gpus_per_job >= 1:
        size = math.ceil(gpus_per_job)
        return [(gpus[start : start + size], 1.0) for start in range(0, len(gpus) - size + 1, size)]
    per_gpu = max(1, math.floor(1 / gpus_per_job + 1e-9))
    return [((gpu,), gpus_per_job) for gpu in gpus for _ in range(per_gpu)]


def plan_slots(
    workers: int | None, *, cores: int, gpus: tuple[str, ...] = (), gpus_per_job: float = 1.0
) -> tuple[Slot, ...]:
    """The slots of a local pool: `workers` of them (None: one per GPU group, or one without GPUs), the
    GPU groups dealt out in turn, and the cores split evenly (at least one thread each)."""
    groups = gpu_groups(gpus, gpus_per_job)
    count = workers if workers is not None else max(1, len(groups))
    threads = max(1, cores // count)
    if not groups:
        return tuple(Slot(threads) for _ in range(count))
    return tuple(Slot(threads, *groups[index % len(groups)]) for index in range(count))


def worker_environment(slot: Slot, machine_has_gpus: bool) -> dict[str, str]:
    """The variables that confine a worker to its slot: its GPUs, or none at all on a GPU machine."""
    if slot.gpu_ids:
        return {"CUDA_VISIBLE_DEVICES": ",".join(slot.gpu_ids)}
    return {"CUDA_VISIBLE_DEVICES": ""} if machine_has_gpus else {}


@executors.register("local")
class LocalExecutor(Executor):
    """One warm sandbox per slot, each driven by one thread; see the module docstring.

    A job takes whichever sandbox is free. Every sandbox keeps the dataset loaded, so jobs for a different
    dataset spec restart it. `workers` None means one per GPU (or one on a CPU machine); `threads`
    overrides the CPU threads per worker; `recycle_after` restarts a worker after that many jobs.
    """

    def __init__(
        self,
        dataset: DatasetSpec,
        *,
        work_dir: Path,
        workers: int | None = 1,
        use_bwrap: bool | Literal["auto"] = "auto",
        gpus_per_job: float = 1.0,
        threads: int | None = None,
        recycle_after: int | None = None,
        gpus: tuple[str, ...] | None = None,
    ) -> None:
        from nasloop.evaluate.sandbox import Sandbox

        gpus = visible_gpus() if gpus is None else gpus
        self.slots = plan_slots(workers, cores=available_cores(), gpus=gpus, gpus_per_job=gpus_per_job)
        if threads is not None:
            self.slots = tuple(Slot(threads, slot.gpu_ids, slot.gpu_share) for slot in self.slots)
        self.capacity = len(self.slots)
        self.recycle_after = recycle_after
        self._threads = ThreadPoolExecutor(max_workers=self.capacity, thread_name_prefix="nasloop-eval")
        self._idle: queue.Queue[tuple[Sandbox, Slot]] = queue.Queue()
        self._sandboxes: list[Sandbox] = []
        self._jobs_run: dict[int, int] = {}
        for index, slot in enumerate(self.slots):
            sandbox = Sandbox(
                dataset, work_dir=Path(work_dir) / f"worker{index}", use_bwrap=use_bwrap, device=slot.device,
                environment=worker_environment(slot, bool(gpus)),
            )  # fmt: skip
            self._sandboxes.append(sandbox)
            self._idle.put((sandbox, slot))
        log.info("local executor: %d worker(s): %s", self.capacity, "; ".join(s.describe() for s in self.slots))
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_config(cls, config: SearchConfig, *, work_dir: Path) -> LocalExecutor:
        """A pool as configured; `executor.workers` left unset means one worker per GPU on a GPU machine."""
        settings = config.executor
        workers = settings.workers
        return cls(
            config.dataset, work_dir=work_dir, workers=workers, gpus_per_job=settings.gpus_per_job,
            recycle_after=settings.recycle_after,
        )  # fmt: skip

    def wait_ready(self) -> None:
        """Block until every worker has started (torch imported, data loaded); `SandboxError` if one cannot."""
        for sandbox in self._sandboxes:
            sandbox.ready_worker()

    def worker_info(self) -> list[dict[str, Any]]:
        """Per worker: its process id (None before it starts), device, threads and GPUs."""
        return [
            {"pid": sandbox.worker.process.pid if sandbox.worker else None, "device": slot.device,
             "threads": slot.threads, "gpus": list(slot.gpu_ids)}
            for sandbox, slot in zip(self._sandboxes, self.slots, strict=True)
        ]  # fmt: skip

    def submit(self, job: EvalJob, on_progress: ProgressCallback | None = None) -> Future[EvalResult]:
        return self._threads.submit(self._run, job, on_progress)

    def _run(self, job: EvalJob, on_progress: ProgressCallback | None) -> EvalResult:
        sandbox, slot = self._idle.get()
        try:
            return sandbox.run(with_threads(job, slot.threads), on_progress=on_progress)
        finally:
            self._count_job(sandbox)
            self._idle.put((sandbox, slot))

    def _count_job(self, sandbox: Sandbox) -> None:
        """Restart the sandbox's worker once it has run `recycle_after` jobs."""
        done = self._jobs_run.get(id(sandbox), 0) + 1
        if self.recycle_after is not None and done >= self.recycle_after and not sandbox.closed:
            sandbox.restart_worker()
            done = 0
        self._jobs_run[id(sandbox)] = done

    def shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._threads.shutdown(wait=True, cancel_futures=True)
        for sandbox in self._sandboxes:
            sandbox.close()
