"""PNG versions of the main figures, for papers and slides (matplotlib, the `report` extra).

matplotlib is optional: `matplotlib_missing()` says so in one sentence, and the writers are only called
when it is installed. Figures are drawn with the object-oriented API on the Agg canvas, so no display and
no global pyplot state are involved.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from nasloop.report.compare import Comparison
from nasloop.report.data import ParetoView, RunAnalysis
from nasloop.report.svg import PALETTE

MISSING_MESSAGE = "matplotlib is not installed, so no PNG plots were written (pip install 'nasloop[report]')"
_DPI = 130


def matplotlib_missing() -> str | None:
    """None when matplotlib can be imported, else the message to print."""
    return None if importlib.util.find_spec("matplotlib") is not None else MISSING_MESSAGE


def _figure(width: float, height: float, rows: int = 1, columns: int = 1, **grid: Any) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, columns, squeeze=False, **grid)


def _save(figure: Any, path: Path) -> Path:
    figure.savefig(path)
    return path


def _legend(axis: Any, location: str = "upper left") -> None:
    """A legend, when something was drawn with a label (an empty run has nothing to list). A fixed
    location, because matplotlib's "best" is slow with thousands of points."""
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=8, loc=location)


def _gapped(xs: list[int], ys: list[float | None]) -> tuple[list[float], list[float]]:
    """matplotlib draws NaN as a gap."""
    return [float(x) for x in xs], [float("nan") if y is None else y for y in ys]


def score_figure(analysis: RunAnalysis, path: Path) -> Path:
    """Score per candidate with the trend and best so far; failures in a strip underneath."""
    series = analysis.scores
    figure, axes = _figure(9, 4.6, 2, 1, sharex=True, gridspec_kw={"height_ratios": [5, 1]})
    plot, strip = axes[0][0], axes[1][0]
    scored = series.scored()
    plot.scatter([i for i, _ in scored], [s for _, s in scored], s=14, color=PALETTE[0], label="score", zorder=3)
    plot.plot(*_gapped(series.ids, series.trend), color=PALETTE[1], label=f"trend (mean of {series.window})")
    plot.step(*_gapped(series.ids, series.best), where="post", color=PALETTE[2], label="best so far")
    rho = "" if series.spearman is None else f"   Spearman ρ = {series.spearman:+.2f}"
    plot.set(ylabel=series.metric, title=f"{analysis.run.name}: {series.metric} per candidate{rho}")
    _legend(plot, "lower right")
    if not series.ids:
        plot.text(0.5, 0.5, "no candidate yet", transform=plot.transAxes, ha="center", color="#5d6770")
    plot.grid(alpha=0.3)
    rows = {"failed": (0, "x", PALETTE[3]), "pruned": (1, "^", PALETTE[4]), "duplicate": (2, "o", "#8a8a8a")}
    for name, (row, marker, color) in rows.items():
        xs = [i for i, o in zip(series.ids, series.outcomes, strict=True) if _strip_name(o) == name]
        strip.scatter(xs, [row] * len(xs), marker=marker, color=color, s=22)
    strip.set(yticks=list(range(3)), yticklabels=list(rows), ylim=(-0.7, 2.7), xlabel="candidate (evaluation order)")
    strip.invert_yaxis()
    return _save(figure, path)


def _strip_name(outcome: str) -> str:
    if outcome in ("pruned", "duplicate"):
        return outcome
    return "scored" if outcome in ("scored", "unscored") else "failed"


def validity_figure(analysis: RunAnalysis, path: Path) -> Path:
    """Valid rate over time, and failures per kind."""
    validity = analysis.validity
    figure, axes = _figure(9, 3.4, 1, 2, gridspec_kw={"width_ratios": [3, 2]})
    rate, kinds = axes[0][0], axes[0][1]
    rate.plot(validity.ids, validity.rolling, color=PALETTE[1], label=f"last {validity.window}")
    rate.plot(validity.ids, validity.cumulative, color=PALETTE[2], label="cumulative")
    rate.set(ylim=(0, 1.05), xlabel="candidate (evaluation order)", ylabel="valid rate", title="valid rate")
    _legend(rate, "lower right")
    rate.grid(alpha=0.3)
    failures = analysis.failures
    kinds.barh([f.kind for f in failures][::-1], [f.count for f in failures][::-1], color=PALETTE[3])
    kinds.set(xlabel="failed candidates", title="failure kinds")
    return _save(figure, path)


