"""`Search`: one run, offered as `ask()` / `tell()` and driven by `run()`, which is built on them.

One candidate's way through the search (docs/architecture.md has the whole picture)::

    ask():  strategy.propose(ctx) -> proposal -> code (rendered from a space point if needed) -> hash
              -> a failed proposal, or a duplicate of a stored candidate: recorded at once
              -> the same code being evaluated now: it takes that result when it comes
              -> else a `Trial` with the job to evaluate (and the table's figures, on a benchmark)
    tell(trial, result):  store (one transaction with the strategy's new state) -> strategy.observe

`run()` sends each trial's job to the executor and tells its result as it arrives. Proposals are made
while earlier candidates are still being evaluated when the executor has free capacity and the strategy
allows it (`Strategy.sequential` is False or `executor.max_stale` > 0): the LLM generates while the
executor trains. Before each `propose` every finished evaluation is told, so a proposal sees all results
available at that moment. A sequential strategy has at most `max_stale` proposals unobserved when it
proposes again; a strategy whose `max_unobserved` is set (islands: one per island) at most that many.
Each candidate records its *staleness*: how many earlier candidates were unobserved when it was proposed.

The order of a run: the seed network (when the strategy starts from one), the search until a budget
stops it (the last iteration's repair or retry still runs when only the iterations are spent), then the
strategy's finalists once (`Strategy.finalize`, purpose `final`). `nasloop train` adds finalists to a
finished run the same way (`evaluate_now`). A `Search` is the run store's only writer, and holds the
run's lock (`RunInUse` for a second one) from construction to `close()`.
"""

from __future__ import annotations

import inspect
import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any

from nasloop.benchmarks.evaluation import TABLE_METRICS, TabularEvaluator, merge
from nasloop.candidate import EvalResult, Failure, FailureKind, Proposal, Purpose, State
from nasloop.config import ConfigError, SearchConfig, dump_config, load_config
from nasloop.engine.budget import MIN_CALL_S, CallBudget, iteration_reason, other_reason
from nasloop.engine.jobs import job_for
from nasloop.engine.pruning import Pruner
from nasloop.engine.summary import RunSummary, valid_after_repair
from nasloop.engine.trial import InFlight, Trial, cut_by_budget
from nasloop.errors import NasloopError
from nasloop.evaluate.job import EvalJob, Limits
from nasloop.executors.base import Executor
from nasloop.llm.base import LLMBackend, LLMError
from nasloop.llm.config import LLMConfig
from nasloop.llm.recording import BudgetExhausted, NoLLM, RecordingLLM
from nasloop.llm.usage import UsageMeter
from nasloop.registry import executors, spaces, strategies
from nasloop.resolve import resolve_config
from nasloop.seeds import derived_seed
from nasloop.spaces.seed import SeedModel, load_seed
from nasloop.store import CandidateRecord, RunDir, RunLock, RunStore
from nasloop.strategies.base import Context, Observation, Strategy, Task

log = logging.getLogger("nasloop.engine")


class SearchAborted(NasloopError, RuntimeError):
    """The run stopped before its budget because of a fault outside any candidate (e.g. LLM unreachable)."""


class SeedFailed(SearchAborted):
    """The seed network failed its evaluation, so the search has nothing to start from."""


