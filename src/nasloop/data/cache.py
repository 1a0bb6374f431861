"""The decoded-dataset cache: official splits as raw .npy arrays, memory-mapped on load.

Layout: `<cache root>/datasets/<name>/<key>/{train_x,train_y,test_x,test_y}.npy` plus `meta.json`,
where the cache root is `$NASLOOP_CACHE_DIR` or `~/.cache/nasloop` and `key` hashes the source's
fingerprint (file paths, sizes, modification times) and decoder version, so a changed source or
decoder is decoded again. An entry is written to a temporary directory and renamed into place, so a
reader sees a complete entry or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nasloop.data.sources import DatasetSource, RawDataset, nasloop_cache_root

ARRAYS = ("train_x", "train_y", "test_x", "test_y")
_FORMAT = 1  # layout of a cache entry; part of the key


def datasets_cache_dir() -> Path:
    """Where decoded datasets are cached: `<cache root>/datasets`."""
    return nasloop_cache_root() / "datasets"


def cache_key(source: DatasetSource, root: Path) -> str:
    """A short hash of everything that determines the decoded arrays."""
    identity = [source.name, _FORMAT, source.decoder_version, source.fingerprint(root)]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, on the 0..1 scale.

    Computed exactly from a 256-bin histogram per channel (torch's bincount takes uint8 directly, so
    no widened copy of the images is made).
    """
    means: list[float] = []
    stds: list[float] = []
    values = np.arange(256, dtype=np.float64) / 255.0
    for channel in range(images.shape[1]):
        pixels = torch.from_numpy(np.ascontiguousarray(images[:, channel])).reshape(-1)
        counts = torch.bincount(pixels, minlength=256).numpy().astype(np.float64)
        total = counts.sum()
        mean = float((counts * values).sum() / total)
        variance = float((counts * (values - mean) ** 2).sum() / total)
        means.append(mean)
        stds.append(max(variance**0.5, 1e-6))
    return tuple(means), tuple(stds)


def _write_entry(entry: Path, raw: RawDataset) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        for name in ARRAYS:
            np.save(staging / f"{name}.npy", np.ascontiguousarray(getattr(raw, name)))
        mean, std = channel_stats(raw.train_x)
        meta = {"classes": list(raw.classes) if raw.classes else None, "mean": mean, "std": std}
        (staging / "meta.json").write_text(json.dumps(meta))
        os.replace(staging, entry)
    except OSError:
        if entry.exists():  # another process finished the same entry first; theirs is as good
            return
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_stale(entry: Path) -> None:
    # Entries of older sources or decoders are never read again.
    for sibling in entry.parent.iterdir():
        if sibling != entry and sibling.is_dir() and not sibling.name.startswith("."):
            shutil.rmtree(sibling, ignore_errors=True)


def _read_entry(entry: Path) -> tuple[RawDataset, dict[str, Any]]:
    # mmap_mode="c" (copy-on-write): pages load lazily and the arrays are writable, as torch expects.
    arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="c") for name in ARRAYS}
    meta = json.loads((entry / "meta.json").read_text())
    classes = tuple(meta["classes"]) if meta.get("classes") else None
    return RawDataset(classes=classes, **arrays), meta


def load_decoded(source: DatasetSource, root: Path) -> tuple[RawDataset, dict[str, Any]]:
    """The decoded official splits of `source` (memory-mapped) and the entry's metadata (classes, per-channel
    mean and std of the official training images). Decodes and caches on the first call for this source."""
    entry = datasets_cache_dir() / source.name / cache_key(source, root)
    if not (entry / "meta.json").exists():
        raw = source.decode(root)
        raw.validate(source.name)
        _write_entry(entry, raw)
        _remove_stale(entry)
    return _read_entry(entry)
