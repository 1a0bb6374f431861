"""Final training (`nasloop train`): choosing finalists, refusing a run in use, storing the results."""

import json
import subprocess
import sys
import textwrap

import pytest
from support import FakeExecutor, fenced, good_net

from nasloop.candidate import EvalResult, FailureKind, Purpose, State
from nasloop.cli import main
from nasloop.config import build_config
from nasloop.engine import Search
from nasloop.final_training import (
    FinalTrainingSettings,
    final_job,
    format_table,
    retrain,
    select_finalists,
    stored_results,
)
from nasloop.llm.scripted import ScriptedBackend
from nasloop.store import CandidateRecord, RunDir, RunInUse, RunLock, RunStore


def make_run(tmp_path, codes, strategy="one-shot", executor=None, **options):
    """A finished run whose generator answers `codes` in order (one per iteration)."""
    config = build_config(
        {
            "strategy": strategy, "strategy_options": options, "dataset": {"name": "digits", "train_subset": 600},
            "seed_model": "none",  # the candidates are the given codes
            "budget": {"iterations": len(codes)}, "llm": {"backend": "scripted", "model": "scripted"},
            "recipe": {"epochs": 0.5}, "limits": {"timeout_s": 60},
        }
    )  # fmt: skip
    answers = [fenced(code) for code in codes]
    engine = Search.start(config, tmp_path / "run", backend=ScriptedBackend(answers=answers),
                          executor=executor or FakeExecutor(), progress=False)  # fmt: skip
    engine.run()
    engine.close()  # the run is finished: no process writes it
    return tmp_path / "run", config


def record(candidate_id, metrics, code=None, state=State.COMPLETE, code_hash=None):
    return CandidateRecord(id=candidate_id, iteration=candidate_id, state=state, code=code or f"# {candidate_id}",
                           hash=code_hash or str(candidate_id), metrics=metrics)  # fmt: skip


def test_finalists_are_the_best_by_the_selection_metric_one_per_code():
    config = build_config({})
    records = [
        record(1, {"val_acc": 0.5}),
        record(2, {"val_acc": 0.9}),
        record(3, {"val_acc": 0.9}, code_hash="2"),  # the same code re-evaluated: trained once
        record(4, {"val_acc": 0.7}),
        record(5, {}, state=State.FAILED),
        record(6, {"val_acc": 0.99}, state=State.PRUNED),
    ]
    finalists = select_finalists(config, records, top=3)
    assert [(f.record.id, f.rank, f.selected_by, f.score) for f in finalists] == [
        (2, 1, "val_acc", 0.9), (4, 2, "val_acc", 0.7), (1, 3, "val_acc", 0.5)
    ]  # fmt: skip
    assert select_finalists(build_config({"protocol": "paper"}), [record(1, {"test_acc": 0.3})], 1)[0].score == 0.3


def test_expert_rules_runs_choose_finalists_by_combined_effectiveness():
    effectiveness = {"fps_weight": 1.0, "reference_fps": 1000.0}
    config = build_config({"strategy": "expert-rules", "strategy_options": {"effectiveness": effectiveness}})
    accurate_but_slow = record(1, {"val_acc": 0.9, "train_acc": 0.9, "throughput_ips": 100.0})
    fast = record(2, {"val_acc": 0.8, "train_acc": 0.8, "throughput_ips": 1000.0})
    finalists = select_finalists(config, [accurate_but_slow, fast], top=2)
    assert [(f.record.id, f.selected_by) for f in finalists] == [(2, "cm"), (1, "cm")]
    assert finalists[0].score == pytest.approx(0.8 + 0.8 + 1.0)


def test_final_job_uses_the_epochs_full_data_and_a_larger_timeout(tmp_path):
    config = build_config({"dataset": {"name": "digits", "train_subset": 600}, "recipe": {"epochs": 0.5, "lr": 0.2},
                           "limits": {"timeout_s": 60, "max_params": 10_000}})  # fmt: skip
    job = final_job(config, record(1, {}, code=good_net()), FinalTrainingSettings(epochs=2, dataset_root="/data"))
    assert job.recipe.epochs == 2 and job.recipe.lr == 0.2 and job.stages == ("static", "build", "train")
    assert job.dataset.train_subset is None and job.dataset.root == "/data" and job.dataset.name == "digits"
    assert job.limits.timeout_s == 2 * (2 / 0.5) * 10 * 60 and job.limits.max_params == 10_000
    switched = final_job(config, record(1, {}), FinalTrainingSettings(recipe="paper", train_subset=100, timeout_s=9))
    assert switched.recipe.name == "paper" and switched.recipe.lr is None  # the run's lr was for its own recipe
    assert switched.dataset.train_subset == 100 and switched.limits.timeout_s == 9


