"""The warm sandbox worker ("zygote") and the child it forks for each candidate.

`python -m nasloop.evaluate.worker --data DIR` is started by `nasloop.evaluate.sandbox.Sandbox` with a
scrubbed environment (under bubblewrap where available). It imports torch and loads the label-free
sandbox data once, then serves jobs one at a time over stdin/stdout with the typed messages of
`nasloop.evaluate.protocol` (Ready; then per job Run, Started, optionally Kill, Done).

For each job the worker forks a child (`os.fork`: the child starts with torch imported and the data
loaded, so a job costs milliseconds of overhead instead of seconds). The child makes itself a new
session, redirects its output into pipes, lowers its resource limits, drops root privileges to
`nobody`, runs the stages (`nasloop.evaluate.stages`) and writes into its work directory
`JOB_DIR/work`: `result.json`, one `.npy` per prediction array, and `progress.jsonl` (`{"stage": ...}`
and `{"step": s, "loss": l}` lines, flushed as they happen, which the parent watches).

The worker keeps the head and tail of the child's stdout and stderr, enforces the wall-clock deadline
(SIGTERM to the child's process group, a grace period, then SIGKILL), the total size of the work
directory, and after each job kills whatever the child left behind. It must not run tensor operations
itself: torch's intra-op thread pool must not exist when it forks, or children can deadlock.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import json
import os
import resource
import selectors
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasloop.evaluate.protocol import (
    MEGABYTE,
    PROGRESS_FILENAME,
    RESULT_FILENAME,
    WORK_DIRNAME,
    Done,
    JobOutcome,
    Kill,
    LineReader,
    Message,
    ProtocolError,
    Ready,
    Run,
    Started,
    decode,
    encode,
)

NOBODY = 65534
DISK_POLL_S = 1.0
CLEAN_UP_TIMEOUT_S = 10.0
DISK_CAP_FILES = 4  # the work directory may hold this many maximal files in total
# Leave these to the candidate's threads: they count as processes for RLIMIT_NPROC.
THREAD_ALLOWANCE = 16

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


# ----------------------------------------------------------------------------------- small utilities


def _prctl(option: int, value: int) -> None:
    """Call prctl(2); silently a no-op where libc has no prctl (not Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class HeadTail:
    """Keeps the first and the last `limit // 2` bytes of a stream, and how many bytes it had."""

    def __init__(self, limit: int) -> None:
        self.half = max(1, limit // 2)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            del self.tail[: max(0, len(self.tail) - self.half)]

    def text(self) -> str:
        dropped = self.total - len(self.head) - len(self.tail)
        middle = f"\n[... {dropped} bytes of output dropped ...]\n".encode() if dropped else b""
        return bytes(self.head + middle + self.tail).decode("utf-8", errors="replace")


def directory_bytes(path: Path, limit_entries: int = 10000) -> int:
    """Total size of the regular files under `path` (stops counting after `limit_entries` entries)."""
    total, seen = 0, 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            seen += 1
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
            if seen >= limit_entries:
                return total
    return total


def count_tasks_of_user(uid: int) -> int:
    """How many processes and threads the user `uid` has now (they count towards RLIMIT_NPROC)."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            count += int(fields.get("Threads", "1"))
    return count


def child_processes(pid: int) -> list[int]:
    """The direct children of process `pid` (of all its threads)."""
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for task in tasks:
        try:
            children += [int(child) for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return children


# ----------------------------------------------------------------------------------- the child


@dataclass
class ChildPlan:
    """What the forked child needs to set itself up."""

    job: Any  # EvalJob
    work_dir: Path
    device: str
    threads: int
    stdout_fd: int
    stderr_fd: int
    close_fds: list[int] = field(default_factory=list)
    drop_to_nobody: bool = False
    process_limit: int = 64


def run_child(plan: ChildPlan, data: Any) -> None:
    """The forked child: isolate, limit, run the stages, write the result, `os._exit`. Never returns."""
    code = 70
    child_pid = os.getpid()
    try:
        isolate_child(plan)
        write_result(Path("."), evaluate_in_child(plan, data), child_pid)
        code = 0
    except BaseException:  # setup failed or the result could not be written: say so on stderr
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed or broken stream must not stop the exit
                stream.flush()
        os._exit(code)


def isolate_child(plan: ChildPlan) -> None:
    """New session, output into the pipes, no stdin, resource limits, no root, own work directory."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(plan.stdout_fd, 1)
    os.dup2(plan.stderr_fd, 2)
    for fd in {null, plan.stdout_fd, plan.stderr_fd, *plan.close_fds}:
        if fd > 2:
            os.close(fd)
    sys.stdin = open(os.devnull)  # noqa: SIM115  # the worker's buffered stdin must not leak in
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)
    os.chdir(plan.work_dir)
    set_limits(plan)
    if plan.drop_to_nobody:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # after the uid change, which clears it
    os.environ["HOME"] = os.environ["TMPDIR"] = str(plan.work_dir)
    import faulthandler

    faulthandler.enable(file=sys.stderr)  # a segfault prints where it happened


def set_limits(plan: ChildPlan) -> None:
    """Address space (or data size on CUDA, whose driver reserves huge address ranges), file size,
    processes, no core files. Soft and hard limits alike, so the candidate cannot raise them."""
    limits = plan.job.limits
    memory = limits.memory_mb * MEGABYTE
    memory_limit = resource.RLIMIT_DATA if plan.device.startswith("cuda") else resource.RLIMIT_AS
    for limit, value in (
        (memory_limit, memory),
        (resource.RLIMIT_FSIZE, limits.max_file_mb * MEGABYTE),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NPROC, plan.process_limit),
    ):
        resource.setrlimit(limit, (value, value))


