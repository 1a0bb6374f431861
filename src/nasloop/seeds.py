"""Seeds of a run's components, each derived from the run seed (STYLE.md habit 8)."""

from __future__ import annotations

import hashlib


def derived_seed(seed: int, *parts: object) -> int:
    """A seed for one component, derived from the run seed and the component's name and parts."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def evaluation_seed(seed: int) -> int:
    """The seed of every evaluation of a run (the search's and the finalists' retraining alike)."""
    return derived_seed(seed, "evaluation")


__all__ = ["derived_seed", "evaluation_seed"]
