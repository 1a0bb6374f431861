"""The HTML report of one run: `render_run_report(analysis) -> str`, one self-contained page.

Sections: summary cards; search progress (score per candidate, failures in a strip, smoothed trend, best so
far, Spearman ρ); validity (valid rate over time, failure taxonomy); cost (tokens and seconds per role and
iteration); the Pareto front and hypervolume over time for multi-objective runs; lineage; a sortable table
of candidates whose rows open onto code, the diff against the first parent and the LLM exchanges; the
strategy's stored artifacts; the resolved config.
"""

from __future__ import annotations

from collections.abc import Sequence

from nasloop.report.candidates import candidates_section, link, preview
from nasloop.report.data import EVALUATION, ParetoView, RunAnalysis
from nasloop.report.page import card, document, integer, number, table, text
from nasloop.report.svg import GREY, PALETTE, Chart, Series, Strip, render
from nasloop.store import CandidateRecord

SCORE_COLOR, TREND_COLOR, BEST_COLOR, FAILURE_COLOR, PRUNED_COLOR = PALETTE[:5]
CANDIDATE_AXIS = "candidate (evaluation order)"


# ----------------------------------------------------------------------------------------------------
# Charts
# ----------------------------------------------------------------------------------------------------


def score_chart(analysis: RunAnalysis) -> Chart:
    """Scores as points, failures / pruned / duplicates as strip markers, the trend and the best so far."""
    series = analysis.scores
    by_id = {c.id: c for c in analysis.run.candidates}
    scored = series.scored()
    strips = [
        _strip(series.ids, series.outcomes, by_id, kinds=None, label="failed", color=FAILURE_COLOR, symbol="cross"),
    ]
    optional = (("pruned", PRUNED_COLOR, "triangle"), ("duplicate", GREY, "ring"), ("unscored", GREY, "cross"))
    for name, color, symbol in optional:
        strip = _strip(series.ids, series.outcomes, by_id, kinds={name}, label=name, color=color, symbol=symbol)
        if strip.xs:
            strips.append(strip)
    return Chart(
        chart_id="chart-score",
        title=f"{series.metric} per candidate",
        x_label=CANDIDATE_AXIS,
        y_label=series.metric,
        series=[
            Series(f"trend (mean of {series.window})", series.ids, series.trend, TREND_COLOR, css_class="trend-line"),
            Series("best so far", series.ids, series.best, BEST_COLOR, "step", "best-line"),
            Series(
                "score",
                [i for i, _ in scored],
                [s for _, s in scored],
                SCORE_COLOR,
                "points",
                "score-point",
                titles=[f"candidate {i}: {series.metric} {s:.4f}" for i, s in scored],
            ),
        ],
        strips=strips,
    )


def _strip(
    ids: Sequence[int],
    outcomes: Sequence[str],
    by_id: dict[int, CandidateRecord],
    *,
    kinds: set[str] | None,
    label: str,
    color: str,
    symbol: str,
) -> Strip:
    """Markers for the candidates whose outcome is in `kinds` (None: every failure kind)."""
    not_failures = ("scored", "pruned", "duplicate", "unscored")
    chosen = [
        (i, o)
        for i, o in zip(ids, outcomes, strict=True)
        if (o in kinds if kinds is not None else o not in not_failures)
    ]
    titles = []
    for candidate_id, kind in chosen:
        candidate = by_id[candidate_id]
        detail = f": {preview(candidate.failure.message)}" if candidate.failure and kind != "duplicate" else ""
        if kind == "duplicate":
            detail = f" of candidate {candidate.duplicate_of}"
        titles.append(f"candidate {candidate_id}: {kind}{detail}")
    css = "failure-mark" if kinds is None else f"{label}-mark"
    return Strip(label, [i for i, _ in chosen], color, symbol, css, titles)  # type: ignore[arg-type]


