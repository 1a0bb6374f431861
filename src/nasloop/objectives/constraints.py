"""Hard constraints on metrics, such as `params<=1e6` or `latency_ms<20`.

A constraint is a limit a candidate must meet to count at all (a budget), as opposed to an objective it
is scored on. `Constraint.check` returns None when the limit is met, else a message that names the figure
and the limit ("params = 1,234,567 > limit 1,000,000"), precise enough to show a person or an LLM.
An unmeasured metric does not meet the limit: a budget that cannot be checked is not met.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from nasloop.candidate import Failure, FailureKind

Operator = Literal["<=", ">=", "<", ">"]

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
# The relation that holds when the constraint is violated, for the message.
_VIOLATED: dict[str, str] = {"<=": ">", ">=": "<", "<": ">=", ">": "<="}
_CONSTRAINT_PATTERN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>)\s*([^\s<>=]+)\s*$")


def format_value(value: float) -> str:
    """A number as people read it: whole numbers with thousands separators, others to 4 significant digits."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) < 1e15 and value == int(value):
        return f"{int(value):,}"
    return f"{value:.4g}"


@dataclass(frozen=True)
class Constraint:
    """`metric op value`: the candidate's `metric` must satisfy the comparison with `value`."""

    metric: str
    op: Operator
    value: float

    def __post_init__(self) -> None:
        if self.op not in _COMPARE:
            raise ValueError(f"constraint on {self.metric!r}: operator must be one of <=, >=, <, >, not {self.op!r}")
        if not math.isfinite(self.value):
            raise ValueError(f"constraint on {self.metric!r}: the limit must be a finite number, not {self.value}")

    def check(self, metrics: Mapping[str, float]) -> str | None:
        """None when `metrics` meets the limit, else a message naming the figure and the limit."""
        limit = format_value(self.value)
        measured = metrics.get(self.metric)
        if measured is None:
            return f"{self.metric} was not measured, so the limit {self.op} {limit} cannot be checked"
        if not math.isfinite(measured):
            return f"{self.metric} = {measured} is not a finite number (limit {self.op} {limit})"
        if _COMPARE[self.op](measured, self.value):
            return None
        return f"{self.metric} = {format_value(measured)} {_VIOLATED[self.op]} limit {limit}"

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{format_value(self.value)}"


def parse_constraint(text: str) -> Constraint:
    """Parse `"params<=1e6"` (metric, one of <= >= < >, a number; spaces allowed) into a Constraint."""
    match = _CONSTRAINT_PATTERN.match(text)
    if match is None:
        raise ValueError(
            f"constraint {text!r} is not 'metric OP number' with OP one of <=, >=, <, > (example: params<=1e6)"
        )
    metric, op, raw_value = match.groups()
    try:
        value = float(raw_value)
    except ValueError:
        raise ValueError(f"constraint {text!r}: the limit {raw_value!r} is not a number") from None
    return Constraint(metric, _as_operator(op), value)


def _as_operator(op: str) -> Operator:
    for known in ("<=", ">=", "<", ">"):
        if op == known:
            return known
    raise ValueError(f"unknown comparison operator {op!r}")


def parse_constraints(texts: str | Sequence[str]) -> list[Constraint]:
    """Parse a comma-separated string (`"params<=1e6, latency_ms<20"`) or a list of constraint strings."""
    items = texts.split(",") if isinstance(texts, str) else list(texts)
    return [parse_constraint(item) for item in items if item.strip()]


def violations(constraints: Sequence[Constraint], metrics: Mapping[str, float]) -> list[str]:
    """The messages of every constraint `metrics` does not meet, in the constraints' order."""
    return [message for constraint in constraints if (message := constraint.check(metrics)) is not None]


def budget_failure(constraints: Sequence[Constraint], metrics: Mapping[str, float]) -> Failure | None:
    """A `budget` Failure listing every violated constraint, or None when all are met."""
    messages = violations(constraints, metrics)
    if not messages:
        return None
    return Failure(FailureKind.BUDGET, "; ".join(messages))
