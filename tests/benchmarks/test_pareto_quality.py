"""Multi-objective runs on the device tables: the true front, HV/IGD against it, NSGA-II through pymoo."""

from __future__ import annotations

from typing import ClassVar

import pytest

from nasloop.benchmarks.harness import Trace, TrueFront, Variant, front_score, run_variant, true_front
from nasloop.candidate import State
from nasloop.config import build_config
from nasloop.engine import Search
from nasloop.objectives import Bounds, parse_objectives
from nasloop.registry import benchmarks

NB201 = {"name": "nb201", "dataset": "cifar10"}
OBJECTIVES = ["val_acc:max", "edgegpu_latency_ms:min"]


class SmallTable:
    """A hand-made table of five networks (test accuracy, latency)."""

    rows: ClassVar[dict[str, dict[str, float]]] = {
        "a": {"val_acc": 0.90, "test_acc": 0.90, "lat_ms": 10.0},
        "b": {"val_acc": 0.80, "test_acc": 0.80, "lat_ms": 5.0},
        "c": {"val_acc": 0.70, "test_acc": 0.70, "lat_ms": 6.0},  # dominated by b
        "d": {"val_acc": 0.60, "test_acc": 0.60, "lat_ms": 1.0},
        "e": {"val_acc": 0.50, "test_acc": 0.50, "lat_ms": 4.0},  # dominated by d
    }

    def __iter__(self):
        return iter(self.rows)

    def query(self, arch, devices=False):
        return dict(self.rows[arch])


def test_the_true_front_of_a_small_table_by_hand():
    truth = true_front(SmallTable(), "lat_ms")
    assert truth.members == {"a", "b", "d"}
    assert truth.bounds.ideal == {"test_acc": 0.90, "lat_ms": 1.0} and truth.bounds.nadir == {
        "test_acc": 0.60,
        "lat_ms": 10.0,
    }
    # normalised (1 - acc gain, latency): a (0, 1), b (1/3, 4/9), d (1, 0); reference 1.1 each
    # HV as a sweep over the first coordinate: strips of a, b and d
    expected = (1.1 - 0) * (1.1 - 1.0) + (1.1 - 1 / 3) * (1.0 - 4 / 9) + (1.1 - 1.0) * (4 / 9 - 0.0)
    assert truth.hypervolume == pytest.approx(expected)


