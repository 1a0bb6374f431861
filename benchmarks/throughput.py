"""Benchmark: candidates per hour, sequential against pipelined search, same LLM, data and budget.

Each mode runs one real search (embedded llama-cpp model, the real sandbox; `--strategy`, by default
`feedback-memory`) on a Fashion-MNIST subset with the same iteration budget and seed:

- `sequential`: one worker, `max_stale: 0` — the LLM waits for each evaluation and the evaluation for
  the LLM (the published loop);
- `pipelined`: one worker, `max_stale: 1` — the next proposal is generated while the current candidate
  trains;
- `pipelined-2-workers`: two workers, `max_stale: 1`;
- `islands-2-workers`: the `islands` strategy (two feedback-memory chains), two workers.

Which candidates a feedback strategy writes depends on what it has seen, so a pipelined run (whose
proposals see fewer results) writes other networks than the sequential one, and a few iterations are
far from averaging that out: one candidate that trains for minutes, or one more that fails in a second,
moves candidates per hour more than pipelining does. Two figures separate the two. `overlap` is the
speed-up on a run's own work: its LLM time plus its evaluation time over its wall time (about 1 for a
sequential run). `--strategy one-shot` samples every proposal from the same prompt with the same
per-call seed in every mode, so every mode evaluates the same candidates and the ratio of candidates
per hour is pipelining alone.

The model is loaded once, before any timing, and shared by every mode; before each mode's clock starts
its sandbox workers are started and the model answers one fixed prompt, so that every mode begins from
the same model state (llama.cpp reuses the cached prefix of the previous call). For each mode it prints
candidates per hour, the wall time, how busy the LLM and the workers were (their summed time over the
wall time), their `overlap` (the sum of both: at most 1 without overlap, up to 1 + workers with it), the
mean staleness, the valid rate, how many candidates trained (repairs included), the LLM's decoding
speed, then the speed-up of each mode over `sequential`. The machine's load average is printed with
every run: on a shared CPU the LLM's speed changes with the load, and a speed-up is only a pipelining
speed-up when the LLM ran at a similar speed in both modes and the candidates trained (workers busy well
above 0).

    python benchmarks/throughput.py [--model qwen2.5-coder-0.5b|qwen2.5-coder-1.5b] [--iterations 4]
        [--strategy feedback-memory|one-shot]
        [--train-subset 10000] [--modes sequential,pipelined,pipelined-2-workers] [--out DIR] [--json]
        [--llm-threads 1] [--train-threads 1]   (on 2 cores: one for the LLM, one for training)
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

from nasloop.candidate import State
from nasloop.config import SearchConfig, build_config
from nasloop.engine import Search
from nasloop.executors.local import LocalExecutor
from nasloop.llm import make_backend
from nasloop.llm.base import LLMBackend, Sampling

MODES: dict[str, dict[str, Any]] = {
    "sequential": {"workers": 1, "max_stale": 0},
    "pipelined": {"workers": 1, "max_stale": 1},
    "pipelined-2-workers": {"workers": 2, "max_stale": 1},
    "islands-2-workers": {"workers": 2, "max_stale": 0, "strategy": "islands", "options": {"islands": 2}},
}


def search_config(mode: str, args: argparse.Namespace) -> SearchConfig:
    """The same search for every mode; only the executor settings (and the islands wrapper) differ."""
    settings = MODES[mode]
    return build_config(
        {
            "strategy": settings.get("strategy", args.strategy),
            "strategy_options": settings.get("options", {}),
            "llm": {
                "backend": "llama-cpp",
                "model": args.model,
                "deadline_s": args.deadline,
                "n_threads": args.llm_threads,
            },
            "dataset": {"name": "fashion-mnist", "train_subset": args.train_subset},
            "recipe": {"name": "fast", "epochs": 1, "threads": args.train_threads},
            "limits": {"timeout_s": 300, "max_params": 2_000_000},
            "budget": {"iterations": args.iterations},
            "executor": {"workers": settings["workers"], "max_stale": settings["max_stale"]},
            "seed": args.seed,
        },
        source=f"benchmark ({mode})",
    )


def warm_backend(args: argparse.Namespace) -> LLMBackend:
    """The embedded model, loaded and run once so that no mode pays for loading it."""
    settings = {"backend": "llama-cpp", "model": args.model, "deadline_s": args.deadline, "n_threads": args.llm_threads}
    config = build_config({"llm": settings}).llm
    backend = make_backend(config)
    say_ok(backend)
    return backend


def say_ok(backend: LLMBackend) -> None:
    backend.complete([{"role": "user", "content": "Say OK."}], Sampling(max_tokens=4, temperature=0.0))


def run_mode(mode: str, args: argparse.Namespace, backend: LLMBackend, out: Path) -> dict[str, Any]:
    """One search in `mode`; its throughput figures."""
    config = search_config(mode, args)
    executor = LocalExecutor.from_config(config, work_dir=out / f"{mode}-workers")
    executor.wait_ready()
    # The same prompt before every mode: llama.cpp reuses the cached prefix of the previous call, so every
    # mode's first proposal then starts from the same model state (and, with the same seed, is the same).
    say_ok(backend)
    load_before = os.getloadavg()[0]
    engine = Search.start(config, out / mode, backend=backend, executor=executor, progress=False)
    started = time.perf_counter()
    summary = engine.run()
    wall = time.perf_counter() - started
    history = engine.history
    evaluation_s = sum(record.timings.get("total_s", 0.0) for record in history)
    llm = summary.llm_totals
    row = {
        "mode": mode,
        "workers": config.executor.workers,
        "max_stale": config.executor.max_stale,
        "iterations": summary.iterations,
        "wall_s": wall,
        "candidates_per_hour": summary.iterations * 3600 / wall,
        "llm_busy": llm["latency_s"] / wall,
        "workers_busy": evaluation_s / wall,
        "overlap": (llm["latency_s"] + evaluation_s) / wall,
        "llm_tokens_per_s": llm["completion_tokens"] / llm["latency_s"] if llm["latency_s"] else 0.0,
        "mean_staleness": sum(record.staleness for record in history) / max(1, len(history)),
        "valid_rate": summary.valid_rate,
        "best_val_acc": summary.best.metrics.get("val_acc") if summary.best else None,
        "complete": sum(1 for record in history if record.state is State.COMPLETE),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }
    engine.close()
    return row


def _idle(row: dict[str, Any]) -> bool:
    """Whether the workers of a mode's run were (almost) never busy: no candidate trained."""
    return bool(row["workers_busy"] < 0.05)


