"""Benchmark: `expert-rules` (LeMo-NADe) against `feedback-memory` and `one-shot`, same LLM, data and budget.

Each strategy runs a real search (embedded llama-cpp model, the real sandbox) on a Fashion-MNIST subset
with the same iteration budget and seed. For each run it prints:

- the best combined model effectiveness (CM, one `EffectivenessConfig` for all three runs, computed from
  the stored metrics, so the strategies are scored alike) and the best validation accuracy;
- the FPS (images per second at batch 64), batch-1 latency and inference energy per image of the winner
  (the best by CM), and its test accuracy (reported, never selected on);
- the valid rate (completed candidates / iterations), wall time and LLM tokens.

FPS and energy come from the `hardware` evaluation stage when this nasloop has one (it then also feeds
the expert system's FPS rules and CM during the search). Otherwise the winner alone is measured after
the search: exported to TorchScript in a child process (`nasloop.export`, after the static check) and
timed in this process; energy is measured where a counter is readable, estimated otherwise (the output
says which). With `--remeasure`, every completed candidate of every run is measured that way after the
search, one procedure for all runs, and CM and the winner come from those figures: use it to compare
runs made with and without the hardware stage, or on a machine whose load changed between runs.

`--add-run NAME=DIR` summarises a run made elsewhere with the same dataset, recipe, seed and budget (for
instance the `nasloop` and `one-shot` runs of `benchmarks/feedback_memory.py`), so a strategy already
run need not be run again:

    python benchmarks/expert_rules.py --strategies expert-rules --iterations 20 --train-subset 5000 \
        --seed 43 --model qwen2.5-coder-1.5b --out runs/er
    python benchmarks/expert_rules.py --report-only --strategies expert-rules --out runs/er --remeasure \
        --add-run feedback-memory=runs/fm/nasloop --add-run one-shot=runs/fm/one-shot

    python benchmarks/expert_rules.py [--model qwen2.5-coder-0.5b|qwen2.5-coder-1.5b] [--iterations 4]
        [--train-subset 2000] [--strategies expert-rules,feedback-memory,one-shot] [--out DIR] [--json]
        [--report-only]   (summarise the runs already in --out)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from nasloop.candidate import Purpose, State
from nasloop.config import SearchConfig, build_config
from nasloop.engine import Search
from nasloop.hardware import energy_meter, measure_latency
from nasloop.objectives.effectiveness import EffectivenessConfig
from nasloop.registry import stages as stage_registry
from nasloop.store import CandidateRecord, RunStore
from nasloop.strategies.expert_rules import rank_by_effectiveness

STRATEGIES = ("expert-rules", "feedback-memory", "one-shot")
REFERENCE_FPS = 2000.0  # FPS that normalises to 1 in CM; the expert-rules FPS target as well
TARGETS = {"val_acc": 0.85, "params": 200_000.0, "fps": REFERENCE_FPS}
HARDWARE_BATCH = 64


def effectiveness(with_hardware: bool) -> dict[str, Any]:
    """CM for every run: accuracy, plus FPS with weight 0.5 when FPS is measured during the search."""
    if with_hardware:
        return {"accuracy_weight": 1.0, "fps_weight": 0.5, "reference_fps": REFERENCE_FPS}
    return {"accuracy_weight": 1.0}


def search_config(strategy: str, args: argparse.Namespace, with_hardware: bool) -> SearchConfig:
    """The same search for every strategy; only expert-rules gets targets and the CM weights as options."""
    options: dict[str, Any] = {}
    if strategy == "expert-rules":
        options = {"targets": TARGETS, "effectiveness": effectiveness(with_hardware)}
    stages = ["static", "build", "hardware", "train"] if with_hardware else ["static", "build", "train"]
    return build_config(
        {
            "strategy": strategy,
            "strategy_options": options,
            "llm": {
                "backend": "llama-cpp",
                "model": args.model,
                "deadline_s": args.deadline,
                "n_threads": args.llm_threads,
            },
            "dataset": {"name": "fashion-mnist", "train_subset": args.train_subset},
            "recipe": {"name": "fast", "epochs": 1, "threads": args.train_threads},
            "stages": stages,
            "limits": {"timeout_s": 180, "max_params": 2_000_000},
            "budget": {"iterations": args.iterations},
            "seed": args.seed,
        },
        source=f"benchmark ({strategy})",
    )


def winner_hardware(
    record: CandidateRecord, in_shape: tuple[int, int, int], num_classes: int, *, remeasure: bool = False
) -> dict[str, Any]:
    """FPS, latency and energy per image of the winner, from its metrics (unless `remeasure`) or measured
    on its TorchScript trace."""
    if "throughput_ips" in record.metrics and not remeasure:
        return {
            "fps": record.metrics["throughput_ips"],
            "latency_ms": record.metrics.get("latency_ms"),
            "energy_j": record.metrics.get("energy_j"),
            # the hardware stage describes each figure as "measured: how" or "estimated: how"
            "energy_method": str((record.info.get("hardware") or {}).get("energy_j", "unknown")).split(":")[0],
            "source": "hardware stage during the search",
        }
    from nasloop.export import export_candidate

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "winner.pt"
        export_candidate(record.code or "", path, "torchscript", in_shape, num_classes)
        model = torch.jit.load(str(path)).eval()  # a trace: no candidate Python code runs here
    single = measure_latency(model, torch.randn(1, *in_shape), repeats=30, warmup=5)
    batch = torch.randn(HARDWARE_BATCH, *in_shape)
    with energy_meter("cpu") as reading:
        batched = measure_latency(model, batch, repeats=20, warmup=3)
    images = (20 + 3) * HARDWARE_BATCH
    return {
        "fps": batched.throughput_ips,
        "latency_ms": single.median_ms,
        "energy_j": reading.joules / images,
        "energy_method": reading.method,
        "source": "TorchScript trace of the winner, measured after the search",
    }


def remeasured(records: list[CandidateRecord], in_shape: tuple[int, int, int], num_classes: int) -> list[Any]:
    """`records` with every completed candidate's FPS, latency and energy measured again after the search."""
    updated = []
    for record in records:
        if record.state is State.COMPLETE and record.code:
            figures = winner_hardware(record, in_shape, num_classes, remeasure=True)
            metrics = {
                **record.metrics,
                "throughput_ips": figures["fps"],
                "latency_ms": figures["latency_ms"],
                "energy_j": figures["energy_j"],
            }
            record = dataclasses.replace(record, metrics=metrics, info={**record.info, "remeasured": figures})
        updated.append(record)
    return updated


