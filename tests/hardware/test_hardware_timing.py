"""Latency, throughput and peak memory on the CPU (and CUDA when present)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nasloop.hardware import LatencyStats, cpu_threads, measure_latency, peak_memory_bytes
from nasloop.hardware.memory import MEBIBYTE


def conv_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))


def test_latency_statistics_are_computed_from_the_samples() -> None:
    stats = LatencyStats(8, (1.0, 2.0, 3.0, 4.0, 100.0), 1, "perf_counter")
    assert stats.median_ms == 3.0
    assert stats.iqr_ms == pytest.approx(2.0)  # inclusive quartiles 2 and 4
    assert stats.throughput_ips == pytest.approx(8 / 0.003)


def test_cpu_latency_is_positive_and_restores_threads_and_mode() -> None:
    model = conv_net().train()
    before = torch.get_num_threads()
    stats = measure_latency(model, torch.randn(2, 3, 16, 16), repeats=5, warmup=1, threads=1)
    assert stats.threads == 1 and stats.timer == "perf_counter"
    assert len(stats.samples_ms) == 5 and all(sample > 0 for sample in stats.samples_ms)
    assert stats.iqr_ms >= 0
    assert torch.get_num_threads() == before
    assert model.training


def test_cpu_threads_are_restored_after_an_exception() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), cpu_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_bad_repeats_are_refused() -> None:
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(conv_net(), torch.randn(1, 3, 8, 8), repeats=0)


def test_cpu_peak_memory_counts_weights_input_and_the_two_live_activations() -> None:
    model = conv_net()
    example = torch.randn(4, 3, 32, 32)
    weights = sum(tensor.numel() * 4 for tensor in model.parameters())
    activation = 4 * 16 * 32 * 32 * 4  # one float32 feature map of the batch
    peak = peak_memory_bytes(model, example)
    # conv1 output and relu output are alive together; then relu output and conv2 output.
    assert peak == weights + example.numel() * 4 + 2 * activation


def test_cpu_peak_memory_grows_with_the_batch() -> None:
    model = conv_net()
    small = peak_memory_bytes(model, torch.randn(1, 3, 32, 32))
    large = peak_memory_bytes(model, torch.randn(8, 3, 32, 32))
    assert large > 4 * small > 0
    assert large / MEBIBYTE < 10


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_latency_and_memory() -> None:
    model = conv_net().cuda()
    example = torch.randn(8, 3, 32, 32, device="cuda")
    stats = measure_latency(model, example, repeats=5, warmup=2)
    assert stats.timer == "cuda.Event" and stats.threads is None
    assert all(sample > 0 for sample in stats.samples_ms)
    assert peak_memory_bytes(model, example) >= 8 * 16 * 32 * 32 * 4
