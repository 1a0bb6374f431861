"""Search quality against ground truth: strategies x budgets x seeds on a tabular benchmark.

Every run is a real nasloop search (the engine, the strategy, the store) whose candidates are scored
from the benchmark's table, so a run costs no training and every strategy is judged on the truth. All
strategies get the same fitness (`objective: val_acc`, the table's validation accuracy, unless a proxy
is chosen for all) and the same number of queries: a query is one search candidate, whatever became of
it (a duplicate or a failed answer spends its query too). Random initial members count as queries.

One run per (strategy, seed) at the largest budget gives the figures of every smaller budget, read off
its history after N queries (every strategy here behaves the same whatever its budget; options that
should depend on the budget, such as a population size, are set per variant and reported). For each
strategy and budget the summary gives, over seeds:

- the test accuracy of the best network by validation accuracy (selection on validation, reporting on
  test, as everywhere in nasloop), mean and standard deviation;
- the regret: the table's optimum (its best test accuracy) minus that figure;
- the queries until the best-by-validation network's test accuracy reaches `threshold` (the mean over the
  seeds that reached it within the budget, and how many did);
- the duplicate rate (queries whose network had been evaluated before), LLM tokens and seconds per query.

`benchmarks/search_quality.py` and `nasloop bench` run it from the command line.
"""

from __future__ import annotations

import bisect
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasloop.candidate import Purpose, State
from nasloop.llm.base import LLMBackend
from nasloop.registry import strategies
from nasloop.store import CandidateRecord

if TYPE_CHECKING:
    from nasloop.config import SearchConfig
    from nasloop.engine import Search

#: default option overrides that make a strategy sensible at 10-200 queries (reported with the results)
BUDGET_OPTIONS: dict[str, dict[str, Any]] = {
    "random": {"final_top_k": 0},
    "evolution": {"final_top_k": 0, "population_size": 20, "sample_size": 5},
    # 3 random members, then the best member is always the parent (tournament over the whole population)
    "reflective-zero-cost": {"final_top_k": 0, "population_size": 3, "tournament_size": 3, "initial_batch_size": 1},
    "niche-pareto": {"initial_per_niche": 1},
    "llm-history": {},
}
#: on top of BUDGET_OPTIONS for a single objective (`benchmarks/search_quality.py`): the union front of
#: niche-pareto is then the best network, and niches without it take a turn only every 6th generation
SINGLE_OBJECTIVE_OPTIONS: dict[str, dict[str, Any]] = {
    **BUDGET_OPTIONS,
    "niche-pareto": {**BUDGET_OPTIONS["niche-pareto"], "off_front_every": 6},
}


@dataclass(frozen=True)
class Variant:
    """A strategy with options, under a label (`reflective-zero-cost:tournament_size=3`)."""

    label: str
    strategy: str
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, defaults: Mapping[str, Mapping[str, Any]] = BUDGET_OPTIONS) -> Variant:
        """`name` or `name:key=value,key=value` (values are JSON where they parse, else strings), over the
        strategy's `defaults`."""
        strategy, _, rest = text.partition(":")
        options = dict(defaults.get(strategy, {}))
        for item in filter(None, rest.split(",")):
            key, separator, value = item.partition("=")
            if not separator:
                raise ValueError(f"variant {text!r}: {item!r} is not key=value")
            options[key.strip()] = _value(value.strip())
        return cls(text, strategy, options)

    @property
    def uses_llm(self) -> bool:
        """What the strategy declares (`Strategy.uses_llm`), unless its options turn the LLM off (`llm: false`)."""
        return bool(strategies.get(self.strategy).uses_llm) and self.options.get("llm", True) is not False


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@dataclass
class Trace:
    """One run, query by query: the best-by-validation network's figures after each query."""

    variant: str
    seed: int
    best_val: list[float | None]
    best_test: list[float | None]
    duplicates: int
    queries: int
    llm_tokens: float
    llm_seconds: float
    wall_seconds: float
    run_dir: str
    points: list[dict[str, float]] = field(default_factory=list)  # each query's accuracies and latencies
    architectures: list[str] = field(default_factory=list)  # each query's network
    llm_calls: int = 0
    calls_by_query: list[int] = field(default_factory=list)  # LLM calls made when each query was stored
    fallbacks: list[bool] = field(default_factory=list)  # each query: the strategy's own pick for a rejected answer

    def queries_within(self, calls: int) -> int:
        """The queries the run had stored when it had made `calls` LLM calls (all of them if it made fewer)."""
        if not self.calls_by_query or self.llm_calls <= calls:
            return self.queries
        return sum(1 for made in self.calls_by_query if made <= calls)

    def at(self, budget: int) -> float | None:
        """The best-by-validation network's test accuracy after `budget` queries (the last one if fewer)."""
        if not self.best_test:
            return None
        return self.best_test[min(budget, len(self.best_test)) - 1]

    def queries_to(self, threshold: float) -> int | None:
        """Queries until the best-by-validation network's test accuracy reached `threshold`, or None."""
        return next(
            (index + 1 for index, value in enumerate(self.best_test) if value is not None and value >= threshold), None
        )


