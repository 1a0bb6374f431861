"""Stratified hold-out: the one splitting rule, used for validation splits and for datasets without an
official test split."""

from __future__ import annotations

import numpy as np


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices `(held_out, kept)`: round(fraction * n_c) random images of every class c are held out."""
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        held.append(rng.permutation(members)[: round(fraction * len(members))])
    held_out = np.sort(np.concatenate(held)) if held else np.empty(0, dtype=np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), held_out, assume_unique=True)
    return held_out.astype(np.int64), kept.astype(np.int64)


__all__ = ["stratified_holdout"]
