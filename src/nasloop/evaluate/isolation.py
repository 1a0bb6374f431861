"""Isolation of the sandbox worker: its scrubbed environment, the bubblewrap command line (no network, its
own PID namespace, a read-only file system except the jobs directory, credentials and labels hidden), and
the choice between bubblewrap and resource limits alone."""

from __future__ import annotations

import functools
import glob
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

from nasloop.data.spec import DatasetSpec
from nasloop.errors import NasloopError

logger = logging.getLogger("nasloop.sandbox")

Isolation = Literal["bwrap", "rlimits"]

# Environment variables the worker keeps (plus every LC_*); everything else, API keys included, is dropped.
KEPT_ENVIRONMENT = (
    "PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
)  # fmt: skip
BWRAP_FLAGS = ("--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent", "--new-session")


class SandboxError(NasloopError, RuntimeError):
    """The sandbox itself failed (the worker cannot start, bubblewrap was required but is unusable).

    Never raised for anything a candidate does; that is a failed `EvalResult`.
    """


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


__all__ = [
    "Isolation",
    "SandboxError",
    "bwrap_command",
    "bwrap_problem",
    "choose_isolation",
    "directories_to_hide",
    "label_locations",
    "resolve_device",
    "scrubbed_environment",
]
