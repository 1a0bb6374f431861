"""The cascade through the real sandbox: over-budget candidates are rejected before training, with a
`budget` failure that names the figure and the limit; measuring stages fill their metrics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import good_net

from nasloop.candidate import FailureKind, State
from nasloop.evaluate.job import DatasetSpec, EvalJob, Limits, Measure
from nasloop.evaluate.sandbox import Sandbox

pytestmark = pytest.mark.slow

MEASURE = Measure(batch_sizes=(1, 8), repeats=3, warmup=1, proxy_batch_size=16)
STAGES = ("static", "build", "hardware", "zero-cost", "train")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with Sandbox(DatasetSpec(name="digits"), work_dir=tmp_path_factory.mktemp("cascade")) as started:
        yield started


def job(limits: Limits, proxies: tuple[str, ...] = ("synflow", "naswot")) -> EvalJob:
    return EvalJob(
        code=good_net(16),
        dataset=DatasetSpec(name="digits"),
        limits=limits,
        stages=STAGES,
        proxies=proxies,
        measure=MEASURE,
    )


def test_every_stage_fills_its_metrics(sandbox: Sandbox) -> None:
    result = sandbox.run(job(Limits(timeout_s=120)))
    assert result.state is State.COMPLETE, result.failure
    for name in (
        "params",
        "flops",
        "latency_ms",
        "latency_b8_ms",
        "throughput_ips",
        "energy_j",
        "co2_g",
        "synflow",
        "naswot",
        "val_acc",
        "train_energy_j",
    ):
        assert name in result.metrics, name
    assert result.metrics["synflow"] > 0
    assert result.info["hardware"]["energy_j"]  # says whether energy was measured or estimated


def test_latency_budget_rejects_before_training(sandbox: Sandbox) -> None:
    result = sandbox.run(job(Limits(timeout_s=120, max_latency_ms=1e-6)))
    assert result.state is State.FAILED and result.failure.kind is FailureKind.BUDGET
    assert "latency" in result.failure.message and "limit is 1e-06 ms" in result.failure.message
    assert result.stage == "hardware" and "val_acc" not in result.metrics and "train_s" not in result.metrics


def test_flops_budget_names_the_figure(sandbox: Sandbox) -> None:
    result = sandbox.run(job(Limits(timeout_s=120, max_flops=10)))
    assert result.failure.kind is FailureKind.BUDGET and "FLOPs" in result.failure.message
    assert "train_s" not in result.metrics


def test_minimum_proxy_rejects_before_training(sandbox: Sandbox) -> None:
    result = sandbox.run(job(Limits(timeout_s=120, min_proxy={"synflow": 1e30})))
    assert result.failure.kind is FailureKind.BUDGET
    assert "synflow" in result.failure.message and "below the minimum 1e+30" in result.failure.message
    assert result.stage == "zero-cost" and "train_s" not in result.metrics


def test_parameter_budget_rejects_at_build(sandbox: Sandbox) -> None:
    result = sandbox.run(job(Limits(timeout_s=120, max_params=10)))
    assert result.failure.kind is FailureKind.BUDGET and "limit is 10" in result.failure.message
    assert result.stage == "build"
