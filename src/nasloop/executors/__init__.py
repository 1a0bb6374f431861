"""Executors: where evaluation jobs run (a local pool of sandboxes, or a Ray cluster)."""

from nasloop.executors import local as local
from nasloop.executors.base import Executor, ProgressCallback

__all__ = ["Executor", "ProgressCallback"]
