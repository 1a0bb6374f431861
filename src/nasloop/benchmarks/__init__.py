"""Tabular NAS benchmarks: the true accuracy of every network of a structured space, without training.

Importing this package registers `nb201` (NAS-Bench-201 on cifar10 and cifar100, ImageNet16-120 from a
user's table; HW-NAS-Bench device metrics on cifar10), `nas-bench-macro` and `channel-bench-resnet`
(cifar10) in `nasloop.registry.benchmarks`. It reads no data: a table is read on its first `load`::

    from nasloop.registry import benchmarks

    table = benchmarks.get("nb201")().load("cifar10")
    table.query("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    # {'val_acc': 0.91..., 'test_acc': 0.94...}

The contract is in `nasloop.benchmarks.base.TabularBenchmark`.
"""

from nasloop.benchmarks import tables
from nasloop.benchmarks.base import (
    FLOPS,
    PARAMS,
    TEST_ACC,
    VAL_ACC,
    Absence,
    BenchmarkError,
    BenchmarkTable,
    BenchmarkTableError,
    DeviceTable,
    Optimum,
    PointNotInTable,
    TabularBenchmark,
)

__all__ = [
    "FLOPS",
    "PARAMS",
    "TEST_ACC",
    "VAL_ACC",
    "Absence",
    "BenchmarkError",
    "BenchmarkTable",
    "BenchmarkTableError",
    "DeviceTable",
    "Optimum",
    "PointNotInTable",
    "TabularBenchmark",
    "tables",
]
