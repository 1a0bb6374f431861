"""Decoders for the standard dataset file formats, to uint8 arrays of shape (N, C, H, W).

Each reader takes file paths and returns numpy arrays; none of them knows about caches, splits or
registries. Optional heavy packages (scipy, Pillow) are imported inside the reader that needs them.
"""

from __future__ import annotations

import gzip
import pickle
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nasloop.data.errors import DatasetError, MissingDependency

# IDX type codes (the byte after the two zero bytes of the magic number) → numpy dtype, big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (MNIST's format, optionally gzip'd): a magic number, big-endian dims, the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetError(f"{path}: header says shape {shape} ({expected} bytes) but {len(raw) - header} follow")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, H, W) uint8 and labels (N,) int64 from an IDX image file and an IDX label file."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DatasetError(f"{images_path} {images.shape} and {labels_path} {labels.shape} do not pair up")
    return np.ascontiguousarray(images[:, None].astype(np.uint8)), labels.astype(np.int64)


def _unpickle(handle: Any) -> dict[str, Any]:
    # The CIFAR batches were pickled by Python 2; latin1 maps their byte strings one-to-one.
    batch = pickle.load(handle, encoding="latin1")
    if not isinstance(batch, dict):
        raise DatasetError("a CIFAR batch is not a pickled dict")
    return batch


def read_cifar_tarball(
    path: Path, train_members: Sequence[str], test_members: Sequence[str], label_key: str, meta_member: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Decode a CIFAR "python version" tarball without extracting it.

    Members are matched by their base name (`data_batch_1`, `test`, `meta`, ...). Returns
    `(train_x, train_y, test_x, test_y, class_names)` with images as (N, 3, 32, 32) uint8.
    """
    wanted = {*train_members, *test_members, meta_member}
    found: dict[str, dict[str, Any]] = {}
    with tarfile.open(path, "r:*") as archive:
        for member in archive:
            base = member.name.rsplit("/", 1)[-1]
            if member.isfile() and base in wanted:
                handle = archive.extractfile(member)
                if handle is not None:
                    found[base] = _unpickle(handle)
    missing = sorted(wanted - found.keys())
    if missing:
        raise DatasetError(f"{path} lacks the members {', '.join(missing)}")

    def stack(members: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        images = np.concatenate([np.asarray(found[m]["data"], dtype=np.uint8) for m in members])
        labels = np.concatenate([np.asarray(found[m][label_key], dtype=np.int64) for m in members])
        return images.reshape(-1, 3, 32, 32), labels  # rows are 1024 R, then G, then B values

    train_x, train_y = stack(train_members)
    test_x, test_y = stack(test_members)
    meta = found[meta_member]
    names_key = "fine_label_names" if label_key == "fine_labels" else "label_names"
    return train_x, train_y, test_x, test_y, tuple(str(n) for n in meta[names_key])


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode an SVHN cropped-digits .mat file: `X` is (32, 32, 3, N), `y` is (N, 1) with 10 meaning digit 0."""
    try:
        from scipy.io import loadmat
    except ImportError as error:
        raise MissingDependency("SVHN needs scipy to read .mat files: pip install scipy") from error
    content = loadmat(str(path))
    images = np.ascontiguousarray(np.transpose(content["X"], (3, 2, 0, 1)).astype(np.uint8))
    labels = content["y"].reshape(-1).astype(np.int64)
    return images, np.where(labels == 10, 0, labels)


IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


def list_image_folder(split_dir: Path) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """An ImageFolder split: `split_dir/<class>/<image>`. Classes are the sorted directory names."""
    classes = tuple(sorted(p.name for p in split_dir.iterdir() if p.is_dir()))
    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        for path in sorted((split_dir / name).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(path)
                labels.append(index)
    return paths, labels, classes


def read_image_folder(split_dir: Path, size: int, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Decode every image of an ImageFolder split to (N, 3, size, size) uint8: shorter side resized to
    `size`, then a centre crop. Labels follow the order of `classes`."""
    try:
        from PIL import Image
    except ImportError as error:
        raise MissingDependency("image-folder datasets need Pillow: pip install nasloop[data]") from error
    paths, labels, found = list_image_folder(split_dir)
    if tuple(found) != tuple(classes):
        raise DatasetError(f"{split_dir} has classes {list(found)}, expected {list(classes)}")
    images = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for row, path in enumerate(paths):
        with Image.open(path) as image:
            images[row] = np.asarray(_resize_center_crop(image.convert("RGB"), size)).transpose(2, 0, 1)
    return images, np.asarray(labels, dtype=np.int64)


def _resize_center_crop(image: Any, size: int) -> Any:
    from PIL import Image

    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize(
        (max(size, round(width * scale)), max(size, round(height * scale))), Image.Resampling.BILINEAR
    )
    left = (resized.size[0] - size) // 2
    top = (resized.size[1] - size) // 2
    return resized.crop((left, top, left + size, top + size))


def read_downsampled_imagenet(paths: Sequence[Path], size: int, max_label: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode batches of the downsampled ImageNet (Chrabaszcz et al. 2017), keeping the classes 1..max_label.

    Each file (`train_data_batch_1` ... `train_data_batch_10`, `val_data`) is a pickled dict whose `data`
    is N rows of 3 * size * size uint8 values, the red plane, then green, then blue, each row-major (the
    CIFAR layout), and whose `labels` are N class ids counted from 1. Images labelled above `max_label`
    are dropped batch by batch (so the full release never sits in memory at once). Returns images
    (N, 3, size, size) uint8 and labels (N,) int64 counted from 0: label 1 becomes 0.
    """
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for path in paths:
        with path.open("rb") as handle:
            batch = pickle.load(handle, encoding="latin1")  # pickled by Python 2, like CIFAR's batches
        if not isinstance(batch, dict) or not {"data", "labels"} <= batch.keys():
            raise DatasetError(f"{path} is not a downsampled-ImageNet batch (a pickled dict with data and labels)")
        data = np.asarray(batch["data"], dtype=np.uint8)
        batch_labels = np.asarray(batch["labels"], dtype=np.int64).reshape(-1)
        if data.ndim != 2 or data.shape[1] != 3 * size * size or len(data) != len(batch_labels):
            raise DatasetError(
                f"{path}: data {data.shape} and {len(batch_labels)} labels; expected N x {3 * size * size} "
                f"values ({size}x{size} RGB images) and N labels"
            )
        if len(batch_labels) and batch_labels.min() < 1:
            raise DatasetError(f"{path}: label {batch_labels.min()} found; the labels count classes from 1")
        keep = batch_labels <= max_label
        images.append(data[keep].reshape(-1, 3, size, size))
        labels.append(batch_labels[keep] - 1)
    return np.concatenate(images), np.concatenate(labels)
