"""The `nasloop` command: a table of subcommands, each a parser builder and a function.

nasloop search   run a search                 nasloop show     list a run's candidates
nasloop resume   continue a stored run        nasloop export   write a candidate as a module
nasloop eval     evaluate one model file      nasloop doctor   what is installed and what is missing
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nasloop.errors import EXIT_OK, EXIT_USAGE, UsageError

# ----------------------------------------------------------------------------------------------------
# search / resume
# ----------------------------------------------------------------------------------------------------


def _add_search(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file (see examples/)")
    parser.add_argument("--strategy", help="strategy name (see `nasloop doctor`)")
    parser.add_argument("--llm", dest="backend", help="LLM backend: llama-cpp, openai, transformers, scripted")
    parser.add_argument("--model", help="LLM model name, embedded model name or .gguf path")
    parser.add_argument("--base-url", help="OpenAI-compatible server URL, e.g. http://localhost:11434/v1")
    parser.add_argument("--api-key-env", help="NAME of the environment variable holding the API key")
    parser.add_argument("--dataset", help="dataset name (fashion-mnist, cifar10, ...)")
    parser.add_argument("--train-subset", type=int, help="train on this many images (faster searches)")
    parser.add_argument("--recipe", choices=["paper", "fast"], help="proxy-training recipe")
    parser.add_argument("--epochs", type=float, help="proxy-training epochs")
    parser.add_argument("--iterations", type=int, help="iteration budget")
    parser.add_argument("--space", help="structured search space (nb201, macro)")
    parser.add_argument("--objective", help="the metric the search maximises, e.g. val_acc or synflow")
    parser.add_argument("--objectives", help="multi-objective, e.g. val_acc:max,latency_ms:min")
    parser.add_argument("--seed-model", help="open code: the .py file the search starts from, or 'none'")
    parser.add_argument(
        "--benchmark", help="score candidates from a tabular benchmark: NAME or NAME:DATASET (e.g. nb201:cifar100)"
    )
    parser.add_argument("--benchmark-table", type=Path, help="your own table for --benchmark (the shared JSON format)")
    parser.add_argument("--workers", type=int, help="parallel evaluation workers")
    parser.add_argument("--executor", help="executor: local or ray")
    parser.add_argument("--ray-address", help="Ray cluster address (auto or HOST:PORT)")
    parser.add_argument("--seed", type=int, help="run seed")
    parser.add_argument("--run-dir", type=Path, help="where to store the run (default runs/<strategy>-...)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _search_overrides(args: argparse.Namespace) -> dict[str, Any]:
    objectives = tuple(args.objectives.split(",")) if args.objectives else None
    benchmark, _, dataset = (args.benchmark or "").partition(":")
    if args.benchmark_table and not benchmark:
        raise UsageError("--benchmark-table needs --benchmark NAME[:DATASET]")
    return {
        "objective": args.objective,
        "seed_model": args.seed_model,
        "benchmark.name": benchmark or None,
        "benchmark.dataset": dataset or None,
        "benchmark.table": str(args.benchmark_table) if args.benchmark_table else None,
        "strategy": args.strategy,
        "llm.backend": args.backend,
        "llm.model": args.model,
        "llm.base_url": args.base_url,
        "llm.api_key_env": args.api_key_env,
        "dataset.name": args.dataset,
        "dataset.train_subset": args.train_subset,
        "recipe.name": args.recipe,
        "recipe.epochs": args.epochs,
        "budget.iterations": args.iterations,
        "space": args.space,
        "objectives": objectives,
        "executor.workers": args.workers,
        "executor.name": args.executor,
        "executor.ray_address": args.ray_address,
        "seed": args.seed,
    }


def _print_summary(summary: Any) -> None:
    print(f"\nstopped: {summary.stop_reason}")
    rate = 100 * summary.valid_after_repair / summary.iterations if summary.iterations else 0.0
    print(
        f"iterations: {summary.iterations}, valid: {summary.valid} ({100 * summary.valid_rate:.0f}%), "
        f"{summary.valid_after_repair} after repairs ({rate:.0f}%)"
    )
    tokens = summary.llm_totals.get("prompt_tokens", 0) + summary.llm_totals.get("completion_tokens", 0)
    seconds = summary.llm_totals.get("latency_s", 0.0)
    print(f"LLM: {int(summary.llm_totals.get('calls', 0))} calls, {int(tokens)} tokens, {seconds:.0f} s")
    metric = summary.metric
    seed = summary.seed
    if seed is not None and metric in seed.metrics:
        print(f"seed network: candidate {seed.id}, {metric} = {seed.metrics[metric]:.4f}")
    if summary.best is None and summary.valid:
        print(f"{summary.valid} candidate(s) completed, none with the metric {metric!r}: set `objective`")
    elif summary.best is None:
        print("no candidate completed")
    else:
        best = summary.best
        params = best.metrics.get("params")
        gain = ""
        if seed is not None and metric in seed.metrics:
            gain = (
                " (the seed itself)"
                if best.id == seed.id
                else f" ({best.metrics[metric] - seed.metrics[metric]:+.4f} over the seed)"
            )
        print(
            f"best: candidate {best.id}, {metric} = {best.metrics[metric]:.4f}{gain}"
            + (f", {int(params):,} params" if params is not None else "")
        )
        print(f"best model code: {Path(summary.run_dir) / 'candidates' / f'{best.id:04d}.py'}")
    for line in summary.notes:
        print(line)
    print(f"run stored in {summary.run_dir}")
    print(f"  nasloop show {summary.run_dir}      # candidates, best first")
    print(f"  nasloop report {summary.run_dir}    # HTML report with plots and lineage")


def cmd_search(args: argparse.Namespace) -> int:
    from nasloop.api import default_run_dir
    from nasloop.config import load_config
    from nasloop.engine import Search

    config = load_config(args.config, _search_overrides(args))
    run_dir = args.run_dir or (Path(config.run_dir) if config.run_dir else default_run_dir(config))
    print(
        f"nasloop: {config.strategy} on {config.dataset.name} with {config.llm.backend}:{config.llm.model}; "
        f"run dir {run_dir}",
        file=sys.stderr,
    )
    summary = Search.start(config, run_dir, progress=not args.quiet).run()
    _print_summary(summary)
    return EXIT_OK


def _add_resume(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="the run directory to continue")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_resume(args: argparse.Namespace) -> int:
    from nasloop.engine import Search

    summary = Search.resume(args.run_dir, progress=not args.quiet).run()
    _print_summary(summary)
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------
# show / export
# ----------------------------------------------------------------------------------------------------


def _open_run(run_dir: Path) -> tuple[Any, Any]:
    from nasloop.config import load_config
    from nasloop.store import RunDir, RunStore

    layout = RunDir(run_dir)
    if not layout.exists():
        raise UsageError(f"{run_dir} holds no run (no {layout.store_path.name} there)")
    return load_config(layout.config_path), RunStore(layout.store_path, readonly=True)


def ranked(candidates: list[Any], config: Any) -> list[Any]:
    """Best first, as the run's strategy ranks them (`Strategy.rank`), then the rest by id."""
    from nasloop.registry import strategies

    best_first = [record for record, _ in strategies.get(config.strategy).rank(candidates, config).scored]
    chosen = {record.id for record in best_first}
    return best_first + sorted((c for c in candidates if c.id not in chosen), key=lambda c: c.id)


