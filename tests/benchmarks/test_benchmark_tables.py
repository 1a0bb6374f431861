"""Tabular benchmarks: packaged tables, user tables, lookup, optimum, device metrics and clear errors.

Known points are read off the shared JSON files (/work/shared/benchmarks, percent) and asserted as the
fractions nasloop uses. The optimum anchors are the README's: 94.37, 73.51, 93.13 and 93.89.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nasloop.benchmarks import Absence, BenchmarkTable, BenchmarkTableError, PointNotInTable, TabularBenchmark
from nasloop.benchmarks.base import DATA_DIR
from nasloop.hardware.lookup import LatencyNotFound, LatencyTable, LatencyTableError
from nasloop.registry import benchmarks, spaces
from nasloop.spaces.nb201 import canonical_cell

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "benchmarks"
PACKAGED = [(name, dataset) for name in benchmarks.names() for dataset in benchmarks.get(name).packaged]

CELL = "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|nor_conv_1x1~0|none~1|nor_conv_1x1~2|"
# archs[0] of hw_nas_bench_cifar10.json, the cell of official NB201 index 0, and archs[6]
INDEX_0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
INDEX_6 = "|nor_conv_3x3~0|+|none~0|none~1|+|avg_pool_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
# Only the conv edge 0 -> 3 is live: nodes 1 and 2 never reach the output.
DEAD_EDGES = "|skip_connect~0|+|avg_pool_3x3~0|none~1|+|nor_conv_3x3~0|none~1|none~2|"


def load(name: str, dataset: str = "cifar10", table: str | Path | None = None) -> BenchmarkTable:
    return benchmarks.get(name)().load(dataset, table)


# -- every registered benchmark ---------------------------------------------------------------------


@pytest.mark.parametrize(("name", "dataset"), PACKAGED)
def test_every_packaged_table_loads_fast_and_answers_in_fractions(name: str, dataset: str) -> None:
    benchmark = benchmarks.get(name)()
    assert isinstance(benchmark, TabularBenchmark) and benchmark.name == name
    assert benchmark.space in spaces and set(benchmark.packaged) <= set(benchmark.datasets)
    started = time.perf_counter()
    fresh = benchmark.load(dataset, DATA_DIR / benchmark.packaged[dataset])  # read from disk, not cached
    assert time.perf_counter() - started < 1.0
    table = benchmark.load(dataset)
    assert table is benchmark.load(dataset), "a packaged table is read once"
    space = spaces.get(benchmark.space)()
    rows = list(table.rows())
    assert len(rows) == len(table) == len(fresh) > 6000
    for arch, metrics in rows:
        assert tuple(metrics) == benchmark.metrics
        assert 0 <= metrics["val_acc"] <= 1 and 0 <= metrics["test_acc"] <= 1
        assert space.validate(arch) is None
    started = time.perf_counter()
    answers = [table.query(arch) for arch, _ in rows]
    assert len(rows) / (time.perf_counter() - started) >= 1000, "at least 1,000 queries a second"
    assert answers == [metrics for _, metrics in rows]


@pytest.mark.parametrize(("name", "dataset"), PACKAGED)
def test_optimum_is_a_row_of_the_table(name: str, dataset: str) -> None:
    table = load(name, dataset)
    optimum = table.optimum()
    assert table.query(optimum.best_test_arch)["test_acc"] == optimum.best_test_acc
    assert table.query(optimum.best_val_arch)["test_acc"] == optimum.best_val_test_acc
    assert max(metrics["test_acc"] for _, metrics in table.rows()) == optimum.best_test_acc
    assert optimum.best_val_test_acc <= optimum.best_test_acc


def test_importing_the_package_reads_no_data() -> None:
    code = (
        "import nasloop.benchmarks, nasloop.benchmarks.base as base; from nasloop.registry import benchmarks; "
        "benchmarks.names(); assert not base._PACKAGED_TABLES and not base._PACKAGED_DEVICES"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- known points -----------------------------------------------------------------------------------


def test_nb201_known_cell_on_both_datasets() -> None:
    assert load("nb201", "cifar10").query(CELL) == pytest.approx({"val_acc": 0.8772799999267578, "test_acc": 0.9034})
    assert load("nb201", "cifar100").query(CELL) == pytest.approx({"val_acc": 0.654400000366211, "test_acc": 0.6584})


def test_macro_and_channel_tables_give_their_one_accuracy_as_both_figures() -> None:
    assert load("nas-bench-macro").query("02012100") == pytest.approx(
        {"val_acc": 0.8919666544596355, "test_acc": 0.8919666544596355, "params": 890_666, "flops": 47_327_744}
    )
    assert load("channel-bench-resnet").query("4432214") == pytest.approx(
        {"val_acc": 0.9343999735514323, "test_acc": 0.9343999735514323, "params": 6_208_394, "flops": 794_495_488}
    )


def test_query_ignores_whitespace_and_returns_a_fresh_dictionary() -> None:
    table = load("nas-bench-macro")
    answer = table.query(" 0201 2100\n")
    answer["val_acc"] = 2.0
    assert table.query("02012100")["val_acc"] < 1


def test_optimum_matches_the_readme_anchors() -> None:
    """The README's "optimum" is the best test figure of the table. On NB201 CIFAR-10 the best cell by
    validation (rank 2 by test) has the same test figure, 94.37333, as the best cell by test; on the other
    tables the best-by-validation network is the best-by-test one."""
    nb201 = load("nb201", "cifar10").optimum()
    assert round(100 * nb201.best_test_acc, 2) == 94.37
    assert round(100 * nb201.best_val_test_acc, 2) == 94.37
    assert nb201.best_val_arch != nb201.best_test_arch
    assert round(100 * load("nb201", "cifar100").optimum().best_test_acc, 2) == 73.51
    macro = load("nas-bench-macro").optimum()
    assert round(100 * macro.best_test_acc, 2) == 93.13
    assert macro.best_test_arch == "22212220", "of equivalent strings, the canonical one is named"
    assert round(100 * load("channel-bench-resnet").optimum().best_test_acc, 2) == 93.89


def test_nb201_tables_list_every_cell_so_lookup_is_verbatim() -> None:
    table = load("nb201", "cifar10")
    assert len(table) == 15_625
    assert table.key(DEAD_EDGES) == DEAD_EDGES, "a dead-edge spelling answers with its own training run"
    assert table.query(DEAD_EDGES) != table.query(canonical_cell(DEAD_EDGES))


def test_a_point_the_table_lacks_raises_naming_it_and_the_table() -> None:
    table = load("channel-bench-resnet")
    with pytest.raises(PointNotInTable, match=r"'5111111'.*channel-bench-resnet cifar10.*packaged") as caught:
        table.query("5111111")
    assert caught.value.absence is Absence.NOT_IN_TABLE
    assert "each of the 7 digits is 1, 2, 3 or 4" in str(caught.value)
    assert "5111111" not in table and "1111111" in table


# -- user-supplied tables ---------------------------------------------------------------------------


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_a_user_table_for_imagenet16_120_works_in_the_shared_format(tmp_path: Path) -> None:
    listed = canonical_cell(DEAD_EDGES)
    path = write_json(
        tmp_path / "nb201_imagenet.json",
        {
            ALL_CONV3: {"val_acc_200": 46.5, "test_acc_200": 46.25, "rank": 1},
            listed: {"val_acc_200": 20.0, "test_acc_200": 19.5, "rank": 2},
        },
    )
    table = load("nb201", "ImageNet16-120", path)
    assert table.query(ALL_CONV3) == {"val_acc": 0.465, "test_acc": 0.4625}
    assert table.key(DEAD_EDGES) == listed, "an unlisted spelling is found through its canonical form"
    assert table.query(DEAD_EDGES) == {"val_acc": 0.2, "test_acc": 0.195}
    assert table.optimum().best_test_arch == ALL_CONV3
    with pytest.raises(PointNotInTable, match=r"nb201 ImageNet16-120 table .*nb201_imagenet\.json") as caught:
        table.query(INDEX_0)
    assert INDEX_0 in str(caught.value)


def test_a_user_table_may_be_gzip_compressed(tmp_path: Path) -> None:
    path = tmp_path / "macro.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"01201200": {"mean_acc": 91.0, "params": 1, "flops": 2}}).encode()))
    assert load("nas-bench-macro", table=path).query("01201200")["test_acc"] == 0.91


def test_a_missing_user_table_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkTableError, match=r"not found: .*absent\.json"):
        load("nb201", "cifar10", tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"bad\.json: not valid JSON"),
        ("[]", r"bad\.json: expected a non-empty JSON object of nas-bench-macro architecture"),
        ('{"0120120": {"mean_acc": 91.0, "params": 1, "flops": 2}}', r"'0120120' is not a nas-bench-macro.*8 digits"),
        ('{"01201200": {"params": 1, "flops": 2}}', r"row of '01201200' has no field 'mean_acc'"),
        ('{"01201200": {"mean_acc": 91.0, "params": "many", "flops": 2}}', r"field 'params' is 'many', not a finite"),
        ('{"01201200": {"mean_acc": 0.91e3, "params": 1, "flops": 2}}', r"not an accuracy in percent"),
        ('{"01201200": [91.0]}', r"row of '01201200' is list, not an object"),
    ],
)
def test_a_malformed_user_table_names_the_file_and_the_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(BenchmarkTableError, match=message) as caught:
        load("nas-bench-macro", table=path)
    assert "\n" not in str(caught.value)


def test_unknown_datasets_name_close_matches() -> None:
    with pytest.raises(BenchmarkTableError, match=r"no dataset 'cifar-10'\. Did you mean cifar10"):
        load("nb201", "cifar-10")
    with pytest.raises(BenchmarkTableError, match=r"Did you mean ImageNet16-120"):
        load("nb201", "imagenet16-120")
    with pytest.raises(BenchmarkTableError, match=r"ships no table for ImageNet16-120.*pass table="):
        load("nb201", "ImageNet16-120")
    with pytest.raises(BenchmarkTableError, match=r"nas-bench-macro has no dataset 'cifar100'"):
        load("nas-bench-macro", "cifar100")


# -- HW-NAS-Bench device metrics --------------------------------------------------------------------


def test_device_metrics_of_official_index_0() -> None:
    table = load("nb201", "cifar10")
    expected = {"raspi4_latency_ms": 10.482, "pixel3_latency_ms": 3.606, "fpga_latency_ms": 2.573}
    expected["eyeriss_latency_ms"] = 3.646
    for name, value in expected.items():
        assert table.device_metric(INDEX_0, name) == pytest.approx(value, abs=5e-4)
    answer = table.query(INDEX_0, devices=True)
    assert answer == pytest.approx({**table.query(INDEX_0), **expected}, abs=5e-4)
    assert "edgegpu_latency_ms" not in answer


def test_null_and_minus_one_fail_clearly_and_distinguishably() -> None:
    table = load("nb201", "cifar10")
    with pytest.raises(
        PointNotInTable, match=r"avg_pool_3x3~0.*edgegpu_latency_ms.*hw_nas_bench_cifar10.*null"
    ) as null:
        table.device_metric(INDEX_0, "edgegpu_latency_ms")
    with pytest.raises(PointNotInTable, match=r"nor_conv_3x3~0.*edgetpu_latency_ms.*hw_nas_bench_cifar10.*-1") as minus:
        table.device_metric(INDEX_6, "edgetpu_latency_ms")
    assert null.value.absence is Absence.MISSING_FROM_EXTRACT
    assert minus.value.absence is Absence.NOT_AVAILABLE
    assert table.missing_metrics(INDEX_6) == {"edgetpu_latency_ms": Absence.NOT_AVAILABLE}
    assert table.missing_metrics(INDEX_0)["edgegpu_energy_mj"] is Absence.MISSING_FROM_EXTRACT
    assert "edgetpu_latency_ms" not in table.query(INDEX_6, devices=True)
    assert table.device_metric(INDEX_6, "edgegpu_latency_ms") > 0


def test_device_metric_names_carry_units_and_unknown_names_are_errors() -> None:
    table = load("nb201", "cifar10")
    assert set(table.devices.metrics) == {
        "edgegpu_latency_ms", "edgegpu_energy_mj", "raspi4_latency_ms", "pixel3_latency_ms",
        "eyeriss_latency_ms", "eyeriss_energy_mj", "eyeriss_arithmetic_intensity", "fpga_latency_ms",
        "fpga_energy_mj", "edgetpu_latency_ms",
    }  # fmt: skip
    with pytest.raises(
        BenchmarkTableError, match=r"no device metric 'edgegpu_latency'\. Did you mean edgegpu_latency_ms"
    ):
        table.device_metric(INDEX_0, "edgegpu_latency")
    with pytest.raises(BenchmarkTableError, match=r"nb201 cifar100 table .* has no device metrics"):
        load("nb201", "cifar100").device_metric(INDEX_0, "raspi4_latency_ms")
    assert load("nb201", "cifar100").missing_metrics(INDEX_0) == {}


def test_latency_tables_read_the_benchmark_device_metrics() -> None:
    raspberry = LatencyTable.from_benchmark("nb201", "cifar10", "raspi4")
    assert len(raspberry) == 15_625 and raspberry.latency_ms(INDEX_0) == pytest.approx(10.482)
    edge_gpu = LatencyTable.from_benchmark("nb201", "cifar10", "edgegpu")
    assert len(edge_gpu) == 12_554 and INDEX_0 not in edge_gpu
    with pytest.raises(LatencyNotFound, match=r"hw_nas_bench_cifar10.*edgegpu"):
        edge_gpu.latency_ms(INDEX_0)
    with pytest.raises(LatencyTableError, match=r"no latencies for device 'gpu'; it has: edgegpu, edgetpu"):
        LatencyTable.from_benchmark("nb201", "cifar10", "gpu")
    with pytest.raises(LatencyTableError, match=r"device metrics for cifar10, not cifar100"):
        LatencyTable.from_benchmark("nb201", "cifar100", "edgegpu")


def test_a_user_device_table_keeps_null_and_minus_one_apart(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "hw.json",
        {"archs": [INDEX_0, INDEX_6], "metrics": {"fpga_latency": [2.5, None], "edgetpu_latency": [-1, 1.25]}},
    )
    table = benchmarks.get("nb201")().load("cifar10", device_table=path)
    assert table.device_metric(INDEX_6, "edgetpu_latency_ms") == 1.25
    assert table.missing_metrics(INDEX_0) == {"edgetpu_latency_ms": Absence.NOT_AVAILABLE}
    assert table.missing_metrics(INDEX_6) == {"fpga_latency_ms": Absence.MISSING_FROM_EXTRACT}
    with pytest.raises(
        PointNotInTable, match=r"has no fpga_latency_ms in the device table .*hw\.json: .*not list"
    ) as caught:
        table.device_metric(ALL_CONV3, "fpga_latency_ms")
    assert caught.value.absence is Absence.NOT_IN_TABLE
    assert table.query(ALL_CONV3, devices=True) == table.query(ALL_CONV3), "an unlisted cell has no device metrics"
    assert set(table.missing_metrics(ALL_CONV3).values()) == {Absence.NOT_IN_TABLE}
    latencies = LatencyTable.from_benchmark("nb201", "cifar10", "fpga", table=path)
    assert dict(latencies.entries) == {INDEX_0: 2.5}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"archs": [INDEX_0], "metrics": {"gpu_latency": [1.0]}}, r"unknown device metric 'gpu_latency'"),
        ({"archs": [INDEX_0], "metrics": {"fpga_latency": [1.0, 2.0]}}, r"'fpga_latency': expected a list of 1 values"),
        ({"archs": [INDEX_0], "metrics": {"fpga_latency": [-2.0]}}, r"negative values other than -1"),
        ({"archs": ["|conv~0|"], "metrics": {"fpga_latency": [1.0]}}, r"is not a nb201 architecture"),
    ],
)
def test_a_malformed_device_table_is_a_clear_error(tmp_path: Path, data: object, message: str) -> None:
    path = write_json(tmp_path / "hw.json", data)
    with pytest.raises(BenchmarkTableError, match=message):
        benchmarks.get("nb201")().load_devices("cifar10", path)


# -- the packaged data is the shared data ---------------------------------------------------------

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared benchmark files are not at {SHARED}")


@needs_shared
def test_the_build_script_reproduces_the_packaged_files_byte_for_byte(tmp_path: Path) -> None:
    script = REPO / "scripts" / "build_benchmark_tables.py"
    subprocess.run([sys.executable, script, "--source", SHARED, "--output", tmp_path], check=True, capture_output=True)
    built = sorted(path.name for path in tmp_path.iterdir())
    assert built == sorted(path.name for path in DATA_DIR.glob("*.json.gz"))
    for name in built:
        assert (tmp_path / name).read_bytes() == (DATA_DIR / name).read_bytes(), name


@needs_shared
@pytest.mark.parametrize(("name", "dataset"), PACKAGED)
def test_the_shared_file_read_as_a_user_table_equals_the_packaged_one(name: str, dataset: str) -> None:
    benchmark = benchmarks.get(name)()
    shared = load(name, dataset, SHARED / benchmark.packaged[dataset].removesuffix(".gz"))
    assert list(shared.rows()) == list(load(name, dataset).rows())
