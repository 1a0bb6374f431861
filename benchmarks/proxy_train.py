"""Proxy-training benchmark: one epoch of the same reference CNN on Fashion-MNIST through

  (a) baseline: the published method's pipeline, a per-sample `Dataset` + `DataLoader` with per-sample
      transforms (random crop, to-tensor, normalise), batch 128, SGD lr 0.01 momentum 0.9 wd 5e-4;
  (b) nasloop's `paper` recipe (same hyperparameters, tensor-resident batched data);
  (c) nasloop's `fast` recipe (same data budget).

It prints wall time, samples/s, validation accuracy, ratios against the baseline and the fraction of
each epoch spent outside forward/backward/step (data handling). With `nasloop.evaluate.sandbox`
present it also measures the sandbox's per-job overhead against a cold `python -c "import torch"`.

    python benchmarks/proxy_train.py [--train-subset N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nasloop.data import Splits, load_splits
from nasloop.evaluate.job import DatasetSpec, EvalJob, Recipe
from nasloop.evaluate.train import accuracy, crop_padding, train_and_predict

# A candidate program (DESIGN.md contract 1): three conv blocks with BatchNorm, pooling, a linear head.
REFERENCE_CNN = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels = in_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),  # (16, H, W)
            nn.MaxPool2d(2),                                                       # (16, H/2, W/2)
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),        # (32, H/2, W/2)
            nn.MaxPool2d(2),                                                       # (32, H/4, W/4)
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),        # (64, H/4, W/4)
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),                                 # (64,)
        )
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
"""


def build_reference(splits: Splits, seed: int) -> nn.Module:
    """The reference CNN with the weights every pipeline starts from."""
    namespace: dict[str, Any] = {}
    exec(compile(REFERENCE_CNN, "reference_cnn.py", "exec"), namespace)
    torch.manual_seed(seed)
    model: nn.Module = namespace["Net"](splits.in_shape, splits.num_classes)
    return model


# ----------------------------------------------------------------------------------- (a) baseline


class PerSampleDataset(Dataset[tuple[torch.Tensor, int]]):
    """The published pipeline's style: one image at a time, transforms applied per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float, padding: int) -> None:
        self.images = images
        self.labels = labels
        self.mean = mean
        self.std = std
        self.padding = padding

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]  # (C, H, W) uint8
        _, height, width = image.shape
        padded = torch.nn.functional.pad(image, (self.padding,) * 4)  # random crop with zero padding
        top = int(torch.randint(0, 2 * self.padding + 1, ()))
        left = int(torch.randint(0, 2 * self.padding + 1, ()))
        image = padded[:, top : top + height, left : left + width]
        tensor = image.float() / 255.0  # to-tensor
        tensor = (tensor - self.mean) / self.std  # normalise
        return tensor, int(self.labels[index])


def run_baseline(splits: Splits, model: nn.Module, seed: int, workers: int) -> dict[str, float]:
    """One epoch the published way, timed: DataLoader batch 128, SGD lr 0.01, momentum 0.9, wd 5e-4."""
    torch.manual_seed(seed)
    padding = crop_padding(splits.in_shape[1])
    dataset = PerSampleDataset(splits.train_x, splits.train_y, splits.mean[0], splits.std[0], padding)
    loader = DataLoader(dataset, batch_size=128, shuffle=True, num_workers=workers)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    criterion = nn.CrossEntropyLoss()
    model.train()
    compute_s = 0.0
    start = time.perf_counter()
    cpu_start = time.process_time()
    for images, labels in loader:
        compute_start = time.perf_counter()
        loss = criterion(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        compute_s += time.perf_counter() - compute_start
    train_s = time.perf_counter() - start
    train_cpu_s = time.process_time() - cpu_start
    model.eval()
    predictions = []
    with torch.no_grad():
        for batch in splits.val_x.split(1024):
            predictions.append(model((batch.float() / 255.0 - splits.mean[0]) / splits.std[0]).argmax(1))
    val_pred = torch.cat(predictions).numpy()
    return {
        "train_s": train_s,
        "train_cpu_s": train_cpu_s,
        "samples_per_s": len(dataset) / train_s,
        "val_acc": accuracy(val_pred, splits.val_y),
        "data_fraction": (train_s - compute_s) / train_s,
    }


# ----------------------------------------------------------------------------------- (b), (c) recipes


def run_recipe(splits: Splits, model: nn.Module, name: Literal["paper", "fast"], seed: int) -> dict[str, float]:
    output = train_and_predict(model, splits.for_sandbox(), Recipe(name=name), seed=seed, device=torch.device("cpu"))
    return {
        "train_s": output.train_s,
        "train_cpu_s": output.train_cpu_s,
        "samples_per_s": output.samples_per_s,
        "val_acc": accuracy(output.val_pred, splits.val_y),
        "test_acc": accuracy(output.test_pred, splits.test_y),
        "data_fraction": output.data_s / output.train_s,
        "steps": float(output.steps),
        "train_loss": output.train_loss,
    }


# ----------------------------------------------------------------------------------- sandbox overhead


def cold_torch_import_s(repeats: int = 3) -> float:
    """Median wall time of a fresh `python -c "import torch"`: what a cold process per job pays."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sandbox_overhead(spec: DatasetSpec, repeats: int = 5) -> dict[str, float] | None:
    """Per-job overhead of a warm `nasloop.evaluate.sandbox.Sandbox` (median over `repeats` build-only
    jobs of the reference CNN) next to a cold torch import; None when the sandbox module is absent."""
    try:
        from nasloop.evaluate.sandbox import Sandbox  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    job = EvalJob(code=REFERENCE_CNN, dataset=spec, stages=("static", "build"))
    overheads: list[float] = []
    walls: list[float] = []
    with tempfile.TemporaryDirectory() as work_dir, Sandbox(spec, work_dir=Path(work_dir)) as sandbox:
        sandbox.run(job)  # warm-up: the first job pays process start and imports
        for _ in range(repeats):
            start = time.perf_counter()
            result = sandbox.run(job)
            walls.append(time.perf_counter() - start)
            overheads.append(result.timings.get("sandbox_overhead_s", float("nan")))
    cold = cold_torch_import_s()
    warm = statistics.median(overheads)
    return {
        "warm_overhead_s": warm,
        "warm_job_wall_s": statistics.median(walls),
        "cold_import_torch_s": cold,
        "cold_over_warm": cold / warm if warm > 0 else float("nan"),
    }


