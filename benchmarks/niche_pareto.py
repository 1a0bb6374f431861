"""niche-pareto benchmark: LLM-NAS against its ablations (no partitioning, no LLM) and random search, on
the same number of evaluations, scored by hypervolume (HV) and inverted generational distance (IGD).

For each seed, every variant searches the NAS-Bench-201 cell space on a Fashion-MNIST subset with two
objectives: predicted accuracy (the `--proxy` zero-cost score, NASWOT by default, maximised) and CPU
batch-1 latency (the sandbox's `hardware` stage, minimised). Variants:

* `niche-pareto`: six complexity niches, an LLM knowledge-base update and a guided mutation/crossover
  per niche and generation (`--model`, the embedded qwen2.5-coder-0.5b by default);
* `no-partition`: the same with one niche (`partition: false`);
* `no-llm`: the six niches with random mutation/crossover of Pareto parents (`llm: false`);
* `random`: the `random` strategy (uniform cells, never repeating one);
* `no-llm-no-partition` (on request): random operators in one niche, the partitioning alone.

Every variant gets `--initial-per-niche` x 6 random initial cells plus `--generations` x 6 children, so the
same number of evaluations. Each distinct cell is evaluated once per seed through the real sandbox (the
result, latency included, is shared by every variant that proposes it: identical proposals then compare
alike instead of differing by timing noise); the first three variants draw their initial cells from the
same per-iteration random streams, so they start from the same population.

Scores per seed: the reference front is the non-dominated set of everything any variant evaluated;
objectives are min-max normalised by that front's best and worst values (ideal 0, nadir 1); HV is taken
with reference point (1.1, 1.1) and reported as a fraction of the 1.1 x 1.1 box (points beyond it add
nothing); IGD is the mean distance from the reference front to the variant's points. Mean and standard
deviation over seeds. Latency is timed with one CPU thread per evaluation (steadier on a shared machine).

The network is rendered with a smaller skeleton than the benchmark's (`--stem-channels`, `--cells-per-stage`,
default 8 and 2 instead of 16 and 5) so that latency measurement stays affordable on a small shared CPU;
cells and niches are the same.

    python benchmarks/niche_pareto.py [--seeds 0,1,2] [--generations 2] [--initial-per-niche 2]
        [--variants niche-pareto,no-partition,no-llm,random] [--llm-seeds 0] [--model qwen2.5-coder-0.5b]
        [--train-subset 2000] [--out DIR] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from nasloop.candidate import EvalResult, State
from nasloop.config import SearchConfig, build_config
from nasloop.engine import Search
from nasloop.evaluate.job import EvalJob, Measure
from nasloop.executors.base import Executor, ProgressCallback
from nasloop.llm.base import LLMBackend
from nasloop.objectives import (
    Bounds,
    hypervolume,
    inverted_generational_distance,
    pareto_front,
    parse_objectives,
    reference_box_volume,
)
from nasloop.store import CandidateRecord, RunStore

VARIANTS = ("niche-pareto", "no-partition", "no-llm", "random")
# Also runnable: "no-llm-no-partition", which isolates the partitioning without an LLM.
LLM_VARIANTS = ("niche-pareto", "no-partition")
NICHES = 6
REFERENCE_POINT = 1.1
# Latency timed at batch 1 only, few repeats: the figure the objective uses, at a cost a shared CPU affords.
MEASURE = Measure(batch_sizes=(1,), repeats=11, warmup=3, proxy_batch_size=32)


class SharedEvaluations(Executor):
    """Evaluates each distinct job once through `inner` and answers repeats from memory; applies the
    benchmark's `measure` settings to every job. `shutdown` keeps `inner` running (call `close`)."""

    def __init__(self, inner: Executor, measure: Measure) -> None:
        self.inner = inner
        self.measure = measure
        self.capacity = inner.capacity
        self.results: dict[str, Future[EvalResult]] = {}
        self.evaluated = 0

    def submit(self, job: EvalJob, on_progress: ProgressCallback | None = None) -> Future[EvalResult]:
        job = job.model_copy(update={"measure": self.measure})
        key = hashlib.sha256(job.model_dump_json().encode()).hexdigest()
        if key not in self.results:
            self.evaluated += 1
            self.results[key] = self.inner.submit(job, on_progress)
        return self.results[key]

    def shutdown(self) -> None:
        pass

    def close(self) -> None:
        self.inner.shutdown()


