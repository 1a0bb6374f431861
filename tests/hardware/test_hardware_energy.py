"""Energy counters (RAPL on a powercap tree written to a temp dir), the time × power estimate, and CO2."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from nasloop.hardware import DEFAULT_GRID_G_PER_KWH, Measurement, co2_grams, co2_measurement, energy_meter
from nasloop.hardware.energy import NvmlCounter, RaplCounter


def write_domain(root: Path, name: str, energy_uj: int, range_uj: int = 1_000_000) -> Path:
    domain = root / name
    domain.mkdir(parents=True)
    (domain / "energy_uj").write_text(f"{energy_uj}\n")
    (domain / "max_energy_range_uj").write_text(f"{range_uj}\n")
    return domain


def test_rapl_sums_packages_but_not_their_subdomains(tmp_path: Path) -> None:
    write_domain(tmp_path, "intel-rapl:0", 100, range_uj=10_000_000)
    write_domain(tmp_path, "intel-rapl:1", 200, range_uj=10_000_000)
    write_domain(tmp_path, "intel-rapl:0:0", 50)  # a part of package 0: not added again
    counter = RaplCounter.open(tmp_path)
    assert counter is not None
    assert [path.name for path in counter.domains] == ["intel-rapl:0", "intel-rapl:1"]
    assert counter.joules_between((100, 200), (2_000_100, 300)) == pytest.approx(2.0001)


def test_rapl_handles_wrap_around(tmp_path: Path) -> None:
    write_domain(tmp_path, "intel-rapl:0", 0, range_uj=1_000_000)
    counter = RaplCounter.open(tmp_path)
    assert counter is not None
    # 999_000 → wraps at 1_000_000 → 500: 1_000 + 500 µJ
    assert counter.joules_between((999_000,), (500,)) == pytest.approx(0.0015)


def test_rapl_is_unavailable_without_readable_counters(tmp_path: Path) -> None:
    assert RaplCounter.open(tmp_path) is None
    (tmp_path / "intel-rapl:0").mkdir()
    assert RaplCounter.open(tmp_path) is None


def test_energy_meter_measures_with_a_readable_rapl_counter(tmp_path: Path) -> None:
    domain = write_domain(tmp_path, "intel-rapl:0", 1_000)
    with energy_meter("cpu", rapl_root=tmp_path) as reading:
        (domain / "energy_uj").write_text("3001000\n")  # the package used 3 J meanwhile
    assert reading.method == "measured"
    assert reading.joules == pytest.approx(3.0)
    assert "RAPL" in reading.detail


def test_energy_meter_estimates_time_times_power_and_says_so(tmp_path: Path) -> None:
    with energy_meter("cpu", power_watts=10.0, rapl_root=tmp_path) as reading:
        time.sleep(0.05)
    assert reading.method == "estimated"
    assert reading.seconds >= 0.05
    assert reading.joules == pytest.approx(reading.seconds * 10.0)
    assert "10 W" in reading.detail
    assert reading.measurement() == Measurement(reading.joules, "J", "estimated", reading.detail)


def test_co2_of_one_kilowatt_hour_is_the_grid_intensity() -> None:
    assert co2_grams(3.6e6) == pytest.approx(DEFAULT_GRID_G_PER_KWH)
    assert co2_grams(3.6e6, grid_g_per_kwh=100.0) == pytest.approx(100.0)
    with pytest.raises(ValueError):
        co2_grams(-1.0)


def test_co2_is_always_an_estimate() -> None:
    co2 = co2_measurement(Measurement(7.2e6, "J", "measured", "RAPL"), grid_g_per_kwh=50.0)
    assert co2.value == pytest.approx(100.0)
    assert co2.unit == "g" and co2.method == "estimated"
    assert "measured" in co2.detail


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_energy_meter_on_cuda_uses_nvml_when_available() -> None:
    with energy_meter("cuda") as reading:
        torch.randn(2048, 2048, device="cuda").matmul(torch.randn(2048, 2048, device="cuda"))
    expected = "measured" if NvmlCounter.open(torch.cuda.current_device()) else "estimated"
    assert reading.method == expected
    assert reading.joules >= 0
