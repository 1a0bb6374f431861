"""Multi-objective search quality against the true Pareto front: NB201 accuracy vs HW-NAS-Bench latency.

Runs real nasloop searches for `val_acc:max` and a device latency (`edgegpu_latency_ms:min`,
`raspi4_latency_ms:min`, ...) scored from the packaged NB201 CIFAR-10 table and HW-NAS-Bench's device
metrics (no training, no sandbox), each strategy over several seeds, and compares each run's front with
the true front of the whole space (every cell's test accuracy and latency):

- HV as a fraction of the true front's HV, both normalised by the true front's ideal and nadir, with the
  reference point (1.1, 1.1) in that normalised space;
- IGD from the true front to the run's front (same normalisation; lower is better);
- the number of the true front's networks the run queried;
- LLM calls made, and fallbacks: queries the strategy picked itself (a random mutation or crossover in
  the niche) because the LLM's answer was rejected again when asked once more.

A run's front is the non-dominated set of its candidates by validation accuracy and latency (what the
search could pick), placed at their test accuracy (selection on validation, reporting on test). An LLM
strategy runs 66 candidates (6 random, then 60 turns of two calls when no answer is rejected: the paper's
120 calls, 10 generations x 6 niches); a rejected answer is asked again, so each LLM run is also given at
the candidates it had after 120 calls ('@120 calls'), and every strategy at the mean of those counts and
at the --candidates budgets (equal candidates). Each device gets two tables: over every cell, and over the
cells above --min-accuracy (default 50%): NB201's cells whose output ignores the input (10% on CIFAR-10)
are the fastest of all, so they sit on the true front and stretch its accuracy axis from 87-94% down to
10%; in the first table whether a run queried one of them weighs more than its working networks. Writes
the tables (text) and a PNG of found vs true front per table to --out.

    python benchmarks/pareto_quality.py --devices edgegpu,raspi4 --llm-seeds 3 --seeds 10 \\
        --model qwen2.5-coder-1.5b --out runs/pq

Variants are `;`-separated strategies with options (`niche-pareto:partition=false`); the defaults are
niche-pareto (full), its no-partition and no-LLM ablations, random and NSGA-II. Traces are appended to
--out/traces.jsonl, so variants may run in separate invocations (`--report-only` only summarises);
running a command again skips the seeds already there and continues a run that was interrupted halfway.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from nasloop.benchmarks.harness import (
    Trace,
    TrueFront,
    Variant,
    front_score,
    query_history,
    run_variant,
    true_front,
)
from nasloop.registry import benchmarks

DEFAULT_VARIANTS = "niche-pareto;niche-pareto:partition=false;niche-pareto:llm=false;random;nsga2"
# initial_per_niche 1 (6 random cells), then one LLM turn of two calls per candidate: 6 + 60 = 66
# candidates make 120 LLM calls.
LLM_CANDIDATES = 66
# the paper's budget: with rejected answers asked again a run makes more than two calls per candidate, so
# the table also gives each LLM run at the candidates it had after this many calls.
LLM_CALLS = 120


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="edgegpu,raspi4")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--candidates", default="20,66,200", help="budgets reported (queries)")
    parser.add_argument("--seeds", type=int, default=10, help="seeds of strategies without an LLM")
    parser.add_argument("--llm-seeds", type=int, default=3)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar and candidate lines on stderr for the LLM runs"
    )
    parser.add_argument("--min-accuracy", type=float, default=0.5,
                        help="the second table of each device: only networks above this accuracy (test for the "
                             "true front, validation for a run's)")  # fmt: skip
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}", flush=True)
    table = benchmarks.get("nb201")().load("cifar10")
    variants = [Variant.parse(text.strip()) for text in args.variants.split(";") if text.strip()]
    budgets = sorted(int(value) for value in args.candidates.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    traces_file = args.out / "traces.jsonl"
    devices = args.devices.split(",")
    if not args.report_only:
        run_all(variants, devices, budgets, args, traces_file)
    traces = read_entries(traces_file)
    report = []
    for device in devices:
        mine = with_history([Trace(**trace["trace"]) for trace in traces if trace["device"] == device])
        for floor, suffix in ((None, ""), (args.min_accuracy, "_working")):
            truth = true_front(table, f"{device}_latency_ms", min_accuracy=floor)
            report.append(summary(device, truth, mine, budgets))
            plot_fronts(device, truth, mine, args.out / f"fronts_{device}{suffix}.png")
    text = "\n\n".join(report)
    (args.out / "pareto_quality.txt").write_text(text + "\n")
    print(text)
    return 0


def read_entries(path: Path) -> list[dict[str, Any]]:
    """The (device, trace) entries written to `path` so far (none when it does not exist yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_all(variants: list[Variant], devices: list[str], budgets: list[int], args: argparse.Namespace,
            traces_file: Path) -> None:  # fmt: skip
    backend = None
    llm = {"backend": "llama-cpp", "model": args.model, "deadline_s": 300}
    if any(variant.uses_llm for variant in variants):
        from nasloop.llm import make_backend
        from nasloop.llm.config import LLMConfig
        from nasloop.llm.llama_cpp_backend import available_cores

        backend = make_backend(LLMConfig(**llm, n_threads=available_cores()))
    done = {(entry["device"], entry["trace"]["variant"], entry["trace"]["seed"]) for entry in read_entries(traces_file)}
    for device in devices:
        objectives = ["val_acc:max", f"{device}_latency_ms:min"]
        for variant in variants:
            count = args.llm_seeds if variant.uses_llm else args.seeds
            budget = LLM_CANDIDATES if variant.uses_llm else max(budgets)
            for seed in range(count):
                if (device, variant.label, seed) in done:
                    print(f"{device} {variant.label} seed {seed}: already in {traces_file}", flush=True)
                    continue
                trace = run_variant(
                    variant, benchmark={"name": "nb201", "dataset": "cifar10"}, budget=budget, seed=seed,
                    root=args.out / "runs" / device, backend=backend, llm=llm if variant.uses_llm else None,
                    extra={"objectives": objectives}, progress=variant.uses_llm and not args.quiet,
                )  # fmt: skip
                with traces_file.open("a") as handle:
                    handle.write(json.dumps({"device": device, "trace": trace.__dict__}) + "\n")
                print(f"{device} {variant.label} seed {seed}: {trace.queries} candidates, {trace.llm_calls} LLM calls, "
                      f"{trace.wall_seconds:.0f} s", flush=True)  # fmt: skip
    if backend is not None:
        backend.close()


def with_history(traces: list[Trace]) -> list[Trace]:
    """`traces`, each LLM run written before traces held `calls_by_query` and `fallbacks` given them from
    its run's store (when the run directory is still there)."""
    for trace in traces:
        if trace.llm_calls and not (trace.calls_by_query and trace.fallbacks) and Path(trace.run_dir).exists():
            trace.calls_by_query, trace.fallbacks = query_history(trace.run_dir)
    return traces


def summary(device: str, truth: TrueFront, traces: list[Trace], budgets: list[int]) -> str:
    """The table of one device: per strategy and budget, HV fraction, IGD and true-front points over seeds.
    An LLM strategy also gets a row at LLM_CALLS calls (each seed at the candidates it had by then), and
    every strategy one at the mean of those candidate counts (equal candidates)."""
    at_calls = [trace.queries_within(LLM_CALLS) for trace in traces if trace.llm_calls]
    equal = round(statistics.fmean(at_calls)) if at_calls else None
    lines = [
        f"{device}: true front of {len(truth.points)} cells "
        f"({'every cell' if truth.min_accuracy is None else f'cells above {100 * truth.min_accuracy:g}% accuracy'}"
        f"; test accuracy vs {truth.latency}); HV normalised by the true front's ideal/nadir, reference point "
        f"(1.1, 1.1); true front HV {truth.hypervolume:.4f}",
    ]
    if equal is not None:
        lines.append(f"at {LLM_CALLS} LLM calls the LLM runs had {', '.join(map(str, at_calls))} candidates "
                     f"(rows '@{LLM_CALLS} calls'); equal candidates for the others: {equal}")  # fmt: skip
    width = max([44, *(len(trace.variant) + len(f" @{LLM_CALLS} calls") for trace in traces)])
    lines.append(f"{'strategy':<{width}} {'N':>4} {'seeds':>5} {'HV / true HV':>16} {'IGD':>15} {'true pts':>9} "
                 f"{'LLM calls':>9} {'fallbacks':>9}")  # fmt: skip
    by_variant: dict[str, list[Trace]] = {}
    for trace in traces:
        by_variant.setdefault(trace.variant, []).append(trace)
    for variant, runs in by_variant.items():
        largest = max(run.queries for run in runs)
        rows: list[tuple[str, list[int]]] = []
        if any(run.llm_calls for run in runs):
            rows.append((f"{variant} @{LLM_CALLS} calls", [run.queries_within(LLM_CALLS) for run in runs]))
        shown = {*budgets, min(LLM_CANDIDATES, largest), *([equal] if equal else [])}
        rows += [(variant, [budget] * len(runs)) for budget in sorted(shown) if budget <= largest]
        for label, sizes in rows:
            scores = [front_score(run, truth, size) for run, size in zip(runs, sizes, strict=True)]
            hv = [score.hv_fraction for score in scores]
            igd = [score.igd for score in scores if score.igd is not None]
            found = statistics.fmean(score.true_points_found for score in scores)
            calls = statistics.fmean(_calls_at(run, size) for run, size in zip(runs, sizes, strict=True))
            known = all(run.fallbacks or not run.llm_calls for run in runs)  # an old trace whose store is gone
            fallbacks = statistics.fmean(sum(run.fallbacks[:size]) for run, size in zip(runs, sizes, strict=True))
            lines.append(
                f"{label:<{width}} {round(statistics.fmean(sizes)):>4} {len(runs):>5} {_mean_std(hv):>16} "
                f"{_mean_std(igd):>15} {found:>9.1f} {calls:>9.0f} {f'{fallbacks:.1f}' if known else '-':>9}"
            )
    return "\n".join(lines)


def _calls_at(run: Trace, queries: int) -> float:
    """The LLM calls `run` had made by its `queries`-th query (pro rata when the trace lacks the count)."""
    if run.calls_by_query:
        return run.calls_by_query[min(queries, len(run.calls_by_query)) - 1]
    return run.llm_calls * min(queries, run.queries) / max(1, run.queries)


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {spread:.3f}"


def plot_fronts(device: str, truth: TrueFront, traces: list[Trace], path: Path) -> None:
    """The true front and, per strategy, seed 0's front at its largest budget, in test accuracy vs latency."""
    from nasloop.report.plots import fronts_figure, matplotlib_missing

    if matplotlib_missing() is not None:
        return
    latency = truth.latency
    curves = {"true front": [(p[latency], 100 * p["test_acc"]) for p in truth.points]}
    for trace in traces:
        if trace.seed == 0:
            front = front_score(trace, truth, trace.queries).front
            curves[trace.variant] = [(p[latency], 100 * p["test_acc"]) for p in front]
    over = "" if truth.min_accuracy is None else f", networks above {100 * truth.min_accuracy:g}%"
    fronts_figure(curves, path, title=f"NB201 CIFAR-10, {device}{over}: fronts found (seed 0) vs the true front",
                  xlabel=f"{latency}", ylabel="test accuracy (%)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
