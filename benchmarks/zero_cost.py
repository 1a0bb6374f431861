"""Zero-cost proxy benchmark: how well does each proxy rank small CNNs by their trained accuracy, and
what does computing them cost?

1. Generates `--count` CNNs from a structured family (stages, blocks per stage, width, kernel size,
   residual connections, BatchNorm or not), each usable as `Net(in_shape, num_classes)`.
2. For each: computes every registered proxy at initialisation on one Fashion-MNIST training batch of
   64, then trains the same initial weights with nasloop's `fast` recipe (`--epochs` passes over a
   `--train-subset` of the training split, batch `--batch-size`) and scores its predictions on the first
   `--val-size` images of the validation split.
3. Prints Kendall τ and Spearman ρ of each proxy against validation accuracy (params and FLOPs are the
   baselines to beat), over the candidates where both are defined, whatever comes out.
4. Times all proxies together per candidate on CPU for CIFAR-sized inputs (3×32×32, batch 64) on the
   first `--timing-count` candidates, and reports the median (target: ≤ 2 s).

    python benchmarks/zero_cost.py [--count 40] [--train-subset 5000] [--epochs 1] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from scipy import stats
from torch import nn

from nasloop.data import Splits, load_splits
from nasloop.data.splits import SandboxData
from nasloop.evaluate.job import DatasetSpec, Recipe
from nasloop.evaluate.proxies import ALL_PROXIES, ProxyError, compute_proxies
from nasloop.evaluate.train import NonFiniteLoss, accuracy, train_and_predict

PROXY_BATCH = 64
CIFAR_SHAPE = (3, 32, 32)

# ----------------------------------------------------------------------------------- the CNN family


@dataclass(frozen=True)
class FamilyConfig:
    """One point of the family: `stages` stages (each halves the resolution with a stride-2 first
    convolution and doubles the width), `blocks` blocks per stage, `width` channels in the first stage,
    `kernel`×`kernel` convolutions, residual blocks or plain ones, BatchNorm or not."""

    stages: int
    blocks: int
    width: int
    kernel: int
    residual: bool
    batchnorm: bool

    def label(self) -> str:
        kind = "res" if self.residual else "plain"
        norm = "bn" if self.batchnorm else "nobn"
        return f"s{self.stages}b{self.blocks}w{self.width}k{self.kernel}-{kind}-{norm}"


def conv_unit(config: FamilyConfig, channels_in: int, channels_out: int, stride: int) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(channels_in, channels_out, config.kernel, stride, config.kernel // 2, bias=not config.batchnorm)
    ]
    return [*layers, nn.BatchNorm2d(channels_out)] if config.batchnorm else layers


class Block(nn.Module):
    """Plain: conv-(BN)-ReLU. Residual: two conv-(BN) units around an identity (or 1×1 projection)."""

    def __init__(self, config: FamilyConfig, channels_in: int, channels_out: int, stride: int) -> None:
        super().__init__()
        self.residual = config.residual
        if not config.residual:
            self.body = nn.Sequential(*conv_unit(config, channels_in, channels_out, stride), nn.ReLU())
            return
        self.body = nn.Sequential(
            *conv_unit(config, channels_in, channels_out, stride),
            nn.ReLU(),
            *conv_unit(config, channels_out, channels_out, 1),
        )
        same = stride == 1 and channels_in == channels_out
        self.shortcut = nn.Identity() if same else nn.Conv2d(channels_in, channels_out, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.residual:
            return self.body(x)
        return torch.relu(self.body(x) + self.shortcut(x))


class FamilyNet(nn.Module):
    """The family's network for one config; `functools.partial(FamilyNet, config)` is its `Net`."""

    def __init__(self, config: FamilyConfig, in_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = in_shape[0]
        for stage in range(config.stages):
            width = config.width * 2**stage
            for index in range(config.blocks):
                stride = 2 if index == 0 else 1
                blocks.append(Block(config, channels, width, stride))
                channels = width
        self.features = nn.Sequential(*blocks)  # (width·2^(stages−1), H/2^stages, W/2^stages)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


NetFactory = Callable[[tuple[int, int, int], int], nn.Module]


def family(count: int, seed: int) -> list[FamilyConfig]:
    """`count` distinct configs drawn without replacement from the full grid (192 points)."""
    grid = [
        FamilyConfig(*point)
        for point in itertools.product((1, 2, 3), (1, 2), (8, 12, 16, 24), (3, 5), (False, True), (False, True))
    ]
    if count > len(grid):
        raise SystemExit(f"--count must be at most {len(grid)}")
    return random.Random(seed).sample(grid, count)


def net_factory(config: FamilyConfig) -> NetFactory:
    return functools.partial(FamilyNet, config)


# ----------------------------------------------------------------------------------- measurements


def proxy_batch(splits: Splits) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 64 training images, normalised as the trainer does, with their labels."""
    images = splits.train_x[:PROXY_BATCH].float() / 255.0
    mean = torch.tensor(splits.mean).view(1, -1, 1, 1)
    std = torch.tensor(splits.std).view(1, -1, 1, 1)
    return (images - mean) / std, splits.train_y[:PROXY_BATCH]


def all_proxies(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, num_classes: int, seed: int
) -> tuple[dict[str, float], dict[str, str], float]:
    """Every proxy together (shared passes computed once): values, errors by proxy, seconds."""
    errors: dict[str, ProxyError] = {}
    start = time.perf_counter()
    values = compute_proxies(model, inputs, targets, ALL_PROXIES, num_classes=num_classes, seed=seed, errors=errors)
    seconds = time.perf_counter() - start
    return values, {name: str(error) for name, error in errors.items()}, seconds


def evaluate_candidate(
    config: FamilyConfig, splits: Splits, sandbox: SandboxData, recipe: Recipe, seed: int
) -> dict[str, Any]:
    """Proxies at initialisation, then the same initial weights trained; val_acc on `sandbox.val_x`."""
    torch.manual_seed(seed)
    model = net_factory(config)(splits.in_shape, splits.num_classes)
    inputs, targets = proxy_batch(splits)
    values, errors, seconds = all_proxies(model, inputs, targets, splits.num_classes, seed)
    record: dict[str, Any] = {"config": config.label(), "proxies": values, "proxy_errors": errors}
    record["proxies_s"] = seconds
    start = time.perf_counter()
    try:
        output = train_and_predict(model, sandbox, recipe, seed=seed, device=torch.device("cpu"))
    except NonFiniteLoss as error:
        record.update(val_acc=None, train_failure=str(error))
    else:
        val_labels = splits.val_y[: len(sandbox.val_x)]
        record.update(val_acc=accuracy(output.val_pred, val_labels), train_failure=None)
    record["train_s"] = time.perf_counter() - start
    return record


def correlations(records: list[dict[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Kendall τ and Spearman ρ of each proxy against val_acc, over candidates where both exist."""
    table: dict[str, dict[str, float | int | None]] = {}
    for name in ALL_PROXIES:
        pairs = [
            (record["proxies"][name], record["val_acc"])
            for record in records
            if record["val_acc"] is not None and name in record["proxies"]
        ]
        if len(pairs) < 3:
            table[name] = {"n": len(pairs), "kendall_tau": None, "spearman_rho": None}
            continue
        scores, accuracies = zip(*pairs, strict=True)
        table[name] = {
            "n": len(pairs),
            "kendall_tau": float(stats.kendalltau(scores, accuracies).statistic),
            "spearman_rho": float(stats.spearmanr(scores, accuracies).statistic),
        }
    return table


def cifar_timing(configs: list[FamilyConfig], seed: int) -> dict[str, Any]:
    """Seconds for all proxies together per candidate at 3×32×32, batch 64, on CPU (after a warm-up)."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(PROXY_BATCH, *CIFAR_SHAPE, generator=generator)
    targets = torch.randint(0, 10, (PROXY_BATCH,), generator=generator)
    all_proxies(net_factory(configs[0])(CIFAR_SHAPE, 10), inputs, targets, 10, seed)  # warm-up: kernels, caches
    totals: dict[str, float] = {}
    for config in configs:
        torch.manual_seed(seed)
        totals[config.label()] = all_proxies(net_factory(config)(CIFAR_SHAPE, 10), inputs, targets, 10, seed)[2]
    return {
        "candidates": len(configs),
        "threads": torch.get_num_threads(),
        "median_s": statistics.median(totals.values()),
        "max_s": max(totals.values()),
        "seconds": totals,
    }


# ----------------------------------------------------------------------------------- report


def print_table(result: dict[str, Any]) -> None:
    records = result["candidates"]
    trained = [record["val_acc"] for record in records if record["val_acc"] is not None]
    spread = f"{min(trained):.3f}..{max(trained):.3f} (median {statistics.median(trained):.3f})"
    print(f"{len(records)} candidates, {len(trained)} trained without divergence; val_acc {spread}")
    print(f"{'proxy':<10} {'n':>3} {'Kendall τ':>10} {'Spearman ρ':>11}")
    for name, row in result["correlations"].items():
        tau, rho = row["kendall_tau"], row["spearman_rho"]
        cells = f"{tau:>10.3f} {rho:>11.3f}" if tau is not None and rho is not None else f"{'-':>10} {'-':>11}"
        print(f"{name:<10} {row['n']:>3} {cells}")
    timing = result["timing"]
    where = f"CPU ({timing['threads']} threads), 3×32×32 batch 64"
    seconds = f"median {timing['median_s']:.2f} s, max {timing['max_s']:.2f} s"
    print(f"all proxies per candidate, {where}: {seconds} over {timing['candidates']} candidates")
    failures = {name: sum(name in r["proxy_errors"] for r in records) for name in ALL_PROXIES}
    if any(failures.values()):
        print("proxy errors: " + ", ".join(f"{name} ×{count}" for name, count in failures.items() if count))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=40, help="candidates to generate and train")
    parser.add_argument("--train-subset", type=int, default=5000, help="Fashion-MNIST training images")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=64, help="training batch (fast recipe, LR scaled)")
    parser.add_argument("--val-size", type=int, default=2000, help="validation images scored per candidate")
    parser.add_argument("--timing-count", type=int, default=10, help="candidates timed at CIFAR size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads for training and proxies (1 suits a shared CPU)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    # On a CPU shared with other jobs, several intra-op threads per process spin against each other
    # (one-epoch training ran ~30× slower with 2 threads than with 1 on a loaded 2-core machine).
    torch.set_num_threads(args.threads)

    splits = load_splits(DatasetSpec(name="fashion-mnist", train_subset=args.train_subset))
    # The test split is not used here (a small slice keeps the trainer's test prediction cheap), and
    # the first `--val-size` validation images are enough to rank candidates.
    sandbox = dataclasses.replace(splits.for_sandbox(), val_x=splits.val_x[: args.val_size], test_x=splits.test_x[:256])
    recipe = Recipe(name="fast", epochs=args.epochs, batch_size=args.batch_size, threads=args.threads)
    configs = family(args.count, args.seed)
    records = []
    for index, config in enumerate(configs):
        records.append(evaluate_candidate(config, splits, sandbox, recipe, args.seed))
        if not args.json:
            print(f"[{index + 1}/{len(configs)}] {config.label()}: val_acc {records[-1]['val_acc']}", file=sys.stderr)
    result = {
        "settings": vars(args),
        "candidates": records,
        "correlations": correlations(records),
        "timing": cifar_timing(configs[: args.timing_count], args.seed),
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_table(result)
    return result


if __name__ == "__main__":
    main()