def validity_chart(analysis: RunAnalysis) -> Chart:
    validity = analysis.validity
    return Chart(
        chart_id="chart-validity",
        title="valid rate over time",
        x_label=CANDIDATE_AXIS,
        y_label="valid rate",
        series=[
            Series(f"last {validity.window}", validity.ids, validity.rolling, TREND_COLOR, css_class="valid-rolling"),
            Series("cumulative", validity.ids, validity.cumulative, BEST_COLOR, css_class="valid-cumulative"),
        ],
        y_range=(0.0, 1.05),
        height=240,
    )


def _role_series(values: dict[str, list[float]], iterations: list[int], css: str) -> list[Series]:
    return [
        Series(
            name,
            iterations,
            series,
            PALETTE[index % len(PALETTE)] if name != EVALUATION else "#444",
            css_class=f"{css} role-{name}",
        )
        for index, (name, series) in enumerate(values.items())
    ]


def cost_charts(analysis: RunAnalysis) -> list[Chart]:
    """Tokens and seconds, per iteration and cumulative, one line per LLM role (and evaluation for seconds)."""
    costs = analysis.costs
    specs = [
        ("chart-tokens", "LLM tokens per iteration", "tokens", costs.tokens),
        ("chart-tokens-cumulative", "LLM tokens, cumulative", "tokens", costs.cumulative_tokens()),
        ("chart-seconds", "seconds per iteration", "seconds", costs.seconds),
        ("chart-seconds-cumulative", "seconds, cumulative", "seconds", costs.cumulative_seconds()),
    ]
    return [
        Chart(
            chart_id,
            title,
            "iteration",
            unit,
            _role_series(values, costs.iterations, "cost-line"),
            width=560,
            height=240,
        )
        for chart_id, title, unit, values in specs
    ]


def _axis_name(view: ParetoView, index: int) -> str:
    objective = view.objectives[index]
    return f"{objective.metric} ({objective.direction})"


def pareto_chart(view: ParetoView, chart_id: str = "chart-pareto") -> Chart:
    """All candidates with every objective, the front highlighted; x = 2nd objective, y = 1st."""
    x_index, y_index = (1, 0) if len(view.objectives) > 1 else (0, 0)
    front = view.front_points()
    return Chart(
        chart_id=chart_id,
        title="Pareto front",
        x_label=_axis_name(view, x_index),
        y_label=_axis_name(view, y_index),
        series=[
            Series(
                "candidates",
                [v[x_index] for v in view.values],
                [v[y_index] for v in view.values],
                GREY,
                "points",
                "pareto-point",
                titles=[f"candidate {i}: " + _values_text(view, v) for i, v in zip(view.ids, view.values, strict=True)],
            ),
            Series(
                "front",
                [v[x_index] for _, v in sorted(front, key=lambda p: p[1][x_index])],
                [v[y_index] for _, v in sorted(front, key=lambda p: p[1][x_index])],
                FAILURE_COLOR,
                "step",
                "front-line",
            ),
            Series(
                "on the front",
                [v[x_index] for _, v in front],
                [v[y_index] for _, v in front],
                FAILURE_COLOR,
                "points",
                "front-point",
                titles=[f"candidate {i} (front): " + _values_text(view, v) for i, v in front],
                radius=4.5,
            ),
        ],
        height=340,
    )


def _values_text(view: ParetoView, values: tuple[float, ...]) -> str:
    return ", ".join(f"{o.metric} {v:.4g}" for o, v in zip(view.objectives, values, strict=True))


def hypervolume_chart(view: ParetoView) -> Chart:
    return Chart(
        chart_id="chart-hypervolume",
        title="hypervolume over time",
        x_label=CANDIDATE_AXIS,
        y_label="HV (fraction of box)",
        series=[Series("hypervolume", view.hypervolume_ids, view.hypervolume or [], BEST_COLOR, "step", "hv-line")],
        height=240,
    )


# ----------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------


