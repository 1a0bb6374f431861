"""nasloop: LLM-driven neural architecture search for image classification on your own hardware.

The Python API mirrors the CLI::

    import nasloop
    summary = nasloop.search("examples/quickstart.yaml", budget__iterations=5)
    print(summary.best.metrics)

Every error nasloop raises on purpose is a `nasloop.NasloopError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasloop.errors import NasloopError

if TYPE_CHECKING:
    from nasloop.config import SearchConfig
    from nasloop.engine import RunSummary

__version__ = "0.1.0"


def search(
    config: SearchConfig | str | Path | None = None,
    *,
    run_dir: str | Path | None = None,
    progress: bool = True,
    **overrides: Any,
) -> RunSummary:
    """Run a search and return its summary; see `nasloop.api.search`."""
    from nasloop.api import search as run_search

    return run_search(config, run_dir=run_dir, progress=progress, **overrides)


def resume(run_dir: str | Path, *, progress: bool = True) -> RunSummary:
    """Continue a stored run until its budget is exhausted; see `nasloop.api.resume`."""
    from nasloop.api import resume as run_resume

    return run_resume(run_dir, progress=progress)


__all__ = ["NasloopError", "__version__", "resume", "search"]
