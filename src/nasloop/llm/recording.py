"""The LLM as the engine hands it to strategies: every call is stored, counted, seeded and kept within
the run's budgets.

`RecordingLLM.complete(role, messages, sampling)` asks the backend and stores the call (role, prompt,
sampling, answer, usage, cost) in the run store before returning a `Reply` with the stored call's id. A
call without a seed gets `run seed + call counter`, as the published feedback-memory method seeds its
calls; the counter continues across `resume` from the number of stored calls. The run's budgets are
asked through `CallLimits` before each call (`BudgetExhausted` when none may start) and after it (an
answer the wall clock cut short also ends the search).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Protocol

from nasloop.llm.base import DEFAULT_SAMPLING, Completion, DeadlineExceeded, LLMBackend, LLMError, Message, Sampling
from nasloop.llm.usage import UsageMeter
from nasloop.store.sqlite import RunStore


class BudgetExhausted(Exception):
    """A budget of the run (wall clock, tokens, money) leaves no room for the next LLM call.

    Raised by `RecordingLLM` before a call that cannot start in time, or after one that the wall-clock
    budget cut short; it is not an `LLMError`, so no strategy mistakes it for a failed answer, and the
    engine stops the search with its message as the reason."""


class CallLimits(Protocol):
    """What the run's budgets leave for LLM calls (the engine's `CallBudget`)."""

    def check(self, messages: list[Message]) -> float | None:
        """The seconds the next call may take (None: no limit); `BudgetExhausted` when it may not start."""
        ...

    def cut_short(self, completion: Completion | None) -> bool:
        """Whether a call (None: one that raised) ended because the wall-clock budget ran out during it."""
        ...

    def wall_clock_reason(self) -> str:
        """The stop reason of a search whose wall-clock budget ended."""
        ...


@dataclass(frozen=True)
class Reply:
    """A recorded LLM answer: the completion and the id of the stored call."""

    completion: Completion
    call_id: int

    @property
    def text(self) -> str:
        return self.completion.text


class RecordingLLM:
    """Wraps a backend so every call is stored (role, prompt, completion, usage) and metered.

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
        limits: CallLimits | None = None,
    ):
        self.backend = backend
        self.store = store
        self.meter = meter
        self.seed = seed
        self.model = model
        self.limits = limits
        self.iteration = 0
        self.counter = int(store.llm_totals()["calls"])
        self._lock = threading.Lock()

    def complete(self, role: str, messages: list[Message], sampling: Sampling) -> Reply:
        with self._lock:
            left = self.limits.check(messages) if self.limits is not None else None
            if sampling.seed is None:
                sampling = replace(sampling, seed=self.seed + self.counter)
            self.counter += 1
            iteration = self.iteration
        request = sampling.to_dict()  # the deadline is left out: it says when the call ran, not what it asked
        started = time.perf_counter()
        try:
            completion = self.backend.complete(messages, sampling, deadline_s=left)
        except LLMError as error:
            cut = isinstance(error, DeadlineExceeded) and self.limits is not None and self.limits.cut_short(None)
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
            if cut and self.limits is not None:
                raise BudgetExhausted(self.limits.wall_clock_reason()) from error
            raise
        cut = self.limits is not None and self.limits.cut_short(completion)
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
        if cut and self.limits is not None:
            raise BudgetExhausted(self.limits.wall_clock_reason())
        return Reply(completion, call_id)


class NoLLM(LLMBackend):
    """Stands in for the backend of strategies that never call the LLM; calling it is a bug."""

    name = "none"

    def complete(
        self, messages: list[Message], sampling: Sampling = DEFAULT_SAMPLING, *, deadline_s: float | None = None
    ) -> Completion:
        raise RuntimeError("this strategy declared uses_llm = False but called the LLM")


__all__ = ["BudgetExhausted", "CallLimits", "NoLLM", "RecordingLLM", "Reply"]