def _add_show(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument("--limit", type=int, default=30, help="rows to print (table only)")
    parser.add_argument(
        "--artifact", metavar="NAME", help="print the stored artifacts whose names start with NAME (e.g. pareto/)"
    )


def cmd_show(args: argparse.Namespace) -> int:
    config, store = _open_run(args.run_dir)
    metric = config.selection_metric
    candidates = ranked(store.candidates(), config)
    artifacts = store.artifacts()
    if args.artifact is not None:
        chosen = {name: text for name, text in artifacts.items() if name.startswith(args.artifact)}
        if not chosen:
            known = ", ".join(artifacts) or "none"
            print(f"error: no artifact named {args.artifact!r}* in {args.run_dir} (stored: {known})", file=sys.stderr)
            return EXIT_USAGE
        for name, text in chosen.items():
            print(f"# {name}\n{text}")
        return EXIT_OK
    if args.json:
        rows = [
            {
                "id": c.id,
                "iteration": c.iteration,
                "state": c.state.value,
                "metrics": c.metrics,
                "failure": c.failure.to_dict() if c.failure else None,
                "parent_ids": list(c.parent_ids),
                "purpose": c.purpose.value,
                "parent": c.parent,
                "duplicate_of": c.duplicate_of,
                "architecture": c.architecture,
            }
            for c in candidates
        ]
        print(
            json.dumps(
                {
                    "run_dir": str(args.run_dir),
                    "metric": metric,
                    "candidates": rows,
                    "llm": store.llm_totals(),
                    "artifacts": list(artifacts),
                },
                indent=2,
            )
        )
        return EXIT_OK
    print(f"{'id':>5} {'iter':>4} {'made as':<14} {'state':<9} {metric:>9} {'params':>11} {'train_s':>8}  failure")
    for c in candidates[: args.limit]:
        score = f"{c.metrics[metric]:.4f}" if metric in c.metrics else "-"
        params = f"{int(c.metrics['params']):,}" if "params" in c.metrics else "-"
        train_s = f"{c.metrics['train_s']:.1f}" if "train_s" in c.metrics else "-"
        failure = f"{c.failure.kind.value}: {c.failure.message[:60]}" if c.failure else ""
        if c.duplicate_of:
            failure = f"duplicate of {c.duplicate_of}"
        made = c.purpose.value + (f" of {c.parent}" if c.parent is not None else "")
        print(
            f"{c.id:>5} {c.iteration:>4} {made:<14} {c.state.value:<9} {score:>9} {params:>11} {train_s:>8}  {failure}"
        )
    totals = store.llm_totals()
    valid = sum(1 for c in candidates if c.state.value == "complete")
    print(
        f"\n{len(candidates)} candidates, {valid} complete; LLM {int(totals['calls'])} calls, "
        f"{int(totals['prompt_tokens'] + totals['completion_tokens'])} tokens"
    )
    if artifacts:
        names = list(artifacts)
        shown = ", ".join(names) if len(names) <= 4 else f"{names[0]} ... {names[-1]}"
        print(f"{len(names)} artifacts ({shown}); print them with --artifact NAME")
    return EXIT_OK


def _add_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--best",
        action="store_true",
        help="the best candidate by the run's selection metric (expert-rules runs: by combined model effectiveness)",
    )
    which.add_argument("--id", type=int, help="a candidate id")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output file")
    parser.add_argument(
        "--format",
        choices=["py", "torchscript", "onnx"],
        default="py",
        help="py: the standalone module (default); torchscript / onnx: the built network, in eval mode with "
        "freshly initialised weights (a run stores code, not trained weights), built in a child process "
        "after the static check; onnx needs `pip install onnx onnxscript`",
    )
    parser.add_argument(
        "--onnx-exporter",
        choices=["dynamo", "legacy"],
        default="dynamo",
        help="torch's ONNX exporter: dynamo (default, needs onnxscript) or the legacy TorchScript-based one",
    )
    parser.add_argument("--in-shape", help="C,H,W of the input (default: the run's dataset)")
    parser.add_argument("--num-classes", type=int, help="classes (default: the run's dataset)")


