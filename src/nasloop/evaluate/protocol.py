"""The sandbox worker protocol: the typed messages both sides exchange, one JSON object per line.

    worker → parent   Ready(pid)                                  once, after start-up
    parent → worker   Run(job, job_dir, device, grace_s)
    worker → parent   Started(pid of the child)
    parent → worker   Kill()                                      optional, while a job runs
    worker → parent   Done(outcome: JobOutcome)                   how the child ended

On the wire each message is `{"kind": "<kind>", ...its fields}` (`encode` / `decode`). The files of a job
(`JOB_DIR/work/result.json`, `progress.jsonl`, prediction arrays) are named here too, since both sides
read or write them. This module imports nothing heavy: the worker loads it before torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

MEGABYTE = 1024 * 1024
RESULT_FILENAME = "result.json"
PROGRESS_FILENAME = "progress.jsonl"
WORK_DIRNAME = "work"


class ProtocolError(ValueError):
    """A line that is not a message of the protocol."""


@dataclass
class JobOutcome:
    """How the child ended, as the worker saw it."""

    exit: int | None = None
    signal: str | None = None
    timed_out: bool = False
    killed: bool = False
    disk_exceeded: bool = False
    max_rss_mb: float = 0.0
    wall_s: float = 0.0
    stdout: str = ""
    stderr: str = ""
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    parent_gone: bool = False


@dataclass(frozen=True)
class Ready:
    """The worker has imported torch and loaded the data."""

    kind: ClassVar[str] = "ready"
    pid: int


@dataclass(frozen=True)
class Run:
    """Run one job (`EvalJob.model_dump(mode="json")`) in `job_dir` on `device`."""

    kind: ClassVar[str] = "run"
    job: dict[str, Any]
    job_dir: str
    device: str = "cpu"
    grace_s: float = 2.0


@dataclass(frozen=True)
class Started:
    """The worker forked the job's child, `pid`."""

    kind: ClassVar[str] = "started"
    pid: int


@dataclass(frozen=True)
class Kill:
    """Stop the running job's child (pruning); while no job runs it is ignored."""

    kind: ClassVar[str] = "kill"


@dataclass(frozen=True)
class Done:
    """The job's child ended."""

    kind: ClassVar[str] = "done"
    outcome: JobOutcome = field(default_factory=JobOutcome)


Message = Ready | Run | Started | Kill | Done
_KINDS: dict[str, type[Message]] = {kind.kind: kind for kind in (Ready, Run, Started, Kill, Done)}


def encode(message: Message) -> bytes:
    """One line of the protocol."""
    return (json.dumps({"kind": message.kind, **asdict(message)}) + "\n").encode()


def decode(line: bytes | str) -> Message:
    """The message of one line; `ProtocolError` for anything else."""
    try:
        data = json.loads(line)
        kind = _KINDS[data.pop("kind")]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ProtocolError(f"not a sandbox protocol message: {str(line)[:200]!r}") from error
    if kind is Done:
        known = {item.name for item in fields(JobOutcome)}
        return Done(
            JobOutcome(**{key: value for key, value in dict(data.get("outcome") or {}).items() if key in known})
        )
    try:
        return kind(**data)
    except TypeError as error:
        raise ProtocolError(f"malformed {kind.kind} message: {error}") from error


class LineReader:
    """Splits what arrives on a file descriptor into lines (bytes, without the newline)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.closed = False

    def feed(self) -> list[bytes]:
        """Read once (the fd must be readable) and return the complete lines; EOF sets `closed`."""
        chunk = os.read(self.fd, 65536)
        if not chunk:
            self.closed = True
            return []
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        return lines


__all__ = [
    "MEGABYTE",
    "PROGRESS_FILENAME",
    "RESULT_FILENAME",
    "WORK_DIRNAME",
    "Done",
    "JobOutcome",
    "Kill",
    "LineReader",
    "Message",
    "ProtocolError",
    "Ready",
    "Run",
    "Started",
    "decode",
    "encode",
]