class Search:
    """Runs one search; create it with `Search.start` (new run) or `Search.resume` (existing run).

    `run()` searches to the end. `ask()` and `tell()` let a caller drive the evaluations itself: `ask`
    returns the next `Trial` to evaluate, or None when there is none until pending trials are told (or the
    search is over: `finished`); `tell(trial, result)` records its outcome.
    """

    def __init__(
        self,
        config: SearchConfig,
        run_dir: RunDir,
        *,
        backend: LLMBackend | None = None,
        executor: Executor | None = None,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        run_dir.create()
        self.lock = RunLock.acquire(run_dir)
        try:
            self._open(backend, executor, progress)
        except BaseException:
            self.lock.release()
            raise

    def _open(self, backend: LLMBackend | None, executor: Executor | None, progress: bool) -> None:
        config = self.config
        self.store = RunStore(self.run_dir.store_path)
        self.meter = UsageMeter(
            price_input_per_mtok=config.llm.price_input_per_mtok,
            price_output_per_mtok=config.llm.price_output_per_mtok,
        )
        self._backend = backend
        self._executor = executor
        self.show_progress = progress
        self.tabular = self._make_tabular()
        self.task = self._make_task()
        self.space = self._make_space()
        strategy_class: type[Strategy] = strategies.get(config.strategy)
        options = strategy_class.Options.model_validate(config.strategy_options)
        if strategy_class.needs_space and self.space is None:
            raise ConfigError(f"strategy {config.strategy!r} needs a structured space: set `space` (e.g. nb201)")
        self.strategy = strategy_class(options, self.task, space=self.space, seed=config.seed)
        self.seed_model = self._make_seed()
        self.history: list[CandidateRecord] = self.store.candidates()
        self.pruner = Pruner(config)
        self.pruner.update(self.history)
        saved = self.store.latest_strategy_state()
        if saved is not None:
            self.strategy.load_state_dict(saved[1])
        self.next_id = self.store.next_candidate_id()
        self.started = time.monotonic()
        self.elapsed_before = float(self.store.get_meta("elapsed_s") or 0.0)
        self.pending = InFlight()  # asked, not told yet
        self.queued: list[Proposal] = []  # proposed, not asked yet
        self.queued_staleness = 0  # of the queued proposals: candidates unobserved when they were proposed
        self.reason: str | None = None  # why the search stopped (None: it goes on)
        self.exhausted = False  # a budget ran out inside an LLM call: nothing more starts
        self.finalizing = False
        self.final_count = 0
        self.searched = False  # whether `ask` ran: only then does the search's elapsed time grow
        self.progress: Any = None
        self._llm: RecordingLLM | None = None

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def start(cls, config: SearchConfig, run_dir: Path, **kwargs: Any) -> Search:
        """A new run in `run_dir` (which must not hold a run yet)."""
        layout = RunDir(Path(run_dir))
        if layout.exists():
            raise FileExistsError(f"{run_dir} already holds a run: use `nasloop resume {run_dir}`")
        config = resolve_config(config)  # a contradiction fails here, before the run directory exists
        layout.create()
        config = config.model_copy(update={"run_dir": str(layout.root)})
        layout.config_path.write_text(dump_config(config))
        search = cls(config, layout, **kwargs)
        search.store.set_meta("config", dump_config(config))
        search.store.set_meta("created", str(time.time()))
        return search

    @classmethod
    def resume(cls, run_dir: Path, **kwargs: Any) -> Search:
        """Continue the run stored in `run_dir` with its saved config."""
        layout = RunDir(Path(run_dir))
        if not layout.exists():
            raise FileNotFoundError(f"{run_dir} holds no run (no {layout.store_path.name})")
        return cls(load_config(layout.config_path), layout, **kwargs)

    def stop(self) -> None:
        """Save the elapsed time, shut the executor down and release the run's lock; the store stays open
        for reading (`close` closes it). Idempotent."""
        if self.lock.released:
            return
        if self.searched:
            self.store.set_meta("elapsed_s", str(self.elapsed_s()))
        if self._executor is not None:
            self._executor.shutdown()
        if self.progress is not None:
            self.progress.close()
        self.lock.release()

    def close(self) -> None:
        """`stop`, then close the store. Idempotent."""
        self.stop()
        self.store.close()

    def __enter__(self) -> Search:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _make_task(self) -> Task:
        recipe = self.config.recipe
        common: dict[str, Any] = {
            "metric": self.config.selection_metric,
            "max_params": self.config.limits.max_params,
            "objectives": tuple(self.config.objectives),
            "constraints": tuple(self.config.constraints),
            "llm_model": self.config.llm.model,
        }
        if self.tabular is not None:  # the benchmark's dataset: its shape, its table's training
            in_shape, classes = self.tabular.shape
            spec = self.tabular.table
            recipe_text = f"the {spec.benchmark} benchmark's own training (figures from its table)"
            return Task(dataset=spec.dataset, in_shape=in_shape, num_classes=classes, recipe=recipe_text, **common)
        from nasloop.data import describe

        info = describe(self.config.dataset)
        return Task(
            dataset=self.config.dataset.name,
            in_shape=info.in_shape,
            num_classes=info.num_classes,
            recipe=f"{recipe.name} recipe, {recipe.epochs:g} epoch(s)",
            train_images=info.train_images,
            **common,
        )

    def _make_tabular(self) -> TabularEvaluator | None:
        """The run's benchmark table as its evaluator, when the run names one (`benchmark`)."""
        spec = self.config.benchmark
        if spec is None:
            return None
        from nasloop.benchmarks import BenchmarkError
        from nasloop.registry import benchmarks

        try:
            table = benchmarks.get(spec.name)().load(spec.dataset, spec.table, device_table=spec.device_table)
        except BenchmarkError as error:
            raise ConfigError(f"benchmark: {error}") from None
        wanted = set(self.config.objectives) | {self.config.selection_metric}
        wants_devices = table.has_devices and any(item.split(":")[0] not in TABLE_METRICS for item in wanted)
        return TabularEvaluator(table, devices=wants_devices)

    @property
    def table_only(self) -> bool:
        """Whether the run's benchmark table answers everything, so no sandbox is needed."""
        return self.tabular is not None and self.tabular.sandbox_stages(self.config.stages) is None

    def _make_space(self) -> Any:
        """The configured structured space, told the run's input shape, classes and parameter budget."""
        if not self.config.space:
            return None
        space_class = spaces.get(self.config.space)
        accepted = inspect.signature(space_class).parameters
        defaults = {"in_shape": self.task.in_shape, "num_classes": self.task.num_classes}
        if self.config.limits.max_params is not None:
            defaults["max_params"] = self.config.limits.max_params
        options = {key: value for key, value in defaults.items() if key in accepted}
        options.update(self.config.space_options)
        unknown = sorted(set(self.config.space_options) - set(accepted))
        if unknown:
            raise ConfigError(f"space {self.config.space!r} has no option {', '.join(unknown)} (space_options)")
        return space_class(**options)

    def _make_seed(self) -> SeedModel | None:
        """The network this run starts from, when the strategy starts from one (`seed_model`)."""
        seed = load_seed(self.config.seed_model)
        explicit = seed is not None and not seed.builtin
        if seed is not None and self.strategy.takes_seed(explicit=explicit):
            return seed
        if explicit:
            raise ConfigError(
                f"seed_model: strategy {self.config.strategy!r} does not start from a network of its own; "
                "seed models are for the open-code strategies (feedback-memory, expert-rules, one-shot)"
            )
        return None

    def _make_backend(self) -> LLMBackend:
        if self._backend is None:
            from nasloop.llm import make_backend

            self._backend = make_backend(self._llm_config())
        return self._backend

    def _llm_config(self) -> LLMConfig:
        """The LLM config, with an embedded model's decode threads chosen for this run when unset: every
        core when no evaluation can run during a generation (one evaluation at a time, none proposed
        ahead), else the backend's default, which leaves cores to the training beside it."""
        llm = self.config.llm
        overlaps = (self.config.executor.workers or 1) + self.config.executor.max_stale > 1
        if llm.backend != "llama-cpp" or llm.n_threads is not None or overlaps:
            return llm
        from nasloop.llm.llama_cpp_backend import available_cores

        return llm.model_copy(update={"n_threads": available_cores()})

    def executor(self) -> Executor:
        """The run's executor, made on first use (none at all when the benchmark table answers everything)."""
        if self._executor is None and self.table_only:
            self._executor = TableOnly()
        if self._executor is None:
            settings = self.config.executor
            executor_class = executors.get(settings.name)
            self._executor = executor_class.from_config(self.config, work_dir=self.run_dir.jobs_dir)
        return self._executor

    @property
    def llm(self) -> RecordingLLM:
        """The recording LLM every strategy call goes through (its backend made on first use)."""
        if self._llm is None:
            self._llm = RecordingLLM(
                self._make_backend() if self.strategy.uses_llm else NoLLM(),
                self.store,
                self.meter,
                seed=derived_seed(self.config.seed, "llm") % 10_000,
                model=self.config.llm.model,
                limits=self.call_budget,
            )
        return self._llm

    # -- budget -------------------------------------------------------------------------------------

    @property
    def iterations_done(self) -> int:
        return sum(1 for record in self.history if record.purpose.counts_as_iteration)

    def best(self) -> CandidateRecord | None:
        """The best candidate so far, as the strategy ranks them (`Strategy.rank`)."""
        return self.strategy.rank(self.history, self.config).best

    def elapsed_s(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    @property
    def call_budget(self) -> CallBudget:
        """What the run's budgets leave for each LLM call."""
        return CallBudget(self.config.budget, self.elapsed_s, self.store.llm_totals, self.meter)

    def stop_reason(self, pending_iterations: int = 0) -> str | None:
        """Why the search must not start another candidate, or None."""
        budget = self.config.budget
        return iteration_reason(budget, self.iterations_done + pending_iterations) or self.other_stop_reason()

    def other_stop_reason(self) -> str | None:
        """Why the search must stop for a budget other than its iterations (which still let the last
        iteration's repair or retry run), or None."""
        best = self.best()
        metric = self.config.selection_metric
        score = best.metrics.get(metric) if best is not None else None
        return other_reason(self.config.budget, self.elapsed_s(), self.store.llm_totals(), score, metric)

    @property
    def finished(self) -> bool:
        """Whether the search is over: stopped, finalists evaluated, nothing pending."""
        return self.store.get_meta("finalized") is not None and not self.pending

    # -- ask / tell ---------------------------------------------------------------------------------

    def ask(self) -> Trial | None:
        """The next trial to evaluate, or None: none until pending trials are told, or none at all
        (`finished`). Proposals that need no evaluation (a failed answer, a duplicate) are recorded on the
        way. Raises `SearchAborted` when the LLM fails beyond recovery, `SeedFailed` when the seed fails."""
        self.searched = True
        try:
            while True:
                if self._seed_pending():
                    return None
                proposal = self._next_proposal()
                if proposal is None:
                    return None
                trial = self._trial(proposal)
                if trial is not None:
                    return trial
        except LLMError as error:
            raise SearchAborted(
                f"{type(error).__name__}: {error}\nThe run is saved; continue it with "
                f"`nasloop resume {self.run_dir.root}` once the LLM is available."
            ) from error

    def tell(self, trial: Trial, result: EvalResult) -> CandidateRecord:
        """Record `trial`'s outcome (and that of the trials that follow it); its stored record."""
        followers = self.pending.done(trial)
        if trial.table is not None:
            result = merge(trial.table, result)
        if trial.timeout_s < self.config.limits.timeout_s and result.failure is not None:
            result = cut_by_budget(result)
        record = self._record(trial, result, duplicate_of=trial.follows)
        for follower in followers:
            self._record(follower, result, duplicate_of=trial.id)
        return record

    def _seed_pending(self) -> bool:
        """Whether the seed network is being evaluated, or is asked now (it goes first, alone)."""
        if self.pending.has_seed():
            return True
        if self.seed_model is None or any(record.purpose is Purpose.SEED for record in self.history):
            return False
        seed = self.seed_model
        self.queued.insert(0, Proposal(code=seed.code, purpose=Purpose.SEED, notes={"seed_model": seed.source}))
        return False

    def _seed_problem(self, record: CandidateRecord) -> str:
        problem = record.failure.short(600) if record.failure else record.state.value
        source = self.seed_model.source if self.seed_model is not None else "the seed"
        return (
            f"the seed model ({source}) did not complete its evaluation: {problem}\n"
            "Fix the file, or start without a seed (seed_model: none)."
        )

    def _next_proposal(self) -> Proposal | None:
        """The next proposal to turn into a trial, or None while there is none (see `ask`)."""
        if self.queued and self.queued[0].purpose is Purpose.SEED:
            return self.queued.pop(0)
        if self.finalizing:
            return self._next_final()
        self.reason = self.reason or self.stop_reason(pending_iterations=self._pending_iterations())
        room = len(self.pending) < self._max_in_flight()
        # Once only the iterations are spent, a repair or retry still completes its iteration.
        finishing = self.reason is not None and not self.exhausted and self.other_stop_reason() is None
        if not room:
            return None
        if self.queued and (self.reason is None or (finishing and not self.queued[0].purpose.counts_as_iteration)):
            return self.queued.pop(0)
        if not self.queued and ((self.reason is None and self._may_propose()) or (finishing and not self.pending)):
            self.queued_staleness = len(self.pending)
            try:
                self.queued = self._propose() if self.reason is None else self._finish()
            except BudgetExhausted as error:
                self.reason, self.exhausted = str(error), True
            if self.queued:
                return self.queued.pop(0)
            if self.reason is None:
                return self._next_proposal()
        if self.reason is not None and not self.pending:
            self._start_finalizing()
            return self._next_final()
        return None

    def _start_finalizing(self) -> None:
        """Queue the strategy's finalists, once per run."""
        self.finalizing = True
        self.queued = []
        if self.store.get_meta("finalized") is None:
            self.queued = self.strategy.finalize(self._context(self.iterations_done))
            self.final_count = len(self.queued)
        self.queued_staleness = len(self.pending)

    def _next_final(self) -> Proposal | None:
        if self.queued and len(self.pending) < self._max_in_flight():
            return self.queued.pop(0)
        if not self.queued and not self.pending and self.store.get_meta("finalized") is None:
            self.store.set_meta("finalized", str(self.final_count))
        return None

    def _trial(self, proposal: Proposal, *, job: EvalJob | None = None) -> Trial | None:
        """A trial for `proposal`, or None when its outcome is recorded at once (a failed proposal, a
        duplicate of a stored candidate, a benchmark table's answer)."""
        staleness = self.queued_staleness if proposal.purpose is not Purpose.SEED else 0
        candidate_id = self.next_id
        self.next_id += 1
        iteration = self.iterations_done + self._pending_iterations()
        code, code_hash, failure = self._code_for(proposal)
        if failure is not None or code is None or code_hash is None:
            result = EvalResult(State.FAILED, failure=failure or Failure(FailureKind.EXTRACTION, "no code"))
            self._record(Trial(candidate_id, iteration, proposal, code or "", code_hash or "", 0), result)
            return None
        final = proposal.purpose is Purpose.FINAL
        original = self.store.find_by_hash(code_hash) if not final else None
        if original is not None:
            trial = Trial(candidate_id, iteration, proposal, code, code_hash, 0)
            self._record(trial, original.result, duplicate_of=original.id)
            return None
        trial = Trial(candidate_id, iteration, proposal, code, code_hash, staleness)
        twin = self.pending.twin(code_hash)
        if twin is not None and not final:  # the same code is being evaluated now: its result will do
            self.pending.follow(trial, twin)
            return None
        limits = self._limits()
        trial.timeout_s = limits.timeout_s
        trial.job = job or job_for(self.config, code, stages=proposal.stages, limits=limits)
        if self.tabular is not None and proposal.architecture is not None:
            table = self.tabular.evaluate(proposal.architecture)
            stages = self.tabular.sandbox_stages(trial.job.stages)
            if stages is None or table.state is not State.COMPLETE:
                self._record(trial, table)
                return None
            trial.table, trial.job = table, trial.job.model_copy(update={"stages": stages})
        self.pending.add(trial)
        return trial

    def _max_in_flight(self) -> int:
        return max(1, self.executor().capacity + self.config.executor.max_stale)

    def _may_propose(self) -> bool:
        if not self.pending:
            return True
        limit = self.strategy.max_unobserved  # islands: one unobserved proposal per island
        if limit is not None and len(self.pending) >= limit:
            return False
        if self.strategy.sequential and self.config.executor.max_stale == 0:
            return False
        return len(self.pending) <= self.config.executor.max_stale or not self.strategy.sequential

    def _pending_iterations(self) -> int:
        return self.pending.iterations()

    def _context(self, iteration: int) -> Context:
        from nasloop.prompts import render

        llm = self.llm
        llm.iteration = iteration
        prompts_dir = Path(self.config.prompts_dir) if self.config.prompts_dir else None

        def render_template(name: str, /, **context: Any) -> str:
            return render(name, template_dir=prompts_dir, **context)

        rng = random.Random(derived_seed(self.config.seed, "iteration", iteration))
        return Context(
            llm=llm,
            history=tuple(self.history),
            rng=rng,
            iteration=iteration,
            task=self.task,
            render=render_template,
            space=self.space,
        )

    def _propose(self) -> list[Proposal]:
        iteration = self.iterations_done + len(self.pending)
        proposals = self.strategy.propose(self._context(iteration))
        if not proposals:
            raise RuntimeError(f"strategy {self.config.strategy!r} proposed nothing at iteration {iteration}")
        return proposals

    def _finish(self) -> list[Proposal]:
        """The strategy's repairs and retries that complete the last iteration (`Strategy.finish`)."""
        proposals = self.strategy.finish(self._context(self.iterations_done))
        return [proposal for proposal in proposals if not proposal.purpose.counts_as_iteration]

    def _code_for(self, proposal: Proposal) -> tuple[str | None, str | None, Failure | None]:
        """(code, canonical hash, failure) for a proposal."""
        from nasloop.spaces.canonical import arch_hash, canonical_hash

        if proposal.failure is not None:
            return proposal.code, None, proposal.failure
        if proposal.architecture is not None:
            space = (
                self.space
                if proposal.space in (None, getattr(self.space, "name", None))
                else spaces.get(str(proposal.space))()
            )
            if space is None:
                return None, None, Failure(FailureKind.CRASH, "an architecture was proposed but no space is set")
            problem = space.validate(proposal.architecture)
            if problem is not None:
                return None, None, Failure(FailureKind.BUILD, f"invalid architecture: {problem}")
            code = space.render(proposal.architecture, self.task.in_shape, self.task.num_classes)
            return code, arch_hash(space.name, proposal.architecture), None
        if proposal.code is None:
            return None, None, Failure(FailureKind.EXTRACTION, "the proposal carried no code")
        return proposal.code, canonical_hash(proposal.code), None

    def _limits(self) -> Limits:
        """The evaluation limits, with the timeout shortened to what the wall-clock budget leaves."""
        left = self.call_budget.seconds_left()
        if left is None or left >= self.config.limits.timeout_s:
            return self.config.limits
        return self.config.limits.model_copy(update={"timeout_s": max(left, MIN_CALL_S)})

    def _record(
        self, trial: Trial, result: EvalResult, *, duplicate_of: int | None = None, observe: bool = True
    ) -> CandidateRecord:
        """Store the candidate and the strategy's new state in one transaction, then write the .py file."""
        proposal = trial.proposal
        record = CandidateRecord(
            id=trial.id,
            iteration=trial.iteration,
            state=State.DUPLICATE if duplicate_of is not None else result.state,
            code=trial.code or None,
            architecture=proposal.architecture,
            space=proposal.space or getattr(self.space, "name", None),
            hash=trial.code_hash or None,
            parent_ids=proposal.parent_ids,
            duplicate_of=duplicate_of,
            notes=proposal.notes,
            metrics=result.metrics,
            failure=result.failure,
            timings=result.timings,
            stage=result.stage,
            curve=result.curve,
            info=result.info,
            llm_call_ids=proposal.llm_call_ids,
            staleness=trial.staleness,
            created=time.time(),
            purpose=proposal.purpose,
            parent=proposal.parent,
        )
        self.history.append(record)
        if observe:
            self.strategy.observe([Observation(proposal, record)])
        with self.store.transaction():
            self.store.add_candidate(record)
            if observe:
                self.store.save_strategy_state(trial.iteration, self.strategy.state_dict())
                for name, content in self.strategy.artifacts().items():
                    self.store.put_artifact(name, content)
        self.pruner.update(self.history)
        if trial.code:
            self.run_dir.candidate_file(trial.id).write_text(trial.code)
        if self.progress is not None:
            self.progress.update()
        if proposal.purpose is Purpose.SEED and record.state is not State.COMPLETE:
            raise SeedFailed(self._seed_problem(record))
        return record

    # -- driving it ---------------------------------------------------------------------------------

    def run(self) -> RunSummary:
        """Search until a budget is exhausted, then evaluate the finalists; safe to interrupt at any
        point and resume later. Stops the search (`stop`): its store can still be read."""
        from nasloop.progress import SearchProgress

        self.progress = SearchProgress(self, enabled=self.show_progress)
        executor = self.executor()
        futures: dict[Future[EvalResult], Trial] = {}
        try:
            while True:
                self._collect(futures, block=False)  # results that arrived meanwhile are told first
                trial = self.ask()
                if trial is not None and trial.job is not None:
                    futures[executor.submit(trial.job, self.pruner.callback())] = trial
                    continue
                if not futures:
                    break
                self._collect(futures, block=True)
        finally:
            for future in futures:
                future.cancel()
            self.stop()
        return self.summary(self.reason or "stopped")

    def _collect(self, futures: dict[Future[EvalResult], Trial], *, block: bool) -> None:
        """Tell the finished evaluations: at least one when `block`, else those finished already."""
        if not futures:
            return
        done, _ = wait(list(futures), timeout=None if block else 0, return_when=FIRST_COMPLETED)
        for future in sorted(done, key=lambda f: futures[f].id):
            trial = futures.pop(future)
            try:
                result = future.result()
            except Exception as error:  # an executor fault, not the candidate's: record it as a crash
                log.exception("executor failed on candidate %d", trial.id)
                result = EvalResult.failed(FailureKind.CRASH, f"executor error: {type(error).__name__}: {error}")
            self.tell(trial, result)

    def evaluate_now(
        self,
        proposals: Sequence[Proposal],
        run_job: Callable[[EvalJob], EvalResult],
        job: Callable[[Proposal, str], EvalJob],
    ) -> list[tuple[CandidateRecord, EvalResult]]:
        """Evaluate `proposals` (purpose `final`) one after the other with `run_job`, outside the search:
        the strategy does not observe them, the budget does not count them. `job(proposal, code)` builds
        each one's job. `nasloop train` adds its finalists to a finished run this way."""
        outcomes: list[tuple[CandidateRecord, EvalResult]] = []
        for proposal in proposals:
            if proposal.purpose is not Purpose.FINAL:
                raise ValueError("evaluate_now takes final proposals only (purpose final)")
            code, code_hash, failure = self._code_for(proposal)
            if failure is not None or code is None or code_hash is None:
                raise ValueError(f"final proposal of candidate {proposal.parent} has no code: {failure}")
            trial = Trial(self.next_id, self.iterations_done, proposal, code, code_hash, 0)
            self.next_id += 1
            result = run_job(job(proposal, code))
            outcomes.append((self._record(trial, result, observe=False), result))
        return outcomes

    def summary(self, reason: str) -> RunSummary:
        valid = sum(1 for c in self.history if c.state is State.COMPLETE and c.purpose.counts_as_iteration)
        return RunSummary(
            run_dir=self.run_dir.root,
            candidates=len(self.history),
            iterations=self.iterations_done,
            valid=valid,
            best=self.best(),
            metric=self.config.selection_metric,
            stop_reason=reason,
            llm_totals=self.store.llm_totals(),
            seed=next((record for record in self.history if record.purpose is Purpose.SEED), None),
            notes=tuple(self.strategy.summary()),
            valid_after_repair=valid_after_repair(self.history),
        )


class TableOnly(Executor):
    """The executor of a run whose benchmark table answers every candidate: it runs nothing."""

    capacity = 1

    def submit(self, job: EvalJob, on_progress: Any = None) -> Future[EvalResult]:
        raise RuntimeError("a table-only run submitted a sandbox job")

    def shutdown(self) -> None:
        pass


__all__ = ["Search", "SearchAborted", "SeedFailed", "TableOnly"]
