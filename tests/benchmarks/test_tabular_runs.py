"""Searches scored from a tabular benchmark: table-only runs, user tables, the harness, config resolution."""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nasloop.benchmarks.harness import (
    SINGLE_OBJECTIVE_OPTIONS,
    Row,
    Variant,
    exact_random_search,
    format_table,
    run_variant,
    summarise,
    trace_of,
    write_results,
)
from nasloop.candidate import FailureKind, Purpose, State
from nasloop.config import ConfigError, build_config
from nasloop.engine import Search
from nasloop.llm.scripted import ScriptedBackend
from nasloop.registry import benchmarks, executors, spaces
from nasloop.resolve import resolve_config
from nasloop.spaces import nb201
from nasloop.store import RunDir, RunStore

NB201 = {"name": "nb201", "dataset": "cifar10"}


def table_run(tmp_path, strategy="random", iterations=20, benchmark=NB201, **extra):
    data = {"strategy": strategy, "benchmark": benchmark, "objective": "val_acc", "budget": {"iterations": iterations},
            "strategy_options": {"final_top_k": 0} if strategy in ("random", "evolution") else {}, **extra}  # fmt: skip
    engine = Search.start(build_config(data), tmp_path / "run", progress=False)
    return engine, engine.run()


def test_a_table_only_run_takes_every_figure_from_the_table_and_starts_no_sandbox(tmp_path, monkeypatch):
    def no_sandbox(name):
        raise AssertionError(f"a table-only run asked for the {name!r} executor")

    monkeypatch.setattr(executors, "get", no_sandbox)
    engine, summary = table_run(tmp_path, iterations=30)
    table = benchmarks.get("nb201")().load("cifar10")
    assert summary.iterations == 30 and summary.valid == 30 and engine.config.space == "nb201"
    assert engine.config.stages == ("static", "build")  # nothing left for the sandbox to do
    for record in engine.history:
        truth = table.query(record.architecture)
        assert record.metrics["val_acc"] == truth["val_acc"] and record.metrics["test_acc"] == truth["test_acc"]
        cost = spaces.get("nb201")().cost(record.architecture, (3, 32, 32), 10)
        assert record.metrics["params"] == cost.params and record.stage == "table"
    assert summary.best.metrics["val_acc"] == max(record.metrics["val_acc"] for record in engine.history)
    assert engine.task.in_shape == (3, 32, 32) and engine.task.num_classes == 10


@pytest.mark.parametrize(("name", "classes"), [("nas-bench-macro", 10), ("channel-bench-resnet", 10)])
def test_evolution_searches_the_other_two_benchmarks(tmp_path, name, classes):
    engine, summary = table_run(tmp_path, strategy="evolution", iterations=40, benchmark={"name": name})
    table = benchmarks.get(name)().load("cifar10")
    assert summary.iterations == 40 and engine.config.space == name and engine.task.num_classes == classes
    assert all(record.metrics["params"] == table.query(record.architecture)["params"] for record in engine.history)


def test_a_user_table_works_and_a_missing_point_fails_naming_the_point_and_the_table(tmp_path):
    full = benchmarks.get("nas-bench-macro")().load("cifar10")
    kept = dict(list(full.rows())[:40])
    user = tmp_path / "mine.json"
    user.write_text(json.dumps({arch: {"mean_acc": 100 * m["val_acc"], "params": m["params"], "flops": m["flops"]}
                                for arch, m in kept.items()}))  # fmt: skip
    spec = {"name": "nas-bench-macro", "dataset": "cifar10", "table": str(user)}
    engine, _ = table_run(tmp_path, iterations=12, benchmark=spec)
    listed = [record for record in engine.history if record.state is State.COMPLETE]
    missing = [record for record in engine.history if record.state is State.FAILED]
    assert listed and missing and len(listed) + len(missing) == 12  # random points, most not in 40 rows
    for record in listed:
        assert record.metrics["val_acc"] == pytest.approx(kept[full.key(record.architecture)]["val_acc"])
    failure = missing[0].failure
    assert failure.kind is FailureKind.BUILD and missing[0].architecture in failure.message
    assert str(user) in failure.message and "40 architectures" in failure.message


def test_random_search_agrees_with_an_exact_computation_from_the_table(tmp_path):
    table = benchmarks.get("nb201")().load("cifar10")
    space = spaces.get("nb201")()
    canonical = [(arch, metrics) for arch, metrics in table.rows() if space.canonical(arch) == arch]
    assert len(canonical) == 9445  # nasloop's random search draws distinct networks uniformly
    expected = exact_random_search(canonical, 10)
    values = []
    for seed in range(60):
        trace = run_variant(Variant.parse("random"), benchmark=NB201, budget=10, seed=seed, root=tmp_path)
        values.append(trace.at(10))
    mean, error = statistics.fmean(values), statistics.stdev(values) / len(values) ** 0.5
    assert abs(mean - expected) < 4 * error, (mean, expected, error)
    assert 0.925 < expected < 0.935  # the README's anchor: RS 93.03 at 10 queries (300 repeats)