def run_config(args: argparse.Namespace, variant: str, seed: int) -> SearchConfig:
    """One variant's run; everything but the strategy and its options is shared."""
    iterations = NICHES * (args.initial_per_niche + args.generations)
    options: dict[str, Any] = {"predictor": args.proxy, "initial_per_niche": args.initial_per_niche}
    if variant in ("no-partition", "no-llm-no-partition"):
        options["partition"] = False
    if variant in ("no-llm", "no-llm-no-partition"):
        options["llm"] = False
    strategy = "niche-pareto"
    if variant == "random":
        strategy, options = "random", {"metric": args.proxy, "final_top_k": 0}
    return build_config(
        {
            "strategy": strategy,
            "strategy_options": options,
            "space": "nb201",
            "space_options": {"stem_channels": args.stem_channels, "cells_per_stage": args.cells_per_stage},
            "dataset": {"name": "fashion-mnist", "train_subset": args.train_subset},
            "stages": ["static", "build", "hardware", "zero-cost"],
            "proxies": [args.proxy],
            "objective": args.proxy,
            "objectives": [f"{args.proxy}:max", "latency_ms:min"],
            "llm": {"backend": "llama-cpp", "model": args.model, "deadline_s": args.deadline, "n_ctx": 4096},
            "recipe": {"threads": 1},  # one thread per evaluation: steadier latency on a shared CPU
            "limits": {"timeout_s": 300},
            "budget": {"iterations": iterations},
            "seed": seed,
        },
        source=f"benchmark ({variant}, seed {seed})",
    )


def run_variant(
    config: SearchConfig, run_dir: Path, executor: SharedEvaluations, backend: LLMBackend | None
) -> dict[str, Any]:
    """Run one search; its evaluated points and cost figures."""
    started = time.perf_counter()
    engine = Search.start(config, run_dir, executor=executor, backend=backend, progress=False)
    summary = engine.run()
    wall_s = time.perf_counter() - started
    with RunStore(engine.run_dir.store_path, readonly=True) as store:
        records = store.candidates()
        calls = store.llm_calls()
    engine.close()
    return {
        "points": [point for record in records if (point := objective_point(record, config)) is not None],
        "iterations": summary.iterations,
        "valid": summary.valid,
        "llm_calls": int(summary.llm_totals["calls"]),
        "llm_tokens": int(summary.llm_totals["prompt_tokens"] + summary.llm_totals["completion_tokens"]),
        "llm_seconds": float(summary.llm_totals.get("latency_s", 0.0)),
        "failed_kinds": failure_counts(records),
        "wall_s": wall_s,
        "llm_errors": sum(1 for call in calls if call.error),
        "retries": sum(int(record.notes.get("attempts", 1)) - 1 for record in records),
    }


def objective_point(record: CandidateRecord, config: SearchConfig) -> dict[str, float] | None:
    """The candidate's objective metrics when it completed (duplicates count: the budget was spent)."""
    completed = record.state is State.COMPLETE or (record.state is State.DUPLICATE and record.failure is None)
    metrics = {name.split(":")[0]: record.metrics.get(name.split(":")[0]) for name in config.objectives}
    if not completed or any(value is None for value in metrics.values()):
        return None
    return {name: float(value) for name, value in metrics.items() if value is not None}


