"""Structured (JSON-schema) output shared by every backend: read the schema, validate the answer."""

from __future__ import annotations

import json
from typing import Any

from nasloop.llm.base import InvalidStructuredResponse, LLMConfigError


def schema_of(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema of an OpenAI-shaped `response_format`; `{}` for plain JSON mode; None for text.

    Accepted shapes: `{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}`,
    `{"type": "json_object"}` and `{"type": "text"}`. Anything else is an `LLMConfigError`.
    """
    if response_format is None:
        return None
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise LLMConfigError(
                'response_format type json_schema needs {"json_schema": {"name": ..., "schema": {...}}}'
            )
        schema: dict[str, Any] = spec["schema"]
        return schema
    raise LLMConfigError(f"unsupported response_format type {kind!r}; use json_schema, json_object or text")


def parse_and_validate(text: str, schema: dict[str, Any], *, model: str) -> Any:
    """Parse `text` as JSON (tolerating fences and prose around it) and validate it against `schema`.

    Raises `InvalidStructuredResponse` naming the model and what was wrong.
    """
    from nasloop.prompts.extract import find_json_value

    value = find_json_value(text)
    if value is None:
        snippet = text.strip()[:160]
        raise InvalidStructuredResponse(f"{model} was asked for JSON but its answer does not contain any: {snippet!r}")
    validate(value, schema, model=model)
    return value


def validate(value: Any, schema: dict[str, Any], *, model: str) -> None:
    """Raise `InvalidStructuredResponse` unless `value` validates against `schema`."""
    if not schema:
        return
    import jsonschema

    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as error:
        where = "/".join(str(part) for part in error.absolute_path) or "the top level"
        raise InvalidStructuredResponse(
            f"{model} answered JSON that does not match the schema at {where}: {error.message}"
        ) from None
    except jsonschema.SchemaError as error:
        raise LLMConfigError(f"the response_format schema itself is invalid: {error.message}") from None


def schema_instruction(schema: dict[str, Any]) -> str:
    """The text appended to the prompt when the server cannot enforce the schema itself."""
    if not schema:
        return "Answer with a single JSON object and nothing else."
    return "Answer with a single JSON value that validates against this JSON schema, and nothing else:\n" + json.dumps(
        schema, indent=2
    )
