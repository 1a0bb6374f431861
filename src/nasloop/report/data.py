"""What a report shows, computed from a run store: plain numbers, no HTML and no plotting.

`load_run` reads one run directory (read-only, so it works while the search is still writing);
`analyse_run` turns it into a `RunAnalysis` that the HTML page and the PNG plots both draw from.

Conventions used throughout:

* The score figure follows candidates in evaluation order (x = candidate id). Repairs are candidates too,
  so they appear; duplicates were not evaluated again and appear only in the outcome strip.
* A candidate without a score (failed, pruned, duplicate) is a *gap*, never a carried-over value: smoothed
  trends average only the real scores inside their window.
* Valid rate = completed / evaluated candidates, where duplicates are not counted as evaluated.
* Costs are grouped by the engine's iteration number (0-based), as LLM calls and candidates both carry it.
"""

from __future__ import annotations

import difflib
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from nasloop.candidate import Purpose, State
from nasloop.config import SearchConfig, build_config
from nasloop.objectives import Bounds, Objective, hypervolume_over_time, pareto_front, parse_objectives
from nasloop.objectives import reference_box_volume as box_volume
from nasloop.store import CandidateRecord, LLMCallRecord, RunDir, RunStore

EVALUATION = "evaluation"  # the cost series of sandbox evaluations, next to the LLM roles


# ----------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunData:
    """Everything a report needs from one run directory, read in one go."""

    root: Path
    config: SearchConfig
    candidates: list[CandidateRecord]
    llm_calls: list[LLMCallRecord]
    artifacts: dict[str, str]
    config_text: str

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def metric(self) -> str:
        """The selection metric (maximised), e.g. `val_acc`."""
        return self.config.selection_metric


def load_run(run_dir: Path) -> RunData:
    """Read a run directory; raises FileNotFoundError when it holds no run store.

    The resolved config comes from the store (the copy the engine saved), else from `config.yaml`.
    """
    layout = RunDir(Path(run_dir))
    if not layout.exists():
        raise FileNotFoundError(f"{run_dir} holds no run (no {layout.store_path.name} there)")
    with RunStore(layout.store_path, readonly=True) as store:
        config_text = store.get_meta("config")
        candidates = store.candidates()
        calls = store.llm_calls()
        artifacts = store.artifacts()
    if config_text is None:
        config_text = layout.config_path.read_text() if layout.config_path.exists() else ""
    config = build_config(yaml.safe_load(config_text) or {}, source=str(layout.config_path))
    return RunData(layout.root, config, candidates, calls, artifacts, config_text)


# ----------------------------------------------------------------------------------------------------
# Series helpers (pure functions over lists; None marks a gap)
# ----------------------------------------------------------------------------------------------------


def moving_average(values: Sequence[float | None], window: int) -> list[float | None]:
    """Trailing mean over the last `window` positions, of the non-gap values only.

    Position i averages the values of positions i-window+1 .. i that are not None (fewer at the start);
    it is None when that window holds no value. A gap is never replaced by a neighbour's value.
    """
    if window < 1:
        raise ValueError(f"the moving-average window must be at least 1, got {window}")
    averages: list[float | None] = []
    for index in range(len(values)):
        inside = [value for value in values[max(0, index - window + 1) : index + 1] if value is not None]
        averages.append(sum(inside) / len(inside) if inside else None)
    return averages


def best_so_far(values: Sequence[float | None]) -> list[float | None]:
    """Running maximum of the non-gap values; None until the first value."""
    best: float | None = None
    running: list[float | None] = []
    for value in values:
        if value is not None and (best is None or value > best):
            best = value
        running.append(best)
    return running


def cumulative(values: Iterable[float]) -> list[float]:
    """Running sums."""
    return list(itertools.accumulate(values))