def trace_of(
    records: Sequence[CandidateRecord], metric: str = "val_acc", report: str = "test_acc"
) -> tuple[list[float | None], list[float | None], int]:
    """(best `metric` so far, `report` of that network, duplicates) after each search candidate."""
    best_val: list[float | None] = []
    best_test: list[float | None] = []
    best: tuple[float, float] | None = None
    seen: set[str] = set()
    duplicates = 0
    for record in sorted(records, key=lambda candidate: candidate.id):
        if record.purpose is not Purpose.SEARCH:
            continue
        key = record.hash or record.architecture or ""
        if record.state is State.DUPLICATE or (key and key in seen):
            duplicates += 1
        seen.add(key)
        completed = record.usable
        value, reported = record.metrics.get(metric), record.metrics.get(report)
        if completed and value is not None and reported is not None and (best is None or value > best[0]):
            best = (float(value), float(reported))
        best_val.append(best[0] if best else None)
        best_test.append(best[1] if best else None)
    return best_val, best_test, duplicates


def run_variant(
    variant: Variant,
    *,
    benchmark: dict[str, Any],
    budget: int,
    seed: int,
    root: Path,
    backend: LLMBackend | None = None,
    llm: dict[str, Any] | None = None,
    fitness: str = "val_acc",
    extra: dict[str, Any] | None = None,
    progress: bool = False,
) -> Trace:
    """One search of `variant` on the benchmark with `budget` queries; its trace (`extra`: more config
    keys, e.g. `objectives` for a multi-objective search; `progress`: the search's bar and one line per
    candidate on stderr, for runs that take minutes)."""
    from nasloop.config import build_config

    data: dict[str, Any] = {
        "strategy": variant.strategy,
        "strategy_options": variant.options,
        "benchmark": benchmark,
        "objective": fitness,
        "budget": {"iterations": budget},
        "seed": seed,
        "llm": llm or {"backend": "scripted", "model": "none"},
        **(extra or {}),
    }
    run_dir = root / f"{_slug(variant.label)}-seed{seed}"
    started = time.perf_counter()
    engine = _start_or_resume(build_config(data), run_dir, backend=backend if variant.uses_llm else None,
                              progress=progress)  # fmt: skip
    try:
        engine.run()
    finally:
        engine.close()
    wall = time.perf_counter() - started
    from nasloop.store import RunDir, RunStore

    with RunStore(RunDir(run_dir).store_path, readonly=True) as store:
        records = store.candidates()
        totals = store.llm_totals()
        made = [call.created for call in store.llm_calls()]
    best_val, best_test, duplicates = trace_of(records)
    searched = _searched(records)
    points = [_point(record) for record in searched]
    made_by, fallbacks = _history(searched, made)
    return Trace(
        variant=variant.label, seed=seed, best_val=best_val, best_test=best_test, duplicates=duplicates,
        queries=len(best_test), llm_tokens=totals["prompt_tokens"] + totals["completion_tokens"],
        llm_seconds=totals["latency_s"], wall_seconds=wall, run_dir=str(run_dir), points=points,
        architectures=[record.architecture or "" for record in searched], llm_calls=int(totals["calls"]),
        calls_by_query=made_by, fallbacks=fallbacks,
    )  # fmt: skip


def _searched(records: Sequence[CandidateRecord]) -> list[CandidateRecord]:
    """The run's search queries, in the order they were stored."""
    return [record for record in sorted(records, key=lambda candidate: candidate.id)
            if record.purpose is Purpose.SEARCH]  # fmt: skip


