"""Dataset sources: where each dataset's files live, how to fetch them, how to decode them.

Every dataset is a `DatasetSource` registered in `nasloop.registry.datasets` under its name. The
source only decodes its official files to uint8 arrays; caching and splitting are done once for all
sources in `nasloop.data.cache` and `nasloop.data.splits`.
"""

from __future__ import annotations

import abc
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from nasloop.data import formats
from nasloop.data.errors import DatasetError, DatasetFilesMissing, MissingDependency
from nasloop.data.fetch import download, extract_tarball
from nasloop.data.holdout import stratified_holdout
from nasloop.registry import datasets


def nasloop_cache_root() -> Path:
    """nasloop's cache directory: `$NASLOOP_CACHE_DIR`, else `~/.cache/nasloop`."""
    configured = os.environ.get("NASLOOP_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "nasloop"


@dataclass(frozen=True)
class RemoteFile:
    """One official file of a dataset: its name in the root, where it is published, its checksum."""

    filename: str
    url: str
    checksum: str  # md5 or sha256 hex of the official file


@dataclass
class RawDataset:
    """A dataset's official splits, decoded: images (N, C, H, W) uint8 and labels (N,) int64."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...] | None = None

    def validate(self, name: str) -> None:
        """Raise `DatasetError` unless the arrays have the documented dtypes and consistent shapes."""
        for split, images, labels in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if images.dtype != np.uint8 or images.ndim != 4 or labels.dtype != np.int64 or labels.ndim != 1:
                raise DatasetError(f"{name} {split}: images {images.dtype}{images.shape}, labels {labels.dtype}")
            if len(images) != len(labels):
                raise DatasetError(f"{name} {split}: {len(images)} images but {len(labels)} labels")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise DatasetError(f"{name}: train images {self.train_x.shape[1:]} vs test {self.test_x.shape[1:]}")


class DatasetSource(abc.ABC):
    """A dataset nasloop can load, registered by name in `nasloop.registry.datasets`.

    Contract for subclasses: set `name`, `files` (the official files `fetch` downloads into a root),
    `horizontal_flip` (whether mirroring preserves labels) and implement `decode(root)`, which reads the
    files under `root` and returns a `RawDataset` with the official train and test splits. `root` comes
    from `find_root`: the user's directory if given, else the first default root that has every file.
    Decoding is slow and done once; `nasloop.data.cache` stores the result keyed by `fingerprint(root)`.
    """

    name: ClassVar[str]
    files: ClassVar[tuple[RemoteFile, ...]] = ()
    horizontal_flip: ClassVar[bool] = False
    # Bump when `decode` changes its output, so caches written by the old decoder are not reused.
    decoder_version: ClassVar[int] = 1

    def default_roots(self) -> list[Path]:
        """Directories searched, in order, when the dataset spec names no root."""
        return [nasloop_cache_root() / "raw" / self.name]

    def required_paths(self, root: Path) -> list[Path]:
        """The files `decode` reads under `root`."""
        return [root / f.filename for f in self.files]

    def is_complete(self, root: Path) -> bool:
        return all(path.exists() for path in self.required_paths(root))

    def install_hint(self, root: Path) -> str:
        """How a user gets the files into `root`."""
        return f"Download them with: python -m nasloop.data download {self.name} --root {root}"

    def find_root(self, root: str | Path | None) -> Path:
        """The directory to decode from; `DatasetFilesMissing` names the place and the fix."""
        candidates = [Path(root).expanduser()] if root is not None else self.default_roots()
        for candidate in candidates:
            if self.is_complete(candidate):
                return candidate
        target = candidates[-1] if root is None else candidates[0]
        missing = [p.name for p in self.required_paths(target) if not p.exists()]
        looked = ", ".join(str(c) for c in candidates)
        raise DatasetFilesMissing(
            f"dataset {self.name!r}: files not found (looked in {looked}; missing in {target}: "
            f"{', '.join(missing)}). {self.install_hint(target)}"
        )

    def fingerprint(self, root: Path) -> list[tuple[str, int, int]]:
        """What identifies the source files: (path, size, mtime) of each. A change invalidates the cache."""
        return [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in self.required_paths(root)]

    def fetch(self, root: str | Path | None = None, *, mirror: str | None = None, progress: bool = True) -> Path:
        """Download the missing official files into `root` (default: the last default root) and return it.

        `mirror` replaces each file's published directory (an http(s) URL or a local directory), which
        is how offline machines and tests point at their own copies. Checksums are always verified.
        """
        target = Path(root).expanduser() if root is not None else self.default_roots()[-1]
        for remote in self.files:
            dest = target / remote.filename
            if not dest.exists():
                download(mirror_url(remote.url, mirror), dest, remote.checksum, progress=progress)
        return target

    @abc.abstractmethod
    def decode(self, root: Path) -> RawDataset:
        """Read the official files under `root` into a `RawDataset` (train and test splits)."""


def mirror_url(url: str, mirror: str | None) -> str:
    """`url` with its directory replaced by `mirror` (a URL or a local directory), or `url` unchanged."""
    if mirror is None:
        return url
    filename = url.rsplit("/", 1)[-1]
    if "://" not in mirror:
        return Path(mirror).expanduser().resolve().joinpath(filename).as_uri()
    return f"{mirror.rstrip('/')}/{filename}"


# ----------------------------------------------------------------------------------- IDX (MNIST family)


class IdxDataset(DatasetSource):
    """MNIST-format datasets: four gzip'd IDX files, 60k train and 10k test 28x28 grayscale images."""

    classes: ClassVar[tuple[str, ...] | None] = None

    def decode(self, root: Path) -> RawDataset:
        names = [f.filename for f in self.files]  # train images, train labels, test images, test labels
        train_x, train_y = formats.read_idx_pair(root / names[0], root / names[1])
        test_x, test_y = formats.read_idx_pair(root / names[2], root / names[3])
        return RawDataset(train_x, train_y, test_x, test_y, self.classes)


def _idx_files(base_url: str, checksums: Sequence[str]) -> tuple[RemoteFile, ...]:
    names = (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    )
    return tuple(RemoteFile(n, f"{base_url}/{n}", c) for n, c in zip(names, checksums, strict=True))


DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@datasets.register("fashion-mnist")
class FashionMNIST(IdxDataset):
    """Fashion-MNIST (Xiao et al. 2017): 10 clothing classes. The offline default: Debian's
    `dataset-fashion-mnist` package installs it under /usr/share/datasets/fashion-mnist."""

    name = "fashion-mnist"
    files = _idx_files(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
        (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
    )
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

    def default_roots(self) -> list[Path]:
        return [DEBIAN_FASHION_MNIST, *super().default_roots()]

    def install_hint(self, root: Path) -> str:
        return (
            "Install them with: sudo apt-get install dataset-fashion-mnist "
            f"(to {DEBIAN_FASHION_MNIST}), or {super().install_hint(root)}"
        )


@datasets.register("mnist")
class MNIST(IdxDataset):
    """MNIST handwritten digits (LeCun et al. 1998)."""

    name = "mnist"
    files = _idx_files(
        "https://ossci-datasets.s3.amazonaws.com/mnist",
        (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
    )
    classes = tuple(str(digit) for digit in range(10))


# ----------------------------------------------------------------------------------- CIFAR


@datasets.register("cifar10")
class CIFAR10(DatasetSource):
    """CIFAR-10 (Krizhevsky 2009), decoded straight from the official python tarball."""

    name = "cifar10"
    files = (
        RemoteFile(
            "cifar-10-python.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
        ),
    )
    horizontal_flip = True

    def decode(self, root: Path) -> RawDataset:
        train = [f"data_batch_{i}" for i in range(1, 6)]
        arrays = formats.read_cifar_tarball(
            root / self.files[0].filename, train, ["test_batch"], "labels", "batches.meta"
        )
        return RawDataset(*arrays)


@datasets.register("cifar100")
class CIFAR100(DatasetSource):
    """CIFAR-100 (Krizhevsky 2009) with its 100 fine labels."""

    name = "cifar100"
    files = (
        RemoteFile(
            "cifar-100-python.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            "eb9058c3a382ffc7106e4002c42a8d85",
        ),
    )
    horizontal_flip = True

    def decode(self, root: Path) -> RawDataset:
        arrays = formats.read_cifar_tarball(root / self.files[0].filename, ["train"], ["test"], "fine_labels", "meta")
        return RawDataset(*arrays)


# ----------------------------------------------------------------------------------- SVHN


@datasets.register("svhn")
class SVHN(DatasetSource):
    """Street View House Numbers, cropped digits (Netzer et al. 2011); the `extra` split is not used."""

    name = "svhn"
    files = (
        RemoteFile(
            "train_32x32.mat",
            "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
            "e26dedcc434d2e4c54c9b2d4a06d8373",
        ),
        RemoteFile(
            "test_32x32.mat",
            "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
            "eb5a983be6a315427106f1b164d9cef3",
        ),
    )

    def decode(self, root: Path) -> RawDataset:
        train_x, train_y = formats.read_svhn_mat(root / "train_32x32.mat")
        test_x, test_y = formats.read_svhn_mat(root / "test_32x32.mat")
        return RawDataset(train_x, train_y, test_x, test_y, tuple(str(digit) for digit in range(10)))


# ----------------------------------------------------------------------------------- ImageNette


IMAGENETTE_CLASSES = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
}


@datasets.register("imagenette")
class Imagenette(DatasetSource):
    """ImageNette (fast.ai): 10 easy ImageNet classes from an ImageFolder tree `train/<wnid>/*.JPEG` and
    `val/<wnid>/*.JPEG` (the official `val` split is nasloop's test split). Every image is resized once
    (shorter side to 160 px, centre crop) to (3, 160, 160). The root may be the tree itself or the
    directory the official `imagenette2-160.tgz` was extracted into."""

    name = "imagenette"
    size = 160
    archive = "imagenette2-160"
    files = (
        RemoteFile(
            f"{archive}.tgz",
            f"https://s3.amazonaws.com/fast-ai-imageclas/{archive}.tgz",
            "e793b78cc4c9e9a4ccc0c1155377a412",
        ),
    )
    horizontal_flip = True
    decoder_version = 1

    def _tree(self, root: Path) -> Path:
        nested = root / self.archive
        return nested if (nested / "train").is_dir() else root

    def is_complete(self, root: Path) -> bool:
        tree = self._tree(root)
        return (tree / "train").is_dir() and (tree / "val").is_dir()

    def required_paths(self, root: Path) -> list[Path]:
        tree = self._tree(root)
        paths = [tree / "train", tree / "val"]
        return [*paths, *(p for split in paths if split.is_dir() for p in formats.list_image_folder(split)[0])]

    def fetch(self, root: str | Path | None = None, *, mirror: str | None = None, progress: bool = True) -> Path:
        target = super().fetch(root, mirror=mirror, progress=progress)
        if not (target / self.archive / "train").is_dir():
            extract_tarball(target / self.files[0].filename, target)
        return target

    def decode(self, root: Path) -> RawDataset:
        tree = self._tree(root)
        _, _, wnids = formats.list_image_folder(tree / "train")
        train_x, train_y = formats.read_image_folder(tree / "train", self.size, wnids)
        test_x, test_y = formats.read_image_folder(tree / "val", self.size, wnids)
        classes = tuple(IMAGENETTE_CLASSES.get(wnid, wnid) for wnid in wnids)
        return RawDataset(train_x, train_y, test_x, test_y, classes)


# ----------------------------------------------------------------------------------- ImageNet16-120

IMAGENET16_TRAIN_BATCHES = tuple(f"train_data_batch_{index}" for index in range(1, 11))
IMAGENET16_VAL_BATCH = "val_data"


@datasets.register("imagenet16-120")
class ImageNet16(DatasetSource):
    """ImageNet16-120 (NAS-Bench-201's spelling): the 16x16 downsampled ImageNet (Chrabaszcz et al. 2017)
    restricted to its first 120 classes, as NAS-Bench-201 uses it (151,700 training, 6,000 test images).

    The root is the directory of the release's pickled batches, `train_data_batch_1` ...
    `train_data_batch_10` and `val_data` (decoded by `formats.read_downsampled_imagenet`); the official
    `val_data` is nasloop's test split. Images labelled 1..120 are kept and relabelled 0..119; class i
    is named by its label in the release, str(i + 1). Nothing is downloaded: the release needs an
    image-net.org account, so the user supplies the directory."""

    name = "imagenet16-120"
    size = 16
    num_classes = 120
    horizontal_flip = True
    batches = (*IMAGENET16_TRAIN_BATCHES, IMAGENET16_VAL_BATCH)

    def required_paths(self, root: Path) -> list[Path]:
        return [root / batch for batch in self.batches]

    def install_hint(self, root: Path) -> str:
        return (
            "The downsampled ImageNet is not freely downloadable: sign in at https://image-net.org, download "
            f"its 16x16 version and put the pickled batches {IMAGENET16_TRAIN_BATCHES[0]} ... "
            f"{IMAGENET16_TRAIN_BATCHES[-1]} and {IMAGENET16_VAL_BATCH} in {root}, or give their directory "
            "as the dataset's root."
        )

    def fetch(self, root: str | Path | None = None, *, mirror: str | None = None, progress: bool = True) -> Path:
        """Nothing to download: the directory holding every batch, else `DatasetFilesMissing` with the hint."""
        if mirror is not None:
            raise DatasetError(f"{self.name} has no published files to mirror; give the batches' directory as root")
        return self.find_root(root)

    def decode(self, root: Path) -> RawDataset:
        train_paths = [root / batch for batch in IMAGENET16_TRAIN_BATCHES]
        train_x, train_y = formats.read_downsampled_imagenet(train_paths, self.size, self.num_classes)
        test_x, test_y = formats.read_downsampled_imagenet([root / IMAGENET16_VAL_BATCH], self.size, self.num_classes)
        classes = tuple(str(label) for label in range(1, self.num_classes + 1))
        return RawDataset(train_x, train_y, test_x, test_y, classes)


# ----------------------------------------------------------------------------------- scikit-learn digits


@datasets.register("digits")
class Digits(DatasetSource):
    """scikit-learn's bundled 8x8 digits (1,797 images, 0..16 intensities scaled to 0..255), for smoke
    tests. It has no official test split; a fixed, stratified 20% (seed 0) is the test split. The CSV
    file is read straight from the installed scikit-learn package, which is much faster than importing it."""

    name = "digits"
    test_fraction = 0.2

    def default_roots(self) -> list[Path]:
        return [sklearn_data_dir()]

    def required_paths(self, root: Path) -> list[Path]:
        return [root / "digits.csv.gz"]

    def install_hint(self, root: Path) -> str:
        return "It ships with scikit-learn: pip install nasloop[data]"

    def decode(self, root: Path) -> RawDataset:
        table = np.loadtxt(root / "digits.csv.gz", delimiter=",")  # 64 pixel columns, then the label
        images = np.round(table[:, :-1].reshape(-1, 1, 8, 8) * (255 / 16)).astype(np.uint8)
        labels = table[:, -1].astype(np.int64)
        test, train = stratified_holdout(labels, self.test_fraction, seed=0)
        classes = tuple(str(digit) for digit in range(10))
        return RawDataset(images[train], labels[train], images[test], labels[test], classes)


def sklearn_data_dir() -> Path:
    """scikit-learn's bundled data directory, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("the digits dataset needs scikit-learn: pip install nasloop[data]")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


# ----------------------------------------------------------------------------------- synthetic stand-ins


class SyntheticImages(DatasetSource):
    """Random images in the shape of a dataset whose files are not here, with random labels.

    A run on a tabular benchmark (`benchmark: {name: nb201, dataset: cifar10}`) takes its accuracies
    from the table; the stages that still run in the sandbox (zero-cost proxies, hardware measurements)
    need inputs of the benchmark's shape, and these stand in for the real images when those are not
    installed. They carry no information about the task: data-dependent proxies computed on them measure
    the network's response to noise, and a network trained on them learns nothing. Deterministic: the
    same images every time. Nothing is read or downloaded.
    """

    in_shape: ClassVar[tuple[int, int, int]]
    num_classes: ClassVar[int]
    train_images: ClassVar[int] = 2048
    test_images: ClassVar[int] = 512

    def default_roots(self) -> list[Path]:
        return [nasloop_cache_root() / "raw" / self.name]

    def required_paths(self, root: Path) -> list[Path]:
        return []

    def fetch(self, root: str | Path | None = None, *, mirror: str | None = None, progress: bool = True) -> Path:
        return self.default_roots()[0]

    def decode(self, root: Path) -> RawDataset:
        rng = np.random.default_rng(0)

        def images(count: int) -> np.ndarray:
            pixels = rng.normal(128.0, 48.0, size=(count, *self.in_shape))
            return np.clip(np.round(pixels), 0, 255).astype(np.uint8)

        train_x, test_x = images(self.train_images), images(self.test_images)
        train_y = (np.arange(self.train_images) % self.num_classes).astype(np.int64)
        test_y = (np.arange(self.test_images) % self.num_classes).astype(np.int64)
        classes = tuple(f"class {index}" for index in range(self.num_classes))
        return RawDataset(train_x, rng.permutation(train_y), test_x, rng.permutation(test_y), classes)


@datasets.register("synthetic-cifar10")
class SyntheticCifar10(SyntheticImages):
    """Random 3x32x32 images, 10 classes: CIFAR-10's shape (see `SyntheticImages`)."""

    name = "synthetic-cifar10"
    in_shape = (3, 32, 32)
    num_classes = 10


@datasets.register("synthetic-cifar100")
class SyntheticCifar100(SyntheticImages):
    """Random 3x32x32 images, 100 classes: CIFAR-100's shape (see `SyntheticImages`)."""

    name = "synthetic-cifar100"
    in_shape = (3, 32, 32)
    num_classes = 100


@datasets.register("synthetic-imagenet16-120")
class SyntheticImageNet16(SyntheticImages):
    """Random 3x16x16 images, 120 classes: ImageNet16-120's shape (see `SyntheticImages`)."""

    name = "synthetic-imagenet16-120"
    in_shape = (3, 16, 16)
    num_classes = 120