def _header(analysis: RunAnalysis) -> str:
    run = analysis.run
    config = run.config
    objectives = ", ".join(config.objectives) or f"{run.metric} (max)"
    return (
        f"<h1>nasloop run {text(run.name)}</h1>"
        f'<div class="subtitle">strategy <b>{text(config.strategy)}</b> · dataset {text(config.dataset.name)} · '
        f"LLM {text(config.llm.backend)}:{text(config.llm.model)} · objectives {text(objectives)} · "
        f"protocol {text(config.protocol)} · {text(str(run.root))}</div>"
        '<nav><a href="#progress">progress</a><a href="#validity">validity</a><a href="#cost">cost</a>'
        + ('<a href="#pareto">Pareto</a>' if analysis.pareto else "")
        + '<a href="#lineage">lineage</a><a href="#candidates">candidates</a><a href="#artifacts">artifacts</a>'
        '<a href="#config">config</a></nav>'
    )


def _cards(analysis: RunAnalysis) -> str:
    scores, validity = analysis.scores, analysis.validity
    tokens = sum(role.tokens for role in analysis.roles)
    llm_seconds = sum(role.seconds for role in analysis.roles)
    money = sum(role.cost_usd for role in analysis.roles)
    best = (
        f"{scores.best_score:.4f} <small>(candidate {link(scores.best_id)})</small>"
        if scores.best_score is not None and scores.best_id is not None
        else "–"
    )
    cards = [
        card("candidates", str(len(analysis.run.candidates)), "candidate-count"),
        card("iterations", str(analysis.iterations)),
        card("valid rate", "–" if validity.rate is None else f"{100 * validity.rate:.0f}%", "valid-rate"),
        card(f"best {scores.metric}", best, "best-score"),
        card("Spearman ρ (score vs order)", number(scores.spearman, 2), "spearman"),
        card("LLM tokens", integer(tokens)),
        card("LLM seconds", f"{llm_seconds:.1f}"),
        card("evaluation seconds", f"{analysis.costs.total_seconds(EVALUATION):.1f}"),
    ]
    if money > 0:
        cards.append(card("LLM cost", f"${money:.2f}"))
    return '<div class="cards">' + "".join(cards) + "</div>"


def _progress(analysis: RunAnalysis) -> str:
    scores = analysis.scores
    rho = "not enough scored candidates" if scores.spearman is None else f"{scores.spearman:+.2f}"
    return (
        '<h2 id="progress">Search progress</h2>'
        f'<p class="note">Each point is a scored candidate; failed, pruned and duplicate candidates are markers '
        f"in the strips below the axis (no score is carried over for them). Trend: mean of the scored candidates "
        f"among the last {scores.window}. Spearman ρ of {text(scores.metric)} vs candidate order: {text(rho)}.</p>"
        + render(score_chart(analysis))
    )


def _validity(analysis: RunAnalysis) -> str:
    failures = analysis.failures
    total = sum(f.count for f in failures)
    rows = [
        [
            f'<span class="failure-kind">{text(f.kind)}</span>',
            str(f.count),
            f"{100 * f.count / total:.0f}%",
            f"{link(f.example_id)}: <code>{text(preview(f.example, 300))}</code>",
        ]
        for f in failures
    ]
    states = ", ".join(f"{count} {text(state)}" for state, count in analysis.states.items())
    taxonomy = (
        table(["failure kind", "count", "share", "example"], rows, numeric=[False, True, True], css="failures")
        if rows
        else '<p class="note">No candidate failed.</p>'
    )
    return (
        '<h2 id="validity">Validity and failures</h2>'
        f'<p class="note">Candidates by state: {states}. Valid rate = completed / evaluated (duplicates are not '
        "evaluated again and are left out).</p>"
        + render(validity_chart(analysis))
        + "<h3>Failure taxonomy</h3>"
        + taxonomy
    )


