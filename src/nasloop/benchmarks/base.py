"""The tabular benchmark interface: the measured figures of every network of a structured space.

A tabular benchmark maps each architecture string of a registered space to what that network reached
when fully trained, so a search can be scored against the truth without training anything. Benchmarks
are registered in `nasloop.registry.benchmarks`; their tables ship with nasloop, compressed, under
`nasloop/benchmarks/data/` (built by `scripts/build_benchmark_tables.py`), and a user may supply a table
of their own in the same JSON format.
"""

from __future__ import annotations

import abc
import difflib
import enum
import functools
import gzip
import json
import math
import re
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from nasloop.errors import NasloopError
from nasloop.registry import spaces
from nasloop.spaces.base import SearchSpace

DATA_DIR = Path(__file__).parent / "data"
VAL_ACC, TEST_ACC, PARAMS, FLOPS = "val_acc", "test_acc", "params", "flops"


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------


class BenchmarkError(NasloopError):
    """Base of every error this package raises."""


class BenchmarkTableError(BenchmarkError, ValueError):
    """A table that cannot be used as asked: a missing or malformed file, an unknown dataset, a dataset
    without a packaged table, or a metric the table does not have. The message is one line naming the
    file (or benchmark and dataset) and what is wrong."""


class Absence(enum.Enum):
    """Why a table has no figure."""

    NOT_IN_TABLE = "the table has no entry for it"
    MISSING_FROM_EXTRACT = "missing from the extract (null)"
    NOT_AVAILABLE = "not available in the benchmark itself (-1)"


class PointNotInTable(BenchmarkError, LookupError):
    """The table has no figure for a point, or for one metric of it; `absence` says which case it is.

    The message names the point, the metric where one was asked for, and the table's file and dataset.
    """

    def __init__(self, message: str, absence: Absence = Absence.NOT_IN_TABLE) -> None:
        super().__init__(message)
        self.absence = absence


# ---------------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------------


