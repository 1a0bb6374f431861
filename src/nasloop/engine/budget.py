"""The run's budgets: when the search stops, and what each LLM call may still spend.

Iterations count only search candidates (`Purpose.counts_as_iteration`). Once they are spent, the
last iteration's repair or retry may still run; any other budget (wall clock, LLM tokens, money, a target
score reached) stops everything at once.
"""

from __future__ import annotations

from collections.abc import Callable

from nasloop.config import Budget
from nasloop.llm.base import Completion, Message
from nasloop.llm.recording import BudgetExhausted
from nasloop.llm.usage import UsageMeter

# A call that could run for less than this is not started: it could not produce a usable answer.
MIN_CALL_S = 2.0
# Prompt characters per token, on the low side (code runs at about 3.5-4), so the estimate is high.
PROMPT_CHARS_PER_TOKEN = 3


def iteration_reason(budget: Budget, iterations: int) -> str | None:
    """The stop reason once `iterations` (done and pending) use up the iteration budget, else None."""
    if budget.iterations is not None and iterations >= budget.iterations:
        return f"iteration budget reached ({budget.iterations})"
    return None


def other_reason(budget: Budget, elapsed_s: float, totals: dict[str, float], best_score: float | None,
                 metric: str) -> str | None:  # fmt: skip
    """Why the search must stop for a budget other than its iterations, or None."""
    if budget.wall_clock_s is not None and elapsed_s >= budget.wall_clock_s:
        return f"wall-clock budget reached ({budget.wall_clock_s:g} s)"
    tokens = totals["prompt_tokens"] + totals["completion_tokens"]
    if budget.llm_tokens is not None and tokens >= budget.llm_tokens:
        return f"LLM token budget reached ({budget.llm_tokens})"
    if budget.money_usd is not None and totals["cost_usd"] >= budget.money_usd:
        return f"money budget reached (${budget.money_usd:g})"
    if budget.target_score is not None and best_score is not None and best_score >= budget.target_score:
        return f"target {metric} {budget.target_score:g} reached"
    return None


class CallBudget:
    """What the run's budgets leave for the next LLM call (the `CallLimits` of `RecordingLLM`).

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
            raise BudgetExhausted(self.wall_clock_reason())
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

    def wall_clock_reason(self) -> str:
        limit = self.budget.wall_clock_s
        return f"wall-clock budget reached ({limit:g} s)" if limit is not None else "wall-clock budget reached"


__all__ = ["MIN_CALL_S", "BudgetExhausted", "CallBudget", "iteration_reason", "other_reason"]
