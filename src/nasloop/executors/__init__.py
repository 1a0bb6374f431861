"""Executors: where evaluation jobs run (a local pool of sandboxes, or a Ray cluster); importing this
package registers them. Ray itself is imported only when the `ray` executor is created."""

from nasloop.executors import local as local
from nasloop.executors import ray_executor as ray_executor
from nasloop.executors.base import Executor, ProgressCallback, Slot

__all__ = ["Executor", "ProgressCallback", "Slot"]
