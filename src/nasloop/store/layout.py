"""The run directory: where a run keeps its store, its resolved config and files for people.

```
RUN_DIR/
  run.sqlite            the run store (the source of truth)
  config.yaml           the resolved config the run was started with
  candidates/0007.py    each candidate's code, for people (written after the store commit)
  jobs/                 sandbox working directories (scratch; safe to delete)
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory."""

    root: Path

    @property
    def store_path(self) -> Path:
        return self.root / "run.sqlite"

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