def read_json(path: Path) -> Any:
    """The JSON value in `path`, which may be gzip-compressed; BenchmarkTableError when it cannot be read."""
    if not path.is_file():
        raise BenchmarkTableError(f"benchmark table not found: {path}")
    raw = path.read_bytes()
    try:
        if raw[:2] == b"\x1f\x8b":  # the gzip magic number: packaged tables, or a user's compressed one
            raw = gzip.decompress(raw)
        return json.loads(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise BenchmarkTableError(f"{path}: not a readable gzip file ({error})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BenchmarkTableError(f"{path}: not valid JSON ({error})") from None


def finite_number(row: Mapping[str, Any], field: str) -> float:
    """`row[field]` as a finite float; ValueError naming the field otherwise (booleans are not numbers)."""
    if field not in row:
        raise ValueError(f"has no field {field!r} (fields: {', '.join(map(str, row)) or 'none'})")
    value = row[field]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"field {field!r} is {value!r}, not a finite number")
    return float(value)


def percent_as_fraction(row: Mapping[str, Any], field: str) -> float:
    """An accuracy in percent (the tables' unit) as the fraction nasloop uses everywhere."""
    value = finite_number(row, field)
    if not 0 <= value <= 100:
        raise ValueError(f"field {field!r} is {value}, not an accuracy in percent (0 to 100)")
    return value / 100


def normalised(arch: str) -> str:
    return "".join(arch.split())


# ---------------------------------------------------------------------------------------------------
# The loaded table
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Optimum:
    """The table's best networks: what a search's regret is measured against.

    `best_test_acc` is the highest test accuracy of any network; `best_val_arch` is the network an
    oracle that selects on validation picks, and `best_val_test_acc` its test accuracy (the figure a
    search that selects on validation can reach at best). Of tied networks, the first string in
    canonical form is named.
    """

    best_test_acc: float
    best_test_arch: str
    best_val_acc: float
    best_val_arch: str
    best_val_test_acc: float


class BenchmarkTable:
    """One benchmark's figures on one dataset; answers queries by architecture string.

    Lookup: the string with whitespace removed is looked up as written; a string the table does not
    list verbatim is then found through the space's canonical form (preferring the entry written in
    canonical form, the network nasloop renders), so equivalent spellings of a listed network are
    found. Device metrics, where the benchmark has them, are looked up verbatim only (see `devices`).
    Query results are fresh dictionaries: callers may keep or change them.
    """

    def __init__(
        self,
        benchmark: TabularBenchmark,
        dataset: str,
        rows: dict[str, dict[str, float]],
        source: str,
        devices: Callable[[], DeviceTable] | None = None,
    ) -> None:
        self.benchmark = benchmark.name
        self.space_name = benchmark.space
        self.dataset = dataset
        self.source = source
        self.metrics = benchmark.metrics
        self._space = spaces.get(benchmark.space)()
        self._rows = rows
        self._by_canonical: dict[str, str] | None = None
        self._load_devices = devices
        self._devices: DeviceTable | None = None

    def __repr__(self) -> str:
        return f"BenchmarkTable({self.benchmark!r}, {self.dataset!r}, {len(self):,} architectures, {self.source})"

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[str]:
        """The architecture strings the table lists, sorted."""
        return iter(self._rows)

    def __contains__(self, arch: object) -> bool:
        return isinstance(arch, str) and self._find(arch) is not None

    @property
    def space(self) -> SearchSpace:
        """The benchmark's space with its standard options: the networks the table measured."""
        return self._space

    @property
    def where(self) -> str:
        """How messages name this table: benchmark, dataset and file."""
        return f"{self.benchmark} {self.dataset} table {self.source}"

    def key(self, arch: str) -> str:
        """The listed string whose figures answer for `arch`; PointNotInTable when there is none."""
        found = self._find(arch)
        if found is None:
            raise self._not_found(arch)
        return found

    def query(self, arch: str, *, devices: bool = False) -> dict[str, float]:
        """The metrics of `arch` (`metrics`: accuracies as fractions, plus params and flops where the
        table has them); with `devices`, also every device metric the table has a number for (see
        `missing_metrics` for the others). Raises PointNotInTable for a point the table lacks."""
        metrics = dict(self._rows[self.key(arch)])
        if devices and self.has_devices:
            metrics.update(self.devices.available(arch))
        return metrics

    def rows(self) -> Iterator[tuple[str, dict[str, float]]]:
        """Every (architecture, metrics) pair, sorted by architecture."""
        for arch, metrics in self._rows.items():
            yield arch, dict(metrics)

    def optimum(self) -> Optimum:
        """The best networks by test and by validation accuracy (see `Optimum`)."""
        best_test, best_val = self._best(TEST_ACC), self._best(VAL_ACC)
        return Optimum(
            best_test_acc=self._rows[best_test][TEST_ACC],
            best_test_arch=best_test,
            best_val_acc=self._rows[best_val][VAL_ACC],
            best_val_arch=best_val,
            best_val_test_acc=self._rows[best_val][TEST_ACC],
        )

    def _best(self, metric: str) -> str:
        """The network with the highest `metric`; of ties, the first string in canonical form (NAS-Bench-Macro
        copies figures to equivalent strings), else the smallest."""
        best = max(metrics[metric] for metrics in self._rows.values())
        ties = [arch for arch, metrics in self._rows.items() if metrics[metric] == best]
        return next((arch for arch in ties if self._space.canonical(arch) == arch), ties[0])

    # -- device metrics --------------------------------------------------------------------------------

    @property
    def has_devices(self) -> bool:
        """Whether this table answers device metrics (HW-NAS-Bench for NB201 on CIFAR-10)."""
        return self._load_devices is not None

    @property
    def devices(self) -> DeviceTable:
        """The device-metric table, read on first use; BenchmarkTableError when there is none."""
        if self._load_devices is None:
            raise BenchmarkTableError(f"the {self.where} has no device metrics")
        if self._devices is None:
            self._devices = self._load_devices()
        return self._devices

    def device_metric(self, arch: str, name: str) -> float:
        """One device metric of `arch`, e.g. `edgegpu_latency_ms`. PointNotInTable when the table has no
        number for it; its `absence` tells a cell missing from the extract from a -1 of the benchmark."""
        return self.devices.value(arch, name)

    def missing_metrics(self, arch: str) -> dict[str, Absence]:
        """The device metrics `query(arch, devices=True)` leaves out, each with the reason."""
        return self.devices.missing(arch) if self.has_devices else {}

    # -- lookup ----------------------------------------------------------------------------------------

    def _find(self, arch: str) -> str | None:
        key = normalised(arch)
        if key in self._rows:
            return key
        if self._by_canonical is None:  # built on the first miss: packaged NB201 tables list every string
            self._by_canonical = {}
            for listed in self._rows:
                canonical = self._space.canonical(listed)
                if canonical == listed or canonical not in self._by_canonical:
                    self._by_canonical[canonical] = listed
        return self._by_canonical.get(self._space.canonical(key))

    def _not_found(self, arch: str) -> PointNotInTable:
        key = normalised(arch)
        problem = self._space.validate(key)
        why = f"it is not a {self.space_name} architecture: {problem}" if problem else "no entry for it"
        return PointNotInTable(f"{key[:200]!r} is not in the {self.where} ({len(self):,} architectures): {why}")


# ---------------------------------------------------------------------------------------------------
# Device metrics
# ---------------------------------------------------------------------------------------------------


class DeviceTable:
    """Per-architecture metrics measured on devices, in HW-NAS-Bench's column layout.

    File format (as `hw_nas_bench_cifar10.json`): `{"archs": [arch, ...], "metrics": {name: [value, ...]}}`
    where `metrics[name][i]` belongs to `archs[i]`. A value is a non-negative number, `null` (the
    extract lacks the cell) or -1 (the benchmark itself marks it not available). `names` maps the file's
    metric names to nasloop's, which carry their unit.

    Lookup is verbatim (whitespace removed), never through the canonical form: the benchmarks measure a
    cell's dead edges too, so equivalent cells have different latencies.
    """

    UNAVAILABLE = -1

    def __init__(self, archs: list[str], columns: dict[str, list[float | None]], source: str) -> None:
        self.source = source
        self.metrics = tuple(columns)
        self._index = {arch: position for position, arch in enumerate(archs)}
        self._columns = columns

    @classmethod
    def read(cls, path: Path, names: Mapping[str, str], space: SearchSpace, source: str | None = None) -> DeviceTable:
        """The device table in `path`, its metrics renamed by `names`; BenchmarkTableError if malformed."""
        data = read_json(path)
        where = source or str(path)
        if not isinstance(data, dict) or not isinstance(data.get("archs"), list):
            raise BenchmarkTableError(f"{where}: expected an object with 'archs' (a list) and 'metrics'")
        archs = [_checked_arch(arch, space, where) for arch in data["archs"]]
        if len(set(archs)) != len(archs):
            raise BenchmarkTableError(f"{where}: 'archs' lists an architecture twice")
        metrics = data.get("metrics")
        if not isinstance(metrics, dict) or not metrics:
            raise BenchmarkTableError(f"{where}: 'metrics' must be a non-empty object of metric -> list")
        columns = {
            _metric_name(name, names, where): _column(values, len(archs), f"{where}: metric {name!r}")
            for name, values in metrics.items()
        }
        return cls(archs, columns, where)

    def value(self, arch: str, name: str) -> float:
        """The metric `name` of `arch`; PointNotInTable, whose `absence` says why, when there is no number."""
        value = self._lookup(arch, self._column_of(name))
        if isinstance(value, Absence):
            detail = "the table does not list it" if value is Absence.NOT_IN_TABLE else value.value
            message = f"{normalised(arch)[:200]!r} has no {name} in the device table {self.source}: {detail}"
            raise PointNotInTable(message, value)
        return value

    def available(self, arch: str) -> dict[str, float]:
        """Every metric of `arch` that is a number (none for an architecture the table does not list)."""
        values = {name: self._lookup(arch, column) for name, column in self._columns.items()}
        return {name: value for name, value in values.items() if not isinstance(value, Absence)}

    def missing(self, arch: str) -> dict[str, Absence]:
        """Every metric of `arch` that is not a number, with the reason."""
        values = {name: self._lookup(arch, column) for name, column in self._columns.items()}
        return {name: value for name, value in values.items() if isinstance(value, Absence)}

    def column(self, name: str) -> dict[str, float]:
        """Architecture -> value of every architecture that has a number for `name`."""
        values = self._column_of(name)
        return {
            arch: value
            for arch, value in zip(self._index, values, strict=True)
            if value is not None and value != self.UNAVAILABLE
        }

    def _lookup(self, arch: str, column: list[float | None]) -> float | Absence:
        position = self._index.get(normalised(arch))
        if position is None:
            return Absence.NOT_IN_TABLE
        value = column[position]
        if value is None:
            return Absence.MISSING_FROM_EXTRACT
        return Absence.NOT_AVAILABLE if value == self.UNAVAILABLE else value

    def _column_of(self, name: str) -> list[float | None]:
        if name not in self._columns:
            close = difflib.get_close_matches(name, self._columns, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise BenchmarkTableError(
                f"{self.source}: no device metric {name!r}.{hint} Known: {', '.join(self._columns)}."
            )
        return self._columns[name]


def _checked_arch(arch: Any, space: SearchSpace, where: str) -> str:
    """`arch` with whitespace removed, when it is a well-formed string of `space`."""
    if not isinstance(arch, str):
        raise BenchmarkTableError(f"{where}: architecture {arch!r} is not a string")
    key = normalised(arch)
    problem = space.validate(key)
    if problem is not None:
        raise BenchmarkTableError(f"{where}: {arch[:200]!r} is not a {space.name} architecture: {problem}")
    return key


def _metric_name(name: str, names: Mapping[str, str], where: str) -> str:
    if name in names:
        return names[name]
    if name in names.values():  # already in nasloop's naming
        return name
    raise BenchmarkTableError(f"{where}: unknown device metric {name!r}; known: {', '.join(names)}")


def _column(values: Any, length: int, where: str) -> list[float | None]:
    if not isinstance(values, list) or len(values) != length:
        raise BenchmarkTableError(f"{where}: expected a list of {length:,} values, one per architecture")
    column: list[float | None] = []
    for position, value in enumerate(values):
        if value is None:
            column.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise BenchmarkTableError(f"{where}: value {position} is {value!r}, not a number, null or -1")
        if value < 0 and value != DeviceTable.UNAVAILABLE:
            raise BenchmarkTableError(
                f"{where}: value {position} is {value}; negative values other than -1 are invalid"
            )
        column.append(float(value))
    return column


# ---------------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------------


class TabularBenchmark(abc.ABC):
    """A tabular benchmark: figures of every point of one registered space, per dataset.

    Contract, for the engine, the evaluator and the comparison harness:

    - `name` is the registry name (`nasloop.registry.benchmarks`); `benchmarks.get(name)()` creates it
      (benchmarks have no options). `space` names the registered search space whose strings key the
      table; `datasets` are the datasets it knows, `packaged` the ones whose table ships with nasloop
      (dataset -> file in `nasloop/benchmarks/data/`), `metrics` the names `query` returns.
    - `load(dataset, table=None, *, device_table=None)` returns a `BenchmarkTable`. `table=None` reads
      the packaged table, a path reads the user's file in the same JSON format as the shared files
      (an object of architecture -> row of figures, optionally gzip-compressed), e.g. NB201 on
      ImageNet16-120, which nasloop does not ship. Packaged tables are read on the first `load` and
      kept (importing the package reads nothing). Errors are `BenchmarkTableError`, one line naming the
      file and what is wrong: a missing file, malformed JSON, a key that is not an architecture of the
      space, a row without a needed field, an unknown dataset (with close matches).
    - Metrics use nasloop's names and units: `val_acc` and `test_acc` are fractions in [0, 1] (the
      tables hold percent), `params` and `flops` are counts as the table gives them. A table with one
      accuracy figure gives it as both `val_acc` and `test_acc`.
    - `BenchmarkTable.query(arch)` answers in a dictionary lookup; a point the table lacks raises
      `PointNotInTable`, naming the point and the table. `optimum()` and `rows()` give the best
      networks and every row, for regret and for tests.
    - Device metrics (`device_tables`: dataset -> packaged device file) are named with their unit, e.g.
      `edgegpu_latency_ms`; a value the source lacks raises `PointNotInTable` whose `absence` says
      whether the extract lacks it (null) or the benchmark marks it not available (-1).

    Subclasses set the class attributes and implement `parse_row`, which turns one row of the shared
    format into nasloop's metrics.
    """

    name: ClassVar[str]
    space: ClassVar[str]
    datasets: ClassVar[tuple[str, ...]]
    packaged: ClassVar[Mapping[str, str]]
    metrics: ClassVar[tuple[str, ...]]
    device_tables: ClassVar[Mapping[str, str]] = {}
    device_metric_names: ClassVar[Mapping[str, str]] = {}
    """The device files' metric names -> nasloop's names."""

    @abc.abstractmethod
    def parse_row(self, row: Mapping[str, Any]) -> dict[str, float]:
        """nasloop's metrics (`metrics`) of one row of the shared format; ValueError naming a bad field."""

    def load(
        self, dataset: str, table: str | Path | None = None, *, device_table: str | Path | None = None
    ) -> BenchmarkTable:
        """The table of `dataset`: the packaged one, or the user's file `table` (see the class docstring).

        `device_table` is a device-metric file in HW-NAS-Bench's layout for this dataset; by default the
        packaged one where there is one (NB201 on CIFAR-10).
        """
        self._check_dataset(dataset, table is not None)
        if table is None and device_table is None:
            key = (self.name, dataset)
            if key not in _PACKAGED_TABLES:  # read once per process; a loaded table never changes
                _PACKAGED_TABLES[key] = self._read_table(dataset, None, None)
            return _PACKAGED_TABLES[key]
        return self._read_table(dataset, table, device_table)

    def load_devices(self, dataset: str, table: str | Path | None = None) -> DeviceTable:
        """The device-metric table of `dataset`: the packaged one, or the user's file `table`."""
        self._check_dataset(dataset, table is not None)
        if table is not None:
            return DeviceTable.read(Path(table), self.device_metric_names, spaces.get(self.space)())
        if dataset not in self.device_tables:
            which = ", ".join(self.device_tables) or "no dataset"
            raise BenchmarkTableError(
                f"{self.name} ships device metrics for {which}, not {dataset}; pass table= a file in "
                "HW-NAS-Bench's layout (see nasloop.benchmarks.base.DeviceTable)"
            )
        key = (self.name, dataset)
        if key not in _PACKAGED_DEVICES:
            name = self.device_tables[dataset]
            path = DATA_DIR / name
            source = f"{name} (packaged with nasloop)"
            _PACKAGED_DEVICES[key] = DeviceTable.read(path, self.device_metric_names, spaces.get(self.space)(), source)
        return _PACKAGED_DEVICES[key]

    # -- helpers ---------------------------------------------------------------------------------------

    def _check_dataset(self, dataset: str, user_table: bool) -> None:
        if dataset not in self.datasets:
            close = difflib.get_close_matches(dataset, self.datasets, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise BenchmarkTableError(
                f"benchmark {self.name} has no dataset {dataset!r}.{hint} Known: {', '.join(self.datasets)}."
            )
        if not user_table and dataset not in self.packaged:
            raise BenchmarkTableError(
                f"benchmark {self.name} ships no table for {dataset} (packaged: {', '.join(self.packaged)}); "
                f"pass table= a JSON file in the format of {next(iter(self.packaged.values())).removesuffix('.gz')}"
            )

    def _read_table(self, dataset: str, table: str | Path | None, device_table: str | Path | None) -> BenchmarkTable:
        if table is None:
            path, source = DATA_DIR / self.packaged[dataset], f"{self.packaged[dataset]} (packaged with nasloop)"
        else:
            path, source = Path(table), str(table)
        rows = self._rows(read_json(path), source)
        devices: Callable[[], DeviceTable] | None = None
        if device_table is not None or dataset in self.device_tables:
            devices = functools.partial(self.load_devices, dataset, device_table)  # read on first use
        return BenchmarkTable(self, dataset, rows, source, devices)

    def _rows(self, data: Any, where: str) -> dict[str, dict[str, float]]:
        """Architecture -> metrics of a table in the shared format, sorted by architecture."""
        if not isinstance(data, dict) or not data:
            raise BenchmarkTableError(
                f"{where}: expected a non-empty JSON object of {self.space} architecture -> row of figures"
            )
        space = spaces.get(self.space)()
        pattern = re.compile(space.architecture_pattern() or ".*")
        rows: dict[str, dict[str, float]] = {}
        for arch, row in data.items():
            key = normalised(arch)
            if not pattern.fullmatch(key):  # the regular expression is fast; validate explains a failure
                problem = space.validate(key) or f"it does not match {pattern.pattern}"
                raise BenchmarkTableError(f"{where}: {arch[:200]!r} is not a {self.space} architecture: {problem}")
            if not isinstance(row, dict):
                raise BenchmarkTableError(f"{where}: the row of {arch!r} is {type(row).__name__}, not an object")
            try:
                metrics = self.parse_row(row)
            except ValueError as error:
                raise BenchmarkTableError(f"{where}: the row of {arch!r} {error}") from None
            if rows.get(key, metrics) != metrics:
                raise BenchmarkTableError(f"{where}: {key!r} is listed twice with different figures")
            rows[key] = metrics
        return dict(sorted(rows.items()))


# Packaged tables already read, by (benchmark, dataset): reading one takes tens of milliseconds and a
# comparison harness loads the same table for every repeat.
_PACKAGED_TABLES: dict[tuple[str, str], BenchmarkTable] = {}
_PACKAGED_DEVICES: dict[tuple[str, str], DeviceTable] = {}
