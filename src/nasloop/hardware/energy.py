"""Energy of a block of work: measured by a hardware counter where readable, estimated otherwise.

Sources, in order of preference for the device:

* CUDA: the NVML counter `nvmlDeviceGetTotalEnergyConsumption` (millijoules since the driver loaded;
  Volta and newer), through `pynvml` when it is importable. It measures the whole GPU board.
* CPU: Intel RAPL through the powercap files `/sys/class/powercap/intel-rapl:N/energy_uj` (one per CPU
  package; sub-domains such as `intel-rapl:0:0` are parts of a package and are not added again). Each
  counter wraps at its `max_energy_range_uj`. It measures the whole package, all processes included. Since
  2020 most kernels make these files readable by root only, so it is often unavailable.
* Otherwise an *estimate*: elapsed wall-clock seconds × an assumed power (a TDP-style figure, default
  `DEFAULT_POWER_WATTS`; pass the figure of your machine). The result says that it is an estimate.

codecarbon (not a dependency) offers a similar meter; its offline mode could be used instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from nasloop.hardware.measurement import Measurement, Method

RAPL_ROOT = Path("/sys/class/powercap")
# Assumed average power when nothing can be measured: a desktop CPU package TDP and a data-centre GPU
# board power. Deliberately round numbers; an estimate is only as good as the figure passed in.
DEFAULT_POWER_WATTS = {"cpu": 65.0, "cuda": 300.0}


class EnergyCounter(Protocol):
    """A cumulative hardware energy counter: take snapshots, get the joules between two of them."""

    @property
    def description(self) -> str: ...

    def snapshot(self) -> tuple[int, ...]: ...

    def joules_between(self, start: tuple[int, ...], end: tuple[int, ...]) -> float: ...


@dataclass(frozen=True)
class RaplCounter:
    """The package-level RAPL domains under a powercap root, read in microjoules."""

    domains: tuple[Path, ...]
    ranges_uj: tuple[int, ...]
    description: str = "Intel RAPL package counters"

    @classmethod
    def open(cls, root: Path = RAPL_ROOT) -> RaplCounter | None:
        """The counter over every readable package domain under `root`; None when there is none."""
        domains = sorted(path for path in root.glob("intel-rapl:*") if path.name.count(":") == 1)
        readable = [path for path in domains if _readable_int(path / "energy_uj") is not None]
        ranges = [_readable_int(path / "max_energy_range_uj") for path in readable]
        if not readable or any(value is None for value in ranges):
            return None
        names = ", ".join(path.name for path in readable)
        return cls(tuple(readable), tuple(int(value or 0) for value in ranges), f"Intel RAPL ({names})")

    def snapshot(self) -> tuple[int, ...]:
        return tuple(int((path / "energy_uj").read_text()) for path in self.domains)

    def joules_between(self, start: tuple[int, ...], end: tuple[int, ...]) -> float:
        total_uj = 0
        for before, after, wrap in zip(start, end, self.ranges_uj, strict=True):
            # The counter restarts from 0 after reaching its range: at most one wrap between snapshots
            # (ranges are hours of full-power energy).
            total_uj += after - before if after >= before else after + wrap - before
        return total_uj / 1e6


def _readable_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):  # absent, root-only (the common case) or not a number
        return None


@dataclass(frozen=True)
class NvmlCounter:
    """The NVML total-energy counter of one GPU, in millijoules."""

    handle: Any
    nvml: Any
    description: str

    @classmethod
    def open(cls, device_index: int) -> NvmlCounter | None:
        """The counter of GPU `device_index`; None without pynvml or on a GPU without the counter."""
        try:
            import pynvml  # optional: nvidia-ml-py
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except pynvml.NVMLError:  # no driver, or a GPU older than Volta
            return None
        return cls(handle, pynvml, f"NVML total energy of GPU {device_index}")

    def snapshot(self) -> tuple[int, ...]:
        return (int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)),)

    def joules_between(self, start: tuple[int, ...], end: tuple[int, ...]) -> float:
        return (end[0] - start[0]) / 1000.0


def open_counter(device: torch.device, rapl_root: Path = RAPL_ROOT) -> EnergyCounter | None:
    """The hardware energy counter for `device`, or None when this machine cannot measure it."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return NvmlCounter.open(index)
    if device.type == "cpu":
        return RaplCounter.open(rapl_root)
    return None


@dataclass
class EnergyReading:
    """What `energy_meter` yields; filled in when the block exits."""

    joules: float = 0.0
    seconds: float = 0.0
    method: Method = "estimated"
    detail: str = ""

    def measurement(self) -> Measurement:
        return Measurement(self.joules, "J", self.method, self.detail)


@contextmanager
def energy_meter(
    device: str | torch.device = "cpu",
    *,
    power_watts: float | None = None,
    rapl_root: Path = RAPL_ROOT,
) -> Iterator[EnergyReading]:
    """Meter the energy of the block (a training epoch, a timing loop) on `device`.

    Usage::

        with energy_meter("cpu") as reading:
            train_one_epoch()
        reading.joules, reading.method  # e.g. 812.4, "estimated"

    A hardware counter is used when one is readable (see the module doc); otherwise the energy is
    estimated as elapsed seconds × `power_watts` (default `DEFAULT_POWER_WATTS` for the device type).
    On CUDA the device is synchronised before and after the block so queued kernels are inside it.
    """
    device = torch.device(device)
    counter = open_counter(device, rapl_root)
    reading = EnergyReading()
    _synchronize(device)
    start_time = time.perf_counter()
    start_snapshot = counter.snapshot() if counter else ()
    try:
        yield reading
    finally:
        _synchronize(device)
        reading.seconds = time.perf_counter() - start_time
        if counter is not None:
            reading.joules = counter.joules_between(start_snapshot, counter.snapshot())
            reading.method = "measured"
            reading.detail = f"{counter.description}, {reading.seconds:.3f} s"
        else:
            watts = power_watts if power_watts is not None else DEFAULT_POWER_WATTS.get(device.type, 65.0)
            reading.joules = reading.seconds * watts
            reading.method = "estimated"
            reading.detail = f"no readable energy counter: {reading.seconds:.3f} s × assumed {watts:g} W"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