# ----------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-subset", type=int, default=None, help="training images (default: all 54k)")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--baseline-workers", type=int, default=0, help="DataLoader workers of the baseline")
    parser.add_argument("--skip-sandbox", action="store_true", help="skip the sandbox-overhead measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    spec = DatasetSpec(name=args.dataset, train_subset=args.train_subset)
    splits = load_splits(spec)
    report: dict[str, Any] = {
        "dataset": args.dataset,
        "train_images": len(splits.train_x),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    initial = build_reference(splits, args.seed).state_dict()

    def fresh() -> nn.Module:
        model = build_reference(splits, args.seed)
        model.load_state_dict(initial)
        return model

    report["baseline"] = run_baseline(splits, fresh(), args.seed, args.baseline_workers)
    report["paper"] = run_recipe(splits, fresh(), "paper", args.seed)
    report["fast"] = run_recipe(splits, fresh(), "fast", args.seed)
    base = report["baseline"]
    for name in ("paper", "fast"):
        report[name]["speedup_vs_baseline"] = base["train_s"] / report[name]["train_s"]
        report[name]["cpu_speedup_vs_baseline"] = base["train_cpu_s"] / report[name]["train_cpu_s"]
        report[name]["val_acc_minus_baseline"] = report[name]["val_acc"] - base["val_acc"]
    report["sandbox"] = None if args.skip_sandbox else sandbox_overhead(spec)

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return report


def print_table(report: dict[str, Any]) -> None:
    print(f"{report['dataset']}: {report['train_images']} training images, {report['threads']} threads")
    header = f"{'pipeline':<10}{'epoch s':>9}{'cpu s':>8}{'samples/s':>11}{'val acc':>9}{'data %':>8}"
    print(f"{header}{'speedup':>9}{'cpu':>7}")
    for name in ("baseline", "paper", "fast"):
        row = report[name]
        speedup = row.get("speedup_vs_baseline", 1.0)
        cpu_speedup = row.get("cpu_speedup_vs_baseline", 1.0)
        print(
            f"{name:<10}{row['train_s']:>9.1f}{row['train_cpu_s']:>8.1f}{row['samples_per_s']:>11.0f}"
            f"{row['val_acc']:>9.4f}{100 * row['data_fraction']:>7.1f}%{speedup:>8.2f}x{cpu_speedup:>6.2f}x"
        )
    sandbox = report["sandbox"]
    if sandbox is None:
        print("sandbox overhead: not measured (nasloop.evaluate.sandbox not available or skipped)")
    else:
        print(
            f"sandbox overhead: warm {sandbox['warm_overhead_s']:.3f} s per job vs cold `import torch` "
            f"{sandbox['cold_import_torch_s']:.2f} s ({sandbox['cold_over_warm']:.1f}x)"
        )


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
