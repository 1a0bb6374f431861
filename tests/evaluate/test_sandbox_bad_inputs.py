"""Hostile and broken candidates against the real sandbox: each ends as a failure record of the right
kind, the machine stays fine, and the sandbox goes on to evaluate the next job.

Most run with the static check switched off (stages without "static"), to prove that the sandbox itself
holds; `tests/evaluate/test_static_check.py` shows that the static check alone rejects them too.
"""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nasloop.candidate import EvalResult, FailureKind, State
from nasloop.evaluate.isolation import bwrap_problem
from nasloop.evaluate.job import DatasetSpec, EvalJob, Limits
from nasloop.evaluate.sandbox import Sandbox
from nasloop.spaces.open_code import check_code

pytestmark = pytest.mark.slow

DATASET = DatasetSpec(name="digits")
SECRET = "sk-nasloop-test-secret-0123456789"
KEY_TEXT = "FAKE-PRIVATE-KEY-FOR-NASLOOP-TESTS"
GRACE_S = 1.0
NET = textwrap.dedent(
    """
    import torch
    import torch.nn as nn


    class Net(nn.Module):
        def __init__(self, in_shape, num_classes):
            super().__init__()
            self.head = nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes)

        def forward(self, x):
            return self.head(x.flatten(1))
    """
)


@pytest.fixture(scope="module", params=["auto", False], ids=["bwrap-if-usable", "rlimits-only"])
def sandbox(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A warm sandbox started with a secret in the environment and a private key in its home."""
    home = tmp_path_factory.mktemp("home")
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".ssh" / "id_ed25519").write_text(KEY_TEXT)
    saved = {name: os.environ.get(name) for name in ("OPENAI_API_KEY", "HOME")}
    os.environ.update(OPENAI_API_KEY=SECRET, HOME=str(home))
    try:
        work_dir = tmp_path_factory.mktemp("sandbox")
        with Sandbox(DATASET, work_dir=work_dir, use_bwrap=request.param, grace_s=GRACE_S) as started:
            started.ready_worker()  # timings in the tests must not include the start-up
            yield started
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run(sandbox: Sandbox, body: str, *, stages: tuple[str, ...] = ("build",), **limits: object) -> EvalResult:
    limits.setdefault("timeout_s", 20.0)
    job = EvalJob(code=textwrap.dedent(body) + NET, dataset=DATASET, stages=stages, limits=Limits(**limits))
    return sandbox.run(job)


def assert_still_works(sandbox: Sandbox) -> None:
    result = run(sandbox, "")
    assert result.state is State.COMPLETE, result.failure


def processes_working_in(directory: Path) -> list[int]:
    """Processes whose working directory is under `directory` (candidates run in their job's)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.readlink(f"{entry.path}/cwd").startswith(str(directory)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_the_isolation_is_reported(sandbox: Sandbox) -> None:
    expected = "bwrap" if sandbox_requested_bwrap(sandbox) and bwrap_problem() is None else "rlimits"
    assert sandbox.isolation == expected
    assert run(sandbox, "").info["isolation"] == expected


def sandbox_requested_bwrap(sandbox: Sandbox) -> bool:
    return "bwrap" in sandbox.worker_command()[0] or sandbox.isolation == "bwrap"


def test_an_endless_loop_times_out_and_is_killed(sandbox: Sandbox) -> None:
    started = time.monotonic()
    result = run(sandbox, "while True:\n    pass\n", timeout_s=2.0)
    elapsed = time.monotonic() - started
    assert result.failure is not None and result.failure.kind is FailureKind.TIMEOUT
    assert "2 s wall-clock limit during stage build" in result.failure.message
    assert elapsed < 2.0 + GRACE_S + 2.0
    assert_still_works(sandbox)


def test_a_loop_that_ignores_sigterm_is_killed_after_the_grace_period(sandbox: Sandbox) -> None:
    started = time.monotonic()
    body = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass\n"
    result = run(sandbox, body, timeout_s=1.0)
    elapsed = time.monotonic() - started
    assert result.failure is not None and result.failure.kind is FailureKind.TIMEOUT
    assert 1.0 + GRACE_S - 0.2 < elapsed < 1.0 + GRACE_S + 2.0


@pytest.mark.parametrize(
    "body",
    [
        "import torch\nhuge = torch.ones(30 * 1024**3, dtype=torch.uint8)\n",
        "huge = bytearray(30 * 1024**3)\n",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 1024**2))\n",
    ],
    ids=["torch", "bytearray", "gradual"],
)
def test_allocating_30_gigabytes_is_out_of_memory(sandbox: Sandbox, body: str) -> None:
    result = run(sandbox, body, memory_mb=2048)  # a forked child already maps over a gigabyte
    assert result.failure is not None and result.failure.kind is FailureKind.OOM, result.failure
    assert_still_works(sandbox)