def cost_figure(analysis: RunAnalysis, path: Path) -> Path:
    """Cumulative LLM tokens per role and cumulative seconds per role and for evaluation."""
    costs = analysis.costs
    figure, axes = _figure(9, 3.4, 1, 2)
    for index, (role, values) in enumerate(costs.cumulative_tokens().items()):
        axes[0][0].plot(costs.iterations, values, color=PALETTE[index % len(PALETTE)], label=role)
    for index, (name, values) in enumerate(costs.cumulative_seconds().items()):
        axes[0][1].plot(costs.iterations, values, color=PALETTE[index % len(PALETTE)], label=name)
    axes[0][0].set(xlabel="iteration", ylabel="tokens", title="LLM tokens, cumulative")
    axes[0][1].set(xlabel="iteration", ylabel="seconds", title="seconds, cumulative")
    for axis in axes[0]:
        _legend(axis)
        axis.grid(alpha=0.3)
    return _save(figure, path)


def pareto_figure(view: ParetoView, path: Path) -> Path:
    """All candidates with the front highlighted, and hypervolume over time."""
    figure, axes = _figure(9, 3.8, 1, 2, gridspec_kw={"width_ratios": [3, 2]})
    scatter, hypervolume = axes[0][0], axes[0][1]
    x_index, y_index = (1, 0) if len(view.objectives) > 1 else (0, 0)
    scatter.scatter([v[x_index] for v in view.values], [v[y_index] for v in view.values], s=14, color="#8a8a8a")
    front = sorted((values for _, values in view.front_points()), key=lambda v: v[x_index])
    scatter.step([v[x_index] for v in front], [v[y_index] for v in front], where="post", color=PALETTE[3])
    scatter.scatter([v[x_index] for v in front], [v[y_index] for v in front], s=30, color=PALETTE[3], zorder=3)
    names = [f"{o.metric} ({o.direction})" for o in view.objectives]
    scatter.set(xlabel=names[x_index], ylabel=names[y_index], title="Pareto front")
    scatter.grid(alpha=0.3)
    if view.hypervolume is not None:
        hypervolume.step(view.hypervolume_ids, view.hypervolume, where="post", color=PALETTE[2])
    hypervolume.set(xlabel="candidate (evaluation order)", ylabel="HV (fraction of box)", title="hypervolume")
    hypervolume.grid(alpha=0.3)
    return _save(figure, path)


def write_run_plots(analysis: RunAnalysis, prefix: Path) -> list[Path]:
    """Write `<prefix>-score.png`, `-validity.png`, `-cost.png` (and `-pareto.png`); returns the paths."""
    paths = [
        score_figure(analysis, prefix.with_name(prefix.name + "-score.png")),
        validity_figure(analysis, prefix.with_name(prefix.name + "-validity.png")),
        cost_figure(analysis, prefix.with_name(prefix.name + "-cost.png")),
    ]
    if analysis.pareto is not None:
        paths.append(pareto_figure(analysis.pareto, prefix.with_name(prefix.name + "-pareto.png")))
    return paths


def write_compare_plots(comparison: Comparison, prefix: Path) -> list[Path]:
    """Write `<prefix>-best.png` (best so far of every run on one axis) and `-fronts.png` when multi-objective."""
    figure, axes = _figure(8, 4.2)
    axis = axes[0][0]
    for index, run in enumerate(comparison.runs):
        iterations = list(range(1, len(run.best) + 1))
        axis.step(*_gapped(iterations, run.best), where="post", color=PALETTE[index % len(PALETTE)], label=run.label)
    axis.set(xlabel="iteration", ylabel=comparison.metric, title="best so far")
    _legend(axis, "lower right")
    axis.grid(alpha=0.3)
    paths = [_save(figure, prefix.with_name(prefix.name + "-best.png"))]
    if comparison.objectives:
        paths.append(_fronts_figure(comparison, prefix.with_name(prefix.name + "-fronts.png")))
    return paths