def test_an_interrupted_harness_run_is_continued_and_a_different_one_is_refused(tmp_path, monkeypatch):
    variant = Variant.parse("evolution")
    record = Search._record

    def interrupt_at_five(engine, *args, **kwargs):
        if engine.iterations_done == 5:
            raise KeyboardInterrupt
        return record(engine, *args, **kwargs)

    monkeypatch.setattr(Search, "_record", interrupt_at_five)
    with pytest.raises(KeyboardInterrupt):
        run_variant(variant, benchmark=NB201, budget=12, seed=3, root=tmp_path)
    monkeypatch.setattr(Search, "_record", record)
    with RunStore(RunDir(tmp_path / "evolution-seed3").store_path, readonly=True) as store:
        first = [record.architecture for record in sorted(store.candidates(), key=lambda record: record.id)]
    assert len(first) == 5
    # a run started before an option existed: the stored config lacks it, at its default it is no difference
    config_path = RunDir(tmp_path / "evolution-seed3").config_path
    stored = yaml.safe_load(config_path.read_text())
    unset = next(key for key in stored["strategy_options"] if key not in variant.options)
    del stored["strategy_options"][unset]
    config_path.write_text(yaml.safe_dump(stored))
    trace = run_variant(variant, benchmark=NB201, budget=12, seed=3, root=tmp_path)
    assert trace.queries == 12 and trace.architectures[:5] == first
    with pytest.raises(FileExistsError, match="evolution-seed3 holds a run with a different config"):
        run_variant(variant, benchmark=NB201, budget=20, seed=3, root=tmp_path)


def test_the_harness_script_run_again_skips_the_seeds_it_has(tmp_path):
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "search_quality.py"
    command = [sys.executable, str(script), "--variants", "random", "--budgets", "5", "--seeds", "2",
               "--out", str(tmp_path)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    again = subprocess.run(command, check=True, capture_output=True, text=True)
    assert again.stdout.count("already in") == 2
    assert len((tmp_path / "traces.jsonl").read_text().splitlines()) == 2


def test_the_harness_writes_its_table_and_plot_with_the_scripted_llm(tmp_path):
    space = spaces.get("nb201")()
    rng = random.Random(0)

    def answer(messages):
        return json.dumps({"architecture": space.sample(rng)})

    backend = ScriptedBackend(answers=answer)
    runs = [(label, seed) for label in ("random", "llm-history") for seed in (0, 1)]
    root = tmp_path / "runs"
    traces = [
        run_variant(Variant.parse(label), benchmark=NB201, budget=6, seed=seed, root=root, backend=backend)
        for label, seed in runs
    ]
    assert all(trace.queries == 6 for trace in traces)
    history = next(trace for trace in traces if trace.variant == "llm-history")
    assert history.llm_tokens > 0 and len(backend.calls) >= 12
    optimum = benchmarks.get("nb201")().load("cifar10").optimum().best_test_acc
    rows = summarise(traces, [2, 6], optimum, threshold=0.90)
    assert {(row.variant, row.budget) for row in rows} == {(v, b) for v in ("random", "llm-history") for b in (2, 6)}
    assert all(row.seeds == 2 and row.regret is not None and row.regret >= 0 for row in rows)
    written = write_results(traces, rows, tmp_path / "out", title="test", optimum=optimum, threshold=0.9, options={})
    names = {path.name for path in written}
    assert {"search_quality.txt", "search_quality.json"} <= names
    pytest.importorskip("matplotlib")
    assert "search_quality.png" in names and (tmp_path / "out" / "search_quality.png").stat().st_size > 5000
    assert "llm-history" in (tmp_path / "out" / "search_quality.txt").read_text()


def test_a_harness_run_shows_its_progress_on_stderr_only_when_asked(tmp_path, capsys):
    space = spaces.get("nb201")()
    rng = random.Random(0)
    backend = ScriptedBackend(answers=lambda messages: json.dumps({"architecture": space.sample(rng)}))
    variant = Variant.parse("llm-history")
    run_variant(variant, benchmark=NB201, budget=4, seed=0, root=tmp_path / "quiet", backend=backend)
    assert capsys.readouterr().err == ""
    trace = run_variant(variant, benchmark=NB201, budget=4, seed=0, root=tmp_path / "shown", backend=backend,
                        progress=True)  # fmt: skip
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("#")]
    assert len(lines) == 4 and all(architecture in err for architecture in trace.architectures)
    assert "llm-history" in err and "4/4" in err  # the bar: the strategy and the budget done


