"""The tabular benchmarks nasloop ships: NAS-Bench-201, NAS-Bench-Macro and Channel-Bench-Macro ResNet.

Sources and formats are described in the shared benchmark README (the GENIUS repository's `benchmark/`
folder, which collected the original benchmarks' figures) and in `scripts/build_benchmark_tables.py`.

NAS-Bench-201 lists all 15,625 cell strings, so every well-formed cell is found verbatim. Cells that
differ only in dead edges (`nb201.canonical_cell`) compute the same network but were trained
separately: the 15,625 strings fall into 9,445 canonical classes, and within the 165 classes of more
than one string the test accuracies differ by 0.79 points (median) and up to 7.1 points on CIFAR-10.
A verbatim string therefore answers with its own training run; the canonical form is the fallback for
user tables that list only some cells.

NAS-Bench-Macro lists 6,561 strings but trained 3,969 networks: it copies each network's figures to
every string that differs only in where a stage's identity layers sit (the space's canonical form).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from nasloop.benchmarks.base import (
    FLOPS,
    PARAMS,
    TEST_ACC,
    VAL_ACC,
    TabularBenchmark,
    finite_number,
    percent_as_fraction,
)
from nasloop.registry import benchmarks

# HW-NAS-Bench's metric names (as in hw_nas_bench_cifar10.json) -> nasloop's, with units.
HW_NAS_BENCH_METRICS = {
    "edgegpu_latency": "edgegpu_latency_ms",
    "edgegpu_energy": "edgegpu_energy_mj",
    "raspi4_latency": "raspi4_latency_ms",
    "pixel3_latency": "pixel3_latency_ms",
    "eyeriss_latency": "eyeriss_latency_ms",
    "eyeriss_energy": "eyeriss_energy_mj",
    "eyeriss_arithmetic_intensity": "eyeriss_arithmetic_intensity",
    "fpga_latency": "fpga_latency_ms",
    "fpga_energy": "fpga_energy_mj",
    "edgetpu_latency": "edgetpu_latency_ms",
}


def single_accuracy_row(row: Mapping[str, Any], accuracy_field: str) -> dict[str, float]:
    """The metrics of a row with one accuracy (the mean of 3 test runs), given as both figures."""
    accuracy = percent_as_fraction(row, accuracy_field)
    return {
        VAL_ACC: accuracy,
        TEST_ACC: accuracy,
        PARAMS: finite_number(row, "params"),
        FLOPS: finite_number(row, "flops"),
    }


@benchmarks.register("nb201")
class NB201Benchmark(TabularBenchmark):
    """NAS-Bench-201 (Dong & Yang, ICLR 2020): 200-epoch validation and test accuracy of every cell.

    Rows: `val_acc_200` and `test_acc_200` in percent. On CIFAR-10 it also answers HW-NAS-Bench's
    device metrics (Li et al., ICLR 2021): latency on six devices and energy on four.
    """

    name = "nb201"
    space = "nb201"
    datasets = ("cifar10", "cifar100", "ImageNet16-120")
    packaged: ClassVar[Mapping[str, str]] = {"cifar10": "nb201_cifar10.json.gz", "cifar100": "nb201_cifar100.json.gz"}
    metrics = (VAL_ACC, TEST_ACC)
    device_tables: ClassVar[Mapping[str, str]] = {"cifar10": "hw_nas_bench_cifar10.json.gz"}
    device_metric_names = HW_NAS_BENCH_METRICS

    def parse_row(self, row: Mapping[str, Any]) -> dict[str, float]:
        return {VAL_ACC: percent_as_fraction(row, "val_acc_200"), TEST_ACC: percent_as_fraction(row, "test_acc_200")}


@benchmarks.register("nas-bench-macro")
class NASBenchMacroBenchmark(TabularBenchmark):
    """NAS-Bench-Macro (Su et al., 2021): mean test accuracy of 3 runs, parameters and FLOPs.

    Rows: `mean_acc` in percent, `params`, `flops`. The one accuracy is both `val_acc` and `test_acc`.
    """

    name = "nas-bench-macro"
    space = "nas-bench-macro"
    datasets = ("cifar10",)
    packaged: ClassVar[Mapping[str, str]] = {"cifar10": "nas_bench_macro_cifar10.json.gz"}
    metrics = (VAL_ACC, TEST_ACC, PARAMS, FLOPS)

    def parse_row(self, row: Mapping[str, Any]) -> dict[str, float]:
        return single_accuracy_row(row, "mean_acc")


@benchmarks.register("channel-bench-resnet")
class ChannelBenchResNetBenchmark(TabularBenchmark):
    """Channel-Bench-Macro, ResNet space (Su et al., 2021): mean test accuracy of 3 runs, parameters, FLOPs.

    Rows: `mean` in percent, `params`, `flops`. The one accuracy is both `val_acc` and `test_acc`.
    """

    name = "channel-bench-resnet"
    space = "channel-bench-resnet"
    datasets = ("cifar10",)
    packaged: ClassVar[Mapping[str, str]] = {"cifar10": "channel_bench_resnet_cifar10.json.gz"}
    metrics = (VAL_ACC, TEST_ACC, PARAMS, FLOPS)

    def parse_row(self, row: Mapping[str, Any]) -> dict[str, float]:
        return single_accuracy_row(row, "mean")