def _average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda index: values[index])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman rank correlation (ties get average ranks); None for fewer than 3 pairs or a constant side."""
    if len(xs) != len(ys):
        raise ValueError(f"spearman needs pairs, got {len(xs)} x values and {len(ys)} y values")
    if len(xs) < 3:
        return None
    rank_x, rank_y = _average_ranks(xs), _average_ranks(ys)
    mean_x, mean_y = sum(rank_x) / len(rank_x), sum(rank_y) / len(rank_y)
    covariance = sum((a - mean_x) * (b - mean_y) for a, b in zip(rank_x, rank_y, strict=True))
    spread_x = math.sqrt(sum((a - mean_x) ** 2 for a in rank_x))
    spread_y = math.sqrt(sum((b - mean_y) ** 2 for b in rank_y))
    if spread_x == 0 or spread_y == 0:
        return None
    return covariance / (spread_x * spread_y)


# ----------------------------------------------------------------------------------------------------
# Score per candidate
# ----------------------------------------------------------------------------------------------------


def candidate_score(candidate: CandidateRecord, metric: str) -> float | None:
    """The candidate's own measured score: only a completed, non-duplicate candidate with the metric has one."""
    if candidate.state is not State.COMPLETE:
        return None
    value = candidate.metrics.get(metric)
    return float(value) if value is not None and math.isfinite(value) else None


def outcome(candidate: CandidateRecord, metric: str) -> str:
    """What the candidate's strip marker says: a failure kind, `pruned`, `duplicate`, `unscored`, or `scored`."""
    if candidate.state is State.FAILED and candidate.failure is not None:
        return candidate.failure.kind.value
    if candidate.state in (State.PRUNED, State.DUPLICATE):
        return candidate.state.value
    return "scored" if candidate_score(candidate, metric) is not None else "unscored"


@dataclass(frozen=True)
class ScoreSeries:
    """Per candidate (evaluation order): its score or a gap, its outcome, the smoothed trend and best so far."""

    metric: str
    window: int
    ids: list[int]
    scores: list[float | None]
    outcomes: list[str]
    trend: list[float | None]
    best: list[float | None]
    spearman: float | None
    best_id: int | None

    @property
    def best_score(self) -> float | None:
        return self.best[-1] if self.best else None

    def scored(self) -> list[tuple[int, float]]:
        """(candidate id, score) of every scored candidate."""
        return [(i, s) for i, s in zip(self.ids, self.scores, strict=True) if s is not None]


def score_series(candidates: Sequence[CandidateRecord], metric: str, window: int) -> ScoreSeries:
    """The score figure's data; Spearman ρ is of score vs candidate order over the scored candidates."""
    ordered = sorted(candidates, key=lambda c: c.id)
    scores = [candidate_score(c, metric) for c in ordered]
    pairs = [(float(c.id), s) for c, s in zip(ordered, scores, strict=True) if s is not None]
    best_id = max(pairs, key=lambda pair: pair[1], default=None)
    return ScoreSeries(
        metric=metric,
        window=window,
        ids=[c.id for c in ordered],
        scores=scores,
        outcomes=[outcome(c, metric) for c in ordered],
        trend=moving_average(scores, window),
        best=best_so_far(scores),
        spearman=spearman([x for x, _ in pairs], [y for _, y in pairs]),
        best_id=int(best_id[0]) if best_id is not None else None,
    )


# ----------------------------------------------------------------------------------------------------
# Validity and failures
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValiditySeries:
    """Valid rate over the evaluated (non-duplicate) candidates: trailing window and cumulative."""

    window: int
    ids: list[int]
    rolling: list[float]
    cumulative: list[float]
    valid: int
    evaluated: int

    @property
    def rate(self) -> float | None:
        return self.valid / self.evaluated if self.evaluated else None


def validity_series(candidates: Sequence[CandidateRecord], window: int) -> ValiditySeries:
    """The valid-rate figure's data; a candidate is valid when it completed."""
    evaluated = [c for c in sorted(candidates, key=lambda c: c.id) if c.state is not State.DUPLICATE]
    flags = [1.0 if c.state is State.COMPLETE else 0.0 for c in evaluated]
    running = cumulative(flags)
    return ValiditySeries(
        window=window,
        ids=[c.id for c in evaluated],
        rolling=[value for value in moving_average(flags, window) if value is not None],
        cumulative=[total / (index + 1) for index, total in enumerate(running)],
        valid=int(sum(flags)),
        evaluated=len(evaluated),
    )


@dataclass(frozen=True)
class FailureCount:
    """How often one failure kind occurred, with the first such candidate's message as an example."""

    kind: str
    count: int
    example_id: int
    example: str


