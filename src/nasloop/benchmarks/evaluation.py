"""A tabular benchmark as a run's evaluator: a candidate's figures from the table, the rest in the sandbox.

When a run names a benchmark (`benchmark: {name, dataset, table}`), a candidate's `val_acc` and
`test_acc`, and its `params` and `flops` (the table's, or the space's analytic count where the table has
none), come from the table instead of training. The stages the run asks for besides (zero-cost proxies,
hardware measurements) still run in the sandbox, on inputs of the benchmark's shape, and their metrics
join the table's. A run that needs nothing but the table starts no sandbox at all.

A point the table lacks is a failed candidate (kind `build`) whose message names the point and the
table. A device metric the table lacks for a point (HW-NAS-Bench's extract has no value, or the benchmark
marks it not available) is left out of the candidate's metrics and explained in
`info["missing_metrics"]`, never replaced by a number.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from nasloop.benchmarks.base import PARAMS, BenchmarkTable, PointNotInTable
from nasloop.candidate import EvalResult, FailureKind, State

#: input shape and classes of each benchmark dataset
DATASET_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "ImageNet16-120": ((3, 16, 16), 120),
}

#: stages the table stands in for: training, and the checks a rendered point of a space never fails
TABLE_STAGES = frozenset({"static", "build", "train"})

#: where a metric of a run comes from when it names a benchmark (the rest: the sandbox's stages)
TABLE_METRICS = frozenset({"val_acc", "test_acc", "params", "flops"})


@dataclass(frozen=True)
class TabularEvaluator:
    """Answers a run's candidates from `table`; `devices`: whether device metrics are wanted too."""

    table: BenchmarkTable
    devices: bool = False

    @property
    def shape(self) -> tuple[tuple[int, int, int], int]:
        """The benchmark dataset's input shape and number of classes."""
        return DATASET_SHAPES[self.table.dataset]

    def sandbox_stages(self, stages: Sequence[str]) -> tuple[str, ...] | None:
        """The stages that still run in the sandbox (the build stage with them), or None: the table alone."""
        rest = [stage for stage in stages if stage not in TABLE_STAGES]
        return ("static", "build", *rest) if rest else None

    def evaluate(self, architecture: str) -> EvalResult:
        """The table's figures of `architecture`, or a failure naming the point and the table."""
        started = time.perf_counter()
        try:
            metrics = self.table.query(architecture, devices=self.devices)
        except PointNotInTable as error:
            return EvalResult.failed(FailureKind.BUILD, str(error), stage="table")
        if PARAMS not in metrics:  # NB201's table has accuracies only: the space's exact analytic count
            in_shape, classes = self.shape
            cost = self.table.space.cost(architecture, in_shape, classes)
            metrics.update(params=float(cost.params), flops=float(cost.flops))
        info = {}
        if self.devices:
            missing = self.table.missing_metrics(architecture)
            if missing:
                source = self.table.devices.source
                info["missing_metrics"] = {
                    name: f"{name} of {architecture} in the device table {source}: {absence.value}"
                    for name, absence in missing.items()
                }
        timings = {"table_s": time.perf_counter() - started}
        return EvalResult(State.COMPLETE, metrics=metrics, timings=timings, stage="table", info=info)


def merge(table: EvalResult, sandbox: EvalResult) -> EvalResult:
    """The sandbox's result with the table's figures in it: the table's accuracies, parameters and FLOPs
    replace the sandbox's own; a sandbox failure stays a failure."""
    if sandbox.state is not State.COMPLETE:
        return sandbox
    metrics = {**sandbox.metrics, **table.metrics}
    info = {**sandbox.info, **table.info}
    timings = {**sandbox.timings, **table.timings}
    return EvalResult(State.COMPLETE, metrics, None, timings, sandbox.stage, sandbox.curve, info)


__all__ = ["DATASET_SHAPES", "TABLE_METRICS", "TABLE_STAGES", "TabularEvaluator", "merge"]
