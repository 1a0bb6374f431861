"""The search loop: budget, dedupe, submit, collect, store. The engine is the only writer of the run store.

One iteration of the loop (DESIGN.md flow)::

    strategy.propose(ctx) -> proposals -> code (rendered from a space point if needed) -> canonical hash
      -> duplicate? record it, pointing at the original (still being evaluated: record it with its result)
      -> else submit an evaluation job to the executor
    executor result -> store (one transaction with the strategy's new state) -> strategy.observe

Proposals are generated while earlier candidates are still being evaluated when the executor has free
capacity and the strategy allows it (`Strategy.sequential` is False or `executor.max_stale` > 0): the
engine thread runs `propose` (the LLM calls) while the executor's threads train, so generation and
evaluation overlap. Before each `propose` the engine records every evaluation that has finished, so a
proposal sees all results available at that moment. A sequential strategy has at most `max_stale`
proposals unobserved when it proposes again; a strategy whose `max_unobserved` is set (islands: one
per island) at most that many. Each candidate records its *staleness*: how many earlier candidates were
still unobserved when it was proposed.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nasloop.benchmarks.evaluation import TABLE_METRICS, TabularEvaluator, merge
from nasloop.candidate import EvalResult, Failure, FailureKind, Proposal, Purpose, State
from nasloop.config import Budget, ConfigError, SearchConfig, dump_config, load_config
from nasloop.evaluate.job import EvalJob, Limits
from nasloop.executors.base import Executor
from nasloop.llm.base import Completion, DeadlineExceeded, LLMBackend, LLMError, Message
from nasloop.llm.config import LLMConfig
from nasloop.llm.usage import UsageMeter
from nasloop.registry import executors, spaces, strategies
from nasloop.resolve import resolve_config
from nasloop.spaces.seed import SeedModel, load_seed
from nasloop.store import CandidateRecord, RunDir, RunStore
from nasloop.strategies.base import Context, Observation, Reply, Strategy, Task

log = logging.getLogger("nasloop.engine")


class SearchAborted(RuntimeError):
    """The run stopped before its budget because of a fault outside any candidate (e.g. LLM unreachable)."""


class SeedFailed(SearchAborted):
    """The seed network failed its evaluation, so the search has nothing to start from."""


class BudgetExhausted(Exception):
    """A budget of the run (wall clock, tokens, money) leaves no room for the next LLM call.

    Raised by `RecordingLLM` before a call that cannot start in time, or after one that the wall-clock
    budget cut short; it is not an `LLMError`, so no strategy mistakes it for a failed answer, and the
    engine stops the search with its message as the reason."""


# A call that could run for less than this is not started: it could not produce a usable answer.
MIN_CALL_S = 2.0
# Prompt characters per token, on the low side (code runs at about 3.5-4), so the estimate is high.
PROMPT_CHARS_PER_TOKEN = 3


class CallBudget:
    """What the run's budgets leave for the next LLM call.

    Wall clock: a call gets at most the seconds left, and none when fewer than `MIN_CALL_S` are left.
    Tokens and money: a call starts only while the total so far plus its prompt (estimated from its
    characters, generously) stays under the budget, so a run overshoots by at most one call's answer.
    """

    def __init__(self, budget: Budget, elapsed_s: Callable[[], float], totals: Callable[[], dict[str, float]],
                 meter: UsageMeter) -> None:  # fmt: skip
        self.budget = budget
        self.elapsed_s = elapsed_s
        self.totals = totals
        self.meter = meter

    def seconds_left(self) -> float | None:
        """Seconds until the wall-clock budget ends, or None without one."""
        if self.budget.wall_clock_s is None:
            return None
        return self.budget.wall_clock_s - self.elapsed_s()

    def check(self, messages: list[Message]) -> float | None:
        """The seconds the next call may take (None: no wall-clock budget); `BudgetExhausted` when it may
        not start at all."""
        left = self.seconds_left()
        if left is not None and left < MIN_CALL_S:
            raise BudgetExhausted(f"wall-clock budget reached ({self.budget.wall_clock_s:g} s)")
        prompt = sum(len(message["content"]) for message in messages) // PROMPT_CHARS_PER_TOKEN
        totals = self.totals()
        used = totals["prompt_tokens"] + totals["completion_tokens"]
        if self.budget.llm_tokens is not None and used + prompt >= self.budget.llm_tokens:
            raise BudgetExhausted(f"LLM token budget reached ({self.budget.llm_tokens})")
        price = self.meter.price_input_per_mtok
        money = self.budget.money_usd
        if money is not None and price is not None and totals["cost_usd"] + prompt * price / 1e6 >= money:
            raise BudgetExhausted(f"money budget reached (${money:g})")
        return left

    def cut_short(self, completion: Completion | None) -> bool:
        """Whether a call ended because the wall-clock budget ran out during it."""
        left = self.seconds_left()
        ended = left is not None and left < MIN_CALL_S / 2
        return ended and (completion is None or completion.finish_reason == "deadline")


def derived_seed(seed: int, *parts: object) -> int:
    """A seed for one component, derived from the run seed (STYLE.md habit 8)."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


