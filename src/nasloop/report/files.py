"""Writing reports to disk: the HTML page (replaced atomically, so a browser never reads half a file) and
the PNG plots next to it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nasloop.report.compare import compare_runs, render_comparison
from nasloop.report.data import analyse_run, load_run
from nasloop.report.html import render_run_report


@dataclass(frozen=True)
class ReportFiles:
    """What a report call wrote: the HTML page, the PNGs, and why PNGs were skipped (None if they were not)."""

    html: Path
    pngs: list[Path] = field(default_factory=list)
    png_skipped: str | None = None


def write_atomically(path: Path, content: str) -> None:
    """Write `content` to `path` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(content)
        os.chmod(temporary, 0o644)  # mkstemp creates it private; a report is meant to be shared
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _png_prefix(html: Path) -> Path:
    return html.with_name(html.stem)


def write_report(
    run_dir: Path,
    output: Path | None = None,
    *,
    window: int = 15,
    pngs: bool = True,
    refresh_s: float | None = None,
) -> ReportFiles:
    """Write the HTML report of the run in `run_dir` (default `RUN_DIR/report.html`) and its PNG plots
    (`<name>-score.png`, ...) next to it.

    Raises FileNotFoundError when `run_dir` holds no run. `refresh_s` makes the page reload itself.
    """
    from nasloop.report.plots import matplotlib_missing, write_run_plots

    html = Path(output) if output is not None else Path(run_dir) / "report.html"
    analysis = analyse_run(load_run(Path(run_dir)), window)
    write_atomically(html, render_run_report(analysis, refresh_s=refresh_s))
    if not pngs:
        return ReportFiles(html)
    missing = matplotlib_missing()
    if missing is not None:
        return ReportFiles(html, png_skipped=missing)
    return ReportFiles(html, write_run_plots(analysis, _png_prefix(html)))


def write_comparison(run_dirs: Sequence[Path], output: Path, *, window: int = 15, pngs: bool = True) -> ReportFiles:
    """Write the comparison page of `run_dirs` to `output` and its PNG plots next to it."""
    from nasloop.report.plots import matplotlib_missing, write_compare_plots

    comparison = compare_runs([load_run(Path(run_dir)) for run_dir in run_dirs], window)
    write_atomically(Path(output), render_comparison(comparison))
    if not pngs:
        return ReportFiles(Path(output))
    missing = matplotlib_missing()
    if missing is not None:
        return ReportFiles(Path(output), png_skipped=missing)
    return ReportFiles(Path(output), write_compare_plots(comparison, _png_prefix(Path(output))))