def test_a_fork_bomb_is_contained(sandbox: Sandbox) -> None:
    body = "import os\nwhile True:\n    os.fork()\n"
    result = run(sandbox, body, timeout_s=5.0, max_processes=32)
    assert result.failure is not None and result.failure.kind in (FailureKind.CRASH, FailureKind.TIMEOUT)
    if result.failure.kind is FailureKind.CRASH:
        assert "refused to start another process" in result.failure.message
    assert processes_working_in(sandbox.jobs_dir) == []  # nothing the candidate started is left
    assert_still_works(sandbox)


def test_a_process_that_escapes_into_its_own_session_is_killed(sandbox: Sandbox) -> None:
    body = textwrap.dedent(
        """
        import os
        import time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(600)
            os._exit(0)
        """
    )
    result = run(sandbox, body)
    assert result.state is State.COMPLETE, result.failure
    assert processes_working_in(sandbox.jobs_dir) == []


def test_writing_10_gigabytes_hits_the_file_size_limit(sandbox: Sandbox) -> None:
    body = "with open('big.bin', 'wb') as handle:\n    for _ in range(10 * 1024):\n        handle.write(bytes(2**20))\n"
    result = run(sandbox, body, max_file_mb=8)
    assert result.failure is not None and result.failure.kind is FailureKind.CRASH
    assert "size limit of 8 MB" in result.failure.message
    assert_still_works(sandbox)


def test_many_files_hit_the_total_disk_cap(sandbox: Sandbox) -> None:
    body = textwrap.dedent(
        """
        import time
        for index in range(10):
            with open(f"part{index}.bin", "wb") as handle:
                handle.write(bytes(8 * 1024**2))
        time.sleep(30)
        """
    )
    result = run(sandbox, body, max_file_mb=8, timeout_s=20.0)
    assert result.failure is not None and result.failure.kind is FailureKind.CRASH
    assert "more than 32 MB of files" in result.failure.message


def test_printing_megabytes_is_capped_and_the_evaluation_completes(sandbox: Sandbox) -> None:
    body = "for index in range(200_000):\n    print('x' * 60, index)\nprint('the end')\n"
    result = run(sandbox, body, max_output_kb=64)
    assert result.state is State.COMPLETE, result.failure
    assert result.info["stdout_bytes"] > 10_000_000
    assert result.info["stdout_tail"].endswith("the end\n")
    kept = (Path(sandbox.jobs_dir) / sorted(os.listdir(sandbox.jobs_dir))[-1] / "result.json").read_text()
    assert len(kept) < 200_000  # the kept output is head and tail, not the megabytes


def test_sys_exit_is_a_crash(sandbox: Sandbox) -> None:
    result = run(sandbox, "import sys\nsys.exit(0)\n")
    assert result.failure is not None and result.failure.kind is FailureKind.CRASH
    assert "candidate called sys.exit(0)" in result.failure.message


def test_os_exit_is_a_crash(sandbox: Sandbox) -> None:
    result = run(sandbox, "import os\nos._exit(3)\n")
    assert result.failure is not None and result.failure.kind is FailureKind.CRASH
    assert "exited with status 3" in result.failure.message


def test_a_segfault_is_a_crash_naming_the_signal_and_line(sandbox: Sandbox) -> None:
    result = run(sandbox, "import ctypes\nctypes.string_at(0)\n")
    assert result.failure is not None and result.failure.kind is FailureKind.CRASH
    assert "SIGSEGV (segmentation fault)" in result.failure.message
    assert "candidate.py line 2" in result.failure.message
    assert_still_works(sandbox)


def test_there_is_no_network_under_bubblewrap(sandbox: Sandbox) -> None:
    if sandbox.isolation != "bwrap":
        pytest.skip("network isolation needs bubblewrap")
    body = "import socket\nsocket.socket().connect(('1.1.1.1', 80))\n"
    result = run(sandbox, body)
    assert result.failure is not None and result.failure.kind is FailureKind.BUILD
    assert "Network is unreachable" in result.failure.message


def test_writing_outside_the_work_directory_fails(sandbox: Sandbox) -> None:
    targets = [str(Path(sandbox.work_dir) / "planted.txt"), str(Path(sandbox.data_dir) / "planted.txt"), "/etc/planted"]
    body = textwrap.dedent(
        f"""
        for target in {targets!r}:
            try:
                with open(target, "w") as handle:
                    handle.write("x")
                print("WROTE", target)
            except OSError as error:
                print("refused", target, type(error).__name__)
        """
    )
    result = run(sandbox, body)
    assert result.state is State.COMPLETE, result.failure
    assert "WROTE" not in result.info["stdout_tail"]
    assert not any(Path(target).exists() for target in targets)


