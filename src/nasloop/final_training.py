"""`nasloop train`: retrain the best candidates of a finished run for longer, in the real sandbox.

A search scores candidates with a short proxy training. Final training takes the run's best `top`
candidates (any strategy: best by the run's selection metric; an `expert-rules` run by combined model
effectiveness, the measure it kept its best by), trains each from scratch with the proxy trainer for
`epochs` epochs through the sandbox, and records for each the validation and test accuracy, the time and
the energy. Candidates with the same code are trained once.

Energy: when the evaluation reports `train_energy_j` itself (the train stage meters its training, and
says in `info["energy"]` whether it was measured or estimated) it is used. Otherwise the whole evaluation
(build, training, prediction) is metered from the parent with `nasloop.hardware.energy_meter`: measured
where a hardware counter is readable (RAPL on the CPU package, NVML on a GPU; whole-device figures),
estimated as seconds × an assumed power otherwise; the result says which (`energy_method`).

Results are stored in the run store as artifacts `final_training/<candidate id>` (JSON), so reports and
later commands see them. The run store has a single writer: `nasloop train` refuses to run while another
process has the run open (a search or resume in progress).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from nasloop.candidate import EvalResult, State
from nasloop.config import SearchConfig, load_config
from nasloop.evaluate.job import DatasetSpec, EvalJob, Recipe
from nasloop.store import CandidateRecord, RunDir, RunStore

ARTIFACT_PREFIX = "final_training/"
FINAL_STAGES = ("static", "build", "train")
# SQLite's unix VFS: every connection to a WAL database holds a shared lock on this byte of the `-shm` file
# for as long as it is open (the "dead man switch"), and the kernel drops it when the process dies.
SQLITE_SHM_DMS_BYTE = 128

RunJob = Callable[[EvalJob], EvalResult]


class RunInUse(RuntimeError):
    """The run store is open in another process; writing to it now would break the single-writer rule."""


# ---------------------------------------------------------------------------------------------------------
# Choosing the finalists
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finalist:
    """A candidate chosen for final training: its record, rank (1 = best) and the score it was chosen by."""

    record: CandidateRecord
    rank: int
    selected_by: str  # the metric name, or "cm"
    score: float


def select_finalists(config: SearchConfig, records: Sequence[CandidateRecord], top: int) -> list[Finalist]:
    """The best `top` completed candidates of a run, best first, one per distinct code.

    Runs of the `expert-rules` strategy are ranked by combined model effectiveness (recomputed from the
    metrics with the run's `strategy_options.effectiveness`), every other run by its selection metric.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    ranked, selected_by = _ranked(config, records)
    finalists: list[Finalist] = []
    seen_code: set[str] = set()
    for record, score in ranked:
        key = record.hash or record.code or ""
        if not record.code or key in seen_code:
            continue
        seen_code.add(key)
        finalists.append(Finalist(record, len(finalists) + 1, selected_by, score))
        if len(finalists) == top:
            break
    return finalists


def _ranked(
    config: SearchConfig, records: Sequence[CandidateRecord]
) -> tuple[list[tuple[CandidateRecord, float]], str]:
    if config.strategy == "expert-rules":
        from nasloop.objectives.effectiveness import EffectivenessConfig
        from nasloop.strategies.expert_rules import rank_by_effectiveness

        effectiveness = EffectivenessConfig.model_validate(config.strategy_options.get("effectiveness") or {})
        return rank_by_effectiveness(records, effectiveness), "cm"
    metric = config.selection_metric
    scored = [
        (record, float(record.metrics[metric]))
        for record in records
        if record.state is State.COMPLETE and math.isfinite(record.metrics.get(metric, math.nan))
    ]
    return sorted(scored, key=lambda pair: (-pair[1], pair[0].id)), metric


# ---------------------------------------------------------------------------------------------------------
# Is the run in use?
# ---------------------------------------------------------------------------------------------------------


def process_using_store(store_path: Path) -> int | None:
    """The id of another process that has the SQLite store open, or None (also where this cannot be told).

    Reads the lock SQLite keeps on its `-shm` file (see SQLITE_SHM_DMS_BYTE) with F_GETLK, which changes
    no lock. Linux only. Call it before this process opens the store: closing a descriptor of the `-shm`
    file drops every POSIX lock this process holds on it, SQLite's included.
    """
    shm = Path(f"{store_path}-shm")
    if not sys.platform.startswith("linux") or not shm.exists():
        return None
    descriptor = os.open(shm, os.O_RDONLY)
    try:
        # struct flock on Linux: short type, short whence, off_t start, off_t len, pid_t pid (+ padding).
        query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, SQLITE_SHM_DMS_BYTE, 1, 0)
        lock_type, _, _, _, pid = struct.unpack("hhqqi4x", fcntl.fcntl(descriptor, fcntl.F_GETLK, query))
    finally:
        os.close(descriptor)
    return None if lock_type == fcntl.F_UNLCK else int(pid)


