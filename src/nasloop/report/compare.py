"""Several runs on one page: best-so-far curves on one axis (an ablation figure), valid rates, costs, and
the final Pareto fronts of multi-objective runs with hypervolumes computed on common bounds.

`compare_runs(runs) -> Comparison` computes; `render_comparison(comparison) -> str` writes the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from nasloop.objectives import Bounds, Objective
from nasloop.report.data import (
    EVALUATION,
    ParetoView,
    RunAnalysis,
    RunData,
    analyse_run,
    best_by_iteration,
    cumulative,
    flat_objectives,
    objective_candidates,
    pareto_view,
    run_objectives,
    unique_labels,
)
from nasloop.report.page import document, integer, number, table, text
from nasloop.report.svg import PALETTE, Chart, Series, render


@dataclass(frozen=True)
class ComparedRun:
    """One run of a comparison, with its label ('directory (strategy)') and per-iteration best score."""

    label: str
    analysis: RunAnalysis
    best: list[float | None]
    front: ParetoView | None = None

    @property
    def run(self) -> RunData:
        return self.analysis.run

    def total_tokens(self) -> int:
        return sum(role.tokens for role in self.analysis.roles)

    def llm_seconds(self) -> float:
        return sum(role.seconds for role in self.analysis.roles)

    def cumulative_tokens(self) -> list[float]:
        per_iteration = [sum(values) for values in zip(*self.analysis.costs.tokens.values(), strict=True)]
        return cumulative(per_iteration) if per_iteration else [0.0] * len(self.analysis.costs.iterations)

    def cumulative_seconds(self) -> list[float]:
        per_iteration = [sum(values) for values in zip(*self.analysis.costs.seconds.values(), strict=True)]
        return cumulative(per_iteration)


@dataclass(frozen=True)
class Comparison:
    """Runs side by side; `objectives` are those of the first multi-objective run ([] if none)."""

    runs: list[ComparedRun]
    metric: str
    objectives: list[Objective]
    notes: list[str] = field(default_factory=list)


def compare_runs(runs: Sequence[RunData], window: int = 15) -> Comparison:
    """Analyse each run; fronts of multi-objective runs share bounds taken from all compared candidates."""
    if not runs:
        raise ValueError("compare needs at least one run")
    labels = unique_labels([run.root for run in runs])
    metric = runs[0].metric
    notes = [
        f"{label} selects on {run.metric}, not {metric}: its curve shows {run.metric}."
        for label, run in zip(labels, runs, strict=True)
        if run.metric != metric
    ]
    objectives = next((run_objectives(run.config) for run in runs if run.config.objectives), [])
    bounds = _common_bounds(runs, objectives, notes) if objectives else None
    compared = [
        ComparedRun(
            label=f"{label} ({run.config.strategy})",
            analysis=analyse_run(run, window),
            best=best_by_iteration(run.candidates, run.metric),
            front=_front(label, run, objectives, bounds, notes),
        )
        for label, run in zip(labels, runs, strict=True)
    ]
    return Comparison(compared, metric, objectives, notes)


def _front(
    label: str, run: RunData, objectives: list[Objective], bounds: Bounds | None, notes: list[str]
) -> ParetoView | None:
    """The run's front on the common bounds; None (with a note) when no candidate has every objective."""
    if not objectives:
        return None
    if not objective_candidates(run.candidates, objectives):
        notes.append(f"{label} has no candidate with every objective metric ({', '.join(map(str, objectives))}).")
        return None
    return pareto_view(run.candidates, objectives, bounds)


def _common_bounds(runs: Sequence[RunData], objectives: list[Objective], notes: list[str]) -> Bounds | None:
    points = [c.metrics for run in runs for c in objective_candidates(run.candidates, objectives)]
    flat = flat_objectives(points, objectives)
    if not points or flat:
        notes.append(f"No hypervolume: {', '.join(flat) or 'no objective'} takes fewer than two values overall.")
        return None
    return Bounds.from_points(points, objectives)


# ----------------------------------------------------------------------------------------------------
# Charts
# ----------------------------------------------------------------------------------------------------


def _color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def best_chart(comparison: Comparison) -> Chart:
    """Best-so-far score after each iteration, one step line per run."""
    return Chart(
        chart_id="chart-compare-best",
        title="best so far per iteration",
        x_label="iteration",
        y_label=comparison.metric,
        series=[
            Series(run.label, list(range(1, len(run.best) + 1)), run.best, _color(index), "step", "compare-best")
            for index, run in enumerate(comparison.runs)
        ],
        height=340,
    )