def evaluate_in_child(plan: ChildPlan, data: Any) -> tuple[Any, dict[str, Any]]:
    """Run the stages; the result and the prediction arrays."""
    import torch

    from nasloop.evaluate.stages import StageContext, run_stages

    torch.set_num_threads(plan.threads)
    # Relative paths: the work directory is the current one, and its parents may be closed to `nobody`.
    progress = ProgressWriter(Path(PROGRESS_FILENAME))
    context = StageContext(
        job=plan.job, data=data, device=torch.device(plan.device), on_step=progress.step, on_stage=progress.stage
    )
    context.info["threads"] = plan.threads
    return run_stages(context), context.predictions


class ProgressWriter:
    """Appends progress lines to a file and flushes each one, so the parent sees them at once.

    Only the process that created it writes: a candidate that forks must not interleave lines.
    """

    def __init__(self, path: Path) -> None:
        self.pid = os.getpid()
        self.file = open(path, "a", buffering=1)  # noqa: SIM115  # open for the child's lifetime

    def write(self, record: dict[str, Any]) -> None:
        if os.getpid() == self.pid:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def stage(self, name: str) -> None:
        self.write({"stage": name, "t": time.monotonic()})

    def step(self, step: int, loss: float) -> None:
        self.write({"step": int(step), "loss": float(loss)})


def write_result(work_dir: Path, outcome: tuple[Any, dict[str, Any]], child_pid: int) -> None:
    """`result.json` and one `.npy` per prediction array, written only by the original child process
    (a forked copy of it that returns here exits quietly)."""
    import numpy as np

    result, predictions = outcome
    if os.getpid() != child_pid:
        os._exit(0)  # a fork of the child reached the end of the stages; only the child reports
    for name, array in predictions.items():
        np.save(work_dir / f"{name}.npy", np.asarray(array), allow_pickle=False)
    payload = result.to_dict()
    payload.pop("curve", None)
    temporary = work_dir / (RESULT_FILENAME + ".tmp")
    temporary.write_text(json.dumps(payload, default=str))
    os.replace(temporary, work_dir / RESULT_FILENAME)  # the parent sees a complete file or none


# ----------------------------------------------------------------------------------- the worker