@pytest.mark.parametrize("fallback", [True, False])
def test_llm_history_turns_a_repeated_answer_into_an_unseen_neighbour_of_it(tmp_path, fallback):
    space = spaces.get("nb201")()
    same = space.sample(random.Random(3))
    backend = ScriptedBackend(answers=lambda messages: json.dumps({"architecture": same}))
    label = "llm-history" if fallback else "llm-history:duplicate_fallback=false"
    trace = run_variant(Variant.parse(label), benchmark=NB201, budget=5, seed=0, root=tmp_path, backend=backend)
    with RunStore(RunDir(Path(trace.run_dir)).store_path, readonly=True) as store:
        records = sorted((r for r in store.candidates() if r.purpose is Purpose.SEARCH), key=lambda r: r.id)
    assert len(records) == 5 and records[0].architecture == same and records[0].notes["operator"] == "llm-history"
    assert len(backend.calls) == 1 + 4 * 2  # every later answer repeats the first, and is sent back once
    if fallback:
        assert trace.duplicates == 0 and len({space.canonical(r.architecture) for r in records}) == 5
        assert all(r.notes["operator"] == "mutation-fallback" and r.notes["llm_answer"] == same for r in records[1:])
        assert all(r.state is State.COMPLETE for r in records)
        assert space.canonical(records[1].architecture) in {space.canonical(n) for n in nb201.neighbors(same)}
    else:
        assert trace.duplicates == 4 and all(r.state is State.DUPLICATE for r in records[1:])


def test_single_objective_defaults_add_to_the_budget_defaults_and_labels_print_whole():
    plain, single = Variant.parse("niche-pareto"), Variant.parse("niche-pareto", SINGLE_OBJECTIVE_OPTIONS)
    assert "off_front_every" not in plain.options and single.options["off_front_every"] > 1
    assert single.options["initial_per_niche"] == plain.options["initial_per_niche"] == 1
    assert Variant.parse("niche-pareto:off_front_every=1", SINGLE_OBJECTIVE_OPTIONS).options["off_front_every"] == 1
    label = "reflective-zero-cost:llm=false,population_size=3,tournament_size=3"
    row = Row(label, 10, 2, 93.1, 0.2, 1.2, None, 0, 0.0, 0.0, 0.0)
    assert label in format_table([row], optimum=0.9437, threshold=0.9385, title="t")


def test_trace_reads_the_best_by_validation_and_counts_repeats():
    from nasloop.store import CandidateRecord

    def record(id, val, test, state=State.COMPLETE, purpose=Purpose.SEARCH, hash=None):
        return CandidateRecord(id=id, iteration=id, state=state, metrics={"val_acc": val, "test_acc": test},
                               hash=hash or str(id), purpose=purpose)  # fmt: skip

    records = [record(1, 0.5, 0.6), record(2, 0.7, 0.65), record(3, 0.6, 0.9), record(4, 0.7, 0.65, hash="2"),
               record(5, 0.9, 0.8, purpose=Purpose.FINAL)]  # fmt: skip
    best_val, best_test, duplicates = trace_of(records)
    assert best_val == [0.5, 0.7, 0.7, 0.7] and best_test == [0.6, 0.65, 0.65, 0.65] and duplicates == 1


# -- configuration resolved before the run -------------------------------------------------------------


def resolved(**data):
    return resolve_config(build_config(data))


def test_strategies_get_the_stages_and_proxies_they_need():
    rz = resolved(strategy="reflective-zero-cost", space="nb201", dataset={"name": "digits"})
    assert rz.stages == ("static", "build", "zero-cost") and rz.proxies == ("synflow",) and rz.objective == "synflow"
    niche = resolved(strategy="niche-pareto", space="nb201", objectives=["val_acc:max", "latency_ms:min"],
                     dataset={"name": "digits"})  # fmt: skip
    assert niche.stages == ("static", "build", "hardware", "zero-cost") and niche.proxies == ("naswot",)
    on_table = resolved(strategy="reflective-zero-cost", benchmark=NB201, objective="val_acc")
    assert on_table.strategy_options["fitness"] == "val_acc" and on_table.stages == ("static", "build")
    assert on_table.space == "nb201" and on_table.dataset.name == "synthetic-cifar10"
    objectives = ["val_acc:max", "edgegpu_latency_ms:min"]
    pareto_table = resolved(strategy="niche-pareto", benchmark=NB201, objectives=objectives)
    assert pareto_table.strategy_options["predictor"] == "measured" and pareto_table.stages == ("static", "build")
    proxy_on_table = resolved(strategy="random", benchmark=NB201, objective="synflow")
    assert proxy_on_table.stages == ("static", "build", "zero-cost") and proxy_on_table.proxies == ("synflow",)
    assert resolved(strategy="feedback-memory").stages == ("static", "build", "train")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"strategy": "reflective-zero-cost", "space": "nb201", "stages": ["static", "build"]},
         "stages: add zero-cost, the stage that computes synflow"),
        ({"strategy": "reflective-zero-cost", "space": "nb201", "proxies": ["naswot"]},
         "proxies: add synflow"),
        ({"strategy": "niche-pareto", "space": "nb201", "objectives": ["val_acc:max", "edgegpu_latency_ms:min"]},
         "edgegpu_latency_ms is a device measurement from HW-NAS-Bench"),
        ({"strategy": "random", "space": "macro", "benchmark": NB201}, "space: 'macro' is not the space of benchmark"),
        ({"strategy": "random", "benchmark": {"name": "nb201", "dataset": "cifar1000"}}, "benchmark.dataset"),
        ({"strategy": "random", "benchmark": {"name": "nb2O1"}}, "Did you mean nb201"),
    ],
)  # fmt: skip
def test_contradictions_fail_at_load_naming_the_option(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolved(**data)
