"""The evaluation job: what the parent sends to a sandbox (docs/architecture.md).

A job is small and JSON-serialisable: the candidate's code, which data, which training recipe, which
stages to run, the seed and the limits. The sandbox answers with one `EvalResult`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nasloop.data.spec import DatasetSpec
from nasloop.strict import Strict


class Recipe(Strict):
    """The training recipe nasloop owns, so candidates differ only in architecture.

    `paper` is the published feedback-memory protocol (SGD lr 0.01, momentum 0.9, wd 5e-4, batch 128,
    constant LR, crop+flip); `fast` uses the same data budget, tuned for speed and ranking signal.
    Fields left at None take the recipe's default.
    """

    name: Literal["paper", "fast"] = "fast"
    epochs: float = Field(default=1.0, gt=0)
    batch_size: int | None = Field(default=None, gt=0)
    lr: float | None = Field(default=None, gt=0)
    momentum: float | None = Field(default=None, ge=0)
    weight_decay: float | None = Field(default=None, ge=0)
    augment: bool | None = None
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    threads: int | None = Field(default=None, gt=0, description="CPU threads inside the sandbox")


class Limits(Strict):
    """Hard limits of one sandboxed evaluation."""

    timeout_s: float = Field(default=1800.0, gt=0, description="wall clock; the process group is killed")
    memory_mb: int = Field(default=8192, gt=0, description="address-space cap on the candidate process")
    max_processes: int = Field(default=64, gt=0)
    max_file_mb: int = Field(default=64, gt=0, description="largest file the candidate may write")
    max_output_kb: int = Field(default=256, gt=0, description="stdout/stderr kept per stream")
    max_params: int | None = Field(default=None, gt=0, description="parameter budget, checked before training")
    max_flops: float | None = Field(default=None, gt=0, description="FLOPs budget (batch 1), hardware stage")
    max_latency_ms: float | None = Field(default=None, gt=0, description="batch-1 latency budget, hardware stage")
    min_proxy: dict[str, float] = Field(
        default_factory=dict, description="zero-cost stage: minimum value per proxy, e.g. {synflow: 1e4}"
    )


class Measure(Strict):
    """How the hardware and zero-cost stages measure."""

    batch_sizes: tuple[int, ...] = Field(default=(1, 64), description="latency is timed at each batch size")
    repeats: int = Field(default=10, gt=0, description="timed repeats per batch size (median and spread)")
    warmup: int = Field(default=3, ge=0)
    proxy_batch_size: int = Field(default=64, gt=0, description="training images the zero-cost proxies see")
    power_watts: float | None = Field(default=None, gt=0, description="for energy estimates without a counter")
    grid_g_per_kwh: float = Field(default=480.0, gt=0, description="CO2 intensity of the electricity (g/kWh)")


class EvalJob(Strict):
    """One evaluation: code, data, recipe, stages, seed and limits."""

    code: str
    dataset: DatasetSpec = DatasetSpec()
    recipe: Recipe = Recipe()
    limits: Limits = Limits()
    stages: tuple[str, ...] = ("static", "build", "train")
    proxies: tuple[str, ...] = ()
    measure: Measure = Measure()
    seed: int = 0