def _history(searched: Sequence[CandidateRecord], made: Sequence[float]) -> tuple[list[int], list[bool]]:
    """For each of `searched`: the LLM calls (stored at the times `made`) before it was stored, and whether
    the strategy stored it in place of an LLM answer it rejected (its notes say why)."""
    ordered = sorted(made)
    return ([bisect.bisect_right(ordered, record.created) for record in searched],
            ["fallback" in record.notes for record in searched])  # fmt: skip


def query_history(run_dir: Path | str) -> tuple[list[int], list[bool]]:
    """For each search query of the run in `run_dir`, in order, read from its store: the LLM calls it had
    made when the query was stored (the calls that led to it included), and whether the query was the
    strategy's fallback for a rejected LLM answer."""
    from nasloop.store import RunDir, RunStore

    with RunStore(RunDir(Path(run_dir)).store_path, readonly=True) as store:
        searched = _searched(store.candidates())
        made = [call.created for call in store.llm_calls()]
    return _history(searched, made)


def _start_or_resume(config: SearchConfig, run_dir: Path, backend: LLMBackend | None, progress: bool) -> Search:
    """A new run in `run_dir`, or the interrupted one there continued when it was started with the same
    config (a harness killed halfway loses nothing); a different run there is an error naming it. Both
    configs are resolved by this code, so an option added since, at its default, is no difference."""
    from nasloop.config import dump_config, load_config
    from nasloop.engine import Search
    from nasloop.resolve import resolve_config
    from nasloop.store import RunDir

    layout = RunDir(run_dir)
    if not layout.exists():
        return Search.start(config, run_dir, backend=backend, progress=progress)
    wanted = resolve_config(config).model_copy(update={"run_dir": str(layout.root)})
    if dump_config(resolve_config(load_config(layout.config_path))) != dump_config(wanted):
        raise FileExistsError(
            f"{run_dir} holds a run with a different config: remove it or give the harness another --out"
        )
    return Search.resume(run_dir, backend=backend, progress=progress)


def _point(record: CandidateRecord) -> dict[str, float]:
    """The figures of a query the summaries read: accuracies and latencies (none when it did not complete)."""
    completed = record.usable
    if not completed:
        return {}
    return {
        name: value for name, value in record.metrics.items() if name in ("val_acc", "test_acc") or name.endswith("_ms")
    }


def _slug(label: str) -> str:
    return "".join(character if character.isalnum() or character in "-_" else "_" for character in label)


