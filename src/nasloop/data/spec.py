"""`DatasetSpec`: which dataset a run uses and how it is split (the `dataset` key of a run config)."""

from __future__ import annotations

from pydantic import Field

from nasloop.strict import Strict


class DatasetSpec(Strict):
    """Which dataset and how to split it. `val_fraction` of the training split is held out for selection."""

    name: str = "fashion-mnist"
    root: str | None = Field(default=None, description="directory with the dataset's files; default per dataset")
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    train_subset: int | None = Field(default=None, gt=0, description="use only this many training images")
    split_seed: int = 0


__all__ = ["DatasetSpec"]
