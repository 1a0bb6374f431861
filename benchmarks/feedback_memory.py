"""Feedback-memory, published form vs nasloop's default and its variants, and one-shot, on the same budget.

Runs real searches with the embedded model on a Fashion-MNIST subset, all with the same seed, budget and
training recipe, and prints for each: the valid rate before and after repair (an iteration is valid
after repair when its candidate or a repair or retry of it completed), the best validation accuracy and
its gain over the seed network, the distinct architectures among the valid candidates (canonical hash),
seconds per iteration split into LLM and evaluation time, and tokens per iteration.

    python benchmarks/feedback_memory.py --iterations 20 --model qwen2.5-coder-1.5b --json

(a) `paper`: the published prompts and loop, a cold start (nasloop's changes below off)
(b) `nasloop`: nasloop's defaults: the seed network first, edits of the best valid model, one repair
    attempt (wrong layer sizes fixed in code), repeats of evaluated code sent back once, clean-ups,
    architectural ideas for the improver, recipe suggestions filtered
(c) `cold`: (b) without a seed network (`seed_model: none`): what the seed is worth
(d) `one-shot`: the generator alone, no feedback (independent edits of the seed network)
(e) `diff`: (b) with `edit_format: diff` (SEARCH/REPLACE edits instead of complete modules)

The variants may run in separate processes (`--variants one-shot` with the same `--run-root`), and
`--report-only --run-root DIR` prints the table from the runs stored there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nasloop
from nasloop.candidate import Purpose, State
from nasloop.config import build_config
from nasloop.engine import valid_after_repair
from nasloop.store import RunDir, RunStore

EDIT_OUTCOMES = ("diff", "full", "failed")  # notes["edit"]: how an answer to a diff request was used

VARIANTS: dict[str, dict[str, Any]] = {
    "paper": {"strategy": "feedback-memory", "strategy_options": {"prompt_style": "paper"}},
    "nasloop": {"strategy": "feedback-memory", "strategy_options": {}},
    "cold": {"strategy": "feedback-memory", "strategy_options": {}, "seed_model": "none"},
    "one-shot": {"strategy": "one-shot", "strategy_options": {}},
    "diff": {"strategy": "feedback-memory", "strategy_options": {"edit_format": "diff"}},
}


def run_variant(name: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    config = build_config(
        {
            **VARIANTS[name],
            "llm": {
                "backend": "llama-cpp",
                "model": args.model,
                "deadline_s": args.llm_deadline,
                "n_threads": args.llm_threads,
                "prompt_lookup": None if args.prompt_lookup is None else args.prompt_lookup == "on",
            },
            "dataset": {"name": "fashion-mnist", "train_subset": args.train_subset},
            "recipe": {"name": "fast", "epochs": 1, "threads": args.train_threads},
            "limits": {"timeout_s": 300, "max_params": 2_000_000},
            "budget": {"iterations": args.iterations},
            "seed": args.seed,
        }
    )
    started = time.perf_counter()
    summary = nasloop.search(config, run_dir=root / name, progress=not args.quiet)
    wall_s = time.perf_counter() - started
    return measure(RunDir(root / name), wall_s, summary.best.metrics["val_acc"] if summary.best else None)


def stored_result(run_dir: RunDir) -> dict[str, Any]:
    """The figures of a finished run, from its store alone (its own elapsed time, its best val_acc)."""
    with RunStore(run_dir.store_path, readonly=True) as store:
        wall_s = float(store.get_meta("elapsed_s") or 0.0)
        complete = [c for c in store.candidates() if c.state is State.COMPLETE and "val_acc" in c.metrics]
    return measure(run_dir, wall_s, max((c.metrics["val_acc"] for c in complete), default=None))


def measure(run_dir: RunDir, wall_s: float, best_val_acc: float | None) -> dict[str, Any]:
    with RunStore(run_dir.store_path, readonly=True) as store:
        candidates = store.candidates()
        calls = store.llm_calls()
    iterations = [c for c in candidates if c.purpose.counts_as_iteration]
    count = max(len(iterations), 1)
    valid = sum(1 for c in iterations if c.state is State.COMPLETE)
    seed = next((c for c in candidates if c.purpose is Purpose.SEED), None)
    seed_val = seed.metrics.get("val_acc") if seed is not None and seed.state is State.COMPLETE else None
    searched = [c for c in candidates if c.purpose is not Purpose.SEED and c.state is State.COMPLETE]
    distinct = len({c.hash for c in searched})
    best_searched = max((c.metrics["val_acc"] for c in searched if "val_acc" in c.metrics), default=None)
    resent = sum(1 for c in candidates if c.notes.get("repeat_of"))
    size_fixes = sum(1 for c in candidates if c.notes.get("size_fix"))
    duplicates = sum(1 for c in candidates if c.state is State.DUPLICATE)
    llm_s = sum(call.latency_s for call in calls)
    eval_s = sum(c.timings.get("total_s", 0.0) for c in candidates)
    tokens = sum(call.prompt_tokens + call.completion_tokens for call in calls)
    kinds: dict[str, int] = {}
    for c in candidates:
        if c.failure is not None:
            kinds[c.failure.kind.value] = kinds.get(c.failure.kind.value, 0) + 1
    return {
        "iterations": len(iterations),
        "candidates": len(candidates),
        "valid_rate": valid / count,
        "valid_after_repair": valid_after_repair(candidates) / count,
        "valid_candidates": len(searched),
        "distinct_valid": distinct,
        "best_val_acc": best_val_acc,
        "seed_val_acc": seed_val,
        "gain_over_seed": best_searched - seed_val if best_searched is not None and seed_val is not None else None,
        "edits": {
            kind: sum(1 for c in candidates if c.notes.get("edit") == kind) for kind in ("diff", "full", "failed")
        },
        "llm_s_per_iteration": llm_s / count,
        "eval_s_per_iteration": eval_s / count,
        "wall_s_per_iteration": wall_s / count,
        "tokens_per_iteration": tokens / count,
        "failures": kinds,
        "repeats_resent": resent,
        "size_fixes": size_fixes,
        "duplicates": duplicates,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--train-subset", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=43)
    parser.add_argument("--llm-deadline", type=float, default=300.0)
    parser.add_argument("--llm-threads", type=int, help="llama.cpp threads (default: its own choice)")
    parser.add_argument("--train-threads", type=int, help="threads per evaluation (default: cores per worker)")
    parser.add_argument("--variants", default="paper,nasloop,cold,one-shot,diff")
    parser.add_argument("--prompt-lookup", choices=["on", "off"], help="embedded backend: prompt-lookup decoding")
    parser.add_argument("--run-root", type=Path, help="keep the runs here (default: a temporary directory)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="no search: the table of the runs in --run-root")
    args = parser.parse_args()
    if args.report_only and args.run_root is None:
        parser.error("--report-only needs --run-root DIR")
    root = args.run_root or Path(tempfile.mkdtemp(prefix="nasloop-bench-fm-"))
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}", flush=True)
    names = args.variants.split(",")
    if args.report_only:
        results = {name: stored_result(RunDir(root / name)) for name in names if RunDir(root / name).exists()}
    else:
        results = {name: run_variant(name, args, root) for name in names}
    if args.json:
        print(
            json.dumps(
                {"model": args.model, "iterations": args.iterations, "runs": str(root), "results": results}, indent=2
            )
        )
        return 0
    header = (
        f"{'variant':<10} {'valid':>6} {'+repair':>7} {'best val':>9} {'vs seed':>8} {'distinct':>9} "
        f"{'LLM s/it':>9} {'eval s/it':>9} {'tok/it':>7}"
    )
    print(f"model {args.model}, {args.iterations} iterations, Fashion-MNIST subset {args.train_subset}; runs in {root}")
    print(header)
    for name, row in results.items():
        best = f"{row['best_val_acc']:.4f}" if row["best_val_acc"] is not None else "-"
        gain = f"{row['gain_over_seed']:+.4f}" if row.get("gain_over_seed") is not None else "-"
        distinct = f"{row['distinct_valid']}/{row['valid_candidates']}"
        print(
            f"{name:<10} {row['valid_rate']:>6.0%} {row['valid_after_repair']:>7.0%} {best:>9} {gain:>8} "
            f"{distinct:>9} {row['llm_s_per_iteration']:>9.1f} {row['eval_s_per_iteration']:>9.1f} "
            f"{row['tokens_per_iteration']:>7.0f}"
        )
        print(
            f"{'':<10} failures: {row['failures']}; duplicates recorded: {row['duplicates']}; "
            f"repeats caught: {row['repeats_resent']}; layer sizes fixed in code: {row['size_fixes']}; "
            f"edits: {row['edits']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
