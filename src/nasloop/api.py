"""The Python API: thin wrappers over the same engine the CLI uses."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nasloop.config import SearchConfig, load_config
from nasloop.engine import RunSummary, Search


def default_run_dir(config: SearchConfig) -> Path:
    """`runs/<strategy>-<dataset>-<timestamp>` under the current directory."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.strategy}-{config.dataset.name}-{stamp}"


def search(
    config: SearchConfig | str | Path | None = None,
    *,
    run_dir: str | Path | None = None,
    progress: bool = True,
    **overrides: Any,
) -> RunSummary:
    """Run a search and return its summary.

    `config` is a `SearchConfig`, a YAML file, or None for the defaults; `overrides` are dotted keys
    (`budget__iterations=5` or `{"budget.iterations": 5}` through `**`), applied on top.
    """
    dotted = {key.replace("__", "."): value for key, value in overrides.items()}
    if isinstance(config, SearchConfig):
        base = config.model_dump(mode="json")
        for key, value in dotted.items():
            node = base
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        resolved = SearchConfig.model_validate(base)
    else:
        resolved = load_config(Path(config) if config else None, dotted)
    target = Path(run_dir or resolved.run_dir or default_run_dir(resolved))
    return Search.start(resolved, target, progress=progress).run()


def resume(run_dir: str | Path, *, progress: bool = True) -> RunSummary:
    """Continue a stored run until its budget is exhausted."""
    return Search.resume(Path(run_dir), progress=progress).run()
