"""The executor contract (`nasloop.executors.base`), for every registered executor, in the real sandbox:
a result for every job (a candidate's fault is a failed result, never an exception), pruning through the
progress callback, cancelling a queued job, a second shutdown that does nothing."""

import importlib.util

import pytest
from support import SHAPE_BROKEN_NET, good_net

from nasloop.candidate import FailureKind, State
from nasloop.config import build_config
from nasloop.evaluate.job import EvalJob
from nasloop.registry import executors

pytestmark = pytest.mark.slow
NAMES = executors.names()


def make(name, tmp_path):
    if name == "ray" and importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install nasloop[ray])")
    config = build_config({
        "dataset": {"name": "digits"}, "recipe": {"epochs": 1}, "limits": {"timeout_s": 120},
        "executor": {"name": name, "workers": 1},
    })  # fmt: skip
    return config, executors.get(name).from_config(config, work_dir=tmp_path / name)


def job(config, code: str, epochs: int = 1) -> EvalJob:
    recipe = config.recipe.model_copy(update={"epochs": epochs})
    return EvalJob(code=code, dataset=config.dataset, recipe=recipe, limits=config.limits)


@pytest.mark.parametrize("name", NAMES)
def test_every_job_gets_a_result_and_pruning_and_cancelling_work(name, tmp_path):
    config, executor = make(name, tmp_path)
    try:
        assert executor.capacity >= 1
        good = executor.submit(job(config, good_net(8)))
        broken = executor.submit(job(config, SHAPE_BROKEN_NET))
        steps: list[int] = []

        def prune(step: int, loss: float) -> bool:
            steps.append(step)
            return True

        # long enough that the first progress line arrives while it trains
        pruned = executor.submit(job(config, good_net(9) + "\n# pruned\n", epochs=30), prune)
        queued = executor.submit(job(config, good_net(10) + "\n# cancelled\n"))
        cancelled = executor.cancel(queued)
        results = [future.result(timeout=600) for future in (good, broken, pruned)]
        late = None if cancelled else queued.result(timeout=600)  # it had started: it still ends with a result
    finally:
        executor.shutdown()
        executor.shutdown()  # a second call does nothing
    assert results[0].state is State.COMPLETE and 0.0 <= results[0].metrics["val_acc"] <= 1.0
    assert results[1].state is State.FAILED and results[1].failure.kind is FailureKind.SHAPE
    assert results[2].state is State.PRUNED and steps
    assert cancelled == queued.cancelled()
    assert late is None or late.state is State.COMPLETE


def test_every_registered_executor_is_covered():
    assert set(NAMES) >= {"local", "ray"}
