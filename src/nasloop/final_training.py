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

Final training runs through the run's engine (`Search.evaluate_now`): each finalist is added to the run
as a candidate of purpose `final` whose parent is the finalist, and its result is also stored as the
artifact `final_training/<finalist id>` (JSON), so reports and later commands see them. The engine is the
run store's single writer: `nasloop train` refuses to run while another process writes the run (a search
or resume in progress), with `RunInUse`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from nasloop.candidate import EvalResult, Proposal, Purpose
from nasloop.config import SearchConfig
from nasloop.data.spec import DatasetSpec
from nasloop.engine.jobs import job_for
from nasloop.evaluate.job import EvalJob, Recipe
from nasloop.store import CandidateRecord, RunDir, RunInUse, RunStore

ARTIFACT_PREFIX = "final_training/"
FINAL_STAGES = ("static", "build", "train")
#: the note that marks the candidates final training added to a run
FINAL_TRAINING_NOTE = "final_training"

RunJob = Callable[[EvalJob], EvalResult]


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

    They are ranked as the run's strategy ranks them (`Strategy.rank`: `expert-rules` by combined model
    effectiveness, every other strategy by the run's selection metric). Candidates an earlier final training
    added are not finalists again.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    from nasloop.registry import strategies

    ranking = strategies.get(config.strategy).rank(records, config)
    ranked, selected_by = ranking.scored, ranking.by
    finalists: list[Finalist] = []
    seen_code: set[str] = set()
    for record, score in ranked:
        key = record.hash or record.code or ""
        if not record.code or key in seen_code or FINAL_TRAINING_NOTE in record.notes:
            continue
        seen_code.add(key)
        finalists.append(Finalist(record, len(finalists) + 1, selected_by, score))
        if len(finalists) == top:
            break
    return finalists


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------


@dataclass
class FinalTrainingResult:
    """The outcome of one finalist's final training, as stored in the artifact `final_training/<id>`."""

    candidate_id: int  # the finalist
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
    trained_id: int | None = None  # the candidate final training added to the run (purpose final)

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
    final = config.model_copy(update={"recipe": recipe, "dataset": final_dataset(config, settings)})
    # The run's measurements (its assumed power for energy estimates) and evaluation seed stay.
    return job_for(final, record.code or "", stages=FINAL_STAGES, limits=limits)


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


@dataclass
class _Metered:
    """`run_job` metered from the parent: the last job's wall time and energy reading."""

    run_job: RunJob
    device: str
    wall_s: float = 0.0
    reading: Any = None

    def __call__(self, job: EvalJob) -> EvalResult:
        from nasloop.hardware import energy_meter

        started = time.perf_counter()
        with energy_meter(self.device) as reading:
            result = self.run_job(job)
        self.wall_s, self.reading = time.perf_counter() - started, reading
        return result


def final_result(finalist: Finalist, job: EvalJob, result: EvalResult, metered: _Metered) -> FinalTrainingResult:
    """One finalist's outcome; its energy from the evaluation when it metered its own training, else the
    whole evaluation as metered from the parent."""
    reading = metered.reading
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
        wall_s=metered.wall_s,
        energy_j=energy,
        energy_method=method,
        energy_detail=detail,
        settings={
            "epochs": job.recipe.epochs,
            "recipe": job.recipe.name,
            "dataset": job.dataset.model_dump(),
            "timeout_s": job.limits.timeout_s,
            "device": metered.device,
        },
        created=time.time(),
    )


def final_proposal(finalist: Finalist, settings: FinalTrainingSettings) -> Proposal:
    """The finalist's code as a proposal of purpose `final`, noted as final training."""
    record = finalist.record
    return Proposal(
        code=record.code,
        parent_ids=(record.id,),
        notes={FINAL_TRAINING_NOTE: {"rank": finalist.rank, "epochs": settings.epochs}},
        purpose=Purpose.FINAL,
        parent=record.id,
        stages=FINAL_STAGES,
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

    The run's engine records each finalist's training as a candidate (purpose `final`) and its result as
    an artifact, as soon as it is known; `on_result` is then called with it. `run_job` evaluates a job
    (default: one sandbox for all finalists, under `run_dir/jobs/final-training`). Raises `RunInUse` when
    another process writes the run, `FileNotFoundError` when `run_dir` holds no run.
    """
    from nasloop.engine import Search
    from nasloop.evaluate.sandbox import resolve_device

    layout = RunDir(Path(run_dir))
    if not layout.exists():
        raise FileNotFoundError(f"{run_dir} holds no run (no {layout.store_path.name} there)")
    with Search.resume(layout.root, progress=False) as search:
        finalists = select_finalists(search.config, search.history, top)
        if not finalists:
            return []
        jobs = {finalist.record.id: final_job(search.config, finalist.record, settings) for finalist in finalists}
        device = resolve_device(settings.device)
        with _job_runner(run_job, next(iter(jobs.values())).dataset, layout, device) as runner:
            metered = _Metered(runner, device)
            results: list[FinalTrainingResult] = []
            for finalist in finalists:
                job = jobs[finalist.record.id]
                ((trained, result),) = search.evaluate_now([final_proposal(finalist, settings)], metered, _fixed(job))
                outcome = final_result(finalist, job, result, metered)
                outcome.trained_id = trained.id
                search.store.put_artifact(
                    f"{ARTIFACT_PREFIX}{finalist.record.id}", json.dumps(outcome.to_dict(), sort_keys=True)
                )
                results.append(outcome)
                if on_result is not None:
                    on_result(outcome)
    return results


def _fixed(job: EvalJob) -> Callable[[Proposal, str], EvalJob]:
    """A job builder that returns `job` (final training builds its jobs from the finalists' records)."""

    def build(proposal: Proposal, code: str) -> EvalJob:
        return job

    return build


@contextmanager
def _job_runner(run_job: RunJob | None, dataset: DatasetSpec, layout: RunDir, device: str) -> Iterator[RunJob]:
    """`run_job`, or one sandbox for every finalist, its worker started before the first one's training
    (its start-up is not part of that finalist's time and energy)."""
    if run_job is not None:
        yield run_job
        return
    from nasloop.evaluate.sandbox import Sandbox

    with Sandbox(dataset, work_dir=layout.jobs_dir / "final-training", device=device) as sandbox:
        sandbox.ready_worker()
        yield sandbox.run


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
    from nasloop.errors import UsageError

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
        raise UsageError(str(error)) from None  # nasloop train's own message, exit status 2
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
    "final_job",
    "final_proposal",
    "format_table",
    "retrain",
    "select_finalists",
    "stored_results",
]