# ----------------------------------------------------------------------------------------------------
# The recording LLM: every call is stored and counted
# ----------------------------------------------------------------------------------------------------


class RecordingLLM:
    """Wraps a backend so every call is stored (role, prompt, completion, usage) and metered.

    Calls without an explicit seed get `run seed + call counter`, as the published feedback-memory
    method seeds its calls; the counter continues across `resume` from the number of stored calls.
    Thread-safe: a strategy may call it from several threads at once (islands); the calls themselves run
    concurrently, their counting and storing one at a time.
    """

    def __init__(
        self,
        backend: LLMBackend,
        store: RunStore,
        meter: UsageMeter,
        *,
        seed: int,
        model: str,
        budget: CallBudget | None = None,
    ):
        self.backend = backend
        self.store = store
        self.meter = meter
        self.seed = seed
        self.model = model
        self.budget = budget
        self.iteration = 0
        self.counter = int(store.llm_totals()["calls"])
        self._lock = threading.Lock()

    def complete(self, role: str, messages: list[Message], **options: Any) -> Reply:
        with self._lock:
            left = self.budget.check(messages) if self.budget is not None else None
            options.setdefault("seed", self.seed + self.counter)
            self.counter += 1
            iteration = self.iteration
        request = {key: value for key, value in options.items()}
        if left is not None:  # not part of the stored request: it says when the call ran, not what it asked
            options["deadline_s"] = left
        started = time.perf_counter()
        try:
            completion = self.backend.complete(messages, **options)
        except LLMError as error:
            cut = isinstance(error, DeadlineExceeded) and self.budget is not None and self.budget.cut_short(None)
            with self._lock:
                self.store.add_llm_call(
                    role=role,
                    iteration=iteration,
                    model=self.model,
                    messages=messages,
                    request=request,
                    completion=None,
                    error=f"{type(error).__name__}: {error}" + (" (the run's wall-clock budget ended)" if cut else ""),
                    prompt_tokens=0,
                    completion_tokens=0,
                    latency_s=time.perf_counter() - started,
                    cost_usd=0.0,
                )
            if cut:
                raise BudgetExhausted(self._wall_clock_reason()) from error
            raise
        cut = self.budget is not None and self.budget.cut_short(completion)
        with self._lock:
            cost = self.meter.add(role, completion).cost
            call_id = self.store.add_llm_call(
                role=role,
                iteration=iteration,
                model=completion.model,
                messages=messages,
                request=request,
                completion=completion.text,
                error="cut short: the run's wall-clock budget ended" if cut else None,
                prompt_tokens=completion.usage.prompt_tokens,
                completion_tokens=completion.usage.completion_tokens,
                latency_s=completion.latency_s,
                cost_usd=cost or 0.0,
            )
        if cut:
            raise BudgetExhausted(self._wall_clock_reason())
        return Reply(completion, call_id)

    def _wall_clock_reason(self) -> str:
        limit = self.budget.budget.wall_clock_s if self.budget is not None else None
        return f"wall-clock budget reached ({limit:g} s)" if limit is not None else "wall-clock budget reached"


# ----------------------------------------------------------------------------------------------------
# Pruning
# ----------------------------------------------------------------------------------------------------


def _loss_at(curve: list[tuple[int, float]], step: int) -> float | None:
    """The curve's loss at `step`, linearly interpolated; None outside the curve."""
    if not curve or step < curve[0][0] or step > curve[-1][0]:
        return None
    for (step_a, loss_a), (step_b, loss_b) in itertools.pairwise(curve):
        if step_a <= step <= step_b:
            if step_b == step_a:
                return loss_b
            return loss_a + (loss_b - loss_a) * (step - step_a) / (step_b - step_a)
    return curve[-1][1]