def _cost(analysis: RunAnalysis) -> str:
    rows = [
        [
            text(role.role),
            integer(role.calls),
            integer(role.errors),
            integer(role.prompt_tokens),
            integer(role.completion_tokens),
            integer(role.tokens),
            f"{role.seconds:.1f}",
            f"{role.seconds / role.calls:.2f}" if role.calls else "–",
            f"{role.cost_usd:.4f}",
        ]
        for role in analysis.roles
    ]
    evaluated = analysis.validity.evaluated
    evaluation_s = analysis.costs.total_seconds(EVALUATION)
    rows.append(
        [
            "evaluation (sandbox)",
            integer(evaluated),
            "",
            "",
            "",
            "",
            f"{evaluation_s:.1f}",
            f"{evaluation_s / evaluated:.2f}" if evaluated else "–",
            "",
        ]
    )
    headers = ["role", "calls", "errors", "prompt tokens", "completion tokens", "tokens", "seconds", "s / call", "USD"]
    charts = "".join(f"<div>{render(chart)}</div>" for chart in cost_charts(analysis))
    return (
        '<h2 id="cost">Cost</h2>'
        + table(headers, rows, numeric=[False] + [True] * 8, css="costs")
        + f'<div class="grid2">{charts}</div>'
    )


def _pareto(view: ParetoView) -> str:
    note = (
        "HV is normalised by the run's own best and worst values per objective, with reference point 1.1 "
        "(as a fraction of the reference box)."
        if view.hypervolume is not None
        else text(view.note)
    )
    extra = (
        f" Only the first two of {len(view.objectives)} objectives are drawn; the front uses all."
        if len(view.objectives) > 2
        else ""
    )
    front = sorted(view.front_points(), key=lambda point: point[0])
    rows = [[link(i), *[f"{v:.4g}" for v in values]] for i, values in front]
    final = f"{view.hypervolume[-1]:.4f}" if view.hypervolume else "–"
    return (
        '<h2 id="pareto">Pareto front</h2>'
        f'<p class="note">{len(view.ids)} candidates with every objective metric, {len(view.front_ids)} on the '
        f'front; final HV <span id="final-hv">{final}</span>. {note}{text(extra)}</p>'
        + render(pareto_chart(view))
        + (render(hypervolume_chart(view)) if view.hypervolume is not None else "")
        + "<h3>Front</h3>"
        + table(["candidate", *[str(o) for o in view.objectives]], rows, numeric=[False] + [True] * 9, css="front")
    )


def _lineage(analysis: RunAnalysis) -> str:
    rows = [
        [
            link(row.candidate_id),
            ", ".join(link(parent) for parent in row.parent_ids),
            text(row.relation),
            f'<span class="state-{text(row.state)}">{text(row.state)}</span>',
            number(row.score),
            number(row.parent_score),
            "–" if row.change is None else f"{row.change:+.4f}",
        ]
        for row in analysis.lineage
    ]
    if not rows:
        return '<h2 id="lineage">Lineage</h2><p class="note">No candidate has a parent.</p>'
    return (
        '<h2 id="lineage">Lineage</h2>'
        f'<p class="note">Which candidate came from which parent(s); the change is the score vs the first '
        f"parent's ({text(analysis.run.metric)}).</p>"
        + table(
            ["candidate", "parents", "relation", "state", "score", "first parent's score", "change"],
            rows,
            numeric=[False, False, False, False, True, True, True],
            css="lineage",
        )
    )


def _artifacts(analysis: RunAnalysis) -> str:
    items = "".join(
        f'<details class="artifact"><summary>{text(name)}</summary><pre class="wrap">{text(content)}</pre></details>'
        for name, content in analysis.run.artifacts.items()
    )
    return '<h2 id="artifacts">Artifacts</h2>' + (items or '<p class="note">The strategy stored no artifacts.</p>')


def _config(analysis: RunAnalysis) -> str:
    return (
        '<h2 id="config">Config</h2><details><summary>resolved config</summary>'
        f"<pre>{text(analysis.run.config_text)}</pre></details>"
    )


def render_run_report(analysis: RunAnalysis, *, refresh_s: float | None = None) -> str:
    """The complete HTML page of one run (`refresh_s`: reload interval for live viewing, or None)."""
    body = "".join(
        [
            _header(analysis),
            _cards(analysis),
            _progress(analysis),
            _validity(analysis),
            _cost(analysis),
            _pareto(analysis.pareto) if analysis.pareto else "",
            _lineage(analysis),
            candidates_section(analysis),
            _artifacts(analysis),
            _config(analysis),
        ]
    )
    return document(f"nasloop report: {analysis.run.name}", body, refresh_s=refresh_s)