class Worker:
    """The zygote: holds the data, forks one child per job and watches it."""

    def __init__(self, data: Any, protocol_out: int) -> None:
        self.data = data
        self.protocol_out = protocol_out
        self.commands = LineReader(0)
        self.pending: list[bytes] = []

    def send(self, message: Message) -> None:
        view = memoryview(encode(message))
        while view:
            written = os.write(self.protocol_out, view)
            view = view[written:]

    def next_command(self) -> Message | None:
        """The next command from the parent (blocking); None when the parent closed the pipe."""
        while not self.pending:
            if self.commands.closed:
                return None
            self.pending += [line for line in self.commands.feed() if line.strip()]
        return decode(self.pending.pop(0))

    def serve(self) -> None:
        self.send(Ready(os.getpid()))
        while (command := self.next_command()) is not None:
            if isinstance(command, Run):
                outcome = self.run_job(command)
                self.send(Done(outcome))
                if outcome.parent_gone:
                    return
            # Kill while idle: the job it was meant for has already ended; nothing to do.

    def run_job(self, command: Run) -> JobOutcome:
        from nasloop.evaluate.job import EvalJob

        job = EvalJob.model_validate(command.job)
        work_dir = Path(command.job_dir) / WORK_DIRNAME
        work_dir.mkdir(mode=0o755)
        drop = os.geteuid() == 0
        if drop:
            os.chown(work_dir, NOBODY, NOBODY)
        threads = job.recipe.threads or len(os.sched_getaffinity(0))
        process_limit = job.limits.max_processes + threads + THREAD_ALLOWANCE
        process_limit += count_tasks_of_user(NOBODY if drop else os.getuid())
        stdout_read, stdout_write = os.pipe()
        stderr_read, stderr_write = os.pipe()
        plan = ChildPlan(
            job=job, work_dir=work_dir, device=command.device, threads=threads,
            stdout_fd=stdout_write, stderr_fd=stderr_write, close_fds=[stdout_read, stderr_read, self.protocol_out],
            drop_to_nobody=drop, process_limit=process_limit,
        )  # fmt: skip
        sys.stdout.flush()
        sys.stderr.flush()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            run_child(plan, self.data)
        os.close(stdout_write)
        os.close(stderr_write)
        self.send(Started(pid))
        watch = ChildWatch(self, pid, job, work_dir, command.grace_s)
        outcome = watch.run(stdout_read, stderr_read)
        outcome.wall_s = time.monotonic() - started
        return outcome


class ChildWatch:
    """Waits for one child while draining its output, enforcing its deadline and disk cap, and
    listening for a kill command; afterwards kills whatever the child left behind."""

    def __init__(self, worker: Worker, pid: int, job: Any, work_dir: Path, grace_s: float) -> None:
        self.worker = worker
        self.pid = pid
        self.work_dir = work_dir
        self.grace_s = grace_s
        self.deadline = time.monotonic() + job.limits.timeout_s
        self.disk_cap = DISK_CAP_FILES * job.limits.max_file_mb * MEGABYTE
        self.outcome = JobOutcome()
        cap = job.limits.max_output_kb * 1024
        self.streams = {"stdout": HeadTail(cap), "stderr": HeadTail(cap)}
        self.terminating_since: float | None = None
        self.status: tuple[int, Any] | None = None

    def run(self, stdout_read: int, stderr_read: int) -> JobOutcome:
        pidfd = os.pidfd_open(self.pid)
        selector = selectors.DefaultSelector()
        selector.register(pidfd, selectors.EVENT_READ, "exit")
        selector.register(stdout_read, selectors.EVENT_READ, "stdout")
        selector.register(stderr_read, selectors.EVENT_READ, "stderr")
        selector.register(0, selectors.EVENT_READ, "command")
        next_disk_check = time.monotonic() + DISK_POLL_S
        try:
            while self.status is None:
                now = time.monotonic()
                self.enforce_deadlines(now)
                if now >= next_disk_check:
                    self.check_disk()
                    next_disk_check = now + DISK_POLL_S
                timeout = max(0.0, min(next_disk_check, self.next_deadline()) - time.monotonic())
                for key, _ in selector.select(timeout):
                    self.handle(key, selector)
        finally:
            os.close(pidfd)
        self.clean_up()
        self.drain(selector, until=time.monotonic() + 0.5)
        selector.close()
        for fd in (stdout_read, stderr_read):
            os.close(fd)
        return self.finish()

    def next_deadline(self) -> float:
        if self.terminating_since is not None:
            return self.terminating_since + self.grace_s
        return self.deadline

    def enforce_deadlines(self, now: float) -> None:
        if self.terminating_since is None and now >= self.deadline:
            self.outcome.timed_out = True
            self.terminate()
        elif self.terminating_since is not None and now >= self.terminating_since + self.grace_s:
            self.signal_group(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM to the child's process group; SIGKILL follows after the grace period."""
        if self.terminating_since is None:
            self.terminating_since = time.monotonic()
            self.signal_group(signal.SIGTERM)

    def signal_group(self, number: int) -> None:
        signal_process_group(self.pid, number)

    def check_disk(self) -> None:
        if directory_bytes(self.work_dir) > self.disk_cap:
            self.outcome.disk_exceeded = True
            self.terminate()

    def handle(self, key: selectors.SelectorKey, selector: selectors.BaseSelector) -> None:
        if key.data == "exit":
            _, status, usage = os.wait4(self.pid, 0)
            self.status = (status, usage)
            selector.unregister(key.fd)
        elif key.data == "command":
            self.handle_command(selector)
        else:
            self.read_stream(key, selector)

    def handle_command(self, selector: selectors.BaseSelector) -> None:
        for line in self.worker.commands.feed():
            if line.strip() and self._is_kill(line):
                self.outcome.killed = True
                self.terminate()
        if self.worker.commands.closed:  # the parent is gone: stop the child and then ourselves
            self.outcome.parent_gone = True
            selector.unregister(0)
            self.terminate()

    @staticmethod
    def _is_kill(line: bytes) -> bool:
        try:
            return isinstance(decode(line), Kill)
        except ProtocolError:
            return False

    def read_stream(self, key: selectors.SelectorKey, selector: selectors.BaseSelector) -> None:
        chunk = os.read(key.fd, 65536)
        if chunk:
            self.streams[key.data].add(chunk)
        else:
            selector.unregister(key.fd)

    def drain(self, selector: selectors.BaseSelector, until: float) -> None:
        """Read what is left in the output pipes (their writers are dead now)."""
        while time.monotonic() < until:
            keys = [key for key in selector.get_map().values() if key.data in self.streams]
            if not keys:
                return
            for key, _ in selector.select(max(0.0, until - time.monotonic())):
                if key.data in self.streams:
                    self.read_stream(key, selector)

    def clean_up(self) -> None:
        """Kill the child's process group and every orphan it left (they are re-parented to us, the
        subreaper), until none is left: a process still tearing down a large address space, or one
        not yet re-parented because its parent is still dying, must not outlive the job."""
        deadline = time.monotonic() + CLEAN_UP_TIMEOUT_S
        while True:
            self.signal_group(signal.SIGKILL)
            orphans = child_processes(os.getpid())
            for orphan in orphans:
                signal_process_group(orphan, signal.SIGKILL)
            reap_all()
            if (not orphans and not process_group_exists(self.pid)) or time.monotonic() > deadline:
                return
            time.sleep(0.005)

    def finish(self) -> JobOutcome:
        outcome = self.outcome
        assert self.status is not None
        status, usage = self.status
        if os.WIFSIGNALED(status):
            outcome.signal = signal_name(os.WTERMSIG(status))
        else:
            outcome.exit = os.WEXITSTATUS(status)
        outcome.max_rss_mb = usage.ru_maxrss / 1024.0
        outcome.stdout, outcome.stdout_bytes = self.streams["stdout"].text(), self.streams["stdout"].total
        outcome.stderr, outcome.stderr_bytes = self.streams["stderr"].text(), self.streams["stderr"].total
        return outcome


def signal_process_group(pid: int, number: int) -> None:
    """Send `number` to the process group led by `pid` and to `pid` itself (it may have left the group)."""
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, number)


