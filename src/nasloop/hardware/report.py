"""`measure_hardware`: every hardware figure of one model, each with its unit and method.

Metric names carry their unit: `params`, `flops` and `macs` (per image), `latency_ms` (batch 1),
`latency_b{N}_ms` (batch N), with `*_iqr_ms` spreads next to them, `throughput_ips` (images per second at
the largest batch), `peak_memory_mb` (largest batch), `energy_j` and `co2_g` (per image, inference at the
largest batch).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from nasloop.hardware.carbon import DEFAULT_GRID_G_PER_KWH, co2_measurement
from nasloop.hardware.counting import count_flops, count_parameters, example_input, model_device
from nasloop.hardware.energy import RAPL_ROOT, energy_meter
from nasloop.hardware.measurement import Measurement
from nasloop.hardware.memory import MEBIBYTE, peak_memory_bytes
from nasloop.hardware.timing import LatencyStats, measure_latency


@dataclass
class HardwareReport:
    """The figures of one `measure_hardware` call, by metric name."""

    measurements: dict[str, Measurement] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Metric name → value, the form stored in `EvalResult.metrics`."""
        return {name: float(measurement.value) for name, measurement in self.measurements.items()}

    def info(self) -> dict[str, str]:
        """Metric name → "measured: how" or "estimated: how", the form stored in `EvalResult.info`."""
        return {name: measurement.describe() for name, measurement in self.measurements.items()}


def latency_metric_name(batch_size: int, suffix: str = "ms") -> str:
    """`latency_ms` for batch 1, `latency_b64_ms` for batch 64; `suffix="iqr_ms"` names the spread."""
    return f"latency_{suffix}" if batch_size == 1 else f"latency_b{batch_size}_{suffix}"


def measure_hardware(
    model: nn.Module,
    in_shape: tuple[int, int, int],
    *,
    device: str | torch.device = "cpu",
    batch_sizes: Sequence[int] = (1, 64),
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    power_watts: float | None = None,
    grid_g_per_kwh: float = DEFAULT_GRID_G_PER_KWH,
    rapl_root: Path = RAPL_ROOT,
) -> HardwareReport:
    """Measure `model` for inputs of shape `in_shape` (C, H, W) on `device`.

    The model is used in eval mode without autograd; the caller's model keeps its flags, and is copied
    (never moved) when it lives on another device. `threads` fixes the CPU thread count during timing
    (default: the current count), restored afterwards. Energy is metered around the timing loop of the
    largest batch and divided by the images it processed; see `energy_meter` for measured vs estimated.
    """
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"batch_sizes must be positive, got {tuple(batch_sizes)}")
    target = torch.device(device)
    on_device = model if _same_device(model_device(model), target) else copy.deepcopy(model).to(target)
    report = HardwareReport()
    report.measurements.update(_counts(on_device, in_shape))
    largest = max(batch_sizes)
    for batch_size in sorted(set(batch_sizes) - {largest}):
        example = example_input(on_device, (batch_size, *in_shape), fill="normal")
        stats = measure_latency(on_device, example, repeats=repeats, warmup=warmup, threads=threads)
        report.measurements.update(_latency_measurements(stats))
    example = example_input(on_device, (largest, *in_shape), fill="normal")
    # The largest batch is timed inside the energy meter, so one loop gives latency and energy.
    with energy_meter(target, power_watts=power_watts, rapl_root=rapl_root) as reading:
        stats = measure_latency(on_device, example, repeats=repeats, warmup=warmup, threads=threads)
    report.measurements.update(_latency_measurements(stats))
    report.measurements.update(_throughput_and_memory(on_device, example, stats))
    images = (warmup + repeats) * largest
    energy = Measurement(
        reading.joules / images,
        "J",
        reading.method,
        f"per image, inference at batch {largest}: {reading.detail} / {images} images (warm-up included)",
    )
    report.measurements["energy_j"] = energy
    report.measurements["co2_g"] = co2_measurement(energy, grid_g_per_kwh)
    return report


def _same_device(current: torch.device, target: torch.device) -> bool:
    if current.type != target.type:
        return False
    return target.index is None or current.index == target.index


def _counts(model: nn.Module, in_shape: tuple[int, int, int]) -> dict[str, Measurement]:
    flops = count_flops(model, in_shape)
    how = "torch FlopCounterMode, batch 1; matmul/conv only"
    return {
        "params": Measurement(count_parameters(model), "parameters", "measured", "sum of numel"),
        "flops": Measurement(flops, "FLOPs", "measured", f"{how}; FLOPs = 2 × MACs"),
        "macs": Measurement(flops / 2, "MACs", "measured", f"{how}; FLOPs / 2"),
    }


def _latency_measurements(stats: LatencyStats) -> dict[str, Measurement]:
    threads = f", {stats.threads} CPU threads" if stats.threads is not None else ""
    detail = f"median of {len(stats.samples_ms)} timed calls ({stats.timer}), batch {stats.batch_size}{threads}"
    return {
        latency_metric_name(stats.batch_size): Measurement(stats.median_ms, "ms", "measured", detail),
        latency_metric_name(stats.batch_size, "iqr_ms"): Measurement(
            stats.iqr_ms, "ms", "measured", f"interquartile range; {detail}"
        ),
    }


def _throughput_and_memory(
    model: nn.Module, example: torch.Tensor, largest_stats: LatencyStats
) -> dict[str, Measurement]:
    where = "CUDA max_memory_allocated" if example.device.type == "cuda" else "tracked live tensor bytes"
    peak = peak_memory_bytes(model, example)
    return {
        "throughput_ips": Measurement(
            largest_stats.throughput_ips,
            "images/s",
            "measured",
            f"batch {largest_stats.batch_size} / median latency",
        ),
        "peak_memory_mb": Measurement(
            peak / MEBIBYTE,
            "MiB",
            "measured",
            f"{where}, one inference forward at batch {example.shape[0]} (weights, input, activations)",
        ),
    }