def format_rows(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'mode':<22}{'cand/h':>8}{'wall s':>9}{'LLM busy':>10}{'workers busy':>14}{'overlap':>9}{'stale':>7}"
        f"{'valid':>7}{'trained':>9}{'best val':>10}{'LLM tok/s':>11}{'load':>12}"
    )
    lines = [header]
    for row in rows:
        best = f"{row['best_val_acc']:.3f}" if row["best_val_acc"] is not None else "-"
        lines.append(
            f"{row['mode']:<22}{row['candidates_per_hour']:>8.1f}{row['wall_s']:>9.0f}{row['llm_busy']:>10.2f}"
            f"{row['workers_busy']:>14.2f}{row['overlap']:>9.2f}{row['mean_staleness']:>7.2f}"
            f"{row['valid_rate']:>7.2f}{row['complete']:>9}{best:>10}{row['llm_tokens_per_s']:>11.1f}"
            f"{row['load_before']:>6.1f}→{row['load_after']:<5.1f}"
        )
    base = next((row for row in rows if row["mode"] == "sequential"), None)
    if base is not None:
        for row in rows:
            if row is not base:
                ratio = row["candidates_per_hour"] / base["candidates_per_hour"]
                idle = " (its workers were idle: this ratio is the LLM's speed, not pipelining)"
                lines.append(f"speed-up {row['mode']} / sequential: {ratio:.2f}x" + (idle if _idle(row) else ""))
    if all(_idle(row) for row in rows):
        lines.append("no candidate trained long enough to overlap: the ratios measure the LLM's speed, not pipelining")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", choices=["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
    parser.add_argument(
        "--strategy",
        default="feedback-memory",
        choices=["feedback-memory", "one-shot"],
        help="one-shot: the same candidates in every mode (module docstring)",
    )
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--train-subset", type=int, default=10000)
    parser.add_argument("--modes", default="sequential,pipelined,pipelined-2-workers")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds per LLM call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--llm-threads", type=int, help="llama.cpp threads (default: its own choice)")
    parser.add_argument(
        "--train-threads", type=int, help="threads per evaluation (default: the cores split over the workers)"
    )
    parser.add_argument("--out", type=Path, default=None, help="directory for the runs (default: a temporary one)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--table", type=Path, help="print the table of a results.json written earlier, and stop")
    args = parser.parse_args(argv)
    if args.table is not None:
        print(format_rows(json.loads(args.table.read_text())))
        return 0
    modes = args.modes.split(",")
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; known: {', '.join(MODES)}")
    out = args.out or Path(tempfile.mkdtemp(prefix="nasloop-throughput-"))
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()}; loading {args.model} ...", file=sys.stderr)
    backend = warm_backend(args)
    rows = []
    for mode in modes:
        print(f"running {mode} ({args.iterations} iterations) ...", file=sys.stderr, flush=True)
        rows.append(run_mode(mode, args, backend, out))
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows, indent=2) if args.json else format_rows(rows))
    print(f"runs and results.json in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
