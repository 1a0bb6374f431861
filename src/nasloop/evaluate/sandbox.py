"""The sandbox, parent side: the life of a job in a warm worker process, and the scoring of what comes back.

    with Sandbox(DatasetSpec(name="fashion-mnist"), work_dir=run_dir / "sandbox") as sandbox:
        result = sandbox.run(job, on_progress=lambda step, loss: loss > 5.0)   # True prunes

A `Sandbox` loads the dataset's splits (it alone holds the validation and test labels), writes the
label-free sandbox data to `work_dir/data`, and starts the worker `python -m nasloop.evaluate.worker`
with a scrubbed environment; under bubblewrap (`bwrap`) where it is available: no network, its own PID
namespace, a read-only file system except the jobs directory, hidden credentials. Each `run` sends one
job; the worker forks a child that runs the stages (`nasloop.evaluate.worker`; the messages are those of
`nasloop.evaluate.protocol`, the stages those of `nasloop.evaluate.stages`). Isolation is set up by
`nasloop.evaluate.isolation`; what the child leaves is read and classified by `nasloop.evaluate.outcome`.
The parent watches the child's `progress.jsonl`, may ask the worker to kill the child (pruning), reads
the child's result, and computes `val_acc` / `test_acc` itself from the returned predictions (a
candidate cannot forge its score).

Every problem a candidate causes ends as an `EvalResult` with a `Failure`, never as an exception. If
the worker stops answering (deadline + grace + `WATCHDOG_SLACK_S`) or dies, its whole process group is
killed, the job fails (`timeout` / `crash`) and the next job starts a new worker. A `Sandbox` runs one
job at a time and is not thread-safe; use one per worker thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from nasloop.candidate import EvalResult, FailureKind, State
from nasloop.data.spec import DatasetSpec
from nasloop.evaluate.isolation import (
    Isolation,
    SandboxError,
    bwrap_command,
    choose_isolation,
    label_locations,
    resolve_device,
    scrubbed_environment,
)
from nasloop.evaluate.job import EvalJob
from nasloop.evaluate.outcome import (
    PredictionError,
    outcome_result,
    output_info,
    read_child_result,
    read_new_progress,
    read_predictions,
    write_private,
)
from nasloop.evaluate.protocol import (
    RESULT_FILENAME,
    WORK_DIRNAME,
    Done,
    JobOutcome,
    Kill,
    LineReader,
    Message,
    Ready,
    Run,
    Started,
    decode,
    encode,
)
from nasloop.evaluate.worker import signal_process_group

logger = logging.getLogger("nasloop.sandbox")

ProgressCallback = Callable[[int, float], bool]

WATCHDOG_SLACK_S = 10.0
PROGRESS_POLL_S = 0.05
WORKER_START_TIMEOUT_S = 300.0
MAX_CURVE_POINTS = 20000
# Metrics only the parent may set; a child that reports them is ignored.
PARENT_METRICS = frozenset({"val_acc", "test_acc", "pruned_at_step"})


class WorkerGone(Exception):
    """The worker's stdout closed: it died."""


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

    def send(self, message: Message) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(encode(message))
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise WorkerGone(str(error)) from error

    def receive(self, timeout: float) -> Message | None:
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
        return decode(self.lines.pop(0))

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
            self.ready = isinstance(message, Ready)

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
            worker.send(Run(job.model_dump(mode="json"), str(run.job_dir), device, self.grace_s))
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

    def wait_for_answer(self, worker: WorkerProcess, run: JobRun) -> JobOutcome | tuple[FailureKind, str]:
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
                if isinstance(message, Started):
                    run.child_pid = message.pid
                elif isinstance(message, Done):
                    self.poll_progress(worker, run, final=True)
                    return message.outcome
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
                worker.send(Kill())

    def worker_lost(self, run: JobRun, kind: FailureKind, message: str) -> EvalResult:
        """Kill the worker's group and the child's (it has its own session), and fail the job."""
        if self.worker is not None:
            self.worker.kill()
        if run.child_pid is not None and self.isolation == "rlimits":
            signal_process_group(run.child_pid, signal.SIGKILL)  # under bwrap its PID namespace died with it
        text = f"{message}; the worker was restarted"
        return EvalResult.failed(kind, text, stage=run.stage, curve=list(run.curve))

    # --- turning the answer into a result

    def collect(self, run: JobRun, outcome: JobOutcome) -> EvalResult:
        """The job's result from how its child ended and the child's files."""
        if run.pruned_at_step is not None and outcome.killed:
            result = EvalResult(State.PRUNED, metrics={"pruned_at_step": float(run.pruned_at_step)})
        else:
            child = read_child_result(run.work_dir) if outcome.exit == 0 else None
            result = self.score(run, child) if child is not None else outcome_result(run, outcome)
        result.stage = result.stage or run.stage
        result.curve = list(run.curve)
        result.info.update(output_info(outcome))
        result.info["isolation"] = self.isolation
        result.info["max_rss_mb"] = float(outcome.max_rss_mb)
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


# ----------------------------------------------------------------------------------- one-off use


def evaluate(job: EvalJob, work_dir: Path | None = None, *, use_bwrap: bool | Literal["auto"] = "auto") -> EvalResult:
    """Evaluate one job in a fresh sandbox (`nasloop eval`); `work_dir` defaults to a temporary directory."""
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nasloop-eval-")))
        sandbox = stack.enter_context(Sandbox(job.dataset, work_dir=work_dir, use_bwrap=use_bwrap))
        return sandbox.run(job)
