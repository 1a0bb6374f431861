"""The LLM backend contract (docs/architecture.md): messages in, one `Completion` out, within a deadline.

Every backend (an OpenAI-compatible server, an embedded GGUF model, local transformers, a replayed
cassette, a scripted test double) implements `LLMBackend.complete` with the same meaning, so strategies
and the engine never know which one they talk to. Errors form one tree rooted at `LLMError`.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Any

from nasloop.errors import NasloopError

# One chat message: {"role": "system" | "user" | "assistant", "content": "..."}.
Message = dict[str, str]

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Sampling:
    """How one call samples its answer: what a strategy asks for and every backend accepts.

    `seed` None lets the engine number the run's calls (run seed + call counter). `stop` strings end the
    answer where they first appear (they are not part of it). `response_format` asks for JSON in the
    OpenAI shape (see `LLMBackend`).
    """

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 2048
    seed: int | None = None
    stop: tuple[str, ...] = ()
    response_format: dict[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be at least 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        object.__setattr__(self, "stop", tuple(self.stop))

    def to_dict(self) -> dict[str, Any]:
        """The settings as stored with each LLM call (JSON-ready)."""
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data


DEFAULT_SAMPLING = Sampling()


@dataclass(frozen=True)
class Usage:
    """Token counts of one call, as the server (or the local tokenizer) counted them."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Completion:
    """The answer of one call.

    `finish_reason` is "stop" (the model ended or hit a stop string), "length" (`max_tokens` reached with
    usable text), "deadline" (the embedded backend stopped generating at the call's deadline and
    returns the text produced so far) or "repetition" (the embedded backend stopped a generation caught
    in a loop, see `repeating_tail`). `latency_s` is the wall time of the whole call, retries included.
    """

    text: str
    usage: Usage
    latency_s: float
    model: str
    finish_reason: str = "stop"

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "usage": {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
            },
            "latency_s": self.latency_s,
            "model": self.model,
            "finish_reason": self.finish_reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Completion:
        usage = data["usage"]
        return cls(
            text=str(data["text"]),
            usage=Usage(int(usage["prompt_tokens"]), int(usage["completion_tokens"])),
            latency_s=float(data["latency_s"]),
            model=str(data["model"]),
            finish_reason=str(data.get("finish_reason", "stop")),
        )


# ----------------------------------------------------------------------------------------------------
# Errors: one tree. Each message names the server or model and says what to do.
# ----------------------------------------------------------------------------------------------------


class LLMError(NasloopError):
    """Base of every error an LLM backend raises."""


class RecoverableLLMError(LLMError):
    """A fault of one answer that a later call may not repeat (too long, empty, cut off, late, not the
    JSON asked for): a strategy records a failed proposal, or goes without a suggestion, and the search
    goes on. Every other `LLMError` (the server unreachable, the model missing, a bad config) stops it."""


class LLMUnreachable(LLMError):
    """The server could not be reached (or kept failing with transient errors) within the retries."""


class ModelNotFound(LLMError):
    """The server does not serve the requested model, or the local model file/package is missing."""


class ContextTooLong(RecoverableLLMError):
    """The prompt plus `max_tokens` does not fit the model's context window."""


class EmptyResponse(RecoverableLLMError):
    """The model answered with no text at all."""


class TruncatedResponse(RecoverableLLMError):
    """Generation stopped at `max_tokens` (finish_reason "length") before producing any usable text."""


class DeadlineExceeded(RecoverableLLMError):
    """The call's total deadline (connect + generation + retries) passed before an answer arrived."""


class LLMConfigError(LLMError):
    """The backend configuration is invalid or names something that is not installed."""


class InvalidStructuredResponse(RecoverableLLMError):
    """A `response_format` JSON-schema request was answered with text that does not parse or validate."""


# ----------------------------------------------------------------------------------------------------
# The backend interface
# ----------------------------------------------------------------------------------------------------