def failure_counts(candidates: Sequence[CandidateRecord]) -> list[FailureCount]:
    """Failed candidates per failure kind, most frequent first (duplicates of a failure are not counted)."""
    examples: dict[str, CandidateRecord] = {}
    counts: Counter[str] = Counter()
    for candidate in sorted(candidates, key=lambda c: c.id):
        if candidate.state is not State.FAILED or candidate.failure is None:
            continue
        kind = candidate.failure.kind.value
        counts[kind] += 1
        examples.setdefault(kind, candidate)
    return [
        FailureCount(kind, count, examples[kind].id, _message(examples[kind]))
        for kind, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]


def _message(candidate: CandidateRecord) -> str:
    return candidate.failure.message if candidate.failure is not None else ""


def state_counts(candidates: Sequence[CandidateRecord]) -> dict[str, int]:
    """Candidates per terminal state, every state listed (zero included)."""
    counts = Counter(c.state.value for c in candidates)
    return {state.value: counts.get(state.value, 0) for state in State}


# ----------------------------------------------------------------------------------------------------
# Costs
# ----------------------------------------------------------------------------------------------------


def evaluation_seconds(candidate: CandidateRecord) -> float:
    """Seconds the candidate's evaluation took: its `total_s` timing, else the sum of its stage timings,
    else its `train_s` metric; 0 for a duplicate (it was not evaluated)."""
    if candidate.state is State.DUPLICATE:
        return 0.0
    if "total_s" in candidate.timings:
        return float(candidate.timings["total_s"])
    if candidate.timings:
        return float(sum(candidate.timings.values()))
    return float(candidate.metrics.get("train_s", 0.0))


@dataclass(frozen=True)
class RoleCost:
    """LLM usage of one role (generator, improver, reflector, ...) over the run."""

    role: str
    calls: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    cost_usd: float

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def role_costs(calls: Sequence[LLMCallRecord]) -> list[RoleCost]:
    """Usage per role, in order of first use."""
    by_role: dict[str, list[LLMCallRecord]] = defaultdict(list)
    for call in calls:
        by_role[call.role].append(call)
    return [
        RoleCost(
            role=role,
            calls=len(items),
            errors=sum(1 for call in items if call.error),
            prompt_tokens=sum(call.prompt_tokens for call in items),
            completion_tokens=sum(call.completion_tokens for call in items),
            seconds=sum(call.latency_s for call in items),
            cost_usd=sum(call.cost_usd for call in items),
        )
        for role, items in by_role.items()
    ]


@dataclass(frozen=True)
class CostSeries:
    """Per iteration (0 .. last): LLM tokens per role, and seconds per role plus `evaluation`."""

    iterations: list[int]
    tokens: dict[str, list[float]]
    seconds: dict[str, list[float]]

    def cumulative_tokens(self) -> dict[str, list[float]]:
        return {name: cumulative(values) for name, values in self.tokens.items()}

    def cumulative_seconds(self) -> dict[str, list[float]]:
        return {name: cumulative(values) for name, values in self.seconds.items()}

    def total_seconds(self, name: str) -> float:
        return sum(self.seconds.get(name, []))


def cost_series(calls: Sequence[LLMCallRecord], candidates: Sequence[CandidateRecord]) -> CostSeries:
    """Tokens and seconds per iteration; an iteration without any use of a role counts 0 for it."""
    last = max([call.iteration for call in calls] + [c.iteration for c in candidates], default=-1)
    iterations = list(range(last + 1))
    tokens: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}
    for call in calls:
        tokens.setdefault(call.role, [0.0] * len(iterations))[call.iteration] += (
            call.prompt_tokens + call.completion_tokens
        )
        seconds.setdefault(call.role, [0.0] * len(iterations))[call.iteration] += call.latency_s
    evaluation = [0.0] * len(iterations)
    for candidate in candidates:
        evaluation[candidate.iteration] += evaluation_seconds(candidate)
    seconds[EVALUATION] = evaluation
    return CostSeries(iterations, tokens, seconds)


# ----------------------------------------------------------------------------------------------------
# Lineage and code diffs
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineageRow:
    """One candidate derived from parents: how (repair or derived), and its score change vs its first parent."""

    candidate_id: int
    parent_ids: tuple[int, ...]
    relation: str
    score: float | None
    parent_score: float | None
    state: str

    @property
    def change(self) -> float | None:
        if self.score is None or self.parent_score is None:
            return None
        return self.score - self.parent_score


