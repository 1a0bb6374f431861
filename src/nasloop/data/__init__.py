"""Datasets: registered sources, a decoded-array cache, deterministic splits and the sandbox hand-over.

    splits = load_splits(DatasetSpec(name="fashion-mnist"))   # parent: all labels
    save_sandbox_data(splits.for_sandbox(), work_dir / "data")  # no val/test labels cross over
    data = load_sandbox_data(work_dir / "data")                 # sandbox: memory-mapped, instant
    info = describe(DatasetSpec(name="fashion-mnist"))          # shape, classes, split sizes; no images read

Datasets are registered by name in `nasloop.registry.datasets` (see `nasloop.data.sources`). The names
below load on first use, so importing `nasloop.data.spec` (the config's `DatasetSpec`) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nasloop.data.errors import (
        ChecksumMismatch,
        DatasetError,
        DatasetFilesMissing,
        DownloadError,
        MissingDependency,
    )
    from nasloop.data.fetch import download, file_checksum, verify_checksum
    from nasloop.data.sources import DatasetSource, RawDataset, RemoteFile
    from nasloop.data.spec import DatasetSpec
    from nasloop.data.splits import (
        DatasetInfo,
        SandboxData,
        Splits,
        describe,
        get_source,
        load_sandbox_data,
        load_splits,
        save_sandbox_data,
        split_indices,
    )

_HOMES = {
    "download": "fetch", "file_checksum": "fetch", "verify_checksum": "fetch",
    "ChecksumMismatch": "errors", "DatasetError": "errors", "DatasetFilesMissing": "errors",
    "DownloadError": "errors", "MissingDependency": "errors",
    "DatasetSource": "sources", "RawDataset": "sources", "RemoteFile": "sources",
    "DatasetSpec": "spec",
    "DatasetInfo": "splits", "SandboxData": "splits", "Splits": "splits", "describe": "splits",
    "get_source": "splits", "load_sandbox_data": "splits", "load_splits": "splits",
    "save_sandbox_data": "splits", "split_indices": "splits",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'nasloop.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"nasloop.data.{home}"), name)


__all__ = [
    "ChecksumMismatch",
    "DatasetError",
    "DatasetFilesMissing",
    "DatasetInfo",
    "DatasetSource",
    "DatasetSpec",
    "DownloadError",
    "MissingDependency",
    "RawDataset",
    "RemoteFile",
    "SandboxData",
    "Splits",
    "describe",
    "download",
    "file_checksum",
    "get_source",
    "load_sandbox_data",
    "load_splits",
    "save_sandbox_data",
    "split_indices",
    "verify_checksum",
]
