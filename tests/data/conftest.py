"""Fixtures of the data tests: an isolated cache directory and writers of small datasets in the
official file formats (IDX, CIFAR pickle tarballs, SVHN .mat, ImageFolder JPEGs, downsampled-ImageNet
pickles)."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

Writer = Callable[[Path], Path]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every data test gets its own nasloop cache directory."""
    cache = tmp_path_factory.mktemp("nasloop-cache")
    monkeypatch.setenv("NASLOOP_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nasloop-session-cache")


@pytest.fixture
def bundled_fashion_mnist(_session_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The Debian-installed Fashion-MNIST, decoded once per test session into a shared cache."""
    from nasloop.data.sources import DEBIAN_FASHION_MNIST

    if not DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip("dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    monkeypatch.setenv("NASLOOP_CACHE_DIR", str(_session_cache))
    return DEBIAN_FASHION_MNIST


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (uint8 data), gzip'd when the name ends in .gz."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def labelled_images(count: int, shape: tuple[int, ...], classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images whose first pixel encodes the label (label * 20), so tests can check pairing."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % classes
    images = rng.integers(0, 256, size=(count, *shape), dtype=np.uint8)
    images.reshape(count, -1)[:, 0] = labels * 20
    return images, labels


def write_idx_dataset(root: Path, train: int = 120, test: int = 40) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for prefix, count, seed in (("train", train, 0), ("t10k", test, 1)):
        images, labels = labelled_images(count, (28, 28), 10, seed)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    return root


def _add_pickle(archive: tarfile.TarFile, name: str, content: dict[str, object]) -> None:
    data = pickle.dumps(content, protocol=2)
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def write_cifar10(root: Path, per_batch: int = 20, test: int = 30) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as archive:
        for index in range(1, 6):
            images, labels = labelled_images(per_batch, (3, 32, 32), 10, index)
            content = {"data": images.reshape(per_batch, -1), "labels": labels.tolist()}
            _add_pickle(archive, f"cifar-10-batches-py/data_batch_{index}", content)
        images, labels = labelled_images(test, (3, 32, 32), 10, 99)
        _add_pickle(
            archive, "cifar-10-batches-py/test_batch", {"data": images.reshape(test, -1), "labels": list(labels)}
        )
        _add_pickle(archive, "cifar-10-batches-py/batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    return root


def write_cifar100(root: Path, train: int = 300, test: int = 100) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / "cifar-100-python.tar.gz", "w:gz") as archive:
        for name, count, seed in (("train", train, 0), ("test", test, 1)):
            images, labels = labelled_images(count, (3, 32, 32), 100, seed)
            content = {"data": images.reshape(count, -1), "fine_labels": labels.tolist(), "coarse_labels": [0] * count}
            _add_pickle(archive, f"cifar-100-python/{name}", content)
        _add_pickle(archive, "cifar-100-python/meta", {"fine_label_names": [f"fine{i}" for i in range(100)]})
    return root


def write_svhn(root: Path, train: int = 60, test: int = 20) -> Path:
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    for name, count, seed in (("train", train, 0), ("test", test, 1)):
        images, labels = labelled_images(count, (3, 32, 32), 10, seed)
        stored = np.where(labels == 0, 10, labels).reshape(-1, 1).astype(np.uint8)  # SVHN stores digit 0 as 10
        savemat(root / f"{name}_32x32.mat", {"X": np.transpose(images, (2, 3, 1, 0)), "y": stored})
    return root


def write_downsampled_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """A downsampled-ImageNet batch: a pickled dict of `data` (N rows, red plane, green, blue) and 1-based `labels`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {"data": images.reshape(len(images), -1), "labels": [int(label) for label in labels]}
    path.write_bytes(pickle.dumps(content, protocol=2))


def write_imagenet16(root: Path, per_batch: int = 10, val: int = 40) -> Path:
    """The ten training batches and val_data of ImageNet16, random 16x16 images labelled 1..200."""
    rng = np.random.default_rng(16)
    names = [*(f"train_data_batch_{index}" for index in range(1, 11)), "val_data"]
    for name in names:
        count = val if name == "val_data" else per_batch
        images = rng.integers(0, 256, size=(count, 3, 16, 16), dtype=np.uint8)
        write_downsampled_batch(root / name, images, rng.integers(1, 201, size=count))
    return root


IMAGENETTE_WNIDS = ("n01440764", "n02102040", "n02979186")


def write_image_folder(root: Path, per_class: int = 4) -> Path:
    """A small ImageNette-like tree of JPEGs of varied sizes, each a flat colour per class."""
    from PIL import Image

    for split, count in (("train", per_class), ("val", 2)):
        for label, wnid in enumerate(IMAGENETTE_WNIDS):
            directory = root / split / wnid
            directory.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                size = (200 + 10 * index, 170 + 15 * label)
                Image.new("RGB", size, (60 * label, 100, 30 * index)).save(directory / f"img{index}.JPEG")
    return root


@pytest.fixture
def idx_writer() -> Callable[[Path, np.ndarray], None]:
    """`write_idx(path, array)`: writes an IDX file."""
    return write_idx


@pytest.fixture
def downsampled_batch_writer() -> Callable[[Path, np.ndarray, np.ndarray], None]:
    """`write_downsampled_batch(path, images, labels)`: writes one downsampled-ImageNet batch."""
    return write_downsampled_batch


@pytest.fixture
def dataset_writers() -> dict[str, Writer]:
    """Writers of a small copy of each registered dataset's files, by dataset name."""
    return {
        "fashion-mnist": write_idx_dataset,
        "mnist": write_idx_dataset,
        "cifar10": write_cifar10,
        "cifar100": write_cifar100,
        "svhn": write_svhn,
        "imagenette": write_image_folder,
        "imagenet16-120": write_imagenet16,
        "digits": lambda root: root,  # bundled with scikit-learn
        "synthetic-cifar10": lambda root: root,  # generated, no files
        "synthetic-cifar100": lambda root: root,
        "synthetic-imagenet16-120": lambda root: root,
    }