# How a candidate relates to the one it was made from, by its purpose.
RELATIONS = {
    Purpose.SEED: "seed",
    Purpose.SEARCH: "improve",
    Purpose.REPAIR: "repair",
    Purpose.RETRY: "retry",
    Purpose.FINAL: "final",
}


def lineage_rows(candidates: Sequence[CandidateRecord], metric: str) -> list[LineageRow]:
    """Every candidate that has parents, in id order; the first parent is the one it was made from."""
    by_id = {c.id: c for c in candidates}
    rows = []
    for candidate in sorted(candidates, key=lambda c: c.id):
        parents = tuple(dict.fromkeys(p for p in (candidate.parent, *candidate.parent_ids) if p is not None))
        if not parents:
            continue
        parent = by_id.get(parents[0])
        rows.append(
            LineageRow(
                candidate_id=candidate.id,
                parent_ids=parents,
                relation=RELATIONS[candidate.purpose],
                score=candidate_score(candidate, metric),
                parent_score=candidate_score(parent, metric) if parent is not None else None,
                state=candidate.state.value,
            )
        )
    return rows


def code_diff(parent_code: str, code: str, parent_name: str = "parent", name: str = "candidate") -> list[str]:
    """Unified diff lines (no trailing newlines) from the parent's code to the candidate's; empty when equal."""
    lines = difflib.unified_diff(
        parent_code.splitlines(), code.splitlines(), fromfile=parent_name, tofile=name, lineterm=""
    )
    return list(lines)


# ----------------------------------------------------------------------------------------------------
# Pareto front (multi-objective runs)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParetoView:
    """The candidates that have every objective metric, which of them are on the front, and HV over time.

    `hypervolume` is aligned with `hypervolume_ids` (every evaluated candidate in id order) and given as a
    fraction of the reference box (1 = the whole box), normalised by `bounds`; None with `note` saying why
    when it cannot be computed (fewer than two distinct values in some objective).
    """

    objectives: list[Objective]
    ids: list[int]
    values: list[tuple[float, ...]]
    front_ids: list[int]
    hypervolume_ids: list[int]
    hypervolume: list[float] | None
    note: str = ""
    bounds: Bounds | None = field(default=None, repr=False)

    def front_points(self) -> list[tuple[int, tuple[float, ...]]]:
        """(id, values) of the front, ordered by the first objective."""
        front = set(self.front_ids)
        points = [(i, v) for i, v in zip(self.ids, self.values, strict=True) if i in front]
        return sorted(points, key=lambda point: point[1][0])


def run_objectives(config: SearchConfig) -> list[Objective]:
    """The run's objectives (empty for a single-objective run), each as the candidate metric its strategy
    ranks by: niche-pareto's accuracy predicted by a proxy is plotted as that proxy's value."""
    if not config.objectives:
        return []
    from nasloop.registry import UnknownNameError, strategies

    objectives = parse_objectives(",".join(config.objectives))
    try:
        strategy = strategies.get(config.strategy)
        options = strategy.Options.model_validate(config.strategy_options)
    except (UnknownNameError, ValueError):
        return objectives
    return [Objective(strategy.stored_metric(options, o.metric), o.direction) for o in objectives]


def _has_all(metrics: dict[str, float], objectives: Sequence[Objective]) -> bool:
    return all(math.isfinite(metrics.get(objective.metric, math.nan)) for objective in objectives)


def objective_candidates(
    candidates: Sequence[CandidateRecord], objectives: Sequence[Objective]
) -> list[CandidateRecord]:
    """Completed, non-duplicate candidates that carry every objective metric, in id order."""
    return [
        c
        for c in sorted(candidates, key=lambda c: c.id)
        if c.state is State.COMPLETE and _has_all(c.metrics, objectives)
    ]


def flat_objectives(points: Sequence[dict[str, float]], objectives: Sequence[Objective]) -> list[str]:
    """Objectives in which the points take fewer than two distinct values (bounds cannot be set from them)."""
    return [o.metric for o in objectives if len({point[o.metric] for point in points}) < 2]


