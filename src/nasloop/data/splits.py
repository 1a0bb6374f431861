"""Train / validation / test splits, and the label-free view of them that enters the sandbox.

The validation split is held out from the official training split (docs/architecture.md: search
selects on validation, the test split is only reported). Splitting is stratified per class and
deterministic in `DatasetSpec.split_seed`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nasloop.data.cache import load_decoded
from nasloop.data.errors import DatasetError
from nasloop.data.holdout import stratified_holdout
from nasloop.data.sources import DatasetSource, RawDataset
from nasloop.data.spec import DatasetSpec
from nasloop.registry import datasets


def get_source(name: str) -> DatasetSource:
    """The registered dataset `name`; an unknown name raises `UnknownNameError` listing the known ones."""
    source_class: type[DatasetSource] = datasets.get(name)
    return source_class()


@dataclass
class SandboxData:
    """Everything a sandboxed evaluation may see: training images and labels, validation and test
    images without labels (docs/architecture.md), and facts about the data.

    Images are uint8 tensors (N, C, H, W); `train_y` is int64. `mean` and `std` are per channel on the
    0..1 scale, from the official training images. `horizontal_flip` says whether mirroring an image
    keeps its label (true for photos, false for digits), which the training recipe's augmentation reads.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    test_x: torch.Tensor
    num_classes: int
    in_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] | None = None
    horizontal_flip: bool = False


@dataclass
class Splits(SandboxData):
    """The three splits with all labels. Only the parent process holds one; `for_sandbox()` drops the
    labels of the evaluation splits."""

    val_y: torch.Tensor = field(kw_only=True)
    test_y: torch.Tensor = field(kw_only=True)

    def for_sandbox(self) -> SandboxData:
        """The same data without `val_y` and `test_y`."""
        return SandboxData(
            name=self.name,
            train_x=self.train_x,
            train_y=self.train_y,
            val_x=self.val_x,
            test_x=self.test_x,
            num_classes=self.num_classes,
            in_shape=self.in_shape,
            mean=self.mean,
            std=self.std,
            classes=self.classes,
            horizontal_flip=self.horizontal_flip,
        )


def split_indices(labels: np.ndarray, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the official training split: `(train, val)`, both sorted.

    `val` is a stratified `spec.val_fraction` of every class; `train` is the rest, or a random
    `spec.train_subset` of the rest. Both depend only on the labels and `spec.split_seed`.
    """
    val, rest = stratified_holdout(labels, spec.val_fraction, spec.split_seed)
    if spec.train_subset is None:
        return rest, val
    if spec.train_subset > len(rest):
        raise DatasetError(
            f"train_subset={spec.train_subset} but {spec.name} has only {len(rest)} training images "
            f"after holding out val_fraction={spec.val_fraction}"
        )
    # A separate stream, so that the subset does not shift the validation split.
    rng = np.random.default_rng([spec.split_seed, 1])
    return np.sort(rng.permutation(rest)[: spec.train_subset]), val


@dataclass(frozen=True)
class DatasetInfo:
    """What a run needs to know of its dataset before any evaluation: shape, classes and split sizes."""

    name: str
    in_shape: tuple[int, int, int]
    num_classes: int
    train_images: int
    val_images: int
    test_images: int


def describe(spec: DatasetSpec) -> DatasetInfo:
    """The shape, classes and split sizes of the dataset `spec` names, read from its cache entry (array
    headers and the training labels; no image is read). Decodes and caches the dataset on first use, as
    `load_splits` does, with the same errors."""
    source = get_source(spec.name)
    raw, _ = load_decoded(source, source.find_root(spec.root))
    train, val = split_indices(np.asarray(raw.train_y), spec)
    channels, height, width = raw.train_x.shape[1:]
    return DatasetInfo(
        name=spec.name,
        in_shape=(int(channels), int(height), int(width)),
        num_classes=_class_count(raw),
        train_images=len(train),
        val_images=len(val),
        test_images=len(raw.test_y),
    )


def _class_count(raw: RawDataset) -> int:
    if raw.classes:
        return len(raw.classes)
    return int(max(np.asarray(raw.train_y).max(), np.asarray(raw.test_y).max())) + 1


def load_splits(spec: DatasetSpec) -> Splits:
    """Load the dataset named by `spec` (decoding and caching it on first use) and split it.

    Raises `UnknownNameError` for an unknown name, `DatasetFilesMissing` (saying how to get the files)
    when the source files are absent, and `DatasetError` for inconsistent files or options.
    """
    source = get_source(spec.name)
    raw, meta = load_decoded(source, source.find_root(spec.root))
    train, val = split_indices(np.asarray(raw.train_y), spec)
    channels, height, width = raw.train_x.shape[1:]
    return Splits(
        name=spec.name,
        train_x=torch.from_numpy(raw.train_x[train]),
        train_y=torch.from_numpy(raw.train_y[train]),
        val_x=torch.from_numpy(raw.train_x[val]),
        val_y=torch.from_numpy(raw.train_y[val]),
        test_x=torch.from_numpy(np.ascontiguousarray(raw.test_x)),
        test_y=torch.from_numpy(np.ascontiguousarray(raw.test_y)),
        num_classes=_class_count(raw),
        in_shape=(int(channels), int(height), int(width)),
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        classes=raw.classes,
        horizontal_flip=source.horizontal_flip,
    )


# ----------------------------------------------------------------------------------- sandbox hand-over

_SANDBOX_ARRAYS = ("train_x", "train_y", "val_x", "test_x")


def save_sandbox_data(data: SandboxData, path: str | Path) -> Path:
    """Write `data` to the directory `path` as raw .npy arrays plus `meta.json`, for `load_sandbox_data`.

    Only the fields of `SandboxData` are written, so passing a `Splits` does not leak evaluation labels.
    """
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for name in _SANDBOX_ARRAYS:
        np.save(directory / f"{name}.npy", getattr(data, name).numpy())
    meta = {
        "name": data.name,
        "num_classes": data.num_classes,
        "in_shape": list(data.in_shape),
        "mean": list(data.mean),
        "std": list(data.std),
        "classes": list(data.classes) if data.classes else None,
        "horizontal_flip": data.horizontal_flip,
    }
    (directory / "meta.json").write_text(json.dumps(meta))  # written last: its presence marks completeness
    return directory


def load_sandbox_data(path: str | Path) -> SandboxData:
    """Read what `save_sandbox_data` wrote. Arrays are memory-mapped copy-on-write, so loading is instant
    and pages are read on first use."""
    directory = Path(path)
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        raise DatasetError(f"{directory} holds no sandbox data (no meta.json)")
    meta = json.loads(meta_path.read_text())
    arrays = {name: torch.from_numpy(np.load(directory / f"{name}.npy", mmap_mode="c")) for name in _SANDBOX_ARRAYS}
    channels, height, width = meta["in_shape"]
    return SandboxData(
        name=meta["name"],
        num_classes=int(meta["num_classes"]),
        in_shape=(int(channels), int(height), int(width)),
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        classes=tuple(meta["classes"]) if meta["classes"] else None,
        horizontal_flip=bool(meta["horizontal_flip"]),
        **arrays,
    )