def ensure_not_in_use(run_dir: Path) -> None:
    """Raise RunInUse, politely, when another process has the run open."""
    pid = process_using_store(RunDir(run_dir).store_path)
    if pid is not None:
        raise RunInUse(
            f"the run in {run_dir} is open in another process (pid {pid}), probably a search or resume that "
            "is still running; nasloop train writes its results into the run, which must have a single "
            "writer. Wait for that process to finish (or stop it), then run nasloop train again."
        )


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------


@dataclass
class FinalTrainingResult:
    """The outcome of one finalist's final training, as stored in the artifact `final_training/<id>`."""

    candidate_id: int
    rank: int
    selected_by: str
    search_score: float
    state: str
    metrics: dict[str, float]
    failure: dict[str, str] | None
    wall_s: float
    energy_j: float
    energy_method: str  # "measured" or "estimated"
    energy_detail: str
    settings: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FinalTrainingSettings:
    """How finalists are retrained: epochs, recipe, data and limits (None: from the run)."""

    epochs: float = 10.0
    recipe: Literal["paper", "fast"] | None = None
    dataset_root: str | None = None
    train_subset: int | None = None  # None: the whole training split
    timeout_s: float | None = None
    device: str = "auto"


def final_job(config: SearchConfig, record: CandidateRecord, settings: FinalTrainingSettings) -> EvalJob:
    """The evaluation job that retrains `record`'s code with `settings` (everything else as in the run)."""
    recipe = config.recipe
    if settings.recipe is not None and settings.recipe != recipe.name:
        recipe = Recipe(name=settings.recipe, threads=recipe.threads)  # other overrides were for the old recipe
    recipe = recipe.model_copy(update={"epochs": settings.epochs, "device": settings.device})
    limits = config.limits.model_copy(update={"timeout_s": final_timeout(config, settings)})
    return EvalJob(
        code=record.code or "",
        dataset=final_dataset(config, settings),
        recipe=recipe,
        limits=limits,
        stages=FINAL_STAGES,
        measure=config.measure,  # the run's assumed power for energy estimates, among others
        seed=config.seed,
    )


def final_dataset(config: SearchConfig, settings: FinalTrainingSettings) -> DatasetSpec:
    """The run's dataset with the final-training root and training subset."""
    update: dict[str, Any] = {"train_subset": settings.train_subset}
    if settings.dataset_root is not None:
        update["root"] = settings.dataset_root
    return config.dataset.model_copy(update=update)


def final_timeout(config: SearchConfig, settings: FinalTrainingSettings) -> float:
    """The given timeout, or the run's scaled by the epochs (and the data, if the run used a subset), twice over."""
    if settings.timeout_s is not None:
        return settings.timeout_s
    scale = settings.epochs / config.recipe.epochs
    if config.dataset.train_subset is not None and settings.train_subset is None:
        scale *= 10  # the whole training split instead of a subset: a generous allowance
    return max(config.limits.timeout_s, 2 * scale * config.limits.timeout_s)


