"""Search quality against ground truth: every strategy at equal queries on a tabular benchmark.

Runs real nasloop searches whose candidates are scored from a benchmark's table (no training), each
strategy over several seeds, and prints per strategy and budget the test accuracy of the best network by
validation accuracy (mean ± std over seeds), the regret to the table's optimum, the queries to reach a
threshold, the duplicate rate, and LLM tokens and seconds per query; it writes the table (text, JSON),
every run's trace and an anytime plot (PNG) to --out. The logic is `nasloop.benchmarks.harness`.

    python benchmarks/search_quality.py --benchmark nb201 --dataset cifar10 \\
        --variants "random;evolution" --budgets 10,20,50,100,200 --seeds 10 --out runs/sq-nb201
    python benchmarks/search_quality.py --benchmark nb201 --dataset cifar10 \\
        --variants "llm-history;reflective-zero-cost;niche-pareto" --budgets 10,20,50 --llm-seeds 3 \\
        --model qwen2.5-coder-1.5b --out runs/sq-nb201      # adds to the same table

Variants are `;`-separated, each `strategy` or `strategy:key=value,key=value` (strategy options, JSON
values). Each run's trace is appended to --out/traces.jsonl as it finishes, and the table summarises
every trace there, so strategies may run in separate invocations (`--report-only` only summarises).
Running a command again skips the seeds already there and continues a run that was interrupted halfway.
Strategies that call the LLM share one loaded model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from nasloop.benchmarks.harness import SINGLE_OBJECTIVE_OPTIONS, Trace, Variant, run_variant, summarise, write_results
from nasloop.registry import benchmarks

# REA's mean test accuracy at 50 queries (shared/benchmarks/README.md anchors): the default threshold.
THRESHOLDS = {
    ("nb201", "cifar10"): 0.9385,
    ("nb201", "cifar100"): 0.7185,
    ("nas-bench-macro", "cifar10"): 0.9294,
    ("channel-bench-resnet", "cifar10"): 0.9372,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default="nb201")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--table", help="a user table in the shared JSON format")
    parser.add_argument("--variants", default="random;evolution;llm-history;reflective-zero-cost;niche-pareto")
    parser.add_argument("--budgets", default="10,20,50,100,200")
    parser.add_argument("--seeds", type=int, default=10, help="seeds of strategies without an LLM")
    parser.add_argument("--llm-seeds", type=int, default=3, help="seeds of LLM strategies")
    parser.add_argument("--llm-budget", type=int, default=50, help="largest budget of LLM strategies")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--llm-threads", type=int, help="llama.cpp threads (default: every core)")
    parser.add_argument("--fitness", default="val_acc", help="every strategy's fitness: val_acc or a proxy name")
    parser.add_argument("--threshold", type=float, help="test accuracy (fraction); default REA's mean at 50")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report-only", action="store_true", help="summarise the traces in --out only")
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar and candidate lines on stderr for the LLM runs"
    )
    args = parser.parse_args()

    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}", flush=True)
    table = benchmarks.get(args.benchmark)().load(args.dataset, args.table)
    optimum = table.optimum().best_test_acc
    threshold = args.threshold
    if threshold is None:
        threshold = THRESHOLDS.get((args.benchmark, args.dataset), optimum)
    budgets = sorted(int(budget) for budget in args.budgets.split(","))
    variants = [
        Variant.parse(text.strip(), SINGLE_OBJECTIVE_OPTIONS) for text in args.variants.split(";") if text.strip()
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    traces_file = args.out / "traces.jsonl"
    if not args.report_only:
        run_all(variants, args, budgets, traces_file)
    traces = read_traces(traces_file)
    options = {variant.label: variant.options for variant in variants}
    title = f"{args.benchmark} {args.dataset}: fitness {args.fitness}"
    rows = summarise(traces, budgets, optimum, threshold)
    written = write_results(traces, rows, args.out, title=title, optimum=optimum, threshold=threshold, options=options)
    print((args.out / "search_quality.txt").read_text())
    print("options:", json.dumps(options))
    print("written:", ", ".join(str(path) for path in written))
    return 0


def read_traces(path: Path) -> list[Trace]:
    """The traces written to `path` so far (none when it does not exist yet)."""
    if not path.exists():
        return []
    return [Trace(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def run_all(variants: list[Variant], args: argparse.Namespace, budgets: list[int], traces_file: Path) -> None:
    backend = None
    llm = {"backend": "llama-cpp", "model": args.model, "deadline_s": 300, "n_threads": args.llm_threads}
    if any(variant.uses_llm for variant in variants):
        from nasloop.llm import make_backend
        from nasloop.llm.config import LLMConfig
        from nasloop.llm.llama_cpp_backend import available_cores

        threads = args.llm_threads or available_cores()
        backend = make_backend(LLMConfig(**{**llm, "n_threads": threads}))
    spec = {"name": args.benchmark, "dataset": args.dataset, **({"table": str(args.table)} if args.table else {})}
    done = {(trace.variant, trace.seed) for trace in read_traces(traces_file)}
    for variant in variants:
        count = args.llm_seeds if variant.uses_llm else args.seeds
        budget = min(max(budgets), args.llm_budget) if variant.uses_llm else max(budgets)
        for seed in range(args.first_seed, args.first_seed + count):
            if (variant.label, seed) in done:
                print(f"{variant.label} seed {seed}: already in {traces_file}", flush=True)
                continue
            trace = run_variant(
                variant, benchmark=spec, budget=budget, seed=seed, root=args.out / "runs",
                backend=backend, llm=llm if variant.uses_llm else None, fitness=args.fitness,
                extra={"objectives": [f"{args.fitness}:max"]},  # one objective (niche-pareto reads it)
                progress=variant.uses_llm and not args.quiet,
            )  # fmt: skip
            with traces_file.open("a") as handle:
                handle.write(json.dumps(trace.__dict__) + "\n")
            final = trace.best_test[-1] if trace.best_test else None
            print(
                f"{variant.label} seed {seed}: {trace.queries} queries, best test "
                f"{100 * final if final is not None else float('nan'):.2f}, {trace.duplicates} duplicates, "
                f"{trace.wall_seconds:.1f} s ({trace.llm_seconds:.1f} s LLM)",
                flush=True,
            )
    if backend is not None:
        backend.close()


if __name__ == "__main__":
    sys.exit(main())
