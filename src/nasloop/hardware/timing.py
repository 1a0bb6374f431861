"""Inference latency: warm-up, synchronise, repeat, report the median and the spread.

On CPU each call is timed with `time.perf_counter` under a fixed thread count (set with
`torch.set_num_threads` for the measurement and restored afterwards). On CUDA each call is timed with a
pair of `torch.cuda.Event`s recorded on the current stream, after a synchronisation, so the figure is GPU
time of the forward pass and not Python launch overhead.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from nasloop.hardware.measurement import eval_mode


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency of a forward pass in milliseconds over `samples_ms` timed repeats."""

    batch_size: int
    samples_ms: tuple[float, ...]
    threads: int | None  # CPU threads during the measurement; None on CUDA
    timer: str  # "perf_counter" or "cuda.Event"

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def iqr_ms(self) -> float:
        """Interquartile range (75th − 25th percentile); 0 for fewer than two samples."""
        if len(self.samples_ms) < 2:
            return 0.0
        quartiles = statistics.quantiles(self.samples_ms, n=4, method="inclusive")
        return quartiles[2] - quartiles[0]

    @property
    def throughput_ips(self) -> float:
        """Images per second at this batch size, from the median latency."""
        return self.batch_size / (self.median_ms / 1000.0)


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[int]:
    """Run the block with `torch.set_num_threads(threads)` (the current count when None); restore after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads if threads is not None else previous)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def measure_latency(
    model: nn.Module,
    example: torch.Tensor,
    *,
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
) -> LatencyStats:
    """Time `repeats` inference forward passes of `model` on `example` after `warmup` untimed ones.

    `example` must already be on the model's device; the device of `example` picks the timer. The model
    runs in eval mode under `torch.inference_mode()`; its train/eval flags are restored.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    batch_size = int(example.shape[0])
    with eval_mode(model), torch.inference_mode():
        if example.device.type == "cuda":
            with torch.cuda.device(example.device):
                samples = _time_cuda(model, example, repeats, warmup)
            return LatencyStats(batch_size, samples, None, "cuda.Event")
        with cpu_threads(threads) as used_threads:
            samples = _time_cpu(model, example, repeats, warmup)
        return LatencyStats(batch_size, samples, used_threads, "perf_counter")


def _time_cpu(model: nn.Module, example: torch.Tensor, repeats: int, warmup: int) -> tuple[float, ...]:
    for _ in range(warmup):
        model(example)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(example)
        samples.append((time.perf_counter() - start) * 1000.0)
    return tuple(samples)


def _time_cuda(model: nn.Module, example: torch.Tensor, repeats: int, warmup: int) -> tuple[float, ...]:
    for _ in range(warmup):
        model(example)
    torch.cuda.synchronize(example.device)
    pairs = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        model(example)
        end.record()
        pairs.append((start, end))
    # One synchronisation after all repeats: events carry their own GPU timestamps.
    torch.cuda.synchronize(example.device)
    return tuple(float(start.elapsed_time(end)) for start, end in pairs)