def export_module(candidate: Any, run_dir: Path, metric: str) -> str:
    """A standalone module: the candidate's code under a header that says where it came from."""
    figures = ", ".join(f"{key}={value:.6g}" for key, value in sorted(candidate.metrics.items()))
    header = (
        f'"""Candidate {candidate.id} of the nasloop run {run_dir}.\n\n'
        f"Selection metric {metric}; measured: {figures or 'none'}.\n"
        f'Build it with `Net(in_shape, num_classes)`.\n"""\n\n'
    )
    return header + (candidate.code or "")


def cmd_export(args: argparse.Namespace) -> int:
    config, store = _open_run(args.run_dir)
    metric = config.selection_metric
    if args.best:
        from nasloop.final_training import select_finalists

        finalists = select_finalists(config, store.candidates(), top=1)
        if not finalists:
            raise UsageError(f"{args.run_dir} has no completed candidate to export")
        candidate = finalists[0].record
    else:
        try:
            candidate = store.candidate(args.id)
        except KeyError as error:
            raise UsageError(str(error)) from None
    store.close()
    if not candidate.code:
        raise UsageError(f"candidate {candidate.id} has no code")
    if args.format == "py":
        args.output.write_text(export_module(candidate, args.run_dir, metric))
        print(f"wrote candidate {candidate.id} to {args.output}")
        return EXIT_OK
    from nasloop.export import ExportError, export_candidate, model_shapes

    try:
        in_shape, num_classes = model_shapes(config.dataset, args.in_shape, args.num_classes)
        exported = export_candidate(
            candidate.code, args.output, args.format, in_shape, num_classes, onnx_exporter=args.onnx_exporter,
            seed=config.seed,
        )  # fmt: skip
    except ExportError as error:
        raise UsageError(f"candidate {candidate.id}: {error}") from None
    print(
        f"wrote candidate {candidate.id} to {exported.path} ({exported.format}, {exported.params:,} parameters, "
        f"input {list(in_shape)}, {num_classes} classes, freshly initialised weights; {exported.check})"
    )
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------
# eval
# ----------------------------------------------------------------------------------------------------