def train_finalist(finalist: Finalist, job: EvalJob, run_job: RunJob, device: str) -> FinalTrainingResult:
    """Run one finalist's job, metering its energy from here unless the evaluation reports it."""
    from nasloop.hardware import energy_meter

    started = time.perf_counter()
    with energy_meter(device) as reading:
        result = run_job(job)
    wall_s = time.perf_counter() - started
    energy: float = reading.joules
    method: str = reading.method
    detail = f"whole evaluation metered from the parent process: {reading.detail}"
    if "train_energy_j" in result.metrics:  # the evaluation metered its own training: more precise
        described = result.info.get("energy") or {}  # the train stage's {"method": ..., "detail": ...}
        energy = result.metrics["train_energy_j"]
        method = str(described.get("method", "estimated"))  # unknown provenance is not called measured
        detail = f"training only, metered in the sandbox: {described.get('detail', 'no detail reported')}"
    return FinalTrainingResult(
        candidate_id=finalist.record.id,
        rank=finalist.rank,
        selected_by=finalist.selected_by,
        search_score=finalist.score,
        state=result.state.value,
        metrics=dict(result.metrics),
        failure=result.failure.to_dict() if result.failure else None,
        wall_s=wall_s,
        energy_j=energy,
        energy_method=method,
        energy_detail=detail,
        settings={
            "epochs": job.recipe.epochs,
            "recipe": job.recipe.name,
            "dataset": job.dataset.model_dump(),
            "timeout_s": job.limits.timeout_s,
            "device": device,
        },
        created=time.time(),
    )


def retrain(
    run_dir: Path,
    top: int,
    settings: FinalTrainingSettings,
    *,
    run_job: RunJob | None = None,
    on_result: Callable[[FinalTrainingResult], None] | None = None,
) -> list[FinalTrainingResult]:
    """Retrain the best `top` candidates of the run in `run_dir` and store the results in the run.

    `run_job` evaluates a job (default: one sandbox for all finalists, under `run_dir/jobs/final-training`).
    Each result is stored as soon as it is known; `on_result` is then called with it. Raises RunInUse when
    another process has the run open, FileNotFoundError when `run_dir` holds no run.
    """
    layout = RunDir(Path(run_dir))
    if not layout.exists():
        raise FileNotFoundError(f"{run_dir} holds no run (no {layout.store_path.name} there)")
    ensure_not_in_use(layout.root)
    config = load_config(layout.config_path)
    with RunStore(layout.store_path, readonly=True) as store:
        finalists = select_finalists(config, store.candidates(), top)
    if not finalists:
        return []
    jobs = [final_job(config, finalist.record, settings) for finalist in finalists]

    def keep(result: FinalTrainingResult) -> None:
        store_result(layout.root, result)  # stored as each one finishes: an interruption loses only the current one
        if on_result is not None:
            on_result(result)

    return _run_all(finalists, jobs, layout, settings, run_job, keep)


def store_result(run_dir: Path, result: FinalTrainingResult) -> None:
    """Write one result into the run as the artifact `final_training/<id>` (RunInUse if the run is open)."""
    ensure_not_in_use(run_dir)  # a search may have been resumed meanwhile
    with RunStore(RunDir(run_dir).store_path) as store:
        store.put_artifact(f"{ARTIFACT_PREFIX}{result.candidate_id}", json.dumps(result.to_dict(), sort_keys=True))


def _run_all(
    finalists: Sequence[Finalist],
    jobs: Sequence[EvalJob],
    layout: RunDir,
    settings: FinalTrainingSettings,
    run_job: RunJob | None,
    on_result: Callable[[FinalTrainingResult], None],
) -> list[FinalTrainingResult]:
    from nasloop.evaluate.sandbox import Sandbox, resolve_device

    device = resolve_device(settings.device)
    results: list[FinalTrainingResult] = []
    sandbox = None
    if run_job is None:
        sandbox = Sandbox(jobs[0].dataset, work_dir=layout.jobs_dir / "final-training", device=device)
        run_job = sandbox.run
    try:
        if sandbox is not None:
            sandbox.ready_worker()  # the worker's start-up is not part of the first finalist's time and energy
        for finalist, job in zip(finalists, jobs, strict=True):
            results.append(train_finalist(finalist, job, run_job, device))
            on_result(results[-1])
    finally:
        if sandbox is not None:
            sandbox.close()
    return results


