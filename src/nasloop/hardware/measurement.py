"""One hardware figure with its unit and how it was obtained.

Every number nasloop reports about hardware says whether it was *measured* on this machine (a timer, an
energy counter, an allocator statistic) or *estimated* from a model (time × an assumed power, energy × an
assumed grid intensity), and `detail` says exactly how, so a report never passes an estimate off as a
measurement.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from torch import nn

Method = Literal["measured", "estimated"]


@dataclass(frozen=True)
class Measurement:
    """A value in `unit` (for example "ms", "J", "FLOPs"), its `method` and a one-line `detail`."""

    value: float
    unit: str
    method: Method
    detail: str

    def describe(self) -> str:
        """`method: detail`, the form stored in an evaluation result's `info`."""
        return f"{self.method}: {self.detail}"


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module of `model` in eval mode and restore each module's own flag afterwards.

    Restoring per module (rather than calling `model.train()`) keeps a caller's deliberate mix of train
    and eval submodules intact.
    """
    previous = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in previous.items():
            module.training = training
