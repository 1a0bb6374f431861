"""`Strict`, the base of every config model (run config, LLM config, job specs, strategy and space
options). It lives in a module of its own so that every layer can use it without importing another;
`nasloop.config` re-exports it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors that name the key; values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


__all__ = ["Strict"]
