"""The real sandbox on good candidates: warm overhead, fast rejection, training end to end with the
parent's own scoring, pruning, one-off evaluation, and the choice of isolation."""

from __future__ import annotations

import logging
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from nasloop.candidate import FailureKind, State
from nasloop.evaluate import isolation as isolation_module
from nasloop.evaluate.isolation import SandboxError, bwrap_problem, choose_isolation
from nasloop.evaluate.job import DatasetSpec, EvalJob, Limits, Recipe
from nasloop.evaluate.sandbox import Sandbox, evaluate
from nasloop.evaluate.train import accuracy

DATASET = DatasetSpec(name="digits")
NET = textwrap.dedent(
    """
    import torch
    import torch.nn as nn


    class Net(nn.Module):
        def __init__(self, in_shape, num_classes):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(in_shape[0], 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2)
            )  # (B, 8, 2, 2)
            self.head = nn.Linear(32, num_classes)  # (B, num_classes)

        def forward(self, x):
            return self.head(self.features(x).flatten(1))
    """
)
SHAPE_BROKEN = NET.replace("nn.Linear(32, num_classes)", "nn.Linear(33, num_classes)")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with Sandbox(DATASET, work_dir=tmp_path_factory.mktemp("sandbox"), keep_work_dirs=True) as started:
        started.ready_worker()
        yield started


def job(code: str = NET, **fields: object) -> EvalJob:
    return EvalJob.model_validate({"code": code, "dataset": DATASET, "stages": ("static", "build"), **fields})


@pytest.mark.slow
def test_warm_jobs_reuse_the_worker_and_report_their_overhead(sandbox: Sandbox) -> None:
    """Jobs after the first are forked from the same warm worker (no new interpreter, no torch import);
    how little that costs is measured by `benchmarks/proxy_train.py`, not asserted here."""
    sandbox.run(job())  # the first child pays for first-touch page faults
    worker = sandbox.ready_worker().process.pid
    for _ in range(3):
        result = sandbox.run(job())
        assert result.state is State.COMPLETE, result.failure
        assert sandbox.ready_worker().process.pid == worker
        assert 0 <= result.timings["sandbox_overhead_s"] <= result.timings["total_s"], result.timings
    assert set(result.timings) >= {"static_s", "build_s", "total_s", "sandbox_overhead_s"}
    assert result.metrics["params"] == (1 * 8 * 9 + 8) + 2 * 8 + (32 * 10 + 10)  # conv, batch norm, head


@pytest.mark.slow
def test_a_shape_broken_candidate_is_rejected_before_training(sandbox: Sandbox) -> None:
    result = sandbox.run(job(SHAPE_BROKEN, stages=("static", "build", "train")))
    assert "train_s" not in result.timings and not result.curve  # one forward pass, no training step
    assert result.failure is not None and result.failure.kind is FailureKind.SHAPE
    assert "4x32 and 33x10" in result.failure.message and result.stage == "build"


@pytest.mark.slow
def test_the_parameter_budget(sandbox: Sandbox) -> None:
    result = sandbox.run(job(limits=Limits(max_params=100)))
    assert result.failure is not None and result.failure.kind is FailureKind.BUDGET
    assert "the limit is 100" in result.failure.message
    # the layers to shrink first, largest first: the head (32 * 10 + 10), the convolution (1 * 8 * 9 + 8)
    assert "the largest layers: head = Linear(in_features=32, out_features=10, bias=True): 330 (77%), features.0" in (
        result.failure.message
    )