def test_secrets_stay_outside(sandbox: Sandbox) -> None:
    body = textwrap.dedent(
        f"""
        import glob
        import os
        seen = [os.environ.get("OPENAI_API_KEY") or ""]
        for path in glob.glob("/proc/*/environ") + glob.glob("/proc/*/cmdline"):
            try:
                with open(path, "rb") as handle:
                    seen.append(handle.read().decode(errors="replace"))
            except OSError:
                pass
        for path in [{str(Path.home() / ".ssh" / "id_ed25519")!r}, os.path.expanduser("~/.ssh/id_ed25519")]:
            try:
                with open(path) as handle:
                    seen.append(handle.read())
            except OSError:
                pass
        print("checked", len(seen), "sources")
        print("\\n".join(seen))
        """
    )
    result = run(sandbox, body, max_output_kb=4096)
    assert result.state is State.COMPLETE, result.failure
    output = result.info["stdout_tail"]
    assert "checked" in result.info.get("stdout_tail", "") or result.info["stdout_bytes"] > 0
    job_result = (Path(sandbox.jobs_dir) / sorted(os.listdir(sandbox.jobs_dir))[-1] / "result.json").read_text()
    for text in (output, job_result):
        assert SECRET not in text and KEY_TEXT not in text


def test_forging_the_score_changes_nothing(sandbox: Sandbox) -> None:
    body = textwrap.dedent(
        """
        import sys
        import torch
        registry = sys.modules["nasloop.registry"]
        train = sys.modules["nasloop.evaluate.train"]
        stage = registry.stages._items["train"]
        original = stage.function

        def forged(context):
            original(context)
            context.metrics.update(val_acc=1.0, test_acc=1.0, pruned_at_step=1.0)

        registry.stages._items["train"] = type(stage)("train", stage.order, forged, stage.needs_model)
        train.accuracy = lambda *args, **kwargs: 1.0
        torch.Tensor.argmax = lambda self, *args, **kwargs: torch.zeros(self.shape[0], dtype=torch.int64)
        """
    )
    assert check_code(textwrap.dedent(body) + NET) is not None  # the static check alone rejects it
    result = run(sandbox, body, stages=("build", "train"))
    assert result.state is State.COMPLETE, result.failure
    val_y, test_y = sandbox.splits.val_y, sandbox.splits.test_y
    assert result.metrics["val_acc"] == pytest.approx(float((val_y == 0).float().mean()))
    assert result.metrics["test_acc"] == pytest.approx(float((test_y == 0).float().mean()))
    assert "pruned_at_step" not in result.metrics


def test_the_static_check_rejects_before_anything_runs(sandbox: Sandbox) -> None:
    started = time.monotonic()
    result = run(sandbox, "import os\nos.fork()\n", stages=("static", "build"))
    assert result.failure is not None and result.failure.kind is FailureKind.IMPORT
    assert result.stage == "static" and time.monotonic() - started < 5.0


def test_a_dead_worker_fails_the_job_and_is_restarted(sandbox: Sandbox) -> None:
    worker = sandbox.worker
    assert worker is not None
    threading.Timer(1.5, lambda: os.killpg(worker.process.pid, signal.SIGKILL)).start()
    result = run(sandbox, "while True:\n    pass\n", timeout_s=30.0)
    assert result.failure is not None and result.failure.kind is FailureKind.CRASH
    assert "worker died" in result.failure.message
    assert_still_works(sandbox)
    assert sandbox.worker is not worker


def worker_host_pid(sandbox: Sandbox) -> int:
    """The worker's pid as this machine sees it (under bubblewrap it sits below bwrap's processes)."""
    assert sandbox.worker is not None
    pending = [sandbox.worker.process.pid]
    while pending:
        pid = pending.pop()
        try:
            if (
                b"nasloop.evaluate.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
                and b"bwrap" not in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            ):
                return pid
            for task in os.listdir(f"/proc/{pid}/task"):
                pending += [int(child) for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    raise AssertionError("worker process not found")


def test_a_silent_worker_is_killed_by_the_parent_watchdog(sandbox: Sandbox) -> None:
    assert_still_works(sandbox)
    old_worker = sandbox.worker
    stopped = worker_host_pid(sandbox)
    sandbox.watchdog_slack_s = 1.0
    try:
        threading.Timer(0.5, lambda: os.kill(stopped, signal.SIGSTOP)).start()
        started = time.monotonic()
        result = run(sandbox, "import time\ntime.sleep(30)\n", timeout_s=1.0)
        elapsed = time.monotonic() - started
    finally:
        sandbox.watchdog_slack_s = 10.0
    assert result.failure is not None and result.failure.kind is FailureKind.TIMEOUT
    assert "did not answer" in result.failure.message
    assert elapsed < 1.0 + GRACE_S + 1.0 + 3.0
    assert_still_works(sandbox)
    assert sandbox.worker is not old_worker


def test_work_directories_are_removed_and_results_kept(sandbox: Sandbox) -> None:
    result = run(sandbox, "")
    assert result.state is State.COMPLETE
    job_dir = Path(sandbox.jobs_dir) / sorted(os.listdir(sandbox.jobs_dir))[-1]
    assert (job_dir / "result.json").exists() and not (job_dir / "work").exists()
