"""Pipelining in the engine: LLM generation overlaps evaluation, finished results are recorded before
the next proposal, staleness is bounded by `max_stale`, and islands keep one proposal per island."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from support import FakeExecutor, fenced, good_net

from nasloop.candidate import EvalResult, State
from nasloop.config import build_config
from nasloop.engine import Search
from nasloop.evaluate.job import EvalJob
from nasloop.executors.base import Executor, ProgressCallback
from nasloop.llm.scripted import ScriptedBackend

LLM_DELAY_S = 0.15
JOB_S = 0.5


class TimedExecutor(Executor):
    """Evaluates in `capacity` threads, each job taking `job_s` seconds; records when each job ran and
    the most jobs that ran at once."""

    def __init__(self, capacity: int = 1, job_s: float = JOB_S) -> None:
        self.capacity = capacity
        self.job_s = job_s
        self.intervals: list[tuple[float, float]] = []
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()
        self._threads = ThreadPoolExecutor(max_workers=capacity)

    def submit(self, job: EvalJob, on_progress: ProgressCallback | None = None) -> Future[EvalResult]:
        return self._threads.submit(self._run, job)

    def _run(self, job: EvalJob) -> EvalResult:
        started = time.monotonic()
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        time.sleep(self.job_s)
        with self._lock:
            self.running -= 1
            self.intervals.append((started, time.monotonic()))
        score = 0.5 + hashlib.sha256(job.code.encode()).digest()[0] / 1000
        return EvalResult(State.COMPLETE, metrics={"val_acc": score}, stage="train")

    def shutdown(self) -> None:
        self._threads.shutdown(wait=True)


class TimedModel:
    """Scripted answers (improver JSON, generator code of growing width); records when each call began."""

    def __init__(self) -> None:
        self.widths = itertools.count(8)
        self.starts: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, messages: list[dict[str, str]]) -> str:
        with self._lock:
            self.starts.append(time.monotonic())
            width = next(self.widths)
        if "JSON" in messages[0]["content"] or "JSON" in messages[-1]["content"][-200:]:
            return json.dumps({"problem": "too shallow", "suggestion": "Add a second convolution block."})
        return fenced(good_net(width))


def run_engine(tmp_path, executor, *, strategy="feedback-memory", iterations=4, max_stale=0, options=None, model=None):
    config = build_config(
        {
            "strategy": strategy, "strategy_options": options or {}, "dataset": {"name": "digits"},
            "seed_model": "none",  # the candidates counted are the LLM's
            "budget": {"iterations": iterations}, "llm": {"backend": "scripted", "model": "scripted"},
            "executor": {"max_stale": max_stale, "workers": executor.capacity},
        }
    )  # fmt: skip
    model = model or TimedModel()
    backend = ScriptedBackend(answers=model, delay_s=LLM_DELAY_S)
    engine = Search.start(config, tmp_path / "run", backend=backend, executor=executor, progress=False)
    engine.run()
    return engine, model


def calls_during_jobs(model: TimedModel, executor: TimedExecutor) -> int:
    return sum(1 for start in model.starts if any(begin < start < end for begin, end in executor.intervals))


def test_sequential_strategy_with_max_stale_1_generates_while_a_candidate_trains(tmp_path):
    # Overlap is read from when things ran, not from the wall time (which a loaded machine stretches);
    # benchmarks/throughput.py measures the speed-up.
    executor = TimedExecutor()
    engine, model = run_engine(tmp_path, executor, max_stale=1)
    assert calls_during_jobs(model, executor) >= 3  # improver and generator calls overlap training
    assert [record.staleness for record in engine.history] == [0, 1, 1, 1]
    assert all(record.state is State.COMPLETE for record in engine.history)


def test_sequential_strategy_without_max_stale_never_overlaps(tmp_path):
    executor = TimedExecutor()
    engine, model = run_engine(tmp_path, executor, max_stale=0, iterations=3)
    assert calls_during_jobs(model, executor) == 0
    assert [record.staleness for record in engine.history] == [0, 0, 0]


def test_finished_results_are_recorded_before_the_next_proposal(tmp_path):
    # FakeExecutor resolves at once: with room for three jobs, each result must still be recorded (and
    # observed) before the next propose, so no candidate counts an already finished one as unobserved.
    engine, _ = run_engine(tmp_path, FakeExecutor(capacity=3), strategy="one-shot", iterations=4)
    assert [record.staleness for record in engine.history] == [0, 0, 0, 0]


def test_islands_keep_one_proposal_per_island_in_flight(tmp_path):
    executor = TimedExecutor(capacity=4, job_s=0.3)
    engine, _ = run_engine(tmp_path, executor, strategy="islands", iterations=6, options={"islands": 2})
    assert executor.most_running == 2  # both islands evaluate at once, never more than one each
    islands = [record.notes["island"] for record in engine.history]
    assert sorted(islands) == [0, 0, 0, 1, 1, 1]


class SameAnswer(TimedModel):
    """Answers every generator call with the same network."""

    def __call__(self, messages: list[dict[str, str]]) -> str:
        super().__call__(messages)
        return fenced(good_net(8))


def test_code_that_is_being_evaluated_is_not_evaluated_again(tmp_path):
    # one-shot with two workers proposes again while the first candidate trains, and gets the same code
    executor = TimedExecutor(capacity=2, job_s=1.0)
    engine, _ = run_engine(tmp_path, executor, strategy="one-shot", iterations=3, model=SameAnswer())
    assert len(executor.intervals) == 1  # one evaluation for three candidates
    first, *copies = engine.history
    assert first.state is State.COMPLETE and copies[0].staleness == 1
    assert all(copy.state is State.DUPLICATE and copy.duplicate_of == first.id for copy in copies)
    assert all(copy.metrics == first.metrics for copy in copies)