def test_hv_and_igd_of_a_known_subset_against_the_true_front():
    truth = true_front(SmallTable(), "lat_ms")
    rows = SmallTable.rows
    trace = Trace(
        "x", 0, [], [], 0, 3, 0, 0, 0, "", points=[rows["b"], rows["c"], rows["e"]], architectures=["b", "c", "e"]
    )
    score = front_score(trace, truth, 3)
    # the run's front by validation: b and e (c is dominated by b); HV of {b, e} in the true front's scale
    b, e = (1 / 3, 4 / 9), (4 / 3, 3 / 9)
    hv = (1.1 - b[0]) * (1.1 - b[1])  # e lies beyond the nadir in accuracy: outside the reference box
    assert e[0] > 1.1 and score.hv_fraction == pytest.approx(hv / truth.hypervolume)
    # IGD: mean over a, b, d of the distance to the nearest of b, e
    a, d = (0.0, 1.0), (1.0, 0.0)
    dist = lambda p, q: ((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2) ** 0.5  # noqa: E731
    expected = (min(dist(a, b), dist(a, e)) + 0.0 + min(dist(d, b), dist(d, e))) / 3
    assert score.igd == pytest.approx(expected) and score.true_points_found == 1


def test_an_accuracy_floor_leaves_the_networks_at_or_below_it_out_of_the_truth_and_of_the_run():
    truth = true_front(SmallTable(), "lat_ms", min_accuracy=0.65)
    assert truth.members == {"a", "b"} and truth.bounds.nadir == {"test_acc": 0.80, "lat_ms": 10.0}
    # normalised: a (0, 1), b (1, 0); HV of their two boxes up to (1.1, 1.1), overlap counted once
    assert truth.hypervolume == pytest.approx(1.1 * 0.1 + 0.1 * 1.1 - 0.1 * 0.1)
    rows = SmallTable.rows
    trace = Trace("x", 0, [], [], 0, 2, 0, 0, 0, "", points=[rows["b"], rows["d"]], architectures=["b", "d"])
    score = front_score(trace, truth, 2)
    # d (0.60 by validation) is left out: the run's front is b alone, not b and d
    assert [point["lat_ms"] for point in score.front] == [5.0] and score.true_points_found == 1
    assert score.hv_fraction == pytest.approx(0.1 * 1.1 / truth.hypervolume)
    whole = true_front(SmallTable(), "lat_ms")
    assert whole.min_accuracy is None and len(front_score(trace, whole, 2).front) == 2


def test_the_zero_output_cells_of_nb201_are_on_the_true_front_only_without_the_floor():
    table = benchmarks.get("nb201")().load("cifar10")
    every, working = (true_front(table, "raspi4_latency_ms", min_accuracy=floor) for floor in (None, 0.5))
    assert min(point["test_acc"] for point in every.points) < 0.11  # the fastest cell of all outputs a constant
    assert min(point["test_acc"] for point in working.points) > 0.85 and working.members < every.members


def test_the_device_table_front_of_nb201_and_a_whole_front_scores_one():
    table = benchmarks.get("nb201")().load("cifar10")
    truth = true_front(table, "edgegpu_latency_ms")
    assert 5 < len(truth.points) < 200 and all("edgegpu_latency_ms" in point for point in truth.points)
    archs = sorted(truth.members)
    points = [table.query(arch, devices=True) for arch in archs]
    trace = Trace("all", 0, [], [], 0, len(archs), 0, 0, 0, "", points=points, architectures=archs)
    score = front_score(trace, truth, len(archs))
    # the true front queried whole: by validation some members may be dominated, so at most the whole HV
    assert 0.5 < score.hv_fraction <= 1.0 + 1e-12 and score.true_points_found == len(archs)


def test_nsga2_runs_through_the_engine_and_store_on_the_device_tables(tmp_path):
    config = build_config({"strategy": "nsga2", "strategy_options": {"population_size": 8}, "benchmark": NB201,
                           "objectives": OBJECTIVES, "budget": {"iterations": 40}, "seed": 3})  # fmt: skip
    engine = Search.start(config, tmp_path / "run", progress=False)
    summary = engine.run()
    assert summary.iterations == 40 and summary.llm_totals["calls"] == 0
    complete = [record for record in engine.history if record.state is State.COMPLETE]
    assert len(complete) >= 30 and all("val_acc" in record.metrics for record in complete)
    generations = {record.notes["generation"] for record in engine.history}
    assert len(generations) >= 4  # offspring of several generations, told to pymoo in turn
    state = engine.strategy.state_dict()
    assert len(state["population"]) == 8 and engine.store.latest_strategy_state() is not None


def test_nsga2_improves_on_random_at_equal_candidates(tmp_path):
    table = benchmarks.get("nb201")().load("cifar10")
    truth = true_front(table, "edgegpu_latency_ms")
    hv = {}
    for label in ("nsga2:population_size=20", "random"):
        scores = []
        for seed in range(3):
            trace = run_variant(Variant.parse(label), benchmark=NB201, budget=200, seed=seed, root=tmp_path,
                                extra={"objectives": OBJECTIVES})  # fmt: skip
            scores.append(front_score(trace, truth, 200).hv_fraction)
        hv[label] = sum(scores) / len(scores)
    assert hv["nsga2:population_size=20"] > hv["random"] - 0.02  # no worse than random; usually better


def test_a_device_metric_the_table_lacks_fails_that_objective(tmp_path):
    table = benchmarks.get("nb201")().load("cifar10")
    missing = next(arch for arch in table if "edgegpu_latency_ms" not in table.query(arch, devices=True))
    from nasloop.benchmarks.evaluation import TabularEvaluator

    result = TabularEvaluator(table, devices=True).evaluate(missing)
    assert result.state is State.COMPLETE and "edgegpu_latency_ms" not in result.metrics
    reason = result.info["missing_metrics"]["edgegpu_latency_ms"]
    assert missing in reason and "hw_nas_bench" in reason
    assert isinstance(TrueFront, type) and isinstance(Bounds, type) and parse_objectives("a:max")


def test_a_variant_uses_the_llm_exactly_when_its_strategy_declares_it_and_its_options_allow_it():
    uses = {label: Variant.parse(label).uses_llm for label in
            ("random", "evolution", "nsga2", "niche-pareto", "niche-pareto:llm=false", "llm-history",
             "reflective-zero-cost", "reflective-zero-cost:llm=false")}  # fmt: skip
    assert uses == {"random": False, "evolution": False, "nsga2": False, "niche-pareto": True,
                    "niche-pareto:llm=false": False, "llm-history": True, "reflective-zero-cost": True,
                    "reflective-zero-cost:llm=false": False}  # fmt: skip


def test_each_query_knows_the_llm_calls_made_before_it_and_the_table_has_a_row_at_the_paper_budget(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    from nasloop.llm.scripted import ScriptedBackend
    from nasloop.store import RunDir, RunStore

    backend = ScriptedBackend(answers=lambda messages: json.dumps({"operation": "mutation", "rationale": "r",
                                                                    "architecture": "not a cell"}))  # fmt: skip
    trace = run_variant(Variant.parse("niche-pareto"), benchmark=NB201, budget=12, seed=0, root=tmp_path,
                        backend=backend, extra={"objectives": OBJECTIVES})  # fmt: skip
    assert trace.queries == 12 and trace.llm_calls == len(backend.calls) > 12
    made = trace.calls_by_query
    assert len(made) == 12 and made == sorted(made) and made[0] == 0 and made[-1] <= trace.llm_calls
    with RunStore(RunDir(Path(trace.run_dir)).store_path, readonly=True) as store:
        calls = store.llm_calls()
        searched = sorted((r for r in store.candidates() if r.purpose.value == "search"), key=lambda r: r.id)
    for record, count in zip(searched, made, strict=True):  # every call stored before the query, and no other
        assert count == sum(1 for call in calls if call.created <= record.created)
    within = made[6]  # the calls made by the 7th query
    assert trace.queries_within(within) == sum(1 for count in made if count <= within) >= 7
    assert trace.queries_within(trace.llm_calls) == 12 and trace.queries_within(10_000) == 12

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "pareto_quality.py"
    spec = importlib.util.spec_from_file_location("pareto_quality", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.LLM_CALLS = within
    truth = true_front(benchmarks.get("nb201")().load("cifar10"), "edgegpu_latency_ms")
    baseline = run_variant(Variant.parse("random"), benchmark=NB201, budget=20, seed=0, root=tmp_path,
                           extra={"objectives": OBJECTIVES})  # fmt: skip
    assert trace.fallbacks == [False] * 6 + [True] * 6  # six random cells, then no answer is a cell
    assert baseline.fallbacks == [False] * 20
    old = Trace(**{**trace.__dict__, "calls_by_query": [], "fallbacks": []})  # written before the fields existed
    text = module.summary("edgegpu", truth, module.with_history([old, baseline]), [20])
    equal = trace.queries_within(within)
    assert f"had {equal} candidates" in text and f"equal candidates for the others: {equal}" in text
    rows = {(parts[0], int(parts[1])): float(parts[-1])
            for parts in (line.rsplit(None, 11) for line in text.splitlines()[3:])}  # fmt: skip
    assert (f"niche-pareto @{within} calls", equal) in rows and ("random", equal) in rows and ("random", 20) in rows
    assert rows[("niche-pareto", 12)] == 6 and rows[(f"niche-pareto @{within} calls", equal)] == equal - 6
    assert rows[("random", 20)] == 0
    gone = Trace(**{**trace.__dict__, "fallbacks": [], "run_dir": str(tmp_path / "removed")})  # unknown, not 0
    assert all(line.endswith(" -") for line in module.summary("edgegpu", truth, [gone], [20]).splitlines()[3:])
