"""The file-format readers, on files written here in each official format."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from nasloop.data import DatasetError
from nasloop.data.formats import read_idx, read_idx_pair, read_image_folder, read_svhn_mat


def test_idx_round_trip_plain_and_gzip(tmp_path: Path, idx_writer: Callable[[Path, np.ndarray], None]) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "a.idx.gz"):
        idx_writer(tmp_path / name, array)
        assert np.array_equal(read_idx(tmp_path / name), array)


def test_idx_rejects_bad_magic_and_truncation(tmp_path: Path, idx_writer: Callable[[Path, np.ndarray], None]) -> None:
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x1f\x8b\x08\x00not idx"))
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(tmp_path / "bad.gz")
    idx_writer(tmp_path / "short.idx", np.zeros((4, 5), dtype=np.uint8))
    (tmp_path / "short.idx").write_bytes((tmp_path / "short.idx").read_bytes()[:-3])
    with pytest.raises(DatasetError, match="header says shape"):
        read_idx(tmp_path / "short.idx")


def test_idx_pair_must_match(tmp_path: Path, idx_writer: Callable[[Path, np.ndarray], None]) -> None:
    idx_writer(tmp_path / "images", np.zeros((3, 28, 28), dtype=np.uint8))
    idx_writer(tmp_path / "labels", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DatasetError, match="do not pair up"):
        read_idx_pair(tmp_path / "images", tmp_path / "labels")


def test_svhn_layout_and_label_ten_is_zero(tmp_path: Path) -> None:
    from scipy.io import savemat

    images = np.random.default_rng(0).integers(0, 256, size=(3, 3, 32, 32), dtype=np.uint8)  # (N, C, H, W)
    savemat(tmp_path / "x.mat", {"X": np.transpose(images, (2, 3, 1, 0)), "y": np.array([[10], [1], [9]])})
    decoded, labels = read_svhn_mat(tmp_path / "x.mat")
    assert np.array_equal(decoded, images) and labels.tolist() == [0, 1, 9]


def test_image_folder_resizes_shorter_side_and_centre_crops(tmp_path: Path) -> None:
    from PIL import Image

    directory = tmp_path / "train" / "cls"
    directory.mkdir(parents=True)
    # 300x100: left third red, middle third green, right third blue; the centre crop keeps green only
    canvas = np.zeros((100, 300, 3), dtype=np.uint8)
    canvas[:, :100, 0] = canvas[:, 100:200, 1] = canvas[:, 200:, 2] = 255
    Image.fromarray(canvas).save(directory / "wide.png")
    images, labels = read_image_folder(tmp_path / "train", 20, ["cls"])
    assert images.shape == (1, 3, 20, 20) and labels.tolist() == [0]
    assert images[0, 1].min() > 200 and images[0, 0].max() < 50 and images[0, 2].max() < 50


def test_image_folder_with_unexpected_classes_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "train" / "other").mkdir(parents=True)
    with pytest.raises(DatasetError, match="has classes"):
        read_image_folder(tmp_path / "train", 20, ["cls"])
