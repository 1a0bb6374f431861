"""`measure_hardware` end to end on the CPU: names with units, and how each figure was obtained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from nasloop.hardware import count_flops, count_parameters, latency_metric_name, measure_hardware


def tiny_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)
    )


def test_latency_metric_names_carry_the_batch_and_unit() -> None:
    assert latency_metric_name(1) == "latency_ms"
    assert latency_metric_name(64) == "latency_b64_ms"
    assert latency_metric_name(64, "iqr_ms") == "latency_b64_iqr_ms"


def test_measure_hardware_reports_every_figure_with_its_method(tmp_path: Path) -> None:
    model = tiny_net().train()
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    report = measure_hardware(model, (1, 8, 8), batch_sizes=(1, 4), repeats=3, warmup=1, threads=1, rapl_root=tmp_path)
    metrics, info = report.metrics(), report.info()
    expected = {
        "params", "flops", "macs", "latency_ms", "latency_iqr_ms", "latency_b4_ms", "latency_b4_iqr_ms",
        "throughput_ips", "peak_memory_mb", "energy_j", "co2_g",
    }  # fmt: skip
    assert set(metrics) == expected == set(info)
    assert metrics["params"] == count_parameters(model)
    assert metrics["flops"] == count_flops(model, (1, 8, 8)) == 2 * metrics["macs"]
    assert metrics["throughput_ips"] == pytest.approx(4 / (metrics["latency_b4_ms"] / 1000))
    assert all(value > 0 for name, value in metrics.items() if "iqr" not in name)
    assert info["energy_j"].startswith("estimated:") and info["co2_g"].startswith("estimated:")
    assert info["latency_ms"].startswith("measured:") and "1 CPU threads" in info["latency_ms"]
    # the caller's model is untouched: same flags, same weights and BN statistics
    assert model.training
    assert all(torch.equal(state[name], tensor) for name, tensor in model.state_dict().items())


def test_measure_hardware_refuses_empty_batch_sizes() -> None:
    with pytest.raises(ValueError, match="batch_sizes"):
        measure_hardware(tiny_net(), (1, 8, 8), batch_sizes=())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_measure_hardware_on_cuda_leaves_the_model_on_the_cpu() -> None:
    model = tiny_net()
    report = measure_hardware(model, (1, 8, 8), device="cuda", batch_sizes=(1, 4), repeats=3, warmup=1)
    assert "cuda.Event" in report.info()["latency_ms"]
    assert "max_memory_allocated" in report.info()["peak_memory_mb"]
    assert next(model.parameters()).device.type == "cpu"