def process_group_exists(pgid: int) -> bool:
    """Whether any process (a zombie included) is still in the process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_all() -> None:
    """Collect every exited child, so none stays a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


# ----------------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Start the worker: keep the protocol on a private fd, import torch, load the data, serve."""
    parser = argparse.ArgumentParser(prog="python -m nasloop.evaluate.worker", description=__doc__)
    parser.add_argument("--data", required=True, type=Path, help="directory written by save_sandbox_data")
    args = parser.parse_args(argv)
    protocol_out = os.dup(1)
    os.dup2(2, 1)  # stray prints of libraries go to the log, not into the protocol
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the parent, even without bubblewrap
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # orphans of a candidate come back to us to be killed
    data = load_and_warm(args.data)
    # Keep the collector away from everything loaded so far: a child's collection would otherwise touch
    # (and so copy) every page of the worker's heap.
    gc.collect()
    gc.freeze()
    Worker(data, protocol_out).serve()
    return 0


# Imported by the worker before it forks, so that children start with them loaded (and need not read
# files they may not be allowed to read as `nobody`). The optimizer imports torch._dynamo, which is slow.
WARM_MODULES = (
    "collections", "dataclasses", "functools", "itertools", "math", "typing", "numpy", "torch", "torch.nn",
    "torch.nn.functional", "torch.nn.init", "torch.optim", "torch._dynamo", "nasloop.evaluate.stages",
    "nasloop.evaluate.train", "nasloop.hardware", "nasloop.evaluate.proxies",
    "nasloop.spaces.open_code",
)  # fmt: skip


def load_and_warm(data_dir: Path) -> Any:
    """Import everything a job needs (so children do not pay for it) and load the data. No tensor ops."""
    for name in WARM_MODULES:
        importlib.import_module(name)
    with contextlib.suppress(ImportError):
        importlib.import_module("einops")
    from nasloop.data.splits import load_sandbox_data

    return load_sandbox_data(data_dir)


if __name__ == "__main__":
    sys.exit(main())
