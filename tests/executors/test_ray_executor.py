"""The Ray executor on a local Ray cluster started by the test: progress reaches the driver (pruning),
and a worker killed mid-run becomes a `crash` record while the run goes on with a new worker."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import fenced

from nasloop.candidate import FailureKind, State
from nasloop.config import build_config
from nasloop.engine import Search
from nasloop.evaluate.job import DatasetSpec, EvalJob, Recipe
from nasloop.executors.ray_executor import RayExecutor
from nasloop.llm.scripted import ScriptedBackend
from nasloop.store import RunDir, RunStore

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]

DATASET = DatasetSpec(name="digits")
NET = textwrap.dedent(
    """
    import torch.nn as nn


    class Net(nn.Module):
        def __init__(self, in_shape, num_classes):
            super().__init__()
            width = {width}
            self.features = nn.Sequential(
                nn.Conv2d(in_shape[0], width, 3, padding=1), nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
            )  # (B, width, 1, 1)
            self.head = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.head(self.features(x).flatten(1))
    """
)
HEAVY, LIGHT = NET.format(width=96), NET.format(width=4)


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield
    ray.shutdown()


def kill_worker_once_its_job_runs(executor: RayExecutor, jobs_dir: Path) -> threading.Thread:
    """SIGKILL the worker's process a second after its first job directory appears."""

    def kill() -> None:
        deadline = time.monotonic() + 300
        while not any(jobs_dir.glob("*")) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        os.kill(executor.worker_info()[0]["pid"], signal.SIGKILL)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def test_progress_prunes_and_a_killed_worker_is_a_crash_record(tmp_path, local_cluster):
    executor = RayExecutor(DATASET, work_dir=tmp_path / "ray", workers=1, cpus_per_job=1)
    assert executor.slots[0].threads == 1 and executor.slots[0].device == "cpu"

    # progress flows from the actor to the driver; True from on_progress stops the job
    long_job = EvalJob(code=LIGHT, dataset=DATASET, recipe=Recipe(epochs=30))
    pruned = executor.submit(long_job, on_progress=lambda step, loss: True).result()
    assert pruned.state is State.PRUNED and "pruned_at_step" in pruned.metrics

    config = build_config(
        {"strategy": "one-shot", "seed_model": "none", "dataset": {"name": "digits"}, "recipe": {"epochs": 30},
         "budget": {"iterations": 2}, "llm": {"backend": "scripted", "model": "scripted"}}
    )  # fmt: skip
    backend = ScriptedBackend(answers=[fenced(HEAVY), fenced(LIGHT)])
    engine = Search.start(config, tmp_path / "run", backend=backend, executor=executor, progress=False)
    jobs_dir = Path(executor.worker_info()[0]["work_dir"]) / "jobs"
    for old_job in jobs_dir.glob("*"):  # the pruned job's directory
        old_job.rename(tmp_path / old_job.name)
    killer = kill_worker_once_its_job_runs(executor, jobs_dir)
    summary = engine.run()
    killer.join(timeout=5)

    with RunStore(RunDir(tmp_path / "run").store_path, readonly=True) as store:
        killed, survivor = store.candidates()
    assert killed.state is State.FAILED and killed.failure.kind is FailureKind.CRASH
    assert "was lost" in killed.failure.message
    assert survivor.state is State.COMPLETE and 0.0 <= survivor.metrics["val_acc"] <= 1.0
    assert summary.iterations == 2
