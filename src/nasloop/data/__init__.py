"""Datasets: registered sources, a decoded-array cache, deterministic splits and the sandbox hand-over.

    splits = load_splits(DatasetSpec(name="fashion-mnist"))   # parent: all labels
    save_sandbox_data(splits.for_sandbox(), work_dir / "data")  # no val/test labels cross over
    data = load_sandbox_data(work_dir / "data")                 # sandbox: memory-mapped, instant

Datasets are registered by name in `nasloop.registry.datasets` (see `nasloop.data.sources`).
"""

from nasloop.data.download import download, file_checksum, verify_checksum
from nasloop.data.errors import ChecksumMismatch, DatasetError, DatasetFilesMissing, DownloadError, MissingDependency
from nasloop.data.sources import DatasetSource, RawDataset, RemoteFile
from nasloop.data.splits import (
    SandboxData,
    Splits,
    get_source,
    load_sandbox_data,
    load_splits,
    save_sandbox_data,
    split_indices,
)

__all__ = [
    "ChecksumMismatch",
    "DatasetError",
    "DatasetFilesMissing",
    "DatasetSource",
    "DownloadError",
    "MissingDependency",
    "RawDataset",
    "RemoteFile",
    "SandboxData",
    "Splits",
    "download",
    "file_checksum",
    "get_source",
    "load_sandbox_data",
    "load_splits",
    "save_sandbox_data",
    "split_indices",
    "verify_checksum",
]