def _add_eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="a Python file defining class Net(nn.Module)")
    parser.add_argument("--dataset", default="fashion-mnist", help="dataset name (default fashion-mnist)")
    parser.add_argument("--data-root", help="directory with the dataset's files")
    parser.add_argument("--recipe", choices=["paper", "fast"], default="fast")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--train-subset", type=int, help="train on this many images")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--timeout", type=float, default=1800.0, help="wall-clock limit in seconds")
    parser.add_argument("--max-params", type=int, help="parameter budget")
    parser.add_argument("--stages", default="static,build,train", help="comma list of stages")
    parser.add_argument("--proxies", default="", help="comma list of zero-cost proxies (stage zero-cost)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def cmd_eval(args: argparse.Namespace) -> int:
    from nasloop.config import SearchConfig
    from nasloop.data.spec import DatasetSpec
    from nasloop.engine.jobs import job_for
    from nasloop.evaluate.job import Limits, Recipe
    from nasloop.registry import datasets, known_names, proxies
    from nasloop.registry import stages as stage_registry

    if not args.model.is_file():
        raise UsageError(f"model file not found: {args.model}")
    if args.dataset not in datasets:
        raise UsageError(f"unknown dataset {args.dataset!r}; known: {', '.join(datasets.names())}")
    try:
        stages = known_names(stage_registry, (stage for stage in args.stages.split(",") if stage))
        proxy_names = known_names(proxies, (name for name in args.proxies.split(",") if name))
    except ValueError as error:
        raise UsageError(str(error)) from None
    if proxy_names and "zero-cost" not in stages:
        stages = (*stages[:-1], "zero-cost", stages[-1]) if stages[-1] == "train" else (*stages, "zero-cost")
    config = SearchConfig(
        dataset=DatasetSpec(name=args.dataset, root=args.data_root, train_subset=args.train_subset),
        recipe=Recipe(name=args.recipe, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=args.device),
        limits=Limits(timeout_s=args.timeout, max_params=args.max_params),
        stages=stages,
        proxies=proxy_names,
    )
    job = job_for(config, args.model.read_text(), seed=args.seed)
    _check_dataset_present(job.dataset)
    from nasloop.evaluate.sandbox import evaluate

    result = evaluate(job)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return EXIT_OK
    print(f"state: {result.state.value}   (stage reached: {result.stage})")
    if result.failure:
        print(f"failure: {result.failure.kind.value}: {result.failure.message}")
    for key, value in sorted(result.metrics.items()):
        print(f"  {key:<22} {value:.6g}")
    return EXIT_OK


def _check_dataset_present(spec: Any) -> None:
    """Find (and cache) the dataset once in the parent so a missing file is a usage error, not a failed
    candidate."""
    from nasloop.data import describe

    try:
        describe(spec)
    except FileNotFoundError as error:
        raise UsageError(str(error)) from None


# ----------------------------------------------------------------------------------------------------
# doctor
# ----------------------------------------------------------------------------------------------------


def _add_doctor(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true")


def cmd_doctor(args: argparse.Namespace) -> int:
    from nasloop.doctor import run_checks

    checks = run_checks()
    if args.json:
        print(json.dumps([check.__dict__ for check in checks], indent=2))
        return EXIT_OK
    for check in checks:
        mark = "ok " if check.ok else "-- "
        print(f"{mark} {check.name:<28} {check.detail}")
        if not check.ok and check.fix:
            print(f"{'':<4} {'':<28} fix: {check.fix}")
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------
# commands that live next to their implementation (imported only when used)
# ----------------------------------------------------------------------------------------------------


def _lazy(
    module: str, adder: str, runner: str
) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]:
    """Parser builder and function of a command defined in `module`, imported on first use."""
    import importlib

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        getattr(importlib.import_module(module), adder)(parser)

    def run(args: argparse.Namespace) -> int:
        return int(getattr(importlib.import_module(module), runner)(args))

    return add_arguments, run


# ----------------------------------------------------------------------------------------------------
# the command table
# ----------------------------------------------------------------------------------------------------

Command = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]

