"""Test doubles built on the real interfaces: scripted model code and an in-process executor.

The executor double is for unit tests of the search loop only; integration tests use the real sandbox.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future

from nasloop.candidate import EvalResult, FailureKind, State
from nasloop.evaluate.job import EvalJob
from nasloop.executors.base import Executor, ProgressCallback

GOOD_NET = """
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        channels = in_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(channels, {width}, 3, padding=1),  # (B, {width}, H, W)
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),  # (B, {width}, 1, 1)
        )
        self.head = nn.Linear({width}, num_classes)  # (B, num_classes)

    def forward(self, x):
        x = self.features(x)
        return self.head(torch.flatten(x, 1))
"""

SHAPE_BROKEN_NET = """
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.head = nn.Linear(12345, num_classes)

    def forward(self, x):
        return self.head(x.flatten(1))
"""


def good_net(width: int = 8) -> str:
    return GOOD_NET.format(width=width)


def fenced(code: str) -> str:
    return f"Here is the model.\n\n```python\n{code.strip()}\n```\n"


class FakeExecutor(Executor):
    """Scores code deterministically in-process: a fake val_acc from the code's hash; code mentioning
    12345 fails with a shape error. Records every job it received."""

    def __init__(self, capacity: int = 1) -> None:
        self.capacity = capacity
        self.jobs: list[EvalJob] = []
        self.closed = False

    def submit(self, job: EvalJob, on_progress: ProgressCallback | None = None) -> Future[EvalResult]:
        self.jobs.append(job)
        future: Future[EvalResult] = Future()
        if "12345" in job.code:
            future.set_result(EvalResult.failed(FailureKind.SHAPE, "mat1 and mat2 shapes cannot be multiplied"))
            return future
        digest = hashlib.sha256(job.code.encode()).digest()
        score = 0.5 + digest[0] / 1000
        curve = [(step, 2.0 - step / 100) for step in range(0, 101, 10)]
        future.set_result(
            EvalResult(
                State.COMPLETE,
                metrics={"val_acc": score, "test_acc": score - 0.01, "params": 100.0},
                curve=curve,
                stage="train",
            )
        )
        return future

    def shutdown(self) -> None:
        self.closed = True
