"""The Ray executor: evaluations on a Ray cluster, each in a warm sandbox on the node that runs it.

    nasloop search config.yaml --executor ray --ray-address auto      # or HOST:PORT; none: a local Ray

`workers` Ray actors are started, each reserving `cpus_per_job` CPUs and `gpus_per_job` GPUs (a fraction
packs several onto one GPU); Ray places them on the cluster's nodes and sets their `CUDA_VISIBLE_DEVICES`.
Each actor holds one warm `Sandbox` (dataset loaded, worker process ready) and runs one job at a time,
so a job is a call on an idle actor; its training threads are the actor's CPUs.

The driver (the engine's process) stays the only writer of the run store: an actor returns the job's
result as a dict and keeps nothing. Progress (training losses) is polled from the actor so the engine's
pruner works as it does locally; returning True from `on_progress` asks the actor to stop the job.

A lost worker — the actor's process killed, its node gone — resolves the job as a `crash` failure and a
new actor takes the old one's place, so the run continues. Faults of the executor itself (no node can
host a worker, an actor raised) are exceptions, which the engine records as crashes too.

Every node needs nasloop (same version) in the Python that Ray runs, and the dataset in its cache.
Install with `pip install nasloop[ray]`.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nasloop.candidate import EvalResult, FailureKind
from nasloop.config import SearchConfig
from nasloop.data.spec import DatasetSpec
from nasloop.errors import NasloopError
from nasloop.evaluate.job import EvalJob
from nasloop.executors.base import Executor, ProgressCallback, Slot, with_threads
from nasloop.registry import executors

log = logging.getLogger("nasloop.executors")

PROGRESS_POLL_S = 0.2
START_TIMEOUT_S = 300.0
CLOSE_TIMEOUT_S = 30.0


class RayExecutorError(NasloopError, RuntimeError):
    """The Ray executor cannot work: Ray is missing, or the cluster cannot host the workers."""


def import_ray() -> Any:
    """The `ray` module, or a `RayExecutorError` that says how to install it."""
    try:
        import ray
    except ImportError as error:
        raise RayExecutorError(f"the ray executor needs Ray: pip install 'nasloop[ray]' ({error})") from None
    return ray


# ----------------------------------------------------------------------------------- the actor (on a node)


class SandboxActor:
    """One warm sandbox on a Ray node (made a Ray actor by `RayExecutor`; plain class for testing).

    `run` evaluates a job; `progress` and `stop` are called concurrently (a threaded actor) by the
    driver while `run` works. Jobs are numbered by the driver so a late `stop` cannot hit the next job.
    """

    def __init__(self, dataset: dict[str, Any], work_dir: str, use_bwrap: bool | str, device: str) -> None:
        from nasloop.evaluate.sandbox import Sandbox

        environment = {} if device.startswith("cuda") else {"CUDA_VISIBLE_DEVICES": ""}
        self.work_dir = usable_work_dir(Path(work_dir))
        self.sandbox = Sandbox(
            DatasetSpec.model_validate(dataset), work_dir=self.work_dir, use_bwrap=use_bwrap,  # type: ignore[arg-type]
            device=device, environment=environment,
        )  # fmt: skip
        self.lock = threading.Lock()
        self.curve: list[tuple[int, float]] = []
        self.job_number = 0
        self.stop_number = -1

    def ready(self) -> dict[str, Any]:
        """Where this actor runs: node address, process id, GPU ids (blocks until the worker is warm)."""
        import ray

        self.sandbox.ready_worker()
        return {
            "node": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
            "gpus": [str(gpu) for gpu in ray.get_gpu_ids()],
            "work_dir": str(self.work_dir),
        }

    def run(self, job: dict[str, Any], job_number: int) -> dict[str, Any]:
        """Evaluate one job; its `EvalResult` as a dict."""
        with self.lock:
            self.curve = []
            self.job_number = job_number
        result = self.sandbox.run(EvalJob.model_validate(job), on_progress=self._on_progress)
        return result.to_dict()

    def _on_progress(self, step: int, loss: float) -> bool:
        with self.lock:
            self.curve.append((step, loss))
            return self.stop_number == self.job_number

    def progress(self, start: int) -> list[tuple[int, float]]:
        """The (step, loss) points of the current job from index `start` on."""
        with self.lock:
            return self.curve[start:]

    def stop(self, job_number: int) -> None:
        """Ask job `job_number` to stop at its next reported step (it resolves as pruned)."""
        with self.lock:
            self.stop_number = job_number

    def close(self) -> None:
        self.sandbox.close()


def usable_work_dir(wanted: Path) -> Path:
    """`wanted` when it can be created on this node (the driver's node, a shared file system), else a
    directory of the same name under the node's temporary directory."""
    try:
        wanted.mkdir(parents=True, exist_ok=True)
        return wanted
    except OSError:
        fallback = Path(tempfile.gettempdir()) / "nasloop-ray" / wanted.parent.name / wanted.name
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


# ----------------------------------------------------------------------------------- the driver side


@dataclass
class _Worker:
    """The driver's handle of one actor."""

    index: int
    actor: Any
    info: dict[str, Any]


def lost_worker_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray's exceptions for a worker or node that went away (not for an error raised inside the actor)."""
    exceptions = ray.exceptions
    return (exceptions.RayActorError, exceptions.WorkerCrashedError, exceptions.NodeDiedError,
            exceptions.ObjectLostError)  # fmt: skip


@executors.register("ray")
class RayExecutor(Executor):
    """Evaluations as calls on warm sandbox actors of a Ray cluster; see the module docstring.

    `address`: None starts a local Ray (unless one is already initialised in this process), "auto" or
    "HOST:PORT" joins a running cluster. Ray is shut down at `shutdown()` only if this executor started it.
    """

    def __init__(
        self,
        dataset: DatasetSpec,
        *,
        work_dir: Path,
        address: str | None = None,
        workers: int | None = 1,
        cpus_per_job: float = 1.0,
        gpus_per_job: float = 0.0,
        use_bwrap: bool | Literal["auto"] = "auto",
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        self._ray = ray = import_ray()
        self._started_ray = not ray.is_initialized()
        if self._started_ray:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        resources = ray.cluster_resources()
        if gpus_per_job > 0 and resources.get("GPU", 0.0) == 0:
            log.info("the Ray cluster has no GPUs: evaluations run on CPUs")
            gpus_per_job = 0.0
        workers = cluster_workers(resources, cpus_per_job, gpus_per_job) if workers is None else workers
        self.dataset = dataset
        self.work_dir = Path(work_dir).resolve()
        self.cpus_per_job = cpus_per_job
        self.gpus_per_job = gpus_per_job
        self.use_bwrap = use_bwrap
        self.start_timeout_s = start_timeout_s
        self.threads = max(1, math.floor(cpus_per_job))
        self.capacity = workers
        # Threaded (two calls at once): `progress` and `stop` arrive while `run` works.
        actor_options = {"num_cpus": cpus_per_job, "num_gpus": gpus_per_job, "max_concurrency": 2, "max_restarts": 0}
        self._actor_class = ray.remote(**actor_options)(SandboxActor)
        self._job_numbers = iter(range(1, 1 << 62))
        self._lock = threading.Lock()
        self._closed = False
        self._workers = [self._new_worker(index) for index in range(workers)]
        self._wait_ready(self._workers)
        self._idle: queue.Queue[_Worker] = queue.Queue()
        for worker in self._workers:
            self._idle.put(worker)
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nasloop-ray")

    @classmethod
    def from_config(cls, config: SearchConfig, *, work_dir: Path) -> RayExecutor:
        """As configured (`executor.ray_address`, `cpus_per_job`, `gpus_per_job`); `executor.workers`
        left unset means as many workers as the cluster's GPUs (or, without GPUs, CPUs) hold."""
        settings = config.executor
        return cls(
            config.dataset, work_dir=work_dir, address=settings.ray_address,
            workers=settings.workers,
            cpus_per_job=settings.cpus_per_job, gpus_per_job=settings.gpus_per_job,
        )  # fmt: skip

    # -- workers ------------------------------------------------------------------------------------

    def _new_worker(self, index: int) -> _Worker:
        device = "cuda" if self.gpus_per_job > 0 else "cpu"
        actor = self._actor_class.remote(
            self.dataset.model_dump(mode="json"), str(self.work_dir / f"ray-worker{index}"), self.use_bwrap, device
        )
        return _Worker(index, actor, {})

    def _wait_ready(self, workers: list[_Worker]) -> None:
        """Wait until `workers` are placed and warm; `RayExecutorError` when the cluster cannot host them."""
        ray = self._ray
        try:
            infos = ray.get([worker.actor.ready.remote() for worker in workers], timeout=self.start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self._kill_actors(workers)
            raise RayExecutorError(
                f"Ray could not start {len(workers)} worker(s) of {self.cpus_per_job:g} CPU(s) and "
                f"{self.gpus_per_job:g} GPU(s) within {self.start_timeout_s:g} s; "
                f"the cluster has {ray.cluster_resources()}"
            ) from None
        for worker, info in zip(workers, infos, strict=True):
            worker.info = info
        self.slots = tuple(self._slot(worker.info) for worker in self._workers)
        log.info("ray executor: %s", "; ".join(f"{w.info['node']} pid {w.info['pid']}" for w in workers))

    def _slot(self, info: dict[str, Any]) -> Slot:
        gpu_ids = tuple(info.get("gpus") or ())
        return Slot(self.threads, gpu_ids, min(1.0, self.gpus_per_job) if gpu_ids else 1.0)

    def _replace(self, worker: _Worker) -> _Worker:
        """A new actor in place of a lost one; it warms up while the driver records the failure."""
        self._ray.kill(worker.actor, no_restart=True)
        replacement = self._new_worker(worker.index)
        self._workers[worker.index] = replacement
        return replacement

    def worker_info(self) -> list[dict[str, Any]]:
        """Node address, process id and GPU ids of every worker, as they reported when they started."""
        return [dict(worker.info) for worker in self._workers]

    # -- jobs ---------------------------------------------------------------------------------------

    def submit(self, job: EvalJob, on_progress: ProgressCallback | None = None) -> Future[EvalResult]:
        return self._threads.submit(self._run, with_threads(job, self.threads), on_progress)

    def _run(self, job: EvalJob, on_progress: ProgressCallback | None) -> EvalResult:
        worker = self._idle.get()
        try:
            result, lost = self._run_on(worker, job, on_progress)
            if lost:
                worker = self._replace(worker)
            return result
        finally:
            self._idle.put(worker)

    def _run_on(self, worker: _Worker, job: EvalJob, on_progress: ProgressCallback | None) -> tuple[EvalResult, bool]:
        """(result, whether the worker was lost)."""
        ray = self._ray
        job_number = next(self._job_numbers)
        seen = 0
        try:
            if not worker.info:  # a replacement: wait until it is warm, so its start-up is not the job's time
                self._wait_ready([worker])
            reference = worker.actor.run.remote(job.model_dump(mode="json"), job_number)
            while not ray.wait([reference], timeout=PROGRESS_POLL_S)[0]:
                if on_progress is not None:
                    seen = self._forward_progress(worker, job_number, seen, on_progress)
            return EvalResult.from_dict(ray.get(reference)), False
        except lost_worker_errors(ray) as error:
            where = f"{worker.info.get('node', '?')} pid {worker.info.get('pid', '?')}"
            message = f"the Ray worker running this evaluation ({where}) was lost: {type(error).__name__}"
            log.warning("%s; starting a new worker", message)
            return EvalResult.failed(FailureKind.CRASH, f"{message}; a new worker was started"), True

    def _forward_progress(self, worker: _Worker, job_number: int, seen: int, on_progress: ProgressCallback) -> int:
        """Pass new (step, loss) points to `on_progress`; ask the actor to stop when it says so."""
        points = self._ray.get(worker.actor.progress.remote(seen))
        for step, loss in points:
            if on_progress(int(step), float(loss)):
                worker.actor.stop.remote(job_number)
                break
        return seen + len(points)

    # -- shutdown -----------------------------------------------------------------------------------

    def _kill_actors(self, workers: list[_Worker]) -> None:
        for worker in workers:
            self._ray.kill(worker.actor, no_restart=True)

    def shutdown(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        ray = self._ray
        self._threads.shutdown(wait=True, cancel_futures=True)
        closing = [worker.actor.close.remote() for worker in self._workers]
        try:
            ray.get(closing, timeout=CLOSE_TIMEOUT_S)
        except (ray.exceptions.GetTimeoutError, *lost_worker_errors(ray)):
            log.warning("a Ray worker did not close cleanly; it is killed")
        self._kill_actors(self._workers)
        if self._started_ray:
            ray.shutdown()


def cluster_workers(resources: dict[str, float], cpus_per_job: float, gpus_per_job: float) -> int:
    """How many workers a cluster with `resources` (Ray's totals) holds at once, at least one."""
    if gpus_per_job > 0:
        return max(1, math.floor(resources.get("GPU", 0.0) / gpus_per_job + 1e-9))
    return max(1, math.floor(resources.get("CPU", 0.0) / cpus_per_job + 1e-9))