# ----------------------------------------------------------------------------------------------------
# The summary
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One strategy at one budget, over seeds (accuracies in percent)."""

    variant: str
    budget: int
    seeds: int
    mean: float | None
    std: float | None
    regret: float | None
    queries_to_threshold: float | None
    reached: int
    duplicate_rate: float
    tokens_per_query: float
    llm_seconds_per_query: float


def summarise(traces: Sequence[Trace], budgets: Sequence[int], optimum: float, threshold: float) -> list[Row]:
    """One row per variant and budget (budgets a variant's runs did not reach are left out)."""
    rows = []
    by_variant: dict[str, list[Trace]] = {}
    for trace in traces:
        by_variant.setdefault(trace.variant, []).append(trace)
    for variant, runs in by_variant.items():
        longest = max(run.queries for run in runs)
        for budget in budgets:
            if budget > longest:
                continue
            values = [100 * value for run in runs if (value := run.at(budget)) is not None]
            reached = [steps for run in runs if (steps := run.queries_to(threshold)) is not None and steps <= budget]
            queries = sum(min(budget, run.queries) for run in runs)
            duplicates = sum(_duplicates_within(run, budget) for run in runs)
            all_queries = max(1, sum(run.queries for run in runs))
            mean = statistics.fmean(values) if values else None
            rows.append(
                Row(
                    variant=variant, budget=budget, seeds=len(runs), mean=mean,
                    std=statistics.stdev(values) if len(values) > 1 else (0.0 if values else None),
                    regret=100 * optimum - mean if mean is not None else None,
                    queries_to_threshold=statistics.fmean(reached) if reached else None, reached=len(reached),
                    duplicate_rate=duplicates / queries if queries else 0.0,
                    tokens_per_query=sum(run.llm_tokens for run in runs) / all_queries,
                    llm_seconds_per_query=sum(run.llm_seconds for run in runs) / all_queries,
                )
            )  # fmt: skip
    return rows


def _duplicates_within(run: Trace, budget: int) -> int:
    # Duplicates are counted over the whole run; within a budget, in proportion (they are spread over it).
    return round(run.duplicates * min(budget, run.queries) / run.queries) if run.queries else 0


def format_table(rows: Sequence[Row], *, optimum: float, threshold: float, title: str) -> str:
    """The summary as a text table (accuracies in percent)."""
    width = max([len("strategy"), *(len(row.variant) for row in rows)])
    lines = [
        title,
        f"optimum (best test accuracy of the table) {100 * optimum:.2f}; threshold {100 * threshold:.2f}",
        f"{'strategy':<{width}} {'N':>4} {'seeds':>5} {'test acc (mean ± std)':>22} {'regret':>7} "
        f"{'q→thr':>6} {'dup':>5} {'tok/q':>7} {'LLM s/q':>7}",
    ]
    for row in rows:
        score = f"{row.mean:.2f} ± {row.std:.2f}" if row.mean is not None and row.std is not None else "-"
        regret = f"{row.regret:.2f}" if row.regret is not None else "-"
        to = f"{row.queries_to_threshold:.0f}" if row.queries_to_threshold is not None else "-"
        lines.append(
            f"{row.variant:<{width}} {row.budget:>4} {row.seeds:>5} {score:>22} {regret:>7} "
            f"{to + f' ({row.reached})':>6} {row.duplicate_rate:>5.0%} {row.tokens_per_query:>7.0f} "
            f"{row.llm_seconds_per_query:>7.1f}"
        )
    return "\n".join(lines)


def anytime_curves(traces: Sequence[Trace]) -> dict[str, tuple[list[int], list[float], list[float]]]:
    """Per variant: queries, mean and standard deviation of the best-by-validation test accuracy (percent)."""
    curves = {}
    by_variant: dict[str, list[Trace]] = {}
    for trace in traces:
        by_variant.setdefault(trace.variant, []).append(trace)
    for variant, runs in by_variant.items():
        longest = max(run.queries for run in runs)
        xs, means, stds = [], [], []
        for budget in range(1, longest + 1):
            values = [100 * value for run in runs if (value := run.at(budget)) is not None]
            if values:
                xs.append(budget)
                means.append(statistics.fmean(values))
                stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
        curves[variant] = (xs, means, stds)
    return curves


def write_results(
    traces: Sequence[Trace],
    rows: Sequence[Row],
    out: Path,
    *,
    title: str,
    optimum: float,
    threshold: float,
    options: dict[str, dict[str, Any]],
) -> list[Path]:
    """The table (text and JSON), every trace, and the anytime plot (PNG, when matplotlib is there)."""
    from nasloop.report.plots import anytime_figure, matplotlib_missing

    out.mkdir(parents=True, exist_ok=True)
    table = out / "search_quality.txt"
    table.write_text(format_table(rows, optimum=optimum, threshold=threshold, title=title) + "\n")
    data = out / "search_quality.json"
    data.write_text(json.dumps({
        "title": title, "optimum": optimum, "threshold": threshold, "options": options,
        "rows": [asdict(row) for row in rows], "traces": [asdict(trace) for trace in traces],
    }, indent=1))  # fmt: skip
    written = [table, data]
    if matplotlib_missing() is None:
        plot = out / "search_quality.png"
        anytime_figure(anytime_curves(traces), plot, title=title, optimum=100 * optimum)
        written.append(plot)
    return written


def run_grid(
    variants: Sequence[Variant],
    *,
    benchmark: dict[str, Any],
    budget_of: Callable[[Variant], int],
    seeds_of: Callable[[Variant], Sequence[int]],
    root: Path,
    backend: LLMBackend | None = None,
    llm: dict[str, Any] | None = None,
    fitness: str = "val_acc",
    on_trace: Callable[[Trace], None] | None = None,
) -> list[Trace]:
    """Every variant over its seeds, each run at its largest budget."""
    traces = []
    for variant in variants:
        for seed in seeds_of(variant):
            trace = run_variant(variant, benchmark=benchmark, budget=budget_of(variant), seed=seed, root=root,
                                backend=backend, llm=llm, fitness=fitness)  # fmt: skip
            traces.append(trace)
            if on_trace is not None:
                on_trace(trace)
    return traces


def exact_random_search(rows: Sequence[tuple[str, dict[str, float]]], queries: int) -> float:
    """The expected test accuracy of the best-by-validation network among `queries` networks drawn
    uniformly without replacement from `rows` (architecture, metrics): an exact order-statistics sum,
    P(the network ranked r by validation is the best of the draw) = C(n - r, k - 1) / C(n, k)."""
    ranked = sorted(rows, key=lambda row: -row[1]["val_acc"])
    n, k = len(ranked), queries
    total = math.comb(n, k)
    return sum(math.comb(n - r, k - 1) / total * metrics["test_acc"] for r, (_, metrics) in enumerate(ranked, 1))


__all__ = [
    "BUDGET_OPTIONS",
    "SINGLE_OBJECTIVE_OPTIONS",
    "Row",
    "Trace",
    "Variant",
    "anytime_curves",
    "exact_random_search",
    "format_table",
    "run_grid",
    "run_variant",
    "summarise",
    "trace_of",
    "write_results",
]


# ----------------------------------------------------------------------------------------------------
# Multi-objective quality against the true front
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrueFront:
    """The table's true Pareto front for (test accuracy: max, `latency`: min) over every network with both
    figures (and, when `min_accuracy` is set, a test accuracy above it), its normalisation (the front's own
    ideal and nadir) and its hypervolume."""

    latency: str
    points: list[dict[str, float]]
    members: frozenset[str]
    bounds: Any
    hypervolume: float
    reference_point: float
    min_accuracy: float | None = None


def true_front(table: Any, latency: str, reference_point: float = 1.1, min_accuracy: float | None = None) -> TrueFront:
    """The true front of `table` for test accuracy against the device metric `latency`; with `min_accuracy`,
    of the networks whose test accuracy is above it (e.g. leaving out NB201's cells whose output does not
    depend on the input: at 10% on CIFAR-10 and the fastest of all, they stretch the accuracy axis of the
    normalisation from 87-94% down to 10%, and whether a run finds one then outweighs its working networks)."""
    from nasloop.objectives import Bounds, hypervolume, pareto_front, parse_objectives

    objectives = parse_objectives(f"test_acc:max,{latency}:min")
    rows = [(arch, table.query(arch, devices=True)) for arch in table]
    rows = [(arch, metrics) for arch, metrics in rows
            if latency in metrics and (min_accuracy is None or metrics["test_acc"] > min_accuracy)]  # fmt: skip
    front = pareto_front([metrics for _, metrics in rows], objectives)
    points = [rows[index][1] for index in front]
    bounds = Bounds.from_points(points, objectives)
    volume = hypervolume(points, objectives, bounds, reference_point)
    members = frozenset(rows[index][0] for index in front)
    return TrueFront(latency, points, members, bounds, volume, reference_point, min_accuracy)


@dataclass(frozen=True)
class FrontScore:
    """A run's front after some queries, against the true front."""

    hv_fraction: float
    igd: float | None
    true_points_found: int
    front: list[dict[str, float]]


def front_score(trace: Trace, truth: TrueFront, budget: int) -> FrontScore:
    """The run's front after `budget` queries: its candidates' non-dominated set by validation accuracy
    and latency (what the search could select), placed at their test accuracy; its HV as a fraction of
    the true front's (same normalisation and reference point), its IGD to the true front, and how many of
    its queried networks are members of the true front. With the truth's `min_accuracy`, the run's networks
    at or below it by validation accuracy are left out too."""
    from nasloop.objectives import hypervolume, inverted_generational_distance, pareto_front, parse_objectives

    latency = truth.latency
    floor = truth.min_accuracy
    queried = [point for point in trace.points[:budget] if {"val_acc", "test_acc", latency} <= set(point)
               and (floor is None or point["val_acc"] > floor)]  # fmt: skip
    selected = pareto_front(queried, parse_objectives(f"val_acc:max,{latency}:min")) if queried else []
    front = [queried[index] for index in selected]
    reporting = parse_objectives(f"test_acc:max,{latency}:min")
    hv = hypervolume(front, reporting, truth.bounds, truth.reference_point) if front else 0.0
    igd = inverted_generational_distance(front, truth.points, reporting, truth.bounds) if front else None
    found = len({arch for arch in trace.architectures[:budget] if arch in truth.members})
    return FrontScore(hv / truth.hypervolume, igd, found, front)
