"""Validation and training-subset splits: held out from training, stratified, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from nasloop.data import DatasetError, split_indices
from nasloop.evaluate.job import DatasetSpec

LABELS = np.repeat(np.arange(5), [100, 80, 60, 40, 20])[np.random.default_rng(3).permutation(300)]


def test_validation_is_held_out_and_stratified() -> None:
    train, val = split_indices(LABELS, DatasetSpec(val_fraction=0.25))
    assert np.intersect1d(train, val).size == 0
    assert np.union1d(train, val).tolist() == list(range(len(LABELS)))
    assert np.bincount(LABELS[val]).tolist() == [25, 20, 15, 10, 5]


def test_splits_are_deterministic_and_depend_on_the_seed() -> None:
    first = split_indices(LABELS, DatasetSpec(split_seed=1))
    again = split_indices(LABELS, DatasetSpec(split_seed=1))
    other = split_indices(LABELS, DatasetSpec(split_seed=2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[1], other[1])


def test_train_subset_is_a_deterministic_subset_of_the_rest() -> None:
    full_train, val = split_indices(LABELS, DatasetSpec())
    train, same_val = split_indices(LABELS, DatasetSpec(train_subset=50))
    assert np.array_equal(val, same_val)  # the subset never moves the validation split
    assert len(train) == 50 and np.isin(train, full_train).all()
    assert np.array_equal(train, np.sort(train))
    assert np.array_equal(train, split_indices(LABELS, DatasetSpec(train_subset=50))[0])


def test_no_validation_split() -> None:
    train, val = split_indices(LABELS, DatasetSpec(val_fraction=0.0))
    assert val.size == 0 and len(train) == len(LABELS)


def test_train_subset_larger_than_the_training_split_is_an_error() -> None:
    with pytest.raises(DatasetError, match="train_subset=1000"):
        split_indices(LABELS, DatasetSpec(train_subset=1000))
