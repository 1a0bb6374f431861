"""A scripted backend: a real `LLMBackend` whose answers come from a list or a function.

It is the test double used across the project (strategies, engine, CLI tests): it honours the same
contract as the real backends — stop strings, `max_tokens` (finish_reason "length"), JSON-schema
validation, `LLMError`s — and reports plausible token counts (about four characters per token).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from nasloop.llm.base import (
    DEFAULT_SAMPLING,
    Completion,
    DeadlineExceeded,
    EmptyResponse,
    LLMBackend,
    LLMError,
    Message,
    Sampling,
    TruncatedResponse,
    Usage,
    validate_messages,
)
from nasloop.llm.config import LLMConfig
from nasloop.llm.structured import parse_and_validate, schema_of
from nasloop.registry import llm_backends

# An answer is text, or an LLMError to raise for that call (to test failure handling).
Answer = str | LLMError
Script = Sequence[Answer] | Callable[[list[Message]], Answer]

CHARACTERS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """A tokenizer-free token estimate: about four characters per token, at least one for any text."""
    return max(1, -(-len(text) // CHARACTERS_PER_TOKEN)) if text else 0


def estimate_prompt_tokens(messages: list[Message]) -> int:
    """Tokens of a chat prompt: content plus a few template tokens per message, as chat templates add."""
    return sum(estimate_tokens(message["content"]) + 4 for message in messages) + 2


@dataclass(frozen=True)
class ScriptedCall:
    """One request the scripted backend received (tests inspect these)."""

    messages: list[Message]
    sampling: Sampling

    @property
    def temperature(self) -> float:
        return self.sampling.temperature

    @property
    def max_tokens(self) -> int:
        return self.sampling.max_tokens

    @property
    def seed(self) -> int | None:
        return self.sampling.seed

    @property
    def stop(self) -> tuple[str, ...]:
        return self.sampling.stop

    @property
    def response_format(self) -> dict[str, Any] | None:
        return self.sampling.response_format


@llm_backends.register("scripted")
class ScriptedBackend(LLMBackend):
    """Answers from `answers` (a list, used in order; or a callable(messages) -> text).

    When built from a config (`backend: scripted`), the answers are `config.responses`. With
    `cycle=True` a list repeats; otherwise running out of answers raises `LLMError`. An answer that is
    an `LLMError` instance is raised instead of returned. `calls` records every request.
    """

    name = "scripted"

    def __init__(
        self,
        config: LLMConfig | None = None,
        *,
        answers: Script | None = None,
        cycle: bool = False,
        delay_s: float = 0.0,
    ) -> None:
        self.config = config or LLMConfig(backend="scripted", model="scripted")
        script: Script = answers if answers is not None else list(self.config.responses)
        self._function: Callable[[list[Message]], Answer] | None = None
        self._answers: Iterator[Answer] | None = None
        if callable(script):
            self._function = script
        else:
            self._answers = itertools.cycle(script) if cycle and script else iter(script)
        self._delay_s = delay_s
        self._lock = threading.Lock()
        self.calls: list[ScriptedCall] = []

    @property
    def model_name(self) -> str:
        return self.config.model

    def complete(
        self,
        messages: list[Message],
        sampling: Sampling = DEFAULT_SAMPLING,
        *,
        deadline_s: float | None = None,
    ) -> Completion:
        validate_messages(messages)
        started = time.monotonic()
        schema = schema_of(sampling.response_format)
        call = ScriptedCall([dict(m) for m in messages], sampling)
        with self._lock:
            self.calls.append(call)
            answer = self._next_answer(messages)
        if isinstance(answer, LLMError):
            raise answer
        if self._delay_s:
            allowed = self.call_deadline_s(self.config.deadline_s, deadline_s)
            time.sleep(min(self._delay_s, allowed))
            if self._delay_s > allowed:
                raise DeadlineExceeded(
                    f"scripted model {self.model_name}: no answer within the deadline ({allowed:g} s)"
                )
        text, finish_reason = _apply_limits(answer, sampling.stop, sampling.max_tokens)
        if not text.strip():
            if finish_reason == "length":
                raise TruncatedResponse(f"scripted model {self.model_name} reached max_tokens={sampling.max_tokens}")
            raise EmptyResponse(f"scripted model {self.model_name} answered with empty text")
        if schema is not None:
            parse_and_validate(text, schema, model=self.model_name)
        usage = Usage(estimate_prompt_tokens(messages), estimate_tokens(text))
        return Completion(text, usage, time.monotonic() - started, self.model_name, finish_reason)

    def _next_answer(self, messages: list[Message]) -> Answer:
        if self._function is not None:
            return self._function(messages)
        assert self._answers is not None
        try:
            return next(self._answers)
        except StopIteration:
            raise LLMError(
                f"scripted backend ran out of answers after {len(self.calls) - 1} calls; "
                "give it more answers or cycle=True"
            ) from None


def _apply_limits(answer: str, stop: Sequence[str], max_tokens: int) -> tuple[str, str]:
    """Cut `answer` at the first stop string, then at `max_tokens` (≈ 4 characters per token)."""
    text = answer
    for stop_string in stop or []:
        index = text.find(stop_string)
        if index >= 0:
            text = text[:index]
    limit = max_tokens * CHARACTERS_PER_TOKEN
    if len(text) > limit:
        return text[:limit], "length"
    return text, "stop"