def test_retrain_runs_each_finalist_and_stores_the_results(tmp_path):
    run_dir, _ = make_run(tmp_path, [good_net(8), good_net(9), good_net(8), good_net(10)])
    jobs = []

    def run_job(job):
        jobs.append(job)
        if "(channels, 10," in job.code:
            return EvalResult.failed(FailureKind.TIMEOUT, "wall-clock limit reached")
        return EvalResult(State.COMPLETE, metrics={"val_acc": 0.8, "test_acc": 0.75, "train_s": 1.5})

    results = retrain(run_dir, 3, FinalTrainingSettings(epochs=3), run_job=run_job)
    assert len(jobs) == 3 and all(job.recipe.epochs == 3 for job in jobs)
    assert {result.candidate_id for result in results} == {1, 2, 4}  # candidate 3 duplicates 1
    assert [result.rank for result in results] == [1, 2, 3]
    failed = next(result for result in results if result.state == "failed")
    assert failed.failure["kind"] == "timeout" and failed.energy_j >= 0
    complete = next(result for result in results if result.state == "complete")
    assert complete.metrics["test_acc"] == 0.75 and complete.energy_method in ("measured", "estimated")
    assert complete.energy_j > 0 and "metered from the parent" in complete.energy_detail
    with RunStore(run_dir / "run.sqlite", readonly=True) as store:
        artifacts = store.artifacts("final_training/")
    assert sorted(artifacts) == [f"final_training/{i}" for i in (1, 2, 4)]
    assert json.loads(artifacts["final_training/1"])["settings"]["epochs"] == 3
    assert [result.to_dict() for result in stored_results(run_dir)] == [result.to_dict() for result in results]
    table = format_table(results)
    assert "test_acc" in table.splitlines()[0] and "0.7500" in table and "timeout: wall-clock" in table


def test_energy_reported_by_the_evaluation_is_preferred(tmp_path):
    run_dir, _ = make_run(tmp_path, [good_net(8)])

    def run_job(job):
        energy = {"method": "measured", "detail": "Intel RAPL (intel-rapl:0), 3.1 s"}
        metrics = {"val_acc": 0.8, "test_acc": 0.7, "train_energy_j": 12.5}
        return EvalResult(State.COMPLETE, metrics=metrics, info={"energy": energy})

    (result,) = retrain(run_dir, 1, FinalTrainingSettings(epochs=1), run_job=run_job)
    assert (result.energy_j, result.energy_method) == (12.5, "measured")
    assert result.energy_detail == "training only, metered in the sandbox: Intel RAPL (intel-rapl:0), 3.1 s"


HOLD_LOCK = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from nasloop.store import RunDir, RunLock
    lock = RunLock.acquire(RunDir(Path(sys.argv[1])))
    print("locked", flush=True)
    sys.stdin.readline()
    """
)


def test_a_run_written_by_another_process_is_refused(tmp_path):
    run_dir, _ = make_run(tmp_path, [good_net(8)])
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUse, match=f"pid {holder.pid}"):
            retrain(run_dir, 1, FinalTrainingSettings(), run_job=lambda job: pytest.fail("must not train"))
        assert main(["train", str(run_dir), "--top", "1"]) == 2
        with pytest.raises(RunInUse):
            Search.resume(run_dir, progress=False)
    finally:
        holder.communicate("done\n", timeout=30)
    RunLock.acquire(RunDir(run_dir)).release()  # the lock went with the process


def test_final_training_adds_final_candidates_that_are_not_finalists_again(tmp_path):
    run_dir, _ = make_run(tmp_path, [good_net(8), good_net(9)])

    def run_job(job):
        return EvalResult(State.COMPLETE, metrics={"val_acc": 0.99, "test_acc": 0.98})

    (first,) = retrain(run_dir, 1, FinalTrainingSettings(epochs=2), run_job=run_job)
    with RunStore(run_dir / "run.sqlite", readonly=True) as store:
        trained = store.candidates()[-1]
    assert trained.id == first.trained_id and trained.purpose is Purpose.FINAL and trained.parent == first.candidate_id
    assert trained.metrics["val_acc"] == 0.99 and "final_training" in trained.notes
    (again,) = retrain(run_dir, 1, FinalTrainingSettings(epochs=2), run_job=run_job)
    assert again.candidate_id == first.candidate_id  # the search's best, not its trained copy


def test_a_run_without_completed_candidates_trains_nothing(tmp_path, capsys):
    broken = "import torch.nn as nn\n\nclass Net(nn.Module):\n    def forward(self, x):\n        return x[12345]\n"
    run_dir, _ = make_run(tmp_path, [broken])
    assert retrain(run_dir, 2, FinalTrainingSettings(), run_job=lambda job: pytest.fail("nothing to train")) == []


@pytest.mark.slow
def test_train_command_retrains_a_tiny_run_in_the_real_sandbox(tmp_path, capsys):
    run_dir, _ = make_run(tmp_path, [good_net(8), good_net(16), good_net(12)])
    assert main(["train", str(run_dir), "--top", "2", "--epochs", "1", "--device", "cpu"]) == 0
    output = capsys.readouterr().out
    assert "test_acc" in output and "stored in" in output
    results = stored_results(run_dir)
    assert [result.rank for result in results] == [1, 2]
    for result in results:
        assert result.state == "complete", result.failure
        assert 0.0 <= result.metrics["test_acc"] <= 1.0 and result.metrics["train_s"] > 0
        assert result.settings["epochs"] == 1 and result.settings["dataset"]["train_subset"] is None
        assert result.energy_j > 0 and result.energy_method in ("measured", "estimated")
        assert result.energy_detail.startswith(("training only", "whole evaluation"))
