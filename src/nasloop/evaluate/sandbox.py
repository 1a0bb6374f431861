"""The sandbox, parent side: runs evaluation jobs in a warm worker process and scores what comes back.

    with Sandbox(DatasetSpec(name="fashion-mnist"), work_dir=run_dir / "sandbox") as sandbox:
        result = sandbox.run(job, on_progress=lambda step, loss: loss > 5.0)   # True prunes

A `Sandbox` loads the dataset's splits (it alone holds the validation and test labels), writes the
label-free sandbox data to `work_dir/data`, and starts the worker `python -m nasloop.evaluate.worker`
with a scrubbed environment; under bubblewrap (`bwrap`) where it is available: no network, its own PID
namespace, a read-only file system except the jobs directory, hidden credentials. Each `run` sends one
job; the worker forks a child that runs the stages (see `nasloop.evaluate.worker` for the protocol and
`nasloop.evaluate.stages` for the stages). The parent watches the child's `progress.jsonl`, may ask the
worker to kill the child (pruning), reads the child's result, and computes `val_acc` / `test_acc` itself
from the returned predictions (DESIGN.md contract 3: a candidate cannot forge its score).

Every problem a candidate causes ends as an `EvalResult` with a `Failure`, never as an exception. If
the worker stops answering (deadline + grace + `WATCHDOG_SLACK_S`) or dies, its whole process group is
killed, the job fails (`timeout` / `crash`) and the next job starts a new worker. A `Sandbox` runs one
job at a time and is not thread-safe; use one per worker thread.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from nasloop.candidate import EvalResult, FailureKind, State
from nasloop.evaluate.job import DatasetSpec, EvalJob
from nasloop.evaluate.worker import (
    MEGABYTE,
    PROGRESS_FILENAME,
    RESULT_FILENAME,
    WORK_DIRNAME,
    LineReader,
    signal_process_group,
)

logger = logging.getLogger("nasloop.sandbox")

Isolation = Literal["bwrap", "rlimits"]
ProgressCallback = Callable[[int, float], bool]

WATCHDOG_SLACK_S = 10.0
PROGRESS_POLL_S = 0.05
WORKER_START_TIMEOUT_S = 300.0
MAX_RESULT_BYTES = 4 * MEGABYTE
MAX_CURVE_POINTS = 20000
TAIL_CHARS = 2000  # of stdout / stderr kept in `EvalResult.info`
# Metrics only the parent may set; a child that reports them is ignored.
PARENT_METRICS = frozenset({"val_acc", "test_acc", "pruned_at_step"})

# Environment variables the worker keeps (plus every LC_*); everything else, API keys included, is dropped.
KEPT_ENVIRONMENT = (
    "PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
)  # fmt: skip
BWRAP_FLAGS = ("--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent", "--new-session")

_SIGNAL_MEANINGS = {
    "SIGSEGV": "segmentation fault",
    "SIGBUS": "bus error",
    "SIGILL": "illegal instruction",
    "SIGFPE": "arithmetic error",
    "SIGABRT": "aborted",
}


class SandboxError(RuntimeError):
    """The sandbox itself failed (the worker cannot start, bubblewrap was required but is unusable).

    Never raised for anything a candidate does; that is a failed `EvalResult`.
    """


class WorkerGone(Exception):
    """The worker's stdout closed: it died."""


# ----------------------------------------------------------------------------------- environment and isolation


