"""Latency lookup tables: measured latencies of a space's architectures on a target device.

Hardware-aware search normally measures each candidate on the machine that runs the search (the
`hardware` evaluation stage). To search for another device, such as the six devices of HW-NAS-Bench
(Edge GPU, Raspberry Pi 4, Edge TPU, Pixel 3, Eyeriss, FPGA), supply a table of per-architecture
latencies measured there. One file may hold several devices; `LatencyTable.load` reads one of them.

File formats (latencies in milliseconds, finite and non-negative):

- CSV, wide: a column `arch` (or `architecture`) and one column per device::

      arch,edgegpu,raspi4
      |nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|,4.21,35.7

- CSV, long: columns `arch` (or `architecture`), `device` and `latency_ms`, one row per pair.
- JSON: an object of devices, each an object of architecture strings to latencies:
  `{"edgegpu": {"|nor_conv_3x3~0|+...": 4.21}}`.

Lookup: an architecture is found by its string with whitespace removed; when the table was loaded with
the space's `canonical` function, an architecture that is not listed verbatim is then found through its
canonical form (cells that differ only in edges that cannot reach the output compute the same network).
An architecture the table does not hold raises `LatencyNotFound`, which names the architecture, the
device and the file; callers that would rather fall back to measuring use `get`, which returns None.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasloop.errors import NasloopError

ARCHITECTURE_COLUMNS = ("arch", "architecture")
LONG_FORMAT_COLUMNS = ("device", "latency_ms")


class LatencyTableError(NasloopError, ValueError):
    """A latency table that cannot be used: unreadable, malformed, a bad value, or no such device."""


class LatencyNotFound(NasloopError, LookupError):
    """The table holds no latency for an architecture."""


@dataclass(frozen=True)
class LatencyTable:
    """Latencies (ms) of architectures on one device, keyed by architecture string.

    Build it with `load`; `latency_ms(arch)` raises `LatencyNotFound` for an architecture the table
    does not hold, `get(arch)` returns None instead. `canonical` (the space's `canonical` method) lets
    equivalent spellings of a listed architecture be found too (see the module docstring).
    """

    device: str
    entries: Mapping[str, float]
    source: str = ""
    canonical: Callable[[str], str] | None = None
    _by_canonical: dict[str, float] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.canonical is None:
            return
        # Prefer the entry written in canonical form: it is the network that is actually rendered.
        for arch, latency in self.entries.items():
            key = self.canonical(arch)
            if key == arch or key not in self._by_canonical:
                self._by_canonical[key] = latency

    @classmethod
    def load(cls, path: str | Path, device: str, *, canonical: Callable[[str], str] | None = None) -> LatencyTable:
        """The latencies of `device` in the CSV or JSON file at `path` (formats: module docstring)."""
        per_device = read_latency_file(Path(path))
        if device not in per_device:
            known = ", ".join(sorted(per_device)) or "none"
            raise LatencyTableError(f"{path}: no latencies for device {device!r}; the file has: {known}")
        return cls(device, per_device[device], str(path), canonical)

    @classmethod
    def from_benchmark(
        cls, benchmark: str, dataset: str, device: str, *, table: str | Path | None = None
    ) -> LatencyTable:
        """The latencies of `device` in a tabular benchmark's device metrics, e.g. HW-NAS-Bench's via
        `from_benchmark("nb201", "cifar10", "edgegpu")`; `table` is a device file of the user's in the
        same layout instead of the packaged one (`nasloop.benchmarks.DeviceTable`).

        Cells without a latency (missing from the benchmark's extract, or marked not available by the
        benchmark) are not listed and raise LatencyNotFound; `BenchmarkTable.device_metric` tells the two
        apart. Lookup is verbatim: the benchmarks measured dead edges too, so equivalent cells differ.
        """
        from nasloop.benchmarks import BenchmarkTableError  # the benchmark data is read only when asked for
        from nasloop.registry import benchmarks

        try:
            devices = benchmarks.get(benchmark)().load_devices(dataset, table)
        except BenchmarkTableError as error:
            raise LatencyTableError(str(error)) from None
        metric = f"{device}_latency_ms"
        if metric not in devices.metrics:
            latencies = [name for name in devices.metrics if name.endswith("_latency_ms")]
            known = ", ".join(sorted(name.removesuffix("_latency_ms") for name in latencies))
            raise LatencyTableError(f"{devices.source}: no latencies for device {device!r}; it has: {known or 'none'}")
        return cls(device, devices.column(metric), devices.source)

    def get(self, arch: str) -> float | None:
        """The latency of `arch` in ms, or None when the table does not hold it."""
        key = _normalised(arch)
        if key in self.entries:
            return self.entries[key]
        if self.canonical is not None:
            return self._by_canonical.get(self.canonical(key))
        return None

    def latency_ms(self, arch: str) -> float:
        """The latency of `arch` in ms; raises `LatencyNotFound` when the table does not hold it."""
        latency = self.get(arch)
        if latency is None:
            raise LatencyNotFound(
                f"the latency table {self.source or '(in memory)'} has no latency for {_normalised(arch)!r} "
                f"on device {self.device!r} ({len(self.entries):,} architectures listed)"
            )
        return latency

    def __contains__(self, arch: object) -> bool:
        return isinstance(arch, str) and self.get(arch) is not None

    def __len__(self) -> int:
        return len(self.entries)


def latency_devices(path: str | Path) -> tuple[str, ...]:
    """The devices a latency file holds, sorted."""
    return tuple(sorted(read_latency_file(Path(path))))


def read_latency_file(path: Path) -> dict[str, dict[str, float]]:
    """Every device's latencies in `path` (CSV or JSON): device -> architecture -> ms."""
    if not path.exists():
        raise LatencyTableError(f"latency table not found: {path}")
    if path.suffix.lower() == ".json":
        return _read_json(path)
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    raise LatencyTableError(f"{path}: a latency table is a .csv or .json file")


def _read_json(path: Path) -> dict[str, dict[str, float]]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise LatencyTableError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or not all(isinstance(table, dict) for table in data.values()):
        raise LatencyTableError(f"{path}: expected an object of devices, each an object of architecture -> ms")
    tables: dict[str, dict[str, float]] = {}
    for device, table in data.items():
        for arch, value in table.items():
            where = f"{path}: device {device}, architecture {arch!r}"
            _put(tables.setdefault(str(device), {}), str(arch), _latency(value, where), where)
    return tables


def _read_csv(path: Path) -> dict[str, dict[str, float]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = columns
        arch_column = next((name for name in columns if name.lower() in ARCHITECTURE_COLUMNS), None)
        if arch_column is None:
            raise LatencyTableError(f"{path}: no architecture column (name one of: {', '.join(ARCHITECTURE_COLUMNS)})")
        rows = list(reader)
    if all(name in columns for name in LONG_FORMAT_COLUMNS):
        return _long_rows(path, rows, arch_column)
    devices = [name for name in columns if name != arch_column]
    if not devices:
        raise LatencyTableError(f"{path}: no device columns next to {arch_column!r}")
    tables: dict[str, dict[str, float]] = {device: {} for device in devices}
    for line, row in enumerate(rows, start=2):
        for device in devices:
            if row.get(device) not in (None, ""):  # an empty cell: not measured on that device
                where = f"{path} line {line}, column {device}"
                _put(tables[device], row[arch_column] or "", _latency(row[device], where), where)
    return tables


def _long_rows(path: Path, rows: list[dict[str, Any]], arch_column: str) -> dict[str, dict[str, float]]:
    tables: dict[str, dict[str, float]] = {}
    for line, row in enumerate(rows, start=2):
        device = (row["device"] or "").strip()
        if not device:
            raise LatencyTableError(f"{path} line {line}: empty device")
        where = f"{path} line {line}"
        _put(tables.setdefault(device, {}), row[arch_column] or "", _latency(row["latency_ms"], where), where)
    return tables


def _put(table: dict[str, float], arch: str, latency: float, where: str) -> None:
    """Add one entry; an empty architecture or one listed twice with another latency is an error."""
    key = _normalised(arch)
    if not key:
        raise LatencyTableError(f"{where}: empty architecture")
    if key in table and table[key] != latency:
        raise LatencyTableError(f"{where}: {key!r} is listed twice, with {table[key]} and {latency} ms")
    table[key] = latency


def _latency(value: Any, where: str) -> float:
    try:
        latency = float(value)
    except (TypeError, ValueError):
        raise LatencyTableError(f"{where}: latency {value!r} is not a number") from None
    if not math.isfinite(latency) or latency < 0:
        raise LatencyTableError(f"{where}: latency {latency} must be a finite number of ms, not negative")
    return latency


def _normalised(arch: str) -> str:
    return "".join(arch.split())


__all__ = ["LatencyNotFound", "LatencyTable", "LatencyTableError", "latency_devices", "read_latency_file"]