def summarise(run_dir: Path, cm_config: EffectivenessConfig, name: str, *, remeasure: bool = False) -> dict[str, Any]:
    """The figures of one finished run (module docstring), read from its store."""
    from nasloop.config import load_config
    from nasloop.data import load_splits

    config = load_config(run_dir / "config.yaml")
    with RunStore(run_dir / "run.sqlite", readonly=True) as store:
        records = store.candidates()
        totals = store.llm_totals()
        wall_s = float(store.get_meta("elapsed_s") or 0.0)
    splits = load_splits(config.dataset)
    if remeasure:
        records = remeasured(records, splits.in_shape, splits.num_classes)
    iterations = [record for record in records if record.purpose.counts_as_iteration]
    complete = [record for record in iterations if record.state is State.COMPLETE]
    repaired = [record for record in records if record.purpose is Purpose.REPAIR and record.state is State.COMPLETE]
    ranked = rank_by_effectiveness(records, cm_config)
    row: dict[str, Any] = {
        "strategy": name,
        "iterations": len(iterations),
        "valid_rate": len(complete) / len(iterations) if iterations else 0.0,
        # an iteration whose failed candidate was repaired (a repair is not an iteration) into a complete one
        "valid_after_repair": (len(complete) + len(repaired)) / len(iterations) if iterations else 0.0,
        "best_val_acc": max((record.metrics.get("val_acc", 0.0) for record in complete), default=None),
        "best_cm": ranked[0][1] if ranked else None,
        "wall_s": wall_s,
        "llm_tokens": int(totals["prompt_tokens"] + totals["completion_tokens"]),
        "duplicates": sum(1 for record in records if record.state is State.DUPLICATE),
        "repeats_caught": sum(1 for record in records if record.notes.get("repeat_of")),
        "size_fixes": sum(1 for record in records if record.notes.get("size_fix")),
        "run_dir": str(run_dir),
    }
    if ranked:
        winner = ranked[0][0]
        hardware = winner.info.get("remeasured") or winner_hardware(winner, splits.in_shape, splits.num_classes)
        row["winner"] = {
            "id": winner.id,
            "val_acc": winner.metrics.get("val_acc"),
            "test_acc": winner.metrics.get("test_acc"),
            "params": winner.metrics.get("params"),
            **hardware,
        }
    return row


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The results as a table."""

    def cell(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [
        f"{'strategy':<16} {'valid':>6} {'best CM':>8} {'best val':>8} {'win test':>8} {'win FPS':>9} "
        f"{'win mJ/img':>10} {'params':>9} {'wall s':>7} {'tokens':>7}"
    ]
    for row in rows:
        winner = row.get("winner") or {}
        energy = winner.get("energy_j")
        millijoules = cell(None if energy is None else 1000 * energy, ".3f")
        millijoules += "*" if winner.get("energy_method") == "estimated" else ""
        lines.append(
            f"{row['strategy']:<16} {row['valid_rate']:>6.0%} {cell(row['best_cm'], '.4f'):>8} "
            f"{cell(row['best_val_acc'], '.4f'):>8} {cell(winner.get('test_acc'), '.4f'):>8} "
            f"{cell(winner.get('fps'), ',.0f'):>9} {millijoules:>10} "
            f"{cell(winner.get('params'), ',.0f'):>9} {row['wall_s']:>7.0f} {row['llm_tokens']:>7}"
        )
    for row in rows:
        lines.append(
            f"{row['strategy']}: valid after repair {row.get('valid_after_repair', row['valid_rate']):.0%}, "
            f"duplicates recorded {row.get('duplicates', 0)}, repeats of failed code caught "
            f"{row.get('repeats_caught', 0)}, layer sizes fixed in code {row.get('size_fixes', 0)}"
        )
    if any((row.get("winner") or {}).get("energy_method") == "estimated" for row in rows):
        lines.append("* estimated energy: no readable energy counter, so seconds x an assumed power")
    sources = {str(row["winner"]["source"]) for row in rows if row.get("winner")}
    lines.extend(f"winner FPS/energy: {source}" for source in sorted(sources))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", help="embedded model (or qwen2.5-coder-1.5b)")
    parser.add_argument("--iterations", type=int, default=4, help="iteration budget of every run")
    parser.add_argument("--train-subset", type=int, default=2000, help="Fashion-MNIST training images")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds per LLM call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--llm-threads", type=int, help="llama.cpp threads (default: its own choice)")
    parser.add_argument("--train-threads", type=int, help="threads per evaluation (default: cores per worker)")
    parser.add_argument("--out", type=Path, help="where the runs go (default: a temporary directory)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--report-only", action="store_true", help="no search: summarise the runs already in --out")
    parser.add_argument(
        "--remeasure", action="store_true", help="measure every completed candidate's FPS and energy after the search"
    )
    parser.add_argument(
        "--add-run", action="append", default=[], metavar="NAME=DIR", help="also summarise a run made elsewhere"
    )
    args = parser.parse_args(argv)
    if args.report_only and args.out is None:
        parser.error("--report-only needs --out DIR (the directory of an earlier benchmark)")
    with_hardware = "hardware" in stage_registry
    cm_config = EffectivenessConfig.model_validate(effectiveness(with_hardware))
    out = args.out or Path(tempfile.mkdtemp(prefix="nasloop-bench-expert-"))
    rows = []
    for strategy in filter(None, args.strategies.split(",")):
        if not args.report_only:
            print(f"running {strategy} ({args.iterations} iterations, {args.model}) ...", file=sys.stderr, flush=True)
            engine = Search.start(search_config(strategy, args, with_hardware), out / strategy, progress=False)
            engine.run()
            engine.close()
        rows.append(summarise(out / strategy, cm_config, strategy, remeasure=args.remeasure))
    for added in args.add_run:
        name, separator, directory = added.partition("=")
        if not separator or not Path(directory, "run.sqlite").exists():
            parser.error(f"--add-run {added!r}: expected NAME=DIR with DIR a run directory")
        rows.append(summarise(Path(directory), cm_config, name, remeasure=args.remeasure))
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows, indent=2) if args.json else format_rows(rows))
    print(f"runs and results.json in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