def failure_counts(records: list[CandidateRecord]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        if record.failure is not None and record.state is State.FAILED:
            counts[record.failure.kind.value] = counts.get(record.failure.kind.value, 0) + 1
    return counts


def score(runs: dict[str, dict[str, Any]], objective_texts: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """HV (fraction of the reference box) and IGD of every variant against the seed's reference front."""
    objectives = parse_objectives(",".join(objective_texts))
    everything = [point for run in runs.values() for point in run["points"]]
    reference = [everything[index] for index in pareto_front(everything, objectives)]
    bounds = Bounds.from_points(reference, objectives)
    box = reference_box_volume(REFERENCE_POINT, len(objectives))
    scores = {}
    for variant, run in runs.items():
        points = run["points"]
        front = [points[index] for index in pareto_front(points, objectives)] if points else []
        scores[variant] = {
            "hv": hypervolume(points, objectives, bounds, REFERENCE_POINT) / box if points else 0.0,
            "igd": inverted_generational_distance(points, reference, objectives, bounds) if points else float("nan"),
            "front_size": float(len(front)),
            "on_reference": float(sum(1 for point in front if point in reference)),
        }
    return scores


def mean_and_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def format_table(results: list[dict[str, Any]], variants: list[str]) -> str:
    """Mean ± standard deviation over seeds per variant, then the seeds' rows."""
    lines = [
        f"{'variant':<20} {'seeds':>5} {'HV':>15} {'IGD':>15} {'front':>6} {'valid':>6} {'LLM calls':>9} {'wall s':>7}"
    ]
    for variant in variants:
        rows = [seed_result for seed_result in results if variant in seed_result["scores"]]
        if not rows:
            continue
        hv = [row["scores"][variant]["hv"] for row in rows]
        igd = [row["scores"][variant]["igd"] for row in rows]
        front = statistics.mean(row["scores"][variant]["front_size"] for row in rows)
        runs = [row["runs"][variant] for row in rows]
        valid = sum(run["valid"] for run in runs) / max(1, sum(run["iterations"] for run in runs))
        calls = statistics.mean(run["llm_calls"] for run in runs)
        wall = statistics.mean(run["wall_s"] for run in runs)
        lines.append(
            f"{variant:<20} {len(rows):>5} {mean_and_spread(hv):>15} {mean_and_spread(igd):>15} {front:>6.1f} "
            f"{valid:>6.0%} {calls:>9.0f} {wall:>7.0f}"
        )
    for row in results:
        cells = ", ".join(f"{v} HV {s['hv']:.3f} IGD {s['igd']:.3f}" for v, s in row["scores"].items())
        lines.append(f"seed {row['seed']}: {cells} ({row['evaluations']} distinct evaluations)")
    return "\n".join(lines)


def run_seed(args: argparse.Namespace, seed: int, variants: list[str], out: Path, backend: Any) -> dict[str, Any]:
    """Every variant of one seed, sharing one sandbox pool and its evaluations."""
    from nasloop.registry import executors

    first = run_config(args, variants[0], seed)
    inner = executors.get("local").from_config(first, work_dir=out / f"seed-{seed}" / "jobs")
    shared = SharedEvaluations(inner, MEASURE)
    runs: dict[str, dict[str, Any]] = {}
    try:
        for variant in variants:
            uses_llm = variant in LLM_VARIANTS
            if uses_llm and seed not in args.llm_seeds:
                continue
            print(f"seed {seed}: {variant} ...", file=sys.stderr, flush=True)
            config = run_config(args, variant, seed)
            runs[variant] = run_variant(config, out / f"seed-{seed}" / variant, shared, backend if uses_llm else None)
    finally:
        shared.close()
    return {"seed": seed, "runs": runs, "scores": score(runs, first.objectives), "evaluations": shared.evaluated}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated run seeds")
    parser.add_argument("--llm-seeds", default=None, help="seeds that run the LLM variants (default: all; '': none)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--generations", type=int, default=2, help="generations after the initial population")
    parser.add_argument("--initial-per-niche", type=int, default=2)
    parser.add_argument("--proxy", default="naswot", help="zero-cost proxy that predicts accuracy")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", help="embedded model of the LLM variants")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds per LLM call")
    parser.add_argument("--train-subset", type=int, default=2000, help="Fashion-MNIST training images")
    parser.add_argument("--stem-channels", type=int, default=8)
    parser.add_argument("--cells-per-stage", type=int, default=2)
    parser.add_argument("--out", type=Path, help="where the runs go (default: a temporary directory)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    chosen = args.llm_seeds
    args.llm_seeds = seeds if chosen is None else [int(seed) for seed in chosen.split(",") if seed.strip()]
    variants = args.variants.split(",")
    out = args.out or Path(tempfile.mkdtemp(prefix="nasloop-bench-niche-"))
    backend = None
    if any(variant in LLM_VARIANTS for variant in variants) and args.llm_seeds:
        from nasloop.llm import make_backend

        backend = make_backend(run_config(args, "niche-pareto", seeds[0]).llm)  # loaded once for every run
    results = []
    for seed in seeds:
        results.append(run_seed(args, seed, variants, out, backend))
        (out / "results.json").write_text(json.dumps(results, indent=1))
        print(format_table(results, variants), file=sys.stderr, flush=True)
    print(json.dumps(results, indent=1) if args.json else format_table(results, variants))
    print(f"runs and results.json in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