COMMANDS: list[Command] = [
    ("search", "run a search", _add_search, cmd_search),
    ("resume", "continue a stored run", _add_resume, cmd_resume),
    ("eval", "evaluate one model file in the sandbox", _add_eval, cmd_eval),
    ("show", "list a run's candidates, best first", _add_show, cmd_show),
    ("export", "write a run's candidate as a standalone module", _add_export, cmd_export),
    ("doctor", "what is installed and what is missing", _add_doctor, cmd_doctor),
    ("report", "write a run's HTML report and plots", *_lazy("nasloop.report.cli", "add_report", "cmd_report")),
    ("compare", "compare several runs in one HTML page", *_lazy("nasloop.report.cli", "add_compare", "cmd_compare")),
    ("train", "retrain a run's best candidates fully", *_lazy("nasloop.final_training", "add_train", "cmd_train")),
]


_LAZY_MODULES = {"report": "nasloop.report.cli", "compare": "nasloop.report.cli", "train": "nasloop.final_training"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nasloop", description="LLM-driven neural architecture search.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, add_arguments, function in COMMANDS:
        if name in _LAZY_MODULES and importlib.util.find_spec(_LAZY_MODULES[name]) is None:
            continue
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(command_parser)
        command_parser.set_defaults(function=function)
    return parser


def main(argv: list[str] | None = None) -> int:
    from nasloop.config import ConfigError
    from nasloop.engine import SearchAborted
    from nasloop.registry import UnknownNameError
    from nasloop.store import RunInUse

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.function(args))
    except (UsageError, ConfigError, UnknownNameError, RunInUse, FileNotFoundError, FileExistsError) as error:
        print(f"nasloop {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except SearchAborted as error:
        print(f"nasloop {args.command}: stopped: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nnasloop {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
