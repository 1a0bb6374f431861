"""Contract tests over every registered dataset: decode a small copy in the official format, split it,
hand it to the sandbox without evaluation labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nasloop.data import DatasetFilesMissing, SandboxData, get_source, load_splits
from nasloop.evaluate.job import DatasetSpec
from nasloop.registry import UnknownNameError, datasets

EXPECTED = {  # name: (in_shape, num_classes, horizontal_flip)
    "fashion-mnist": ((1, 28, 28), 10, False),
    "mnist": ((1, 28, 28), 10, False),
    "cifar10": ((3, 32, 32), 10, True),
    "cifar100": ((3, 32, 32), 100, True),
    "svhn": ((3, 32, 32), 10, False),
    "imagenette": ((3, 160, 160), 3, True),
    "imagenet16-120": ((3, 16, 16), 120, True),
    "digits": ((1, 8, 8), 10, False),
    "synthetic-cifar10": ((3, 32, 32), 10, False),
    "synthetic-cifar100": ((3, 32, 32), 100, False),
    "synthetic-imagenet16-120": ((3, 16, 16), 120, False),
}


def test_every_registered_dataset_has_a_writer_and_expectations(dataset_writers: dict) -> None:
    assert set(datasets.names()) == set(dataset_writers) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registered_dataset_loads_and_splits(name: str, dataset_writers: dict, tmp_path: Path) -> None:
    root = dataset_writers[name](tmp_path / name)
    bundled = name == "digits" or name.startswith("synthetic-")
    spec = DatasetSpec(name=name, root=None if bundled else str(root), val_fraction=0.2)
    splits = load_splits(spec)
    in_shape, num_classes, flip = EXPECTED[name]

    assert splits.in_shape == in_shape
    assert splits.num_classes == num_classes
    assert splits.horizontal_flip is flip
    for images, labels in ((splits.train_x, splits.train_y), (splits.val_x, splits.val_y)):
        assert images.dtype == torch.uint8 and images.shape[1:] == in_shape
        assert labels.dtype == torch.int64 and len(labels) == len(images)
        assert int(labels.min()) >= 0 and int(labels.max()) < num_classes
    assert splits.test_x.shape[1:] == in_shape and len(splits.test_y) == len(splits.test_x)
    total = len(splits.train_x) + len(splits.val_x)
    assert abs(len(splits.val_x) - 0.2 * total) <= num_classes  # stratified rounding per class
    assert len(splits.mean) == len(splits.std) == in_shape[0]
    assert all(0 < s < 1 for s in splits.std)
    assert splits.classes is not None and len(splits.classes) == num_classes


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10", "svhn"])
def test_labels_stay_paired_with_their_images(name: str, dataset_writers: dict, tmp_path: Path) -> None:
    # The writers encode each label in the image's first byte; splitting must not shuffle them apart.
    splits = load_splits(DatasetSpec(name=name, root=str(dataset_writers[name](tmp_path))))
    for images, labels in (
        (splits.train_x, splits.train_y),
        (splits.val_x, splits.val_y),
        (splits.test_x, splits.test_y),
    ):
        assert torch.equal(images.reshape(len(images), -1)[:, 0].long(), labels * 20)


def test_sandbox_view_has_no_evaluation_labels(dataset_writers: dict, tmp_path: Path) -> None:
    splits = load_splits(DatasetSpec(root=str(dataset_writers["mnist"](tmp_path))))
    view = splits.for_sandbox()
    assert type(view) is SandboxData
    assert not hasattr(view, "val_y") and not hasattr(view, "test_y")
    assert torch.equal(view.val_x, splits.val_x) and torch.equal(view.train_y, splits.train_y)


def test_unknown_dataset_lists_the_known_names() -> None:
    with pytest.raises(UnknownNameError) as error:
        load_splits(DatasetSpec(name="fashion-mnlst"))
    message = str(error.value)
    assert "fashion-mnist" in message and "cifar10" in message and "Did you mean" in message


def test_missing_files_name_the_directory_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetFilesMissing) as error:
        load_splits(DatasetSpec(name="cifar10", root=str(tmp_path / "nowhere")))
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message
    assert "cifar-10-python.tar.gz" in message and "python -m nasloop.data download cifar10" in message


def test_fashion_mnist_hint_names_the_debian_package(tmp_path: Path) -> None:
    hint = get_source("fashion-mnist").install_hint(tmp_path)
    assert "apt-get install dataset-fashion-mnist" in hint


@pytest.mark.usefixtures("bundled_fashion_mnist")
def test_bundled_fashion_mnist_is_the_official_release() -> None:
    splits = load_splits(DatasetSpec())  # default root: the Debian package
    assert (len(splits.train_x), len(splits.val_x), len(splits.test_x)) == (54_000, 6_000, 10_000)
    assert np.bincount(splits.val_y.numpy()).tolist() == [600] * 10
    assert splits.classes is not None and splits.classes[9] == "Ankle boot"
    assert splits.mean[0] == pytest.approx(0.2860, abs=1e-3) and splits.std[0] == pytest.approx(0.3530, abs=1e-3)