def validity_chart(comparison: Comparison) -> Chart:
    return Chart(
        chart_id="chart-compare-validity",
        title="cumulative valid rate",
        x_label="evaluated candidates",
        y_label="valid rate",
        series=[
            Series(
                run.label,
                list(range(1, len(run.analysis.validity.cumulative) + 1)),
                run.analysis.validity.cumulative,
                _color(index),
                css_class="compare-validity",
            )
            for index, run in enumerate(comparison.runs)
        ],
        y_range=(0.0, 1.05),
        height=260,
    )


def cost_charts(comparison: Comparison) -> list[Chart]:
    """Cumulative LLM tokens and cumulative seconds (LLM + evaluation) per iteration, one line per run."""
    tokens = [
        Series(run.label, list(range(1, len(values) + 1)), values, _color(index), css_class="compare-tokens")
        for index, run in enumerate(comparison.runs)
        for values in [run.cumulative_tokens()]
    ]
    seconds = [
        Series(run.label, list(range(1, len(values) + 1)), values, _color(index), css_class="compare-seconds")
        for index, run in enumerate(comparison.runs)
        for values in [run.cumulative_seconds()]
    ]
    return [
        Chart("chart-compare-tokens", "LLM tokens, cumulative", "iteration", "tokens", tokens, width=560, height=260),
        Chart("chart-compare-seconds", "seconds, cumulative", "iteration", "seconds", seconds, width=560, height=260),
    ]


def fronts_chart(comparison: Comparison) -> Chart:
    """Each run's final front (points joined by a staircase); x = 2nd objective, y = 1st."""
    x_index, y_index = (1, 0) if len(comparison.objectives) > 1 else (0, 0)
    series = []
    for index, run in enumerate(comparison.runs):
        if run.front is None:
            continue
        points = sorted((values for _, values in run.front.front_points()), key=lambda v: v[x_index])
        xs, ys = [v[x_index] for v in points], [v[y_index] for v in points]
        series.append(Series(run.label, xs, ys, _color(index), "step", "compare-front-line"))
        series.append(Series(run.label, xs, ys, _color(index), "points", "compare-front-point", in_legend=False))
    names = [f"{o.metric} ({o.direction})" for o in comparison.objectives]
    return Chart("chart-compare-fronts", "final Pareto fronts", names[x_index], names[y_index], series, height=340)


# ----------------------------------------------------------------------------------------------------
# Page
# ----------------------------------------------------------------------------------------------------


def _summary_table(comparison: Comparison) -> str:
    multi = bool(comparison.objectives)
    headers = ["run", "dataset", "LLM", "candidates", "iterations", "valid rate", f"best {comparison.metric}"]
    headers += ["final HV", "front size"] if multi else []
    headers += ["LLM tokens", "LLM s", "evaluation s", "USD"]
    rows = []
    for run in comparison.runs:
        analysis = run.analysis
        rate = analysis.validity.rate
        row = [
            text(run.label),
            text(run.run.config.dataset.name),
            text(f"{run.run.config.llm.backend}:{run.run.config.llm.model}"),
            integer(len(run.run.candidates)),
            integer(analysis.iterations),
            "–" if rate is None else f"{100 * rate:.0f}%",
            number(analysis.scores.best_score),
        ]
        if multi:
            front = run.front
            final = front.hypervolume[-1] if front is not None and front.hypervolume else None
            row += [number(final), integer(len(front.front_ids)) if front else "–"]
        row += [
            integer(run.total_tokens()),
            f"{run.llm_seconds():.1f}",
            f"{analysis.costs.total_seconds(EVALUATION):.1f}",
            f"{sum(role.cost_usd for role in analysis.roles):.4f}",
        ]
        rows.append(row)
    return table(headers, rows, numeric=[False, False, False] + [True] * 10, css="compare-runs")


def render_comparison(comparison: Comparison) -> str:
    """The complete comparison page."""
    notes = "".join(f'<p class="note">{text(note)}</p>' for note in comparison.notes)
    fronts = ""
    if comparison.objectives:
        fronts = (
            "<h2>Final Pareto fronts</h2>"
            f'<p class="note">Objectives {text(", ".join(str(o) for o in comparison.objectives))}; HV on bounds '
            "common to all compared runs (reference point 1.1, fraction of the box).</p>"
            + render(fronts_chart(comparison))
        )
    cost = "".join(f"<div>{render(chart)}</div>" for chart in cost_charts(comparison))
    body = (
        f"<h1>nasloop comparison of {len(comparison.runs)} runs</h1>"
        f'<div class="subtitle">{text(" · ".join(run.label for run in comparison.runs))}</div>'
        + notes
        + _summary_table(comparison)
        + "<h2>Best so far</h2>"
        + '<p class="note">After each iteration of the budget (repairs share their iteration).</p>'
        + render(best_chart(comparison))
        + "<h2>Valid rate</h2>"
        + render(validity_chart(comparison))
        + "<h2>Cost</h2>"
        + f'<div class="grid2">{cost}</div>'
        + fronts
    )
    return document("nasloop comparison", body)
