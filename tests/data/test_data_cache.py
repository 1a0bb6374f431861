"""The decoded-array cache and the sandbox hand-over: fast, keyed by the source, label-free."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from nasloop.data import DatasetError, load_sandbox_data, load_splits, save_sandbox_data
from nasloop.data.cache import channel_stats, datasets_cache_dir
from nasloop.evaluate.job import DatasetSpec


def test_cache_lives_under_nasloop_cache_dir(isolated_cache: Path, tmp_path: Path, dataset_writers: dict) -> None:
    load_splits(DatasetSpec(name="mnist", root=str(dataset_writers["mnist"](tmp_path / "raw"))))
    entries = list((isolated_cache / "datasets" / "mnist").iterdir())
    assert datasets_cache_dir() == isolated_cache / "datasets"
    assert len(entries) == 1 and sorted(p.name for p in entries[0].iterdir())[:2] == ["meta.json", "test_x.npy"]


def test_a_changed_source_is_decoded_again(
    isolated_cache: Path, tmp_path: Path, dataset_writers: dict, idx_writer: Callable[[Path, np.ndarray], None]
) -> None:
    root = dataset_writers["mnist"](tmp_path / "raw")
    spec = DatasetSpec(name="mnist", root=str(root), val_fraction=0.0)
    before = load_splits(spec)
    labels = np.full(120, 3, dtype=np.uint8)
    idx_writer(root / "train-labels-idx1-ubyte.gz", labels)
    os.utime(root / "train-labels-idx1-ubyte.gz", ns=(1, 1))  # a different mtime even on coarse clocks
    after = load_splits(spec)
    assert not torch.equal(before.train_y, after.train_y) and set(after.train_y.tolist()) == {3}
    assert len(list((isolated_cache / "datasets" / "mnist").iterdir())) == 1  # the stale entry is gone


def test_channel_stats_match_numpy() -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(50, 3, 5, 5), dtype=np.uint8)
    mean, std = channel_stats(images)
    scaled = images.astype(np.float64) / 255
    assert np.allclose(mean, scaled.mean(axis=(0, 2, 3))) and np.allclose(std, scaled.std(axis=(0, 2, 3)))


def test_sandbox_data_round_trip_without_evaluation_labels(tmp_path: Path) -> None:
    splits = load_splits(DatasetSpec(name="digits"))
    directory = save_sandbox_data(splits, tmp_path / "data")  # a Splits on purpose: labels must not leak
    assert sorted(p.name for p in directory.iterdir()) == [
        "meta.json",
        "test_x.npy",
        "train_x.npy",
        "train_y.npy",
        "val_x.npy",
    ]
    loaded = load_sandbox_data(directory)
    for field in ("train_x", "train_y", "val_x", "test_x"):
        assert torch.equal(getattr(loaded, field), getattr(splits, field))
    assert (loaded.name, loaded.num_classes, loaded.in_shape) == ("digits", 10, (1, 8, 8))
    assert loaded.mean == splits.mean and loaded.classes == splits.classes
    loaded.train_x[0] += 1  # copy-on-write: writable in memory, the file is untouched
    assert torch.equal(load_sandbox_data(directory).train_x, splits.train_x)


def test_loading_from_an_empty_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no meta\.json"):
        load_sandbox_data(tmp_path)


@pytest.mark.usefixtures("bundled_fashion_mnist")
def test_fashion_mnist_loads_from_the_cache_once_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second load reads the cache, never the IDX files. Load times are printed for people; speed is
    measured by the benchmarks, not asserted here."""
    from nasloop.data import formats

    spec = DatasetSpec()
    load_splits(spec)  # decodes the gzip'd IDX files once

    def no_decoding(*args: object) -> None:
        raise AssertionError("the IDX files were decoded again")

    monkeypatch.setattr(formats, "read_idx_pair", no_decoding)
    start = time.perf_counter()
    splits = load_splits(spec)
    cached_s = time.perf_counter() - start
    save_sandbox_data(splits.for_sandbox(), tmp_path / "data")
    start = time.perf_counter()
    data = load_sandbox_data(tmp_path / "data")
    sandbox_s = time.perf_counter() - start
    print(f"fashion-mnist: load_splits from cache {cached_s * 1e3:.0f} ms, load_sandbox_data {sandbox_s * 1e3:.1f} ms")
    assert len(data.train_x) == 54_000 and data.train_x.shape == splits.for_sandbox().train_x.shape
