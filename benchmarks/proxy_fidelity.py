"""Zero-cost proxy fidelity on real ground truth: rank correlation with NAS-Bench-201 CIFAR-10 accuracy.

For a fixed random sample of NB201 cells (distinct networks, `--cells`, seed `--seed`), each network is
rendered at the benchmark's size (3x32x32 inputs, 10 classes), initialised with the evaluation seed, and
scored by every registered proxy as nasloop's zero-cost stage scores it (one batch of `--batch` images);
the table prints Spearman's rho and Kendall's tau of each proxy (and of params and FLOPs) against the
table's 200-epoch validation accuracy, beside the published figures where the protocol can be matched.

No CIFAR-10 images are available here: the batch is nasloop's synthetic stand-in (`synthetic-cifar10`,
Gaussian pixels, random labels). Data-free proxies (synflow, params, flops, l2_norm; zen and zen_official
draw their own Gaussian inputs) do not read the images, so their protocol is the published one;
data-dependent proxies (snip, grasp, grad_norm, fisher, jacob_cov, naswot, zico, plain) see noise instead
of photos and their figures are not comparable with published ones measured on CIFAR-10 (the table says
which is which).

    python benchmarks/proxy_fidelity.py --cells 200 --out runs/proxy_fidelity.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import torch

from nasloop.data import load_splits
from nasloop.evaluate.job import DatasetSpec
from nasloop.evaluate.proxies import ALL_PROXIES, ProxyError, compute_proxies
from nasloop.registry import benchmarks, spaces

# Spearman rho against NB201 CIFAR-10 validation accuracy over all 15,625 cells, Abdelfattah et al.,
# "Zero-Cost Proxies for Lightweight NAS" (ICLR 2021), their notebook nasbench201_correlations.ipynb
# (zero-cost-nas): one batch of real CIFAR-10 images.
PUBLISHED_SPEARMAN = {
    "grad_norm": 0.594, "snip": 0.596, "grasp": 0.514, "fisher": 0.36, "synflow": 0.737, "jacob_cov": 0.731,
}  # fmt: skip
DATA_FREE = frozenset({"synflow", "params", "flops", "l2_norm", "zen", "zen_official"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--proxies", default=",".join(ALL_PROXIES))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, help="write the scores and the table as JSON")
    args = parser.parse_args()
    from scipy.stats import kendalltau, spearmanr

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    table = benchmarks.get("nb201")().load("cifar10")
    space = spaces.get("nb201")()
    cells = sorted(arch for arch in table if space.canonical(arch) == arch)
    sample = random.Random(args.seed).sample(cells, args.cells)
    inputs, targets = synthetic_batch(args.batch)
    names = [name.strip() for name in args.proxies.split(",") if name.strip()]
    scores: dict[str, list[float | None]] = {name: [] for name in names}
    started = time.perf_counter()
    for index, arch in enumerate(sample):
        namespace: dict = {}
        exec(compile(space.render(arch, (3, 32, 32), 10), "<nb201>", "exec"), namespace)  # our own rendering
        errors: dict[str, ProxyError] = {}
        torch.manual_seed(args.seed)  # the same initialisation for every cell's network, as the stage seeds it
        model = namespace["Net"]((3, 32, 32), 10)  # each proxy scores its own copy (the Proxy contract)
        values = compute_proxies(model, inputs, targets, names, num_classes=10, seed=args.seed, errors=errors)
        for name in names:
            scores[name].append(values.get(name))
        if (index + 1) % 20 == 0:
            print(f"{index + 1}/{len(sample)} cells, {time.perf_counter() - started:.0f} s", flush=True)
    accuracy = [table.query(arch)["val_acc"] for arch in sample]
    rows = []
    for name in names:
        pairs = [(score, acc) for score, acc in zip(scores[name], accuracy, strict=True) if score is not None]
        rho = spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic if len(pairs) > 2 else None
        tau = kendalltau([p[0] for p in pairs], [p[1] for p in pairs]).statistic if len(pairs) > 2 else None
        rows.append({"proxy": name, "cells": len(pairs), "spearman": rho, "kendall": tau,
                     "published_spearman": PUBLISHED_SPEARMAN.get(name), "data_free": name in DATA_FREE})  # fmt: skip
    elapsed = time.perf_counter() - started
    print(f"\nNB201 CIFAR-10, {len(sample)} random distinct cells (seed {args.seed}), batch {args.batch} of "
          f"synthetic 3x32x32 images; against the table's validation accuracy; {elapsed:.0f} s")  # fmt: skip
    print(f"{'proxy':<14} {'cells':>5} {'Spearman':>9} {'Kendall':>8} {'published':>10}  inputs")
    for row in rows:
        rho = f"{row['spearman']:.3f}" if row["spearman"] is not None else "-"
        tau = f"{row['kendall']:.3f}" if row["kendall"] is not None else "-"
        published = f"{row['published_spearman']:.3f}" if row["published_spearman"] is not None else "-"
        kind = "data-free: protocol matched" if row["data_free"] else "synthetic images (published: CIFAR-10)"
        print(f"{row['proxy']:<14} {row['cells']:>5} {rho:>9} {tau:>8} {published:>10}  {kind}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"cells": sample, "val_acc": accuracy, "scores": scores, "rows": rows}))
    return 0


def synthetic_batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `size` training images of `synthetic-cifar10`, normalised as the zero-cost stage does."""
    splits = load_splits(DatasetSpec(name="synthetic-cifar10"))
    images = splits.train_x[:size].float() / 255.0
    mean = torch.tensor(splits.mean).view(1, -1, 1, 1)
    std = torch.tensor(splits.std).view(1, -1, 1, 1)
    return (images - mean) / std, splits.train_y[:size].long()


if __name__ == "__main__":
    sys.exit(main())
