"""The run directory: where a run keeps its store, its resolved config and files for people.

```
RUN_DIR/
  run.sqlite            the run store (the source of truth)
  run.lock              held (flock) by the one process writing the run; says its pid
  config.yaml           the resolved config the run was started with
  candidates/0007.py    each candidate's code, for people (written after the store commit)
  jobs/                 sandbox working directories (scratch; safe to delete)
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from nasloop.errors import NasloopError


class RunInUse(NasloopError, RuntimeError):
    """Another process is writing the run (a search, resume or final training): a run has one writer."""


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory."""

    root: Path

    @property
    def store_path(self) -> Path:
        return self.root / "run.sqlite"

    @property
    def lock_path(self) -> Path:
        return self.root / "run.lock"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def candidates_dir(self) -> Path:
        return self.root / "candidates"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    def candidate_file(self, candidate_id: int) -> Path:
        return self.candidates_dir / f"{candidate_id:04d}.py"

    def exists(self) -> bool:
        return self.store_path.exists()

    def create(self) -> None:
        for path in (self.root, self.candidates_dir, self.jobs_dir):
            path.mkdir(parents=True, exist_ok=True)


@dataclass
class RunLock:
    """The run's writer lock: an exclusive `flock` on `run.lock`, held while a process writes the run.

    The kernel drops it when the process ends, however it ends, so a crashed search never leaves a run
    locked. Readers (`nasloop show`, reports) take no lock.
    """

    path: Path
    handle: IO[str] | None = field(default=None, repr=False)

    @classmethod
    def acquire(cls, run_dir: RunDir) -> RunLock:
        """Take the lock of `run_dir`; `RunInUse`, naming the holder's pid, when another writer has it."""
        import fcntl

        run_dir.root.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir.lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunInUse(
                f"the run in {run_dir.root} is being written by another process (pid {holder}), probably a "
                "search, resume or nasloop train that is still running; a run has a single writer. Wait for "
                "it to finish (or stop it), then try again."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return cls(run_dir.lock_path, handle)

    @property
    def released(self) -> bool:
        return self.handle is None

    def release(self) -> None:
        """Give the lock up. Idempotent."""
        if self.handle is not None:
            self.handle.close()  # closing the descriptor drops the flock
            self.handle = None