class Pruner:
    """Stops a candidate whose smoothed loss is clearly above the top-k curves at the same step."""

    def __init__(self, config: SearchConfig) -> None:
        self.settings = config.pruning
        self.metric = config.selection_metric
        self.reference: list[list[tuple[int, float]]] = []

    def update(self, history: list[CandidateRecord]) -> None:
        """Recompute the reference curves from the completed candidates (called by the engine thread)."""
        complete = [c for c in history if c.state is State.COMPLETE and c.curve and self.metric in c.metrics]
        if len(complete) < self.settings.min_completed:
            self.reference = []
            return
        best = sorted(complete, key=lambda c: c.metrics[self.metric], reverse=True)[: self.settings.top_k]
        self.reference = [list(c.curve) for c in best]

    def callback(self) -> Callable[[int, float], bool] | None:
        """A progress callback for one job, or None when pruning is off or has no reference yet."""
        if not self.settings.enabled or not self.reference:
            return None
        reference = [list(curve) for curve in self.reference]
        total_steps = max(curve[-1][0] for curve in reference)
        settings = self.settings
        if total_steps < settings.min_steps:
            return None
        seen: list[tuple[int, float]] = []

        def should_stop(step: int, loss: float) -> bool:
            # Compare like with like: the mean of the last few reported losses against the reference
            # curves' mean at the same steps (an EMA would lag behind a falling curve and prune good ones).
            seen.append((step, loss))
            if step < settings.min_fraction * total_steps:
                return False
            window = seen[-3:]
            own = sum(value for _, value in window) / len(window)
            worst_reference = None
            for curve in reference:
                values = [_loss_at(curve, s) for s, _ in window]
                if all(value is not None for value in values):
                    mean = sum(v for v in values if v is not None) / len(values)
                    worst_reference = mean if worst_reference is None else max(worst_reference, mean)
            return worst_reference is not None and own > worst_reference * (1 + settings.margin)

        return should_stop