@pytest.mark.slow
def test_training_end_to_end_is_scored_by_the_parent(sandbox: Sandbox) -> None:
    reported: list[tuple[int, float]] = []
    recipe = Recipe(batch_size=32, epochs=2)
    result = sandbox.run(
        job(stages=("static", "build", "train"), recipe=recipe),
        on_progress=lambda step, loss: reported.append((step, loss)) is not None,
    )
    assert result.state is State.COMPLETE, result.failure
    assert result.stage == "train"
    steps = int(result.metrics["steps"])
    assert result.curve == reported and result.curve[-1][0] == steps
    work = sorted(Path(sandbox.jobs_dir).iterdir())[-1] / "work"
    val_pred = np.load(work / "val_pred.npy")
    assert result.metrics["val_acc"] == pytest.approx(accuracy(val_pred, sandbox.splits.val_y))
    assert result.metrics["val_acc"] > 0.3  # ten classes of digits: well above chance after two epochs
    assert 0.0 <= result.metrics["test_acc"] <= 1.0
    for name in ("train_loss", "train_acc", "train_s", "samples_per_s", "params"):
        assert name in result.metrics
    assert result.timings["train_s"] > 0 and result.info["isolation"] == sandbox.isolation


@pytest.mark.slow
def test_pruning_stops_the_child(sandbox: Sandbox) -> None:
    recipe = Recipe(batch_size=8, epochs=5)  # several hundred steps: seconds of training left when pruned
    result = sandbox.run(job(stages=("build", "train"), recipe=recipe), on_progress=lambda step, loss: step >= 20)
    assert result.state is State.PRUNED and result.failure is None
    assert result.metrics["pruned_at_step"] == 20
    assert result.curve[0] == (10, pytest.approx(result.curve[0][1])) and result.stage == "train"
    # stopped promptly: far short of its several hundred steps (a step count, not a wall-clock bound)
    assert result.curve[-1][0] < 100
    assert sandbox.run(job()).state is State.COMPLETE


@pytest.mark.slow
def test_unknown_stages_are_skipped_not_fatal(sandbox: Sandbox) -> None:
    result = sandbox.run(job(stages=("static", "no-such-stage", "build")))
    assert result.state is State.COMPLETE
    assert "no-such-stage" in result.info["skipped_stages"]


@pytest.mark.slow
def test_a_job_for_another_dataset_switches_the_sandbox(tmp_path: Path) -> None:
    other = DatasetSpec(name="digits", split_seed=1)
    with Sandbox(DATASET, work_dir=tmp_path) as switching:
        result = switching.run(job(dataset=other, stages=("build", "train"), recipe=Recipe(batch_size=64)))
        assert result.state is State.COMPLETE, result.failure
        assert switching.dataset == other and "val_acc" in result.metrics
        assert switching.run(job()).state is State.COMPLETE  # and back
        assert switching.dataset == DATASET


@pytest.mark.slow
def test_one_off_evaluation(tmp_path: Path) -> None:
    result = evaluate(job(), tmp_path / "one-off")
    assert result.state is State.COMPLETE, result.failure
    assert (tmp_path / "one-off" / "worker.log").exists()


def test_without_bwrap_on_path_auto_falls_back_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no bwrap
    monkeypatch.setattr(isolation_module, "_warned_rlimits_only", False)
    bwrap_problem.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="nasloop.sandbox"):
            assert choose_isolation("auto") == "rlimits"
            assert choose_isolation("auto") == "rlimits"
        warnings = [record for record in caplog.records if record.name == "nasloop.sandbox"]
        assert len(warnings) == 1 and "bwrap" in warnings[0].getMessage()
        with pytest.raises(SandboxError, match="use_bwrap=True"):
            choose_isolation(True)
        assert choose_isolation(False) == "rlimits"
    finally:
        bwrap_problem.cache_clear()


@pytest.mark.skipif(os.geteuid() != 0 and bwrap_problem() is not None, reason="bubblewrap does not work here")
def test_bwrap_is_used_where_it_works() -> None:
    assert choose_isolation("auto") == "bwrap"


@pytest.mark.gpu
@pytest.mark.slow
def test_training_on_the_gpu(tmp_path: Path) -> None:
    # CUDA reserves far more address space than memory_mb, so the child limits its data segment instead.
    gpu_job = job(stages=("static", "build", "train"), recipe=Recipe(device="cuda", batch_size=64))
    with Sandbox(DATASET, work_dir=tmp_path, device="cuda") as gpu_sandbox:
        result = gpu_sandbox.run(gpu_job)
    assert result.state is State.COMPLETE, result.failure
    assert 0.0 <= result.metrics["val_acc"] <= 1.0
