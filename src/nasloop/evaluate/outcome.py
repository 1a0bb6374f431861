"""Outcome classification: reading what a job's child left in its work directory, without trusting it,
and turning how the child ended into a failure a person (and an LLM) can act on."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nasloop.candidate import EvalResult, FailureKind
from nasloop.evaluate.protocol import MEGABYTE, PROGRESS_FILENAME, RESULT_FILENAME, JobOutcome

if TYPE_CHECKING:
    from nasloop.evaluate.sandbox import JobRun

MAX_RESULT_BYTES = 4 * MEGABYTE
TAIL_CHARS = 2000  # of stdout / stderr kept in `EvalResult.info`

_SIGNAL_MEANINGS = {
    "SIGSEGV": "segmentation fault",
    "SIGBUS": "bus error",
    "SIGILL": "illegal instruction",
    "SIGFPE": "arithmetic error",
    "SIGABRT": "aborted",
}


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


def output_info(outcome: JobOutcome) -> dict[str, Any]:
    """The tails of the child's stdout and stderr (when not empty) and their sizes."""
    info: dict[str, Any] = {}
    for stream, text, size in (("stdout", outcome.stdout, outcome.stdout_bytes),
                               ("stderr", outcome.stderr, outcome.stderr_bytes)):  # fmt: skip
        if text:
            info[f"{stream}_tail"] = text[-TAIL_CHARS:]
            info[f"{stream}_bytes"] = size or len(text)
    return info


# ----------------------------------------------------------------------------------- failures from how the child ended


def outcome_result(run: JobRun, outcome: JobOutcome) -> EvalResult:
    """A failed result for a child that left no usable result: timeout, kill, signal or exit status."""
    limits = run.job.limits
    stderr_tail = outcome.stderr[-4000:]
    where = f" during stage {run.stage}" if run.stage else ""
    if run.curve:
        where += f" (last reported step {run.curve[-1][0]})"
    signal_name = outcome.signal
    if outcome.timed_out:
        kind, message = (
            FailureKind.TIMEOUT,
            (
                f"the evaluation exceeded its {limits.timeout_s:g} s wall-clock limit{where}; "
                "the process group was killed"
            ),
        )
    elif outcome.disk_exceeded:
        total = 4 * limits.max_file_mb
        kind, message = FailureKind.CRASH, f"the candidate wrote more than {total} MB of files{where}; it was killed"
    elif outcome.killed:
        kind, message = FailureKind.CRASH, f"the evaluation was stopped on request{where}"
    elif signal_name == "SIGKILL":
        kind, message = (
            FailureKind.OOM,
            (
                f"the candidate process was killed with SIGKILL{where}, most likely by the kernel for running out of "
                f"memory (peak resident memory {outcome.max_rss_mb:.0f} MB)"
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
        status = outcome.exit
        kind, message = FailureKind.CRASH, f"the candidate process exited with status {status}{where} without a result"
    return EvalResult.failed(kind, message, stderr_tail, stage=run.stage)


__all__ = [
    "PredictionError",
    "open_regular",
    "outcome_result",
    "output_info",
    "read_child_result",
    "read_new_progress",
    "read_predictions",
    "write_private",
]
