"""ImageNet16-120: the downsampled-ImageNet pickles, written here in the release's format, round-trip
through the registry and `load_splits`."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from nasloop.data import DatasetError, DatasetFilesMissing, get_source, load_splits
from nasloop.data.sources import IMAGENET16_TRAIN_BATCHES
from nasloop.evaluate.job import DatasetSpec

BatchWriter = Callable[[Path, np.ndarray, np.ndarray], None]
SPEC = {"name": "imagenet16-120", "val_fraction": 0.2}


def marked_row(red: tuple[int, int, int], green: tuple[int, int, int], blue: tuple[int, int, int]) -> np.ndarray:
    """One image as the release stores it: 768 values, 256 red then 256 green then 256 blue, row-major.
    Each argument is (row, column, value) of the one non-zero pixel of that channel."""
    row = np.zeros(3 * 256, dtype=np.uint8)
    for channel, (pixel_row, column, value) in enumerate((red, green, blue)):
        row[channel * 256 + pixel_row * 16 + column] = value
    return row


def write_release(root: Path, write: BatchWriter, val_rows: np.ndarray, val_labels: list[int]) -> Path:
    """Ten small random training batches (labels 1..200) and a val_data of the given rows and labels."""
    rng = np.random.default_rng(0)
    for index, name in enumerate(IMAGENET16_TRAIN_BATCHES):
        labels = np.array([1, 120, 121, 200, *rng.integers(1, 201, size=6)]) if index == 0 else rng.integers(1, 201, 10)
        write(root / name, rng.integers(0, 256, size=(10, 3, 16, 16), dtype=np.uint8), labels)
    write(root / "val_data", val_rows, np.array(val_labels))
    return root


def test_files_round_trip_with_the_120_class_subset(tmp_path: Path, downsampled_batch_writer: BatchWriter) -> None:
    known = marked_row(red=(2, 5, 200), green=(15, 0, 100), blue=(0, 15, 50))
    other = marked_row(red=(0, 0, 7), green=(8, 8, 9), blue=(15, 15, 11))
    rows = np.stack([other, known, known, other, known])
    root = write_release(tmp_path, downsampled_batch_writer, rows, [121, 7, 1, 120, 1000])

    splits = load_splits(DatasetSpec(root=str(root), **SPEC))

    assert splits.in_shape == (3, 16, 16) and splits.num_classes == 120
    assert splits.classes == tuple(str(label) for label in range(1, 121))
    # val_data is the test split, in file order: labels 121 and 1000 are dropped, 7, 1 and 120 become 6, 0, 119
    assert splits.test_y.tolist() == [6, 0, 119]
    test_x = splits.test_x.numpy()
    assert test_x.shape == (3, 3, 16, 16)
    assert (test_x[0, 0, 2, 5], test_x[0, 1, 15, 0], test_x[0, 2, 0, 15]) == (200, 100, 50)
    assert int(test_x[0].sum()) == 200 + 100 + 50  # every other pixel stays zero
    assert np.array_equal(test_x[1], test_x[0])
    assert (test_x[2, 0, 0, 0], test_x[2, 1, 8, 8], test_x[2, 2, 15, 15]) == (7, 9, 11)
    # train and validation come from the ten training batches, filtered the same way
    train_labels = np.concatenate([splits.train_y.numpy(), splits.val_y.numpy()])
    assert train_labels.min() >= 0 and train_labels.max() <= 119
    raw = get_source("imagenet16-120").decode(root)
    kept = sum(
        int((np.asarray(pickle.loads((root / name).read_bytes())["labels"]) <= 120).sum())
        for name in IMAGENET16_TRAIN_BATCHES
    )
    assert len(raw.train_y) == len(train_labels) == kept
    assert raw.train_y[:2].tolist() == [0, 119]  # batch 1 starts with labels 1, 120, 121, 200


def test_decoded_training_pixels_match_the_written_images(
    tmp_path: Path, downsampled_batch_writer: BatchWriter
) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(4, 3, 16, 16), dtype=np.uint8)
    for name in IMAGENET16_TRAIN_BATCHES:
        downsampled_batch_writer(tmp_path / name, images, np.array([3, 150, 42, 120]))
    downsampled_batch_writer(tmp_path / "val_data", images[:1], np.array([5]))
    raw = get_source("imagenet16-120").decode(tmp_path)
    assert raw.train_x.shape == (30, 3, 16, 16) and raw.train_x.dtype == np.uint8
    assert raw.train_y[:3].tolist() == [2, 41, 119]
    assert np.array_equal(raw.train_x[:3], images[[0, 2, 3]])


def test_missing_files_say_which_files_belong_where(tmp_path: Path, downsampled_batch_writer: BatchWriter) -> None:
    with pytest.raises(DatasetFilesMissing) as error:
        load_splits(DatasetSpec(root=str(tmp_path / "nowhere"), **SPEC))
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message
    assert "train_data_batch_1, train_data_batch_2" in message and "train_data_batch_10, val_data" in message
    assert "image-net.org" in message

    root = write_release(
        tmp_path / "partial", downsampled_batch_writer, marked_row((0, 0, 1), (0, 0, 1), (0, 0, 1))[None], [1]
    )
    (root / "train_data_batch_7").unlink()
    with pytest.raises(DatasetFilesMissing, match=r"missing in .*partial: train_data_batch_7\)"):
        load_splits(DatasetSpec(root=str(root), **SPEC))


def test_nothing_is_downloaded(tmp_path: Path) -> None:
    source = get_source("imagenet16-120")
    with pytest.raises(DatasetFilesMissing, match="not freely downloadable"):
        source.fetch(tmp_path)
    with pytest.raises(DatasetError, match="no published files to mirror"):
        source.fetch(tmp_path, mirror="https://example.org/imagenet16")


def test_a_batch_of_another_resolution_is_refused(tmp_path: Path, downsampled_batch_writer: BatchWriter) -> None:
    root = write_release(tmp_path, downsampled_batch_writer, np.zeros((2, 3, 32, 32), dtype=np.uint8), [1, 2])
    with pytest.raises(DatasetError, match=r"val_data: data \(2, 3072\).*expected N x 768 values \(16x16 RGB"):
        get_source("imagenet16-120").decode(root)