def _fronts_figure(comparison: Comparison, path: Path) -> Path:
    figure, axes = _figure(8, 4.2)
    axis = axes[0][0]
    x_index, y_index = (1, 0) if len(comparison.objectives) > 1 else (0, 0)
    for index, run in enumerate(comparison.runs):
        if run.front is None:
            continue
        front = sorted((values for _, values in run.front.front_points()), key=lambda v: v[x_index])
        color = PALETTE[index % len(PALETTE)]
        axis.step([v[x_index] for v in front], [v[y_index] for v in front], where="post", color=color, label=run.label)
        axis.scatter([v[x_index] for v in front], [v[y_index] for v in front], s=20, color=color)
    names = [f"{o.metric} ({o.direction})" for o in comparison.objectives]
    axis.set(xlabel=names[x_index], ylabel=names[y_index], title="final Pareto fronts")
    _legend(axis, "lower right")
    axis.grid(alpha=0.3)
    return _save(figure, path)


def anytime_figure(
    curves: dict[str, tuple[list[int], list[float], list[float]]],
    path: Path,
    *,
    title: str,
    optimum: float | None = None,
    ylabel: str = "test accuracy of the best by validation (%)",
    from_query: int = 5,
) -> Path:
    """Best so far against queries: one line per strategy (the mean over seeds) in a band of one standard
    deviation, and the optimum as a dashed line. The vertical axis starts at the lowest band from query
    `from_query` on, so the first few random guesses do not squash the range where strategies differ."""
    figure, axes = _figure(8, 4.8)
    plot = axes[0][0]
    for index, (label, (xs, means, stds)) in enumerate(curves.items()):
        color = PALETTE[index % len(PALETTE)]
        plot.plot(xs, means, color=color, label=label)
        plot.fill_between(xs, [m - s for m, s in zip(means, stds, strict=True)],
                          [m + s for m, s in zip(means, stds, strict=True)], color=color, alpha=0.15)  # fmt: skip
    if optimum is not None:
        plot.axhline(optimum, color="#555555", linestyle="--", linewidth=1, label=f"optimum {optimum:.2f}")
    shown = [(m - s, m + s) for xs, means, stds in curves.values()
             for x, m, s in zip(xs, means, stds, strict=True) if x >= from_query]  # fmt: skip
    if shown:
        low = min(band[0] for band in shown)
        high = max([band[1] for band in shown] + ([optimum] if optimum is not None else []))
        margin = 0.05 * (high - low) or 0.5
        plot.set_ylim(low - margin, high + margin)
    plot.set_xscale("log")
    plot.set_xlabel("queries")
    plot.set_ylabel(ylabel)
    plot.set_title(title)
    _legend(plot, "lower right")
    return _save(figure, path)


def fronts_figure(
    fronts: dict[str, list[tuple[float, float]]], path: Path, *, title: str, xlabel: str, ylabel: str
) -> Path:
    """Pareto fronts as step lines of (cost, score) points, one per label (the first drawn dashed, grey:
    the reference, e.g. the true front)."""
    figure, axes = _figure(8, 5)
    plot = axes[0][0]
    for index, (label, points) in enumerate(fronts.items()):
        ordered = sorted(points)
        xs, ys = [x for x, _ in ordered], [y for _, y in ordered]
        if index == 0:
            plot.step(xs, ys, where="post", color="#555555", linestyle="--", label=label)
        else:
            color = PALETTE[(index - 1) % len(PALETTE)]
            plot.step(xs, ys, where="post", color=color, alpha=0.8)
            plot.scatter(xs, ys, s=14, color=color, label=label, zorder=3)
    plot.set_xlabel(xlabel)
    plot.set_ylabel(ylabel)
    plot.set_title(title)
    _legend(plot, "lower right")
    return _save(figure, path)
