"""RZ-NAS benchmark: does the LLM's reflective mutation find better zero-cost scores than random search and
regularized evolution on the same budget of proxy evaluations?

For each seed, the three strategies search the NAS-Bench-201 cell space on a Fashion-MNIST subset with the
same number of proxy evaluations (`--evaluations`, counted as iterations: failed and duplicate proposals
count too) and the same proxy (`--proxy`, default SynFlow). `reflective-zero-cost` and `evolution` start
from `--population` random cells. Reported per strategy (median over seeds where there are several):

* the best proxy score found;
* the proxy evaluations needed to reach the random baseline's best score of the same seed;
* for the LLM: the share of mutation answers that were valid JSON, the share that were valid, evaluated
  architectures, and the seconds per LLM iteration (the mutation and reflection calls, from the stored
  latencies) with the embedded model (llm backend `llama-cpp`, `--model qwen2.5-coder-0.5b` by default for
  time, `qwen2.5-coder-1.5b` for quality).

Candidates are scored by the sandbox's `zero-cost` stage through the local executor. With `--in-process`
(or in a nasloop without that stage) they are scored in this process instead: the sandbox's own static and
build stages, then the registered proxy on the first 64 training images — the same numbers, without
process isolation.

    python benchmarks/rz_nas.py [--evaluations 30] [--population 10] [--seeds 1] [--model qwen2.5-coder-0.5b]
                                [--train-subset 2000] [--proxy synflow] [--in-process] [--json]

Trained accuracy from a lookup table. When a NAS-Bench-201 result table is available (it is not shipped:
it is large and has its own licence), training the finalists can be replaced by a lookup: an `Executor`
whose `submit` reads the cell from the rendered job code (`CELL_EDGES`, or the first docstring line
"NAS-Bench-201 network for the cell ..."), maps it with `nasloop.spaces.nb201.index_of` — after
translating to the table's own indexing, which differs from the enumeration order — to the table's
entry, and resolves the future with `EvalResult(State.COMPLETE, metrics={"val_acc": ..., "test_acc": ...})`
for jobs whose stages include `train`, and with the zero-cost metrics otherwise (or delegates those to
the local executor). Passed to `Search.start(..., executor=...)`, it gives the accuracy of each
strategy's finalists (`final_top_k`) at no training cost, which is how the published RZ-NAS numbers for
NAS-Bench-201 are obtained.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch

from nasloop.candidate import EvalResult, FailureKind, Purpose, State
from nasloop.config import SearchConfig, build_config
from nasloop.data import load_splits
from nasloop.engine import Search
from nasloop.evaluate.job import DatasetSpec, EvalJob
from nasloop.evaluate.proxies import ProxyError, compute_proxies
from nasloop.evaluate.stages import StageContext, run_stages
from nasloop.executors.base import Executor, ProgressCallback
from nasloop.registry import stages as stage_registry
from nasloop.store import CandidateRecord

STRATEGIES = ("random", "evolution", "reflective-zero-cost")
PROXY_BATCH = 64


class InProcessZeroCost(Executor):
    """Scores jobs in this process: the sandbox's static and build stages, then the job's proxies on the
    first `PROXY_BATCH` normalised training images (a proxy that fails is named in `info`, as the
    sandbox's zero-cost stage does). For machines or versions without the sandboxed zero-cost stage."""

    def __init__(self, dataset: DatasetSpec) -> None:
        self.data = load_splits(dataset).for_sandbox()

    def submit(self, job: EvalJob, on_progress: ProgressCallback | None = None) -> Future[EvalResult]:
        future: Future[EvalResult] = Future()
        future.set_result(self._evaluate(job))
        return future

    def _evaluate(self, job: EvalJob) -> EvalResult:
        context = StageContext(
            job=job.model_copy(update={"stages": ("static", "build")}), data=self.data, device=torch.device("cpu")
        )
        result = run_stages(context)
        if result.state is not State.COMPLETE or context.model is None:
            return result
        images = self.data.train_x[:PROXY_BATCH].float() / 255.0
        mean = torch.tensor(self.data.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.data.std).view(1, -1, 1, 1)
        inputs, targets = (images - mean) / std, self.data.train_y[:PROXY_BATCH]
        metrics, errors = dict(result.metrics), {}
        for name in job.proxies:
            try:
                metrics.update(
                    compute_proxies(
                        context.model, inputs, targets, [name], num_classes=self.data.num_classes, seed=job.seed
                    )
                )
            except ProxyError as error:
                errors[name] = str(error)
        info = {"proxy_errors": errors} if errors else {}
        return EvalResult(State.COMPLETE, metrics=metrics, stage="zero-cost", info=info)

    def shutdown(self) -> None:
        pass


def run_config(args: argparse.Namespace, strategy: str, seed: int) -> SearchConfig:
    """The run config of one strategy: everything but the strategy and its options is shared."""
    options: dict[str, Any] = {"final_top_k": 0}
    if strategy == "evolution":
        options.update(population_size=args.population, sample_size=max(1, args.population // 3))
    if strategy == "reflective-zero-cost":
        options.update(proxy=args.proxy, population_size=args.population, initial_batch_size=args.population)
    return build_config(
        {
            "strategy": strategy,
            "strategy_options": options,
            "space": "nb201",
            "dataset": {"name": "fashion-mnist", "train_subset": args.train_subset},
            "stages": ["static", "build", "zero-cost"],
            "proxies": [args.proxy],
            "objective": args.proxy,
            "budget": {"iterations": args.evaluations},
            "llm": {"backend": "llama-cpp", "model": args.model, "deadline_s": args.deadline},
            "limits": {"timeout_s": 300},
            "seed": seed,
        }
    )


def best_so_far(records: list[CandidateRecord], metric: str) -> list[float]:
    """The best score after each evaluation, in evaluation order (-inf before the first score)."""
    trajectory: list[float] = []
    best = float("-inf")
    for record in records:
        value = record.metrics.get(metric) if record.state in (State.COMPLETE, State.DUPLICATE) else None
        best = max(best, value) if value is not None else best
        trajectory.append(best)
    return trajectory


def llm_statistics(engine: Search, records: list[CandidateRecord]) -> dict[str, Any]:
    """Valid-JSON and valid-architecture rates of the mutations, and the LLM's time per iteration."""
    mutations = [record for record in records if record.notes.get("operator") == "llm-mutation"]
    if not mutations:
        return {}
    extraction = [r for r in mutations if r.failure is not None and r.failure.kind is FailureKind.EXTRACTION]
    evaluated = [r for r in mutations if r.state in (State.COMPLETE, State.DUPLICATE) and r.failure is None]
    calls = engine.store.llm_calls()
    by_role: dict[str, list[Any]] = {}
    for call in calls:
        by_role.setdefault(call.role, []).append(call)
    return {
        "mutations": len(mutations),
        "valid_json_rate": 1 - len(extraction) / len(mutations),
        "valid_architecture_rate": len(evaluated) / len(mutations),
        "duplicates": sum(1 for r in mutations if r.state is State.DUPLICATE),
        "llm_seconds_per_iteration": sum(call.latency_s for call in calls) / len(mutations),
        "calls": {
            role: {
                "count": len(items),
                "median_latency_s": statistics.median(call.latency_s for call in items),
                "median_prompt_tokens": statistics.median(call.prompt_tokens for call in items),
                "median_completion_tokens": statistics.median(call.completion_tokens for call in items),
            }
            for role, items in by_role.items()
        },
        "lessons": list(getattr(engine.strategy, "notes", [])),
    }


def run_one(args: argparse.Namespace, strategy: str, seed: int, work_dir: Path) -> dict[str, Any]:
    config = run_config(args, strategy, seed)
    executor = InProcessZeroCost(config.dataset) if args.in_process else None
    engine = Search.start(config, work_dir / f"{strategy}-{seed}", executor=executor, progress=False)
    started = time.perf_counter()
    summary = engine.run()
    wall_s = time.perf_counter() - started
    records = [record for record in engine.history if record.purpose is not Purpose.FINAL]
    trajectory = best_so_far(records, args.proxy)
    return {
        "strategy": strategy,
        "seed": seed,
        "evaluations": summary.iterations,
        "valid": summary.valid,
        "best": trajectory[-1] if trajectory else None,
        "trajectory": trajectory,
        "wall_s": wall_s,
        "seconds_per_iteration": wall_s / max(1, summary.iterations),
        "llm": llm_statistics(engine, records),
    }


def evaluations_to_reach(trajectory: list[float], target: float) -> int | None:
    """1-based number of evaluations after which the best score reached `target`, or None."""
    return next((index + 1 for index, value in enumerate(trajectory) if value >= target), None)


def summarise(results: list[dict[str, Any]], seeds: list[int]) -> dict[str, dict[str, Any]]:
    """Per strategy: median best score, evaluations to reach random's best (per seed), LLM figures."""
    random_best = {r["seed"]: r["best"] for r in results if r["strategy"] == "random"}
    table: dict[str, dict[str, Any]] = {}
    for strategy in STRATEGIES:
        runs = [r for r in results if r["strategy"] == strategy]
        if not runs:
            continue
        reach = [
            evaluations_to_reach(r["trajectory"], random_best[r["seed"]]) if r["seed"] in random_best else None
            for r in runs
        ]
        table[strategy] = {
            "median_best": statistics.median(r["best"] for r in runs),
            "best_per_seed": [r["best"] for r in runs],
            "evaluations_to_random_best": reach,
            "median_seconds_per_iteration": statistics.median(r["seconds_per_iteration"] for r in runs),
        }
        llm = [r["llm"] for r in runs if r["llm"]]
        if llm:
            table[strategy].update(
                valid_json_rate=statistics.median(item["valid_json_rate"] for item in llm),
                valid_architecture_rate=statistics.median(item["valid_architecture_rate"] for item in llm),
                llm_seconds_per_iteration=statistics.median(item["llm_seconds_per_iteration"] for item in llm),
            )
    return table


def print_table(table: dict[str, dict[str, Any]], args: argparse.Namespace, evaluator: str) -> None:
    print(
        f"NAS-Bench-201 on Fashion-MNIST ({args.train_subset} training images), proxy {args.proxy}, "
        f"{args.evaluations} evaluations, population {args.population}, LLM {args.model}, evaluator: {evaluator}"
    )
    header = f"{'strategy':<22}{'best ' + args.proxy:>16}{'evals to random best':>24}{'s/iter':>9}"
    print(header + f"{'valid JSON':>12}{'valid arch':>12}{'LLM s/iter':>12}")
    for strategy, row in table.items():
        reach = ",".join("-" if value is None else str(value) for value in row["evaluations_to_random_best"])
        line = f"{strategy:<22}{row['median_best']:>16.4g}{reach:>24}{row['median_seconds_per_iteration']:>9.1f}"
        if "valid_json_rate" in row:
            line += (
                f"{row['valid_json_rate']:>12.0%}{row['valid_architecture_rate']:>12.0%}"
                f"{row['llm_seconds_per_iteration']:>12.1f}"
            )
        print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaluations", type=int, default=30, help="proxy evaluations per strategy and seed")
    parser.add_argument("--population", type=int, default=10, help="initial random cells (RZ-NAS, evolution)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", help="embedded model (or qwen2.5-coder-1.5b)")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds per LLM call")
    parser.add_argument("--train-subset", type=int, default=2000)
    parser.add_argument("--proxy", default="synflow")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--in-process", action="store_true", help="score in this process, not in the sandbox")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if "zero-cost" not in stage_registry and not args.in_process:
        print("this nasloop has no sandboxed zero-cost stage: scoring in this process", file=sys.stderr)
        args.in_process = True
    evaluator = "in-process" if args.in_process else "sandbox (local executor)"
    seeds = list(range(args.seeds))
    strategies = [name for name in STRATEGIES if name in args.strategies.split(",")]
    with tempfile.TemporaryDirectory(prefix="rz-nas-") as temporary:
        work_dir = args.work_dir or Path(temporary)
        results = []
        for seed in seeds:
            for strategy in strategies:
                results.append(run_one(args, strategy, seed, work_dir))
                print(f"done: {strategy} seed {seed} best {results[-1]['best']:.4g}", file=sys.stderr)
    table = summarise(results, seeds)
    if args.json:
        print(json.dumps({"settings": vars(args) | {"work_dir": str(args.work_dir)}, "results": results,
                          "summary": table}, indent=2, default=str))  # fmt: skip
    else:
        print_table(table, args, evaluator)
        for result in results:
            if result["llm"]:
                print(f"LLM calls (seed {result['seed']}): {json.dumps(result['llm']['calls'])}")
                print(f"Lessons kept: {json.dumps(result['llm']['lessons'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
