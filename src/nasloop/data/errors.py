"""The exceptions of the data layer: one tree, rooted at `DatasetError`."""

from __future__ import annotations

from nasloop.errors import NasloopError


class DatasetError(NasloopError, RuntimeError):
    """Any problem finding, downloading, decoding or splitting a dataset."""


class DatasetFilesMissing(DatasetError, FileNotFoundError):
    """A dataset's source files are not where nasloop looked; the message says how to get them."""


class DownloadError(DatasetError):
    """A download failed (network, HTTP status, truncated body)."""


class ChecksumMismatch(DownloadError):
    """A downloaded or local file does not have the published checksum."""


class MissingDependency(DatasetError, ImportError):
    """An optional package a dataset needs is not installed; the message names the pip extra."""