# ----------------------------------------------------------------------------------------------------
# The engine
# ----------------------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    """What a finished (or stopped) search reports. `valid`: iterations whose own candidate completed;
    `valid_after_repair`: those whose candidate, or a repair or retry of it, completed."""

    run_dir: Path
    candidates: int
    iterations: int
    valid: int
    best: CandidateRecord | None
    metric: str
    stop_reason: str
    llm_totals: dict[str, float] = field(default_factory=dict)
    seed: CandidateRecord | None = None  # the network the search started from, if it had one
    notes: tuple[str, ...] = ()  # the strategy's own summary lines
    valid_after_repair: int = 0

    @property
    def valid_rate(self) -> float:
        return self.valid / self.iterations if self.iterations else 0.0


@dataclass
class _InFlight:
    candidate_id: int
    iteration: int
    proposal: Proposal
    code: str
    code_hash: str
    staleness: int
    submitted: float
    duplicate_of: int | None = None  # the candidate in flight with the same code, whose result this one takes
    timeout_s: float = math.inf  # the evaluation's timeout, shorter than the run's when the budget cut it


def _cut_by_budget(result: EvalResult) -> EvalResult:
    """A timeout that the wall-clock budget imposed says so (the candidate may be fine)."""
    failure = result.failure
    if failure is None or failure.kind is not FailureKind.TIMEOUT:
        return result
    message = "the run's wall-clock budget ended during this evaluation: " + failure.message
    return replace(result, failure=Failure(failure.kind, message, failure.traceback))


def _follow(future: Future[EvalResult], then: Callable[[EvalResult], EvalResult] | None = None) -> Future[EvalResult]:
    """A future that ends as `future` ends: with its result (passed through `then`), its exception or
    its cancellation."""
    follower: Future[EvalResult] = Future()

    def copy(done: Future[EvalResult]) -> None:
        if follower.done():  # cancelled when the search stopped
            return
        if done.cancelled():
            follower.cancel()
        elif done.exception() is not None:
            follower.set_exception(done.exception())
        else:
            follower.set_result(then(done.result()) if then is not None else done.result())

    future.add_done_callback(copy)
    return follower


def valid_after_repair(history: Sequence[CandidateRecord]) -> int:
    """Iterations whose search candidate, or a repair or retry of it, completed. A repair belongs to the
    iteration of the candidate it repairs; a retry (asked right after its iteration's failed answer) to
    the latest search candidate before it."""
    iteration_of: dict[int, int] = {}  # candidate -> the search candidate of its iteration
    valid: set[int] = set()
    latest: int | None = None
    for record in sorted(history, key=lambda candidate: candidate.id):
        root: int | None
        if record.purpose is Purpose.SEARCH:
            root = latest = record.id
        elif record.purpose is Purpose.REPAIR:
            root = iteration_of.get(record.parent, latest) if record.parent is not None else latest
        elif record.purpose is Purpose.RETRY:
            root = latest
        else:
            continue
        if root is None:
            continue
        iteration_of[record.id] = root
        if record.state is State.COMPLETE:
            valid.add(root)
    return len(valid)


def counts_as_iteration(record: CandidateRecord) -> bool:
    """Only search candidates count as iterations: not the seed, repairs, retries or finalists."""
    return record.purpose is Purpose.SEARCH


class Engine:
    """Runs one search; create it with `Engine.start` (new run) or `Engine.resume` (existing run)."""

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
        self.store = RunStore(run_dir.store_path)
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
            raise ValueError(f"strategy {config.strategy!r} needs a structured space: set `space` (e.g. nb201)")
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

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def start(cls, config: SearchConfig, run_dir: Path, **kwargs: Any) -> Engine:
        """A new run in `run_dir` (which must not hold a run yet)."""
        layout = RunDir(Path(run_dir))
        if layout.exists():
            raise FileExistsError(f"{run_dir} already holds a run: use `nasloop resume {run_dir}`")
        config = resolve_config(config)  # a contradiction fails here, before the run directory exists
        layout.create()
        config = config.model_copy(update={"run_dir": str(layout.root)})
        layout.config_path.write_text(dump_config(config))
        engine = cls(config, layout, **kwargs)
        engine.store.set_meta("config", dump_config(config))
        engine.store.set_meta("created", str(time.time()))
        return engine

    @classmethod
    def resume(cls, run_dir: Path, **kwargs: Any) -> Engine:
        """Continue the run stored in `run_dir` with its saved config."""
        layout = RunDir(Path(run_dir))
        if not layout.exists():
            raise FileNotFoundError(f"{run_dir} holds no run (no {layout.store_path.name})")
        return cls(load_config(layout.config_path), layout, **kwargs)

    def _make_task(self) -> Task:
        from nasloop.data import load_splits

        recipe = self.config.recipe
        common = {
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
        splits = load_splits(self.config.dataset)
        return Task(
            dataset=self.config.dataset.name,
            in_shape=splits.in_shape,
            num_classes=splits.num_classes,
            recipe=f"{recipe.name} recipe, {recipe.epochs:g} epoch(s)",
            train_images=len(splits.train_y),
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
            raise ValueError(f"space {self.config.space!r} has no option {', '.join(unknown)} (space_options)")
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

    def _make_executor(self) -> Executor:
        if self._executor is None and self.table_only:  # the table answers: no sandbox is started
            self._executor = TableOnly()
        if self._executor is None:
            settings = self.config.executor
            executor_class = executors.get(settings.name)
            self._executor = executor_class.from_config(self.config, work_dir=self.run_dir.jobs_dir)
        return self._executor

    # -- budget -------------------------------------------------------------------------------------

    @property
    def iterations_done(self) -> int:
        return sum(1 for record in self.history if counts_as_iteration(record))

    def best(self) -> CandidateRecord | None:
        metric = self.config.selection_metric
        scored = [c for c in self.history if c.state is State.COMPLETE and metric in c.metrics]
        return max(scored, key=lambda c: c.metrics[metric], default=None)

    def elapsed_s(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def stop_reason(self, pending_iterations: int = 0) -> str | None:
        """Why the search must not start another candidate, or None."""
        budget = self.config.budget
        if budget.iterations is not None and self.iterations_done + pending_iterations >= budget.iterations:
            return f"iteration budget reached ({budget.iterations})"
        return self.other_stop_reason()

    def other_stop_reason(self) -> str | None:
        """Why the search must stop for a budget other than its iterations (which still let the last
        iteration's repair or retry run), or None."""
        budget = self.config.budget
        totals = self.store.llm_totals()
        if budget.wall_clock_s is not None and self.elapsed_s() >= budget.wall_clock_s:
            return f"wall-clock budget reached ({budget.wall_clock_s:g} s)"
        tokens = totals["prompt_tokens"] + totals["completion_tokens"]
        if budget.llm_tokens is not None and tokens >= budget.llm_tokens:
            return f"LLM token budget reached ({budget.llm_tokens})"
        if budget.money_usd is not None and totals["cost_usd"] >= budget.money_usd:
            return f"money budget reached (${budget.money_usd:g})"
        best = self.best()
        metric = self.config.selection_metric
        if budget.target_score is not None and best is not None and best.metrics[metric] >= budget.target_score:
            return f"target {metric} {budget.target_score:g} reached"
        return None

    # -- the loop -----------------------------------------------------------------------------------

    def run(self) -> RunSummary:
        """Search until a budget is exhausted; safe to interrupt at any point and resume later."""
        from nasloop.progress import SearchProgress

        llm = RecordingLLM(
            self._make_backend() if self.strategy.uses_llm else _NoLLM(),
            self.store,
            self.meter,
            seed=derived_seed(self.config.seed, "llm") % 10_000,
            model=self.config.llm.model,
            budget=self.call_budget,
        )
        executor = self._make_executor()
        in_flight: dict[Future[EvalResult], _InFlight] = {}
        queued: list[Proposal] = []
        staleness = 0  # of the queued proposals: candidates unobserved when they were proposed
        progress = SearchProgress(self, enabled=self.show_progress)
        reason: str | None = None
        exhausted = False  # a budget ran out inside an LLM call: nothing more starts
        try:
            self._evaluate_seed(executor, progress)
            while True:
                # Results that arrived meanwhile (e.g. while the LLM generated) are recorded first.
                self._collect(in_flight, progress, block=False)
                # Queued proposals are not pending yet: each is submitted while the budget allows it.
                reason = reason or self.stop_reason(pending_iterations=self._pending_iterations(in_flight, []))
                room = len(in_flight) < self._max_in_flight()
                # Once only the iterations are spent, a repair or retry still completes its iteration.
                finishing = reason is not None and not exhausted and self.other_stop_reason() is None
                if room and queued and (reason is None or (finishing and queued[0].purpose is not Purpose.SEARCH)):
                    self._submit(queued.pop(0), executor, in_flight, progress, staleness=staleness)
                    continue
                if (
                    room
                    and not queued
                    and ((reason is None and self._may_propose(in_flight)) or (finishing and not in_flight))
                ):
                    staleness = len(in_flight)
                    try:
                        queued = self._propose(llm, staleness) if reason is None else self._finish(llm)
                    except BudgetExhausted as error:
                        reason, exhausted = str(error), True
                    if queued or reason is None:
                        continue
                if not in_flight:
                    break
                self._collect(in_flight, progress)
            if reason is not None and self.store.get_meta("finalized") is None:
                self._finalize(llm, executor, progress)
        except LLMError as error:
            raise SearchAborted(
                f"{type(error).__name__}: {error}\nThe run is saved; continue it with "
                f"`nasloop resume {self.run_dir.root}` once the LLM is available."
            ) from error
        finally:
            self.store.set_meta("elapsed_s", str(self.elapsed_s()))
            for future in in_flight:
                future.cancel()
            if self._executor is not None:
                self._executor.shutdown()
            progress.close()
        return self.summary(reason or "stopped")

    @property
    def call_budget(self) -> CallBudget:
        """What the run's budgets leave for each LLM call."""
        return CallBudget(self.config.budget, self.elapsed_s, self.store.llm_totals, self.meter)

    def _evaluate_seed(self, executor: Executor, progress: Any) -> None:
        """Evaluate the seed network first (once per run), so the strategy starts from a working model;
        `SeedFailed` when it does not complete."""
        if self.seed_model is None or any(record.purpose is Purpose.SEED for record in self.history):
            return
        seed = self.seed_model
        proposal = Proposal(code=seed.code, purpose=Purpose.SEED, notes={"seed_model": seed.source})
        in_flight: dict[Future[EvalResult], _InFlight] = {}
        self._submit(proposal, executor, in_flight, progress)
        while in_flight:
            self._collect(in_flight, progress)
        record = self.history[-1]
        if record.state is not State.COMPLETE:
            problem = record.failure.short(600) if record.failure else record.state.value
            raise SeedFailed(
                f"the seed model ({self.seed_model.source}) did not complete its evaluation: {problem}\n"
                "Fix the file, or start without a seed (seed_model: none)."
            )

    def _finalize(self, llm: RecordingLLM, executor: Executor, progress: Any) -> None:
        """Evaluate the strategy's finalists once, after the budget is spent."""
        proposals = self.strategy.finalize(self._context(llm, self.iterations_done))
        in_flight: dict[Future[EvalResult], _InFlight] = {}
        for proposal in proposals:
            proposal.notes["final_of"] = proposal.final_of
            while len(in_flight) >= self._max_in_flight():
                self._collect(in_flight, progress)
            self._submit(proposal, executor, in_flight, progress)
        while in_flight:
            self._collect(in_flight, progress)
        self.store.set_meta("finalized", str(len(proposals)))

    def summary(self, reason: str) -> RunSummary:
        valid = sum(1 for c in self.history if c.state is State.COMPLETE and counts_as_iteration(c))
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

    def _max_in_flight(self) -> int:
        executor = self._make_executor()
        return max(1, executor.capacity + self.config.executor.max_stale)

    def _may_propose(self, in_flight: dict[Future[EvalResult], _InFlight]) -> bool:
        if not in_flight:
            return True
        limit = self.strategy.max_unobserved  # islands: one unobserved proposal per island
        if limit is not None and len(in_flight) >= limit:
            return False
        if self.strategy.sequential and self.config.executor.max_stale == 0:
            return False
        return len(in_flight) <= self.config.executor.max_stale or not self.strategy.sequential

    @staticmethod
    def _pending_iterations(in_flight: dict[Future[EvalResult], _InFlight], queued: list[Proposal]) -> int:
        pending = [item.proposal for item in in_flight.values()] + queued
        return sum(1 for proposal in pending if proposal.purpose is Purpose.SEARCH)

    def _context(self, llm: RecordingLLM, iteration: int) -> Context:
        from nasloop.prompts import render

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

    def _propose(self, llm: RecordingLLM, unobserved: int) -> list[Proposal]:
        iteration = self.iterations_done + unobserved
        proposals = self.strategy.propose(self._context(llm, iteration))
        if not proposals:
            raise RuntimeError(f"strategy {self.config.strategy!r} proposed nothing at iteration {iteration}")
        return proposals

    def _finish(self, llm: RecordingLLM) -> list[Proposal]:
        """The strategy's repairs and retries that complete the last iteration (`Strategy.finish`)."""
        proposals = self.strategy.finish(self._context(llm, self.iterations_done))
        return [proposal for proposal in proposals if proposal.purpose is not Purpose.SEARCH]

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

    def _submit(
        self,
        proposal: Proposal,
        executor: Executor,
        in_flight: dict[Future[EvalResult], _InFlight],
        progress: Any,
        *,
        staleness: int | None = None,
    ) -> None:
        """Record a proposal that cannot be evaluated, or send it to the executor. `staleness` defaults to
        the candidates in flight now."""
        candidate_id = self.next_id
        self.next_id += 1
        iteration = self.iterations_done + self._pending_iterations(in_flight, [])
        code, code_hash, failure = self._code_for(proposal)
        if failure is not None or code is None or code_hash is None:
            result = EvalResult(State.FAILED, failure=failure or Failure(FailureKind.EXTRACTION, "no code"))
            self._record(candidate_id, iteration, proposal, code, code_hash, result, staleness=0)
            progress.update()
            return
        original = self.store.find_by_hash(code_hash) if proposal.final_of is None else None
        if original is not None:
            self._record(
                candidate_id,
                iteration,
                proposal,
                code,
                code_hash,
                original.result,
                staleness=0,
                duplicate_of=original.id,
            )
            progress.update()
            return
        staleness = len(in_flight) if staleness is None else staleness
        twin = next(((f, item) for f, item in in_flight.items() if item.code_hash == code_hash), None)
        limits = self._limits()
        if twin is not None and proposal.final_of is None:
            # The same code is being evaluated now: this candidate takes that result when it comes.
            future, duplicate_of = _follow(twin[0]), twin[1].candidate_id
            limits = self.config.limits.model_copy(update={"timeout_s": twin[1].timeout_s})
        else:
            job = EvalJob(
                code=code,
                dataset=self.config.dataset,
                recipe=self.config.recipe,
                limits=limits,
                stages=proposal.stages or self.config.stages,
                proxies=self.config.proxies,
                measure=self.config.measure,
                seed=derived_seed(self.config.seed, "evaluation"),
            )
            future, duplicate_of = self._evaluate(proposal, job, executor), None
        in_flight[future] = _InFlight(
            candidate_id, iteration, proposal, code, code_hash, staleness, time.time(), duplicate_of, limits.timeout_s
        )

    def _evaluate(self, proposal: Proposal, job: EvalJob, executor: Executor) -> Future[EvalResult]:
        """The job's result to come: from the sandbox, from the benchmark's table, or from both."""
        if self.tabular is None or proposal.architecture is None:
            return executor.submit(job, self.pruner.callback())
        from_table = self.tabular.evaluate(proposal.architecture)
        stages = self.tabular.sandbox_stages(job.stages)
        if stages is None or from_table.state is not State.COMPLETE:
            done: Future[EvalResult] = Future()
            done.set_result(from_table)
            return done
        sandbox = executor.submit(job.model_copy(update={"stages": stages}), None)
        return _follow(sandbox, lambda result: merge(from_table, result))

    def _limits(self) -> Limits:
        """The evaluation limits, with the timeout shortened to what the wall-clock budget leaves."""
        left = self.call_budget.seconds_left()
        if left is None or left >= self.config.limits.timeout_s:
            return self.config.limits
        return self.config.limits.model_copy(update={"timeout_s": max(left, MIN_CALL_S)})

    def _collect(self, in_flight: dict[Future[EvalResult], _InFlight], progress: Any, *, block: bool = True) -> None:
        """Record the finished evaluations: at least one when `block`, else those finished already."""
        if not in_flight:
            return
        done, _ = wait(list(in_flight), timeout=None if block else 0, return_when=FIRST_COMPLETED)
        for future in sorted(done, key=lambda f: in_flight[f].candidate_id):
            item = in_flight.pop(future)
            try:
                result = future.result()
            except Exception as error:  # an executor fault, not the candidate's: record it as a crash
                log.exception("executor failed on candidate %d", item.candidate_id)
                result = EvalResult.failed(FailureKind.CRASH, f"executor error: {type(error).__name__}: {error}")
            if item.timeout_s < self.config.limits.timeout_s and result.failure is not None:
                result = _cut_by_budget(result)
            self._record(
                item.candidate_id,
                item.iteration,
                item.proposal,
                item.code,
                item.code_hash,
                result,
                staleness=item.staleness,
                duplicate_of=item.duplicate_of,
            )
            progress.update()

    def _record(
        self,
        candidate_id: int,
        iteration: int,
        proposal: Proposal,
        code: str | None,
        code_hash: str | None,
        result: EvalResult,
        *,
        staleness: int,
        duplicate_of: int | None = None,
    ) -> None:
        """Store the candidate and the strategy's new state in one transaction, then write the .py file."""
        record = CandidateRecord(
            id=candidate_id,
            iteration=iteration,
            state=State.DUPLICATE if duplicate_of is not None else result.state,
            code=code,
            architecture=proposal.architecture,
            space=proposal.space or getattr(self.space, "name", None),
            hash=code_hash,
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
            staleness=staleness,
            created=time.time(),
            purpose=proposal.purpose,
            parent=proposal.parent,
        )
        self.history.append(record)
        self.strategy.observe([Observation(proposal, record)])
        with self.store.transaction():
            self.store.add_candidate(record)
            self.store.save_strategy_state(iteration, self.strategy.state_dict())
            for name, content in self.strategy.artifacts().items():
                self.store.put_artifact(name, content)
        self.pruner.update(self.history)
        if code is not None:
            self.run_dir.candidate_file(candidate_id).write_text(code)


class TableOnly(Executor):
    """The executor of a run whose benchmark table answers every candidate: it runs nothing."""

    capacity = 1

    def submit(self, job: EvalJob, on_progress: Any = None) -> Future[EvalResult]:
        raise RuntimeError("a table-only run submitted a sandbox job")

    def shutdown(self) -> None:
        pass


class _NoLLM(LLMBackend):
    """Stands in for the backend of strategies that never call the LLM; calling it is a bug."""

    name = "none"

    def complete(self, messages: list[Message], **options: Any) -> Any:
        raise RuntimeError("this strategy declared uses_llm = False but called the LLM")
