"""Usage accounting: tokens, latency and cost of every LLM call, totalled per role and per run.

Cost is tokens × price per million tokens, computed only when both prices are configured (otherwise
`cost` is None: an unknown cost is not a zero cost).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from nasloop.llm.base import Completion, Usage
from nasloop.llm.config import LLMConfig


def call_cost(usage: Usage, price_input_per_mtok: float | None, price_output_per_mtok: float | None) -> float | None:
    """The cost of one call, or None when a price is not configured."""
    if price_input_per_mtok is None or price_output_per_mtok is None:
        return None
    return (usage.prompt_tokens * price_input_per_mtok + usage.completion_tokens * price_output_per_mtok) / 1_000_000


@dataclass(frozen=True)
class CallRecord:
    """One metered call, as stored with the run."""

    role: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cost: float | None
    finish_reason: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class UsageTotals:
    """Sums over a set of calls. `cost` is None if any call had no price."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost: float | None = 0.0

    def add(self, record: CallRecord) -> None:
        self.calls += 1
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        self.latency_s += record.latency_s
        self.cost = None if self.cost is None or record.cost is None else self.cost + record.cost

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "latency_s": self.latency_s,
            "cost": self.cost,
        }


@dataclass
class UsageMeter:
    """Adds up every call of a run. Thread-safe (strategies may call the LLM from several threads).

    `add(role, completion)` records one call and returns its `CallRecord`; `totals()` is the run total,
    `by_role()` the totals per role (generator, improver, reflector, ...).
    """

    price_input_per_mtok: float | None = None
    price_output_per_mtok: float | None = None
    records: list[CallRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def from_config(cls, config: LLMConfig) -> UsageMeter:
        """A meter pricing calls with the config's prices (no cost when they are unset)."""
        return cls(config.price_input_per_mtok, config.price_output_per_mtok)

    def add(self, role: str, completion: Completion) -> CallRecord:
        record = CallRecord(
            role=role,
            model=completion.model,
            prompt_tokens=completion.usage.prompt_tokens,
            completion_tokens=completion.usage.completion_tokens,
            latency_s=completion.latency_s,
            cost=call_cost(completion.usage, self.price_input_per_mtok, self.price_output_per_mtok),
            finish_reason=completion.finish_reason,
        )
        with self._lock:
            self.records.append(record)
        return record

    def totals(self) -> UsageTotals:
        """Totals over every call of the run."""
        totals = UsageTotals()
        for record in self._snapshot():
            totals.add(record)
        return totals

    def by_role(self) -> dict[str, UsageTotals]:
        """Totals per role, in the order roles first appeared."""
        totals: dict[str, UsageTotals] = {}
        for record in self._snapshot():
            totals.setdefault(record.role, UsageTotals()).add(record)
        return totals

    def summary(self) -> dict[str, Any]:
        """JSON-ready `{"total": {...}, "by_role": {role: {...}}}`."""
        return {
            "total": self.totals().to_dict(),
            "by_role": {role: totals.to_dict() for role, totals in self.by_role().items()},
        }

    def _snapshot(self) -> list[CallRecord]:
        with self._lock:
            return list(self.records)
