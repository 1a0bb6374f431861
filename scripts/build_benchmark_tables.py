"""Build nasloop's packaged benchmark tables from the shared tabular-benchmark JSON files.

    python scripts/build_benchmark_tables.py [--source DIR] [--output DIR]

Reads the five shared files (`nb201_cifar10.json`, `nb201_cifar100.json`, `nas_bench_macro_cifar10.json`,
`channel_bench_resnet_cifar10.json`, `hw_nas_bench_cifar10.json`; see the README next to them) and writes
`<same name>.gz` under `src/nasloop/benchmarks/data/`.

Each packaged file is the shared file itself, in the same JSON format, minus the fields nasloop never
reads (NB201's `rank`, the per-run accuracies and their `std`): `nasloop.benchmarks` reads packaged and
user-supplied tables with one reader. Output is deterministic (sorted keys, no whitespace, gzip with a
zero timestamp), and a file whose content is unchanged is not rewritten, so running the script twice
changes nothing. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "benchmarks"
DEFAULT_OUTPUT = REPO_ROOT / "src" / "nasloop" / "benchmarks" / "data"

# Accuracy tables: file name -> the row fields nasloop reads (everything else is dropped).
ACCURACY_TABLES = {
    "nb201_cifar10.json": ("val_acc_200", "test_acc_200"),
    "nb201_cifar100.json": ("val_acc_200", "test_acc_200"),
    "nas_bench_macro_cifar10.json": ("mean_acc", "params", "flops"),
    "channel_bench_resnet_cifar10.json": ("mean", "params", "flops"),
}
# Device tables (column layout `{"archs": [...], "metrics": {name: [...]}}`) are copied whole.
DEVICE_TABLES = ("hw_nas_bench_cifar10.json",)


class BuildError(Exception):
    """A shared file that is missing or not in the documented format."""


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise BuildError(f"{path}: not found (pass --source, the folder of the shared benchmark files)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BuildError(f"{path}: not valid JSON ({error})") from None


def accuracy_table(path: Path, fields: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The rows of an architecture -> figures table, each cut down to `fields`."""
    data = read_json(path)
    if not isinstance(data, dict) or not data:
        raise BuildError(f"{path}: expected a non-empty object of architecture -> row")
    table: dict[str, dict[str, Any]] = {}
    for arch, row in data.items():
        missing = [name for name in fields if not isinstance(row, dict) or name not in row]
        if missing:
            raise BuildError(f"{path}: the row of {arch!r} lacks {', '.join(missing)}")
        table[arch] = {name: row[name] for name in fields}
    return table


def device_table(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("archs"), list)
        or not isinstance(data.get("metrics"), dict)
    ):
        raise BuildError(f"{path}: expected an object with 'archs' (a list) and 'metrics' (an object of lists)")
    return data


def compressed(data: Any) -> bytes:
    """Deterministic bytes: sorted keys, compact separators, gzip without a timestamp."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)


def write_if_changed(path: Path, content: bytes) -> bool:
    if path.exists() and path.read_bytes() == content:
        return False
    path.write_bytes(content)
    return True


def build(source: Path, output: Path) -> list[tuple[Path, bool]]:
    """Write every packaged table; returns (path, whether it changed) per file."""
    output.mkdir(parents=True, exist_ok=True)
    contents = {name: compressed(accuracy_table(source / name, fields)) for name, fields in ACCURACY_TABLES.items()}
    contents.update({name: compressed(device_table(source / name)) for name in DEVICE_TABLES})
    written = []
    for name, content in contents.items():
        path = output / f"{name}.gz"
        written.append((path, write_if_changed(path, content)))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help=f"shared files (default {DEFAULT_SOURCE})")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"package data (default {DEFAULT_OUTPUT})")
    arguments = parser.parse_args(argv)
    try:
        written = build(arguments.source, arguments.output)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path, changed in written:
        print(f"{'wrote' if changed else 'unchanged'} {path} ({path.stat().st_size:,} bytes)")
    print(f"total {sum(path.stat().st_size for path, _ in written):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