def scrubbed_environment(source: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: the kept variables of `source` (default `os.environ`), nothing secret.

    `PYTHONPATH` gains the directory nasloop is imported from, so the worker runs this same nasloop.
    Numpy's BLAS gets one thread: the worker must not run thread pools before it forks.
    """
    source = dict(os.environ if source is None else source)
    environment = {name: value for name, value in source.items() if name in KEPT_ENVIRONMENT or name.startswith("LC_")}
    package_root = str(Path(__file__).resolve().parents[2])
    paths = [package_root, *[path for path in environment.get("PYTHONPATH", "").split(os.pathsep) if path]]
    environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    environment["OPENBLAS_NUM_THREADS"] = "1"
    environment["PYTHONDONTWRITEBYTECODE"] = "1"  # the file system is read-only under bubblewrap
    return environment


def bwrap_command(jobs_dir: Path, data_dir: Path, hidden_dirs: tuple[Path, ...] = ()) -> list[str]:
    """The bubblewrap prefix: `/` read-only; fresh /dev, /proc and /tmp; GPUs; the home directory and
    `hidden_dirs` (where the dataset's labels live) replaced by empty ones, with the Python installation
    and nasloop bound back where they live under them; the data directory readable and the jobs
    directory writable; no network; its own PID namespace."""
    bwrap = shutil.which("bwrap") or "bwrap"
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for device in sorted(glob.glob("/dev/nvidia*")):
        argv += ["--dev-bind", device, device]
    package_root = Path(__file__).resolve().parents[2]
    python_paths = [path.resolve() for path in (package_root, Path(sys.prefix), Path(sys.base_prefix))]
    hidden = directories_to_hide(hidden_dirs, python_paths)
    for directory in hidden[1:]:  # the first is /tmp, mounted above
        argv += ["--perms", "0755", "--tmpfs", str(directory)]
    for needed in python_paths:
        argv += _rebind(needed, hidden, "--ro-bind")
    argv += _rebind(data_dir.resolve(), hidden, "--ro-bind")
    argv += _rebind(jobs_dir.resolve(), hidden, "--bind", always=True)
    return [*argv, *BWRAP_FLAGS, "--"]


def _within(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def directories_to_hide(extra: tuple[Path, ...], python_paths: list[Path]) -> list[Path]:
    """/tmp, the home directory, the outermost directory above Python that others may not enter (Python
    is bound back into these), and the `extra` directories except those that hold Python or nasloop;
    none twice, none inside another."""
    resolved = [path.resolve() for path in extra]
    candidates = [Path.home().resolve(), *filter(None, map(_closed_ancestor, python_paths))]
    candidates += [path for path in resolved if not any(_within(needed, path) for needed in python_paths)]
    chosen = [Path("/tmp")]
    for directory in candidates:
        if directory != Path("/") and directory.is_dir() and not any(_within(directory, other) for other in chosen):
            chosen.append(directory)
    return chosen


def _closed_ancestor(path: Path) -> Path | None:
    """The outermost directory above `path` that others cannot enter (Python under a 0700 /root): the
    candidate, as `nobody`, could not import the standard library's lazily loaded modules."""
    for ancestor in reversed(path.parents):
        try:
            if not ancestor.stat().st_mode & 0o001:
                return ancestor
        except OSError:
            return None
    return None


def _rebind(path: Path, hidden: list[Path], how: str, *, always: bool = False) -> list[str]:
    """Bind `path` back when it lies under a hidden (fresh tmpfs) directory, creating its parents there
    as 0755 (bwrap's default is 0700), so that the candidate, as `nobody`, can reach it."""
    root = next((directory for directory in hidden if directory in path.parents), None)
    if root is None:
        return [how, str(path), str(path)] if always else []
    parents = [parent for parent in reversed(path.parents) if root in parent.parents]
    created = [argument for parent in parents for argument in ("--perms", "0755", "--dir", str(parent))]
    return [*created, how, str(path), str(path)]


@functools.cache
def bwrap_problem() -> str | None:
    """Why bubblewrap cannot be used here, or None when it works (checked once per process)."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (`bwrap`) is not on PATH; install the `bubblewrap` package"
    with tempfile.TemporaryDirectory(prefix="nasloop-bwrap-probe-") as probe:
        argv = [*bwrap_command(Path(probe), Path(probe)), "/bin/true"]
        try:
            completed = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"bubblewrap does not start: {error}"
    if completed.returncode != 0:
        return f"bubblewrap does not work here (exit {completed.returncode}): {completed.stderr.strip()[:300]}"
    return None


_warned_rlimits_only = False


def choose_isolation(use_bwrap: bool | Literal["auto"]) -> Isolation:
    """ "bwrap" when requested (or "auto") and usable, else "rlimits" with one warning per process.

    Raises `SandboxError` when `use_bwrap` is True and bubblewrap is unusable.
    """
    global _warned_rlimits_only
    if use_bwrap is False:
        return "rlimits"
    problem = bwrap_problem()
    if problem is None:
        return "bwrap"
    if use_bwrap is True:
        raise SandboxError(f"use_bwrap=True but {problem}")
    if not _warned_rlimits_only:
        _warned_rlimits_only = True
        logger.warning("%s; candidates run with resource limits only (no network or file-system isolation)", problem)
    return "rlimits"


def label_locations(dataset: DatasetSpec) -> tuple[Path, ...]:
    """Directories holding the dataset's labels (nasloop's cache and the dataset's own files), which
    bubblewrap hides from the worker."""
    from nasloop.data import get_source
    from nasloop.data.sources import nasloop_cache_root

    locations = [nasloop_cache_root()]
    source = get_source(dataset.name)
    if source.files:  # a dataset bundled with a package (digits) has no files of its own to hide
        locations.append(source.find_root(dataset.root))
    return tuple(path.resolve() for path in locations if path.is_dir())


def resolve_device(device: str) -> str:
    """ "auto" → "cuda" when a GPU is visible, else "cpu". Resolved in the parent: the worker must not
    initialise CUDA before it forks."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ----------------------------------------------------------------------------------- the worker process


class WorkerProcess:
    """One running worker: its process (own process group) and its JSON-lines pipes."""

    def __init__(self, argv: list[str], environment: dict[str, str], log_path: Path) -> None:
        self.log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115  # open as long as the worker lives
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=environment,
            start_new_session=True, close_fds=True,
        )  # fmt: skip
        assert self.process.stdout is not None and self.process.stdin is not None
        self.reader = LineReader(self.process.stdout.fileno())
        self.lines: list[bytes] = []
        self.ready = False
        self.log_path = log_path

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write((json.dumps(message) + "\n").encode())
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise WorkerGone(str(error)) from error

    def receive(self, timeout: float) -> dict[str, Any] | None:
        """The next message, or None after `timeout` seconds; raises `WorkerGone` when the worker died."""
        import select

        deadline = time.monotonic() + timeout
        while not self.lines:
            if self.reader.closed:
                raise WorkerGone(f"the sandbox worker exited (status {self.process.poll()})")
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([self.reader.fd], [], [], max(0.0, remaining))
            if not readable:
                return None
            self.lines += [line for line in self.reader.feed() if line.strip()]
        return dict(json.loads(self.lines.pop(0)))

    def wait_ready(self, timeout: float) -> None:
        """Block until the worker has loaded torch and the data; `SandboxError` if it does not."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            try:
                message = self.receive(max(0.0, deadline - time.monotonic()))
            except WorkerGone as error:
                raise SandboxError(f"the sandbox worker did not start: {error}. {self.log_tail()}") from error
            if message is None:
                self.kill()
                raise SandboxError(f"the sandbox worker was not ready after {timeout:.0f} s. {self.log_tail()}")
            self.ready = bool(message.get("ready"))

    def log_tail(self, chars: int = 1500) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return f"Its log ({self.log_path}) ends with:\n{text[-chars:]}" if text else ""

    def alive(self) -> bool:
        return self.process.poll() is None and not self.reader.closed

    def kill(self) -> None:
        """SIGKILL the worker's whole process group and collect it."""
        signal_process_group(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self._close_files()

    def stop(self, timeout: float = 5.0) -> None:
        """Close its stdin (it exits when idle), then kill what is left."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        self.kill()

    def _close_files(self) -> None:
        for stream in (self.process.stdin, self.process.stdout, self.log):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


# ----------------------------------------------------------------------------------- one job


@dataclass
class JobRun:
    """The parent's view of one job while it runs."""

    job: EvalJob
    job_dir: Path
    on_progress: ProgressCallback | None
    progress_offset: int = 0
    progress_buffer: bytes = b""
    curve: list[tuple[int, float]] = field(default_factory=list)
    stage: str = ""
    child_pid: int | None = None
    pruned_at_step: int | None = None
    kill_sent: bool = False

    @property
    def work_dir(self) -> Path:
        return self.job_dir / WORK_DIRNAME


class Sandbox:
    """Runs evaluation jobs for one dataset in a warm, isolated worker process (see the module docstring).

    A job for another dataset spec switches the sandbox to it (a new worker; seconds).
    `use_bwrap`: True requires bubblewrap, False never uses it, "auto" uses it where it works. `device`
    ("auto", "cpu", "cuda", "cuda:N") is used for jobs whose recipe says "auto". `grace_s` is the time
    between SIGTERM and SIGKILL. Each job gets a directory under `work_dir/jobs`; the candidate's own work
    directory inside it is deleted after the job unless `keep_work_dirs`. `environment` adds variables to
    the worker's scrubbed environment (an executor sets `CUDA_VISIBLE_DEVICES` to the worker's GPUs).
    """

    def __init__(
        self,
        dataset: DatasetSpec,
        *,
        work_dir: Path,
        use_bwrap: bool | Literal["auto"] = "auto",
        device: str = "auto",
        grace_s: float = 2.0,
        keep_work_dirs: bool = False,
        environment: dict[str, str] | None = None,
    ) -> None:
        self.work_dir = Path(work_dir).resolve()
        self.extra_environment = dict(environment or {})
        self.jobs_dir = self.work_dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.isolation: Isolation = choose_isolation(use_bwrap)
        self.device = resolve_device(device)
        self.grace_s = grace_s
        self.watchdog_slack_s = WATCHDOG_SLACK_S
        self.keep_work_dirs = keep_work_dirs
        # Continue the numbering of an earlier sandbox on the same directory (a resumed run).
        numbers = [int(path.name.split("-")[0]) for path in self.jobs_dir.iterdir() if path.name[:6].isdigit()]
        self.jobs_started = max(numbers, default=0)
        self.worker: WorkerProcess | None = None
        self.closed = False
        self.load_dataset(dataset)

    def load_dataset(self, dataset: DatasetSpec) -> None:
        """Serve `dataset` from now on: load its splits, hand the label-free part to a new worker."""
        from nasloop.data import load_splits, save_sandbox_data

        if self.worker is not None:  # it maps the old data files, which are about to be rewritten
            self.worker.stop()
            self.worker = None
        self.dataset = dataset
        self.splits = load_splits(dataset)  # the only copy of the evaluation labels
        self.data_dir = save_sandbox_data(self.splits.for_sandbox(), self.work_dir / "data")
        self.start_worker()  # it warms up while the caller prepares the first job

    # --- the worker's lifecycle

    def worker_command(self) -> list[str]:
        command = [sys.executable, "-m", "nasloop.evaluate.worker", "--data", str(self.data_dir)]
        if self.isolation == "bwrap":
            return [*bwrap_command(self.jobs_dir, self.data_dir, label_locations(self.dataset)), *command]
        return command

    def start_worker(self) -> WorkerProcess:
        environment = {**scrubbed_environment(), **self.extra_environment}
        self.worker = WorkerProcess(self.worker_command(), environment, self.work_dir / "worker.log")
        return self.worker

    def restart_worker(self) -> None:
        """Replace the worker with a fresh one (it warms up in the background), returning the memory the
        old one held; between jobs only."""
        if self.worker is not None:
            self.worker.stop()
        self.start_worker()

    def ready_worker(self) -> WorkerProcess:
        """A live, ready worker, started anew if the last one died."""
        if self.closed:
            raise SandboxError("the sandbox is closed")
        worker = self.worker if self.worker is not None and self.worker.alive() else None
        if worker is None:
            if self.worker is not None:
                self.worker.kill()
            worker = self.start_worker()
        worker.wait_ready(WORKER_START_TIMEOUT_S)
        return worker

    def close(self) -> None:
        """Stop the worker. Safe to call twice."""
        self.closed = True
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- running a job

    def run(self, job: EvalJob, on_progress: ProgressCallback | None = None) -> EvalResult:
        """Evaluate `job` and return its result; candidate problems are failures, never exceptions.

        `on_progress(step, loss)` is called for each training step the child reports; returning True
        kills the child and the result is `State.PRUNED` with `metrics["pruned_at_step"]`.
        """
        if job.dataset != self.dataset:
            self.load_dataset(job.dataset)  # rare: seconds to switch
        worker = self.ready_worker()
        started = time.monotonic()
        run = JobRun(job=job, job_dir=self.new_job_dir(job), on_progress=on_progress)
        device = self.device if job.recipe.device == "auto" else job.recipe.device
        try:
            worker.send(
                {"cmd": "run", "job": job.model_dump(mode="json"), "job_dir": str(run.job_dir), "device": device,
                 "grace_s": self.grace_s}
            )  # fmt: skip
            answer = self.wait_for_answer(worker, run)
        except WorkerGone as error:
            result = self.worker_lost(
                run, FailureKind.CRASH, f"the sandbox worker died during the evaluation ({error})"
            )
        else:
            result = self.worker_lost(run, *answer) if isinstance(answer, tuple) else self.collect(run, answer)
        total = time.monotonic() - started
        result.timings["total_s"] = total
        stage_time = sum(value for name, value in result.timings.items() if name not in ("total_s",))
        result.timings["sandbox_overhead_s"] = max(0.0, total - stage_time)
        self.finish_job_dir(run, result)
        return result

    def new_job_dir(self, job: EvalJob) -> Path:
        import hashlib

        self.jobs_started += 1
        digest = hashlib.sha256(job.code.encode()).hexdigest()[:10]
        job_dir = self.jobs_dir / f"{self.jobs_started:06d}-{digest}"
        if job_dir.exists():
            shutil.rmtree(job_dir)
        job_dir.mkdir(mode=0o755)
        return job_dir

    def wait_for_answer(self, worker: WorkerProcess, run: JobRun) -> dict[str, Any] | tuple[FailureKind, str]:
        """The worker's final answer, watching progress meanwhile; a (kind, message) pair when the worker
        stopped answering."""
        watchdog = time.monotonic() + run.job.limits.timeout_s + self.grace_s + self.watchdog_slack_s
        try:
            while True:
                message = worker.receive(PROGRESS_POLL_S)
                self.poll_progress(worker, run)
                if message is None:
                    if time.monotonic() > watchdog:
                        limit = run.job.limits.timeout_s
                        return FailureKind.TIMEOUT, f"the sandbox worker did not answer within {limit:g} s (+ grace)"
                    continue
                if message.get("started"):
                    run.child_pid = int(message["pid"])
                elif message.get("done"):
                    self.poll_progress(worker, run, final=True)
                    return message
        except BaseException:
            # The caller's on_progress raised (or we were interrupted): stop the child before leaving.
            self.worker_lost(run, FailureKind.CRASH, "interrupted")
            raise

    def poll_progress(self, worker: WorkerProcess, run: JobRun, final: bool = False) -> None:
        """Read new lines of the child's progress file; call `on_progress`; send a kill when it says so."""
        for record in read_new_progress(run):
            if "stage" in record:
                run.stage = str(record["stage"])
                continue
            try:
                step, loss = int(record["step"]), float(record["loss"])
            except (KeyError, TypeError, ValueError):
                continue  # the candidate may write anything into its own directory; ignore junk
            if len(run.curve) < MAX_CURVE_POINTS:
                run.curve.append((step, loss))
            if run.on_progress is None or run.kill_sent:
                continue
            if run.on_progress(step, loss) and not final:
                run.pruned_at_step = step
                run.kill_sent = True
                worker.send({"cmd": "kill"})

    def worker_lost(self, run: JobRun, kind: FailureKind, message: str) -> EvalResult:
        """Kill the worker's group and the child's (it has its own session), and fail the job."""
        if self.worker is not None:
            self.worker.kill()
        if run.child_pid is not None and self.isolation == "rlimits":
            signal_process_group(run.child_pid, signal.SIGKILL)  # under bwrap its PID namespace died with it
        text = f"{message}; the worker was restarted"
        return EvalResult.failed(kind, text, stage=run.stage, curve=list(run.curve))

    # --- turning the answer into a result

    def collect(self, run: JobRun, answer: dict[str, Any]) -> EvalResult:
        """The job's result from the worker's answer and the child's files."""
        if run.pruned_at_step is not None and answer.get("killed"):
            result = EvalResult(State.PRUNED, metrics={"pruned_at_step": float(run.pruned_at_step)})
        else:
            child = read_child_result(run.work_dir) if answer.get("exit") == 0 else None
            result = self.score(run, child) if child is not None else outcome_result(run, answer)
        result.stage = result.stage or run.stage
        result.curve = list(run.curve)
        result.info.update(output_info(answer))
        result.info["isolation"] = self.isolation
        result.info["max_rss_mb"] = float(answer.get("max_rss_mb", 0.0))
        return result

    def score(self, run: JobRun, child: EvalResult) -> EvalResult:
        """The child's result with `val_acc` / `test_acc` computed here from its predictions."""
        from nasloop.evaluate.train import accuracy

        for name in PARENT_METRICS & child.metrics.keys():
            del child.metrics[name]
        if child.state not in (State.COMPLETE, State.FAILED):
            message = f"the evaluation reported the state {child.state.value!r}, which only nasloop may set"
            return EvalResult.failed(FailureKind.CRASH, message, stage=child.stage)
        if child.state is not State.COMPLETE or "train" not in run.job.stages:
            return child  # predictions exist only after a completed train stage
        try:
            for split, labels in (("val", self.splits.val_y), ("test", self.splits.test_y)):
                if len(labels):
                    predictions = read_predictions(run.work_dir / f"{split}_pred.npy", len(labels))
                    child.metrics[f"{split}_acc"] = accuracy(predictions, labels)
        except PredictionError as error:
            return EvalResult.failed(
                FailureKind.CRASH, f"the sandbox returned unusable predictions: {error}", stage=child.stage,
                metrics=child.metrics, timings=child.timings, info=child.info,
            )  # fmt: skip
        return child

    def finish_job_dir(self, run: JobRun, result: EvalResult) -> None:
        """Keep the final result and the output beside the job; delete the candidate's work directory."""
        with contextlib.suppress(OSError):
            write_private(run.job_dir / RESULT_FILENAME, json.dumps(result.to_dict(), indent=1))
        if not self.keep_work_dirs:
            shutil.rmtree(run.work_dir, ignore_errors=True)


# ----------------------------------------------------------------------------------- reading the child's files


class PredictionError(ValueError):
    """A prediction file is missing or malformed."""


def open_regular(path: Path) -> int:
    """Open a file the candidate could have written, refusing symlinks and anything not a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path.name} is not a regular file")
    return fd


def read_child_result(work_dir: Path) -> EvalResult | None:
    """The child's `result.json` as an `EvalResult`, or None when it is absent or unreadable."""
    try:
        fd = open_regular(work_dir / RESULT_FILENAME)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read(MAX_RESULT_BYTES + 1)
    if len(raw) > MAX_RESULT_BYTES:
        return None
    try:
        return EvalResult.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError):
        return None


def read_predictions(path: Path, expected: int) -> np.ndarray:
    """A 1-D integer array of `expected` class indices from a `.npy` file (no pickles, no symlinks)."""
    try:
        fd = open_regular(path)
    except OSError as error:
        raise PredictionError(f"{path.name} is missing ({error.strerror or error})") from error
    with os.fdopen(fd, "rb") as handle:
        try:
            array = np.load(handle, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise PredictionError(f"{path.name} is not a valid .npy file: {error}") from error
    if array.ndim != 1 or len(array) != expected or not np.issubdtype(array.dtype, np.integer):
        raise PredictionError(
            f"{path.name} has shape {array.shape} and dtype {array.dtype}; expected shape ({expected},) of integers"
        )
    return array.astype(np.int64)


def read_new_progress(run: JobRun) -> list[dict[str, Any]]:
    """The complete progress lines added since the last call (malformed lines are skipped)."""
    try:
        fd = open_regular(run.work_dir / PROGRESS_FILENAME)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as handle:
        handle.seek(run.progress_offset)
        chunk = handle.read(MEGABYTE)
    run.progress_offset += len(chunk)
    *lines, run.progress_buffer = (run.progress_buffer + chunk).split(b"\n")
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def write_private(path: Path, text: str) -> None:
    """Write a file of ours into a job directory without following a planted symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def output_info(answer: dict[str, Any]) -> dict[str, Any]:
    """The tails of the child's stdout and stderr (when not empty) and their sizes."""
    info: dict[str, Any] = {}
    for stream in ("stdout", "stderr"):
        text = str(answer.get(stream) or "")
        if text:
            info[f"{stream}_tail"] = text[-TAIL_CHARS:]
            info[f"{stream}_bytes"] = int(answer.get(f"{stream}_bytes", len(text)))
    return info


# ----------------------------------------------------------------------------------- failures from how the child ended


def outcome_result(run: JobRun, answer: dict[str, Any]) -> EvalResult:
    """A failed result for a child that left no usable result: timeout, kill, signal or exit status."""
    limits = run.job.limits
    stderr_tail = str(answer.get("stderr") or "")[-4000:]
    where = f" during stage {run.stage}" if run.stage else ""
    if run.curve:
        where += f" (last reported step {run.curve[-1][0]})"
    signal_name = answer.get("signal")
    if answer.get("timed_out"):
        kind, message = (
            FailureKind.TIMEOUT,
            (
                f"the evaluation exceeded its {limits.timeout_s:g} s wall-clock limit{where}; "
                "the process group was killed"
            ),
        )
    elif answer.get("disk_exceeded"):
        total = 4 * limits.max_file_mb
        kind, message = FailureKind.CRASH, f"the candidate wrote more than {total} MB of files{where}; it was killed"
    elif answer.get("killed"):
        kind, message = FailureKind.CRASH, f"the evaluation was stopped on request{where}"
    elif signal_name == "SIGKILL":
        kind, message = (
            FailureKind.OOM,
            (
                f"the candidate process was killed with SIGKILL{where}, most likely by the kernel for running out of "
                f"memory (peak resident memory {float(answer.get('max_rss_mb', 0.0)):.0f} MB)"
            ),
        )
    elif signal_name == "SIGXFSZ":
        kind, message = (
            FailureKind.CRASH,
            (f"the candidate wrote more than {limits.max_file_mb} MB to one file{where}; killed with SIGXFSZ"),
        )
    elif signal_name:
        meaning = _SIGNAL_MEANINGS.get(str(signal_name))
        named = f"{signal_name} ({meaning})" if meaning else str(signal_name)
        kind, message = FailureKind.CRASH, f"the candidate process died with signal {named}{where}"
        location = re.findall(r'File "candidate\.py", line (\d+)', stderr_tail)
        if location:  # faulthandler printed the stack: the first frame listed is the innermost
            message += f" at candidate.py line {location[0]}"
    else:
        status = answer.get("exit")
        kind, message = FailureKind.CRASH, f"the candidate process exited with status {status}{where} without a result"
    return EvalResult.failed(kind, message, stderr_tail, stage=run.stage)


# ----------------------------------------------------------------------------------- one-off use


def evaluate(job: EvalJob, work_dir: Path | None = None, *, use_bwrap: bool | Literal["auto"] = "auto") -> EvalResult:
    """Evaluate one job in a fresh sandbox (`nasloop eval`); `work_dir` defaults to a temporary directory."""
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nasloop-eval-")))
        sandbox = stack.enter_context(Sandbox(job.dataset, work_dir=work_dir, use_bwrap=use_bwrap))
        return sandbox.run(job)