def pareto_view(
    candidates: Sequence[CandidateRecord], objectives: Sequence[Objective], bounds: Bounds | None = None
) -> ParetoView:
    """Front and HV over time; `bounds` default to the run's own best and worst values (fixed for the run)."""
    scored = objective_candidates(candidates, objectives)
    points = [c.metrics for c in scored]
    front = pareto_front(points, objectives) if points else []
    evaluated = [c for c in sorted(candidates, key=lambda c: c.id) if c.state is not State.DUPLICATE]
    flat = flat_objectives(points, objectives)
    hypervolume: list[float] | None = None
    note = ""
    if bounds is None and (not points or flat):
        note = f"HV needs two distinct values in every objective ({', '.join(flat) or 'no candidate'} has fewer)"
    else:
        bounds = bounds or Bounds.from_points(points, objectives)
        scored_ids = {c.id for c in scored}
        over_time = [c.metrics if c.id in scored_ids else None for c in evaluated]
        box = box_volume(1.1, len(objectives))
        hypervolume = [value / box for value in hypervolume_over_time(over_time, objectives, bounds)]
    return ParetoView(
        objectives=list(objectives),
        ids=[c.id for c in scored],
        values=[tuple(float(c.metrics[o.metric]) for o in objectives) for c in scored],
        front_ids=[scored[index].id for index in front],
        hypervolume_ids=[c.id for c in evaluated],
        hypervolume=hypervolume,
        note=note,
        bounds=bounds,
    )


# ----------------------------------------------------------------------------------------------------
# The whole analysis of one run
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunAnalysis:
    """Everything the report shows about one run."""

    run: RunData
    scores: ScoreSeries
    validity: ValiditySeries
    failures: list[FailureCount]
    states: dict[str, int]
    roles: list[RoleCost]
    costs: CostSeries
    lineage: list[LineageRow]
    pareto: ParetoView | None

    @property
    def iterations(self) -> int:
        """Iterations of the budget used (only search candidates count, as in the engine)."""
        return sum(1 for c in self.run.candidates if c.purpose is Purpose.SEARCH)


def analyse_run(run: RunData, window: int = 15) -> RunAnalysis:
    """Compute every series and table of the run report."""
    objectives = run_objectives(run.config)
    return RunAnalysis(
        run=run,
        scores=score_series(run.candidates, run.metric, window),
        validity=validity_series(run.candidates, window),
        failures=failure_counts(run.candidates),
        states=state_counts(run.candidates),
        roles=role_costs(run.llm_calls),
        costs=cost_series(run.llm_calls, run.candidates),
        lineage=lineage_rows(run.candidates, run.metric),
        pareto=pareto_view(run.candidates, objectives) if objectives else None,
    )


# ----------------------------------------------------------------------------------------------------
# Comparison of runs
# ----------------------------------------------------------------------------------------------------


def best_by_iteration(candidates: Sequence[CandidateRecord], metric: str) -> list[float | None]:
    """Best score after each iteration 0 .. last (all candidates of iterations <= i, repairs included)."""
    last = max((c.iteration for c in candidates), default=-1)
    per_iteration: list[float | None] = [None] * (last + 1)
    for candidate in candidates:
        score = candidate_score(candidate, metric)
        current = per_iteration[candidate.iteration]
        if score is not None and (current is None or score > current):
            per_iteration[candidate.iteration] = score
    return best_so_far(per_iteration)


def unique_labels(roots: Sequence[Path]) -> list[str]:
    """Short names for run directories: the directory name, with parents added where names clash."""
    resolved = [root.resolve() for root in roots]
    depth = 1
    while True:
        labels = ["/".join(path.parts[-depth:]) for path in resolved]
        if len(set(labels)) == len(labels) or depth >= max(len(path.parts) for path in resolved):
            return labels
        depth += 1


def run_fingerprint(run_dir: Path) -> tuple[int, float, int]:
    """A cheap summary that changes whenever the run records something: (last candidate id, LLM calls,
    artifacts). Used by `nasloop report --watch` to regenerate only when there is news."""
    with RunStore(RunDir(Path(run_dir)).store_path, readonly=True) as store:
        return store.next_candidate_id() - 1, store.llm_totals()["calls"], len(store.artifacts())
