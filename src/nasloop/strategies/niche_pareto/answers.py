"""What `niche-pareto` asks the LLM for and gets back: the JSON schemas of its two calls and the typed
outcome of asking for one child."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nasloop.candidate import Failure
from nasloop.spaces.base import SearchSpace
from nasloop.strategies.population import answer_property


def knowledge_schema(rules: int, rule_chars: int) -> dict[str, Any]:
    """JSON schema of a knowledge-base answer `{positive: [...], negative: [...]}`."""
    rule_list = {"type": "array", "items": {"type": "string", "maxLength": rule_chars}, "maxItems": rules}
    return {
        "type": "object",
        "properties": {"positive": rule_list, "negative": rule_list},
        "required": ["positive", "negative"],
        "additionalProperties": False,
    }


def evolution_schema(
    space: SearchSpace,
    operations: Sequence[str],
    rationale_chars: int,
    *,
    constrain_pattern: bool,
    choices: Sequence[str] = (),
    field: str = "architecture",
) -> dict[str, Any]:
    """JSON schema of an evolution answer `{operation, rationale, <field>}` (the rationale before the
    answer it justifies, since constrained decoding writes properties in order); with `choices` the
    answer is one of them. `field` is `architecture` (the child's string, constrained by the space's
    pattern) or `change` (a described change of a parent)."""
    answer = answer_property(space, field=field, choices=choices, constrain_pattern=constrain_pattern)
    return {
        "type": "object",
        "properties": {
            "operation": {"type": "string", "enum": list(operations)},
            "rationale": {"type": "string", "maxLength": rationale_chars},
            field: answer,
        },
        "required": ["operation", "rationale", field],
        "additionalProperties": False,
    }


def response_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


def format_value(value: float) -> str:
    return f"{value:.4g}"


@dataclass
class Attempt:
    """The outcome of asking for one child: an architecture that passed the validator, or a failure."""

    architecture: str | None
    operation: str
    rationale: str
    failure: Failure | None
    errors: list[str]
    call_ids: tuple[int, ...]


__all__ = ["Attempt", "evolution_schema", "format_value", "knowledge_schema", "response_format"]