class LLMBackend(abc.ABC):
    """A chat-completion backend.

    Contract of `complete`:

    * **One total deadline per call.** `config.deadline_s` bounds the whole call: connecting, queueing,
      generation and every retry share it; a call's own `deadline_s` (the time a run's wall-clock budget
      leaves) shortens it, never lengthens it. When it passes, the call raises `DeadlineExceeded` (remote
      backends) or returns the text produced so far with `finish_reason="deadline"` (the embedded
      llama-cpp backend, whose partial text is often still usable code). Nothing blocks longer than the
      deadline plus a small slack.
    * **Bounded retries, transient errors only.** Connection errors, timeouts, HTTP 429 and 5xx are
      retried at most `config.max_retries` times with exponential backoff, never past the deadline.
      Client errors (400, 404, context too long, invalid schema) are raised at once.
    * **Errors.** Only `LLMError` subclasses escape: `LLMUnreachable`, `ModelNotFound`, `ContextTooLong`,
      `EmptyResponse`, `TruncatedResponse` (finish_reason "length" with no usable text),
      `DeadlineExceeded`, `LLMConfigError`, `InvalidStructuredResponse`.
    * **Structured output.** `sampling.response_format` follows the OpenAI shape
      `{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}` (or `{"type": "json_object"}`).
      The returned text is then JSON that validates against the schema, or the call raises
      `InvalidStructuredResponse`.
    * **Sampling.** `sampling` (a `Sampling`) holds every setting of the answer; there are no others.
    * **Seeds.** `sampling.seed` is passed to the model; backends that can honour it make the call reproducible.
    * Backends are safe to call from several threads; each may serialise internally.

    `close()` releases sockets, threads and model memory; calling it twice is harmless.
    """

    #: the registry name of the backend ("openai", "llama-cpp", ...)
    name: str = ""

    @abc.abstractmethod
    def complete(
        self,
        messages: list[Message],
        sampling: Sampling = DEFAULT_SAMPLING,
        *,
        deadline_s: float | None = None,
    ) -> Completion:
        """Answer `messages` (see the class docstring for the contract)."""

    def call_deadline_s(self, config_deadline_s: float, deadline_s: float | None) -> float:
        """The seconds one call may take: the config's deadline, shortened by the call's own."""
        return config_deadline_s if deadline_s is None else max(0.0, min(config_deadline_s, deadline_s))

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release resources. Idempotent."""

    @property
    def model_name(self) -> str:
        """The model this backend answers with, as stored with every call."""
        return ""

    def __enter__(self) -> LLMBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def repeating_tail(text: str, repeats: int, *, max_period: int = 4, min_block_chars: int = 16) -> int | None:
    """The number of lines of a block that the complete lines at the end of `text` repeat `repeats`
    times in a row, or None.

    Small models sometimes fall into a loop (the same layer call and comment, over and over) until the
    token budget or the deadline; this spots the loop early. Blocks of 1 to `max_period` lines are
    checked; a block with fewer than `min_block_chars` non-blank characters (closing brackets, blank
    lines) never counts, and lines compare without surrounding white space.
    """
    lines = [line.strip() for line in text.split("\n")[:-1]]  # the last line may still be growing
    for period in range(1, max_period + 1):
        span = period * repeats
        if len(lines) < span:
            break
        block = lines[-period:]
        if sum(len(line) for line in block) < min_block_chars:
            continue
        if all(lines[-span + index] == block[index % period] for index in range(span)):
            return period
    return None


def validate_messages(messages: list[Message]) -> None:
    """Raise `LLMConfigError` unless `messages` is a non-empty list of {role, content} chat messages."""
    if not messages:
        raise LLMConfigError("complete() needs at least one message")
    for index, message in enumerate(messages):
        role = message.get("role")
        if role not in ROLES:
            raise LLMConfigError(f"message {index} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise LLMConfigError(f"message {index} ({role}) has no string 'content'")
