"""The local executor with the real sandbox on the digits dataset: two workers, threads per worker,
cancelling a queued job, recycling workers, and one worker per GPU where there are GPUs."""

from __future__ import annotations

import textwrap

import pytest

from nasloop.candidate import State
from nasloop.evaluate.job import DatasetSpec, EvalJob, Recipe
from nasloop.executors.base import available_cores
from nasloop.executors.local import LocalExecutor, visible_gpus

DATASET = DatasetSpec(name="digits")
NET = textwrap.dedent(
    """
    import torch.nn as nn


    class Net(nn.Module):
        def __init__(self, in_shape, num_classes):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(in_shape[0], 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
            self.head = nn.Linear(32, num_classes)  # (B, num_classes)

        def forward(self, x):
            return self.head(self.features(x).flatten(1))  # 8 channels x 2 x 2 = 32 features
    """
)


def job(width_comment: int) -> EvalJob:
    # a comment makes each job's code (and job directory name) distinct
    return EvalJob(code=f"{NET}\n# {width_comment}\n", dataset=DATASET, recipe=Recipe(epochs=1))


@pytest.mark.slow
def test_two_workers_share_the_jobs_and_the_cores(tmp_path):
    with LocalExecutor(DATASET, work_dir=tmp_path, workers=2, recycle_after=2, gpus=()) as executor:
        assert executor.capacity == 2
        first_pids = [info["pid"] for info in executor.worker_info()]
        futures = [executor.submit(job(index)) for index in range(4)]
        queued = executor.submit(job(99))
        assert executor.cancel(queued) and queued.cancelled()
        results = [future.result(timeout=300) for future in futures]
        assert not executor.cancel(futures[0])  # it ran
        later_pids = [info["pid"] for info in executor.worker_info()]
    assert all(result.state is State.COMPLETE for result in results), [r.failure for r in results]
    assert all(0.0 <= result.metrics["val_acc"] <= 1.0 for result in results)
    assert {result.info["threads"] for result in results} == {max(1, available_cores() // 2)}
    ran_in = {path.parts[-3] for path in tmp_path.glob("worker*/jobs/*")}
    assert ran_in == {"worker0", "worker1"}
    assert len(list(tmp_path.glob("worker*/jobs/*"))) == 4  # the cancelled job never ran
    assert set(first_pids) != set(later_pids)  # a worker that ran two jobs was replaced


@pytest.mark.gpu
@pytest.mark.slow
def test_one_worker_per_gpu(tmp_path):
    gpus = visible_gpus()
    with LocalExecutor(DATASET, work_dir=tmp_path, workers=None) as executor:
        assert [info["gpus"] for info in executor.worker_info()] == [[gpu] for gpu in gpus]
        results = [future.result(timeout=300) for future in [executor.submit(job(i)) for i in range(len(gpus))]]
    assert all(result.state is State.COMPLETE for result in results), [r.failure for r in results]


def test_the_config_sets_workers_and_recycling_and_unset_workers_mean_one_per_gpu(tmp_path):
    from nasloop.config import build_config

    config = build_config({"dataset": {"name": "digits"}, "executor": {"recycle_after": 3}})
    assert config.executor.workers is None
    executor = LocalExecutor.from_config(config, work_dir=tmp_path)
    try:
        assert executor.recycle_after == 3 and executor.capacity == max(1, len(visible_gpus()))
    finally:
        executor.shutdown()
    config = build_config({"dataset": {"name": "digits"}, "executor": {"workers": 2}})
    executor = LocalExecutor.from_config(config, work_dir=tmp_path)
    try:
        assert executor.capacity == 2 and executor.recycle_after is None
    finally:
        executor.shutdown()