def stored_results(run_dir: Path) -> list[FinalTrainingResult]:
    """The final-training results stored in a run, best-ranked first."""
    with RunStore(RunDir(Path(run_dir)).store_path, readonly=True) as store:
        artifacts = store.artifacts(ARTIFACT_PREFIX)
    results = [FinalTrainingResult(**json.loads(content)) for content in artifacts.values()]
    return sorted(results, key=lambda result: result.rank)


# ---------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------


def add_train(parser: argparse.ArgumentParser) -> None:
    """Arguments of `nasloop train`."""
    parser.add_argument("run_dir", type=Path, help="a finished run (no search may be running on it)")
    parser.add_argument("--top", type=int, default=3, help="how many of the best candidates (default 3)")
    parser.add_argument("--epochs", type=float, default=10.0, help="training epochs (default 10)")
    parser.add_argument("--recipe", choices=["paper", "fast"], help="training recipe (default: the run's)")
    parser.add_argument("--dataset-root", help="directory with the dataset's files (default: the run's)")
    parser.add_argument("--train-subset", type=int, help="train on this many images (default: all of them)")
    parser.add_argument("--timeout", type=float, help="seconds per candidate (default: the run's, scaled up)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def cmd_train(args: argparse.Namespace) -> int:
    """Run `nasloop train`; prints one line per finalist as it finishes, then the table."""
    from nasloop.cli import UsageError

    if args.top < 1 or args.epochs <= 0:
        raise UsageError("--top must be at least 1 and --epochs positive")
    settings = FinalTrainingSettings(
        epochs=args.epochs, recipe=args.recipe, dataset_root=args.dataset_root, train_subset=args.train_subset,
        timeout_s=args.timeout, device=args.device,
    )  # fmt: skip

    def report(result: FinalTrainingResult) -> None:
        if not args.json:
            print(f"trained candidate {result.candidate_id}: {result.state} in {result.wall_s:.1f} s", file=sys.stderr)

    try:
        results = retrain(args.run_dir, args.top, settings, on_result=report)
    except RunInUse as error:
        raise UsageError(str(error)) from None
    if args.json:
        print(json.dumps([result.to_dict() for result in results], indent=2))
    elif not results:
        print(f"{args.run_dir} has no completed candidate to train")
    else:
        print(format_table(results))
        print(f"\nstored in {args.run_dir} as artifacts {ARTIFACT_PREFIX}<id>")
    return 0


def format_table(results: Sequence[FinalTrainingResult]) -> str:
    """The results as a plain-text table, one row per finalist."""
    selected_by = results[0].selected_by if results else "score"
    lines = [
        f"{'rank':>4} {'id':>5} {selected_by:>9} {'state':<9} {'val_acc':>8} {'test_acc':>8} "
        f"{'train_s':>8} {'energy_J':>10}  note"
    ]
    for result in results:
        val = _cell(result.metrics.get("val_acc"), ".4f")
        test = _cell(result.metrics.get("test_acc"), ".4f")
        train_s = _cell(result.metrics.get("train_s", result.wall_s), ".1f")
        energy = f"{result.energy_j:.1f}" + ("*" if result.energy_method == "estimated" else "")
        note = f"{result.failure['kind']}: {result.failure['message'][:50]}" if result.failure else ""
        lines.append(
            f"{result.rank:>4} {result.candidate_id:>5} {result.search_score:>9.4f} {result.state:<9} {val:>8} "
            f"{test:>8} {train_s:>8} {energy:>10}  {note}"
        )
    if any(result.energy_method == "estimated" for result in results):
        lines.append("* estimated: no readable energy counter, so energy = seconds x an assumed power")
    return "\n".join(lines)


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


__all__ = [
    "ARTIFACT_PREFIX",
    "FinalTrainingResult",
    "FinalTrainingSettings",
    "Finalist",
    "RunInUse",
    "add_train",
    "cmd_train",
    "ensure_not_in_use",
    "final_job",
    "format_table",
    "process_using_store",
    "retrain",
    "select_finalists",
    "store_result",
    "stored_results",
]
