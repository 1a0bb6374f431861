"""Any OpenAI-compatible chat server: vLLM, Ollama, llama.cpp server, LM Studio, SGLang, hosted APIs.

Deadline: every call has one total deadline. Each attempt runs in its own daemon thread and the caller
waits at most until the deadline, so even a server that trickles bytes cannot hold the caller past it;
the client's own timeout (the time left) ends the abandoned request soon after, and its concurrency slot
is released only then, so a misbehaving server cannot pile up requests. The client's retries are off
(`max_retries=0`): retries happen here, within the same deadline, so they never stack.

Retries: connection errors, timeouts, HTTP 429 and 5xx are retried at most `config.max_retries` times
with exponential backoff (honouring Retry-After); 400, 401/403, 404 and context-length errors are not.

Structured output: `response_format` is sent to the server (`structured_output: server`), or the schema
is put into the prompt (`prompt`), or (`auto`) the modes are tried in turn until the server accepts one,
which is remembered: the json_schema `response_format`; JSON mode with the schema in the prompt (and in
`response_format.schema`, which llama.cpp's Python server enforces); the schema in the prompt alone.
Either way the answer is parsed and validated against the
schema, and an answer that does not validate raises `InvalidStructuredResponse`.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from nasloop.llm.base import (
    DEFAULT_SAMPLING,
    Completion,
    ContextTooLong,
    DeadlineExceeded,
    EmptyResponse,
    LLMBackend,
    LLMConfigError,
    LLMError,
    LLMUnreachable,
    Message,
    ModelNotFound,
    Sampling,
    TruncatedResponse,
    Usage,
    validate_messages,
)
from nasloop.llm.config import LLMConfig
from nasloop.llm.scripted import estimate_prompt_tokens, estimate_tokens
from nasloop.llm.structured import parse_and_validate, schema_instruction, schema_of
from nasloop.registry import llm_backends

_CONTEXT_TOO_LONG = re.compile(
    r"context[_ ]length|context size|context window|maximum context|exceed_context|too many tokens|"
    r"prompt is too long|input length|reduce the length",
    re.IGNORECASE,
)
_MODEL_MISSING = re.compile(r"model.*(not found|does not exist|not exist|unknown)|no such model", re.IGNORECASE)
# JSON-schema request modes, tried in this order under `structured_output: auto`.
SCHEMA_MODES = ("json_schema", "json_object", "prompt")
_RESPONSE_FORMAT_REJECTED = re.compile(r"response_format|json_schema|structured output|guided", re.IGNORECASE)


class _Transient(Exception):
    """An attempt failed in a way worth retrying (connection, timeout, 429, 5xx)."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _SchemaRejected(Exception):
    """The server rejected `response_format`; prompting for the schema may work instead."""


@dataclass
class _Attempt:
    """The outcome of one attempt, filled in by its thread."""

    response: Any = None
    error: BaseException | None = None
    http_response: Any = None  # open while the body is read; closing it ends an abandoned request
    abandoned: bool = False


@llm_backends.register("openai")
class OpenAIBackend(LLMBackend):
    """Chat completions from an OpenAI-compatible server (see the module docstring for the contract)."""

    name = "openai"

    def __init__(self, config: LLMConfig) -> None:
        try:
            import openai
        except ImportError as error:
            raise LLMConfigError(f"the openai backend needs the openai package: pip install openai ({error})") from None
        self.config = config
        self._openai = openai
        self._client = openai.OpenAI(
            base_url=config.base_url,
            api_key=config.read_api_key(),
            max_retries=0,  # retries are ours, inside one deadline
            timeout=config.deadline_s,
        )
        self._slots = threading.BoundedSemaphore(config.max_concurrency)
        # How JSON-schema requests are sent; `auto` walks down SCHEMA_MODES when the server rejects one.
        self._schema_mode = "prompt" if config.structured_output == "prompt" else SCHEMA_MODES[0]

    def __repr__(self) -> str:
        # Never the key: only the name of the variable that holds it.
        return (
            f"OpenAIBackend(base_url={self.server!r}, model={self.config.model!r}, "
            f"api_key_env={self.config.api_key_variable()!r})"
        )

    @property
    def model_name(self) -> str:
        return self.config.model

    @property
    def server(self) -> str:
        return self.config.base_url or "https://api.openai.com/v1"

    def complete(
        self,
        messages: list[Message],
        sampling: Sampling = DEFAULT_SAMPLING,
        *,
        deadline_s: float | None = None,
    ) -> Completion:
        validate_messages(messages)
        started = time.monotonic()
        deadline = started + self.call_deadline_s(self.config.deadline_s, deadline_s)
        schema = schema_of(sampling.response_format)
        request: dict[str, Any] = {
            "model": self.config.model,
            "temperature": sampling.temperature,
            "max_tokens": sampling.max_tokens,
            "top_p": sampling.top_p,
        }
        if sampling.seed is not None:
            request["seed"] = sampling.seed
        if sampling.stop:
            request["stop"] = list(sampling.stop)
        response = self._with_retries(messages, request, sampling.response_format, schema, deadline)
        completion = self._completion(response, messages, time.monotonic() - started, sampling.max_tokens)
        if schema is not None:
            parse_and_validate(completion.text, schema, model=self.config.model)
        return completion

    # ------------------------------------------------------------------------------------------------
    # Retries within the deadline
    # ------------------------------------------------------------------------------------------------

    def _with_retries(
        self,
        messages: list[Message],
        request: dict[str, Any],
        response_format: dict[str, Any] | None,
        schema: dict[str, Any] | None,
        deadline: float,
    ) -> Any:
        retries = 0
        last_error: _Transient | None = None
        while True:
            payload = self._payload(messages, request, response_format, schema)
            try:
                return self._attempt(payload, deadline)
            except DeadlineExceeded as error:
                if last_error is None:
                    raise
                raise DeadlineExceeded(f"{error} (earlier attempt: {last_error})") from None
            except _SchemaRejected:
                # Remembered: later calls start from the mode this server accepts.
                self._schema_mode = SCHEMA_MODES[SCHEMA_MODES.index(self._schema_mode) + 1]
                continue
            except _Transient as error:
                last_error = error
                if retries >= self.config.max_retries:
                    raise LLMUnreachable(
                        f"{self.server} failed {retries + 1} times for model {self.config.model}: {error}. "
                        "Check that the server is running and healthy (llm.base_url)"
                    ) from None
                self._back_off(retries, error, deadline)
                retries += 1

    def _payload(
        self,
        messages: list[Message],
        request: dict[str, Any],
        response_format: dict[str, Any] | None,
        schema: dict[str, Any] | None,
    ) -> dict[str, Any]:
        payload = dict(request)
        if schema is None or self._schema_mode == "json_schema":
            payload["messages"] = messages
            if response_format is not None:
                payload["response_format"] = response_format
            return payload
        instructed = [dict(message) for message in messages]
        instructed[-1]["content"] += "\n\n" + schema_instruction(schema)
        payload["messages"] = instructed
        if self._schema_mode == "json_object":
            # JSON mode; llama.cpp's Python server also constrains decoding to "schema" here.
            payload["response_format"] = {"type": "json_object", "schema": schema}
        return payload

    def _back_off(self, retries: int, error: _Transient, deadline: float) -> None:
        pause = self.config.retry_backoff_s * (2**retries)
        if error.retry_after_s is not None:
            pause = max(pause, error.retry_after_s)
        remaining = deadline - time.monotonic()
        if pause >= remaining:
            raise DeadlineExceeded(
                f"{self.server} ({self.config.model}) failed ({error}) and the deadline of "
                f"{self.config.deadline_s:g} s leaves no time to retry"
            )
        time.sleep(pause)

    def _attempt(self, payload: dict[str, Any], deadline: float) -> Any:
        """One request in a daemon thread; the caller waits at most until the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self._slots.acquire(timeout=remaining):
            raise self._deadline_error("waiting for a free request slot (llm.max_concurrency)")
        outcome = _Attempt()
        finished = threading.Event()
        worker = threading.Thread(
            target=self._request, args=(payload, deadline, outcome, finished), daemon=True, name="nasloop-llm"
        )
        worker.start()
        if not finished.wait(timeout=max(0.0, deadline - time.monotonic())):
            self._abandon(outcome)
            raise self._deadline_error("waiting for the answer")
        if outcome.error is not None:
            raise outcome.error
        return outcome.response

    def _request(self, payload: dict[str, Any], deadline: float, outcome: _Attempt, finished: threading.Event) -> None:
        try:
            timeout = max(0.05, deadline - time.monotonic())
            streaming = self._client.chat.completions.with_streaming_response
            with streaming.create(**payload, timeout=timeout) as http_response:
                outcome.http_response = http_response
                if not outcome.abandoned:
                    outcome.response = http_response.parse()
        except Exception as error:  # classified, then re-raised in the caller's thread
            outcome.error = self._classify(error, deadline, structured="response_format" in payload)
        finally:
            self._slots.release()
            finished.set()

    @staticmethod
    def _abandon(outcome: _Attempt) -> None:
        """Stop an attempt the caller gave up on: closing its response ends a body still trickling in."""
        outcome.abandoned = True
        if outcome.http_response is not None:
            # Best effort: if closing fails, the request's own timeout still ends it.
            with contextlib.suppress(Exception):
                outcome.http_response.close()

    def _deadline_error(self, doing: str) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"{self.server} ({self.config.model}) did not answer within the deadline of "
            f"{self.config.deadline_s:g} s ({doing}); raise llm.deadline_s or check the server's load"
        )

    # ------------------------------------------------------------------------------------------------
    # Error classification
    # ------------------------------------------------------------------------------------------------

    def _classify(self, error: Exception, deadline: float, *, structured: bool) -> BaseException:
        openai = self._openai
        where = f"{self.server} (model {self.config.model})"
        if isinstance(error, openai.APITimeoutError):
            if time.monotonic() >= deadline - 0.05:
                return self._deadline_error("the request timed out")
            return _Transient(f"timed out: {error}")
        if isinstance(error, openai.APIConnectionError):
            return _Transient(f"cannot connect: {error.__cause__ or error}")
        if isinstance(error, openai.APIStatusError):
            return self._classify_status(error, where, structured=structured)
        if isinstance(error, openai.APIResponseValidationError | ValueError):
            return LLMUnreachable(
                f"{where} answered with something that is not an OpenAI chat completion ({error}); "
                "check llm.base_url (it usually ends in /v1)"
            )
        return LLMError(f"{where}: unexpected error {type(error).__name__}: {error}")

    def _classify_status(self, error: Any, where: str, *, structured: bool) -> BaseException:
        status = error.status_code
        detail = _error_detail(error)
        # Some servers answer an unsupported response_format with 400/422, others (llama.cpp's Python
        # server) with a 500 validation error: neither is worth retrying as it is.
        if structured and self.config.structured_output == "auto" and _RESPONSE_FORMAT_REJECTED.search(detail):
            return _SchemaRejected(detail)
        if status == 429 or status >= 500:
            return _Transient(f"HTTP {status}: {detail}", _retry_after(error))
        if _CONTEXT_TOO_LONG.search(detail):
            return ContextTooLong(
                f"{where}: the prompt does not fit the context window ({detail}); "
                "shorten the prompt, lower max_tokens or use a longer-context model"
            )
        if status == 404 or _MODEL_MISSING.search(detail):
            return ModelNotFound(
                f"{where} does not serve this model ({status}: {detail}); check llm.model against "
                f"GET {self.server}/models, and that llm.base_url is right"
            )
        if status in (401, 403):
            return LLMConfigError(
                f"{where} refused the credentials ({status}: {detail}); check the key in "
                f"${self.config.api_key_variable()}"
            )
        return LLMError(f"{where} rejected the request ({status}: {detail})")

    # ------------------------------------------------------------------------------------------------
    # Response
    # ------------------------------------------------------------------------------------------------

    def _completion(self, response: Any, messages: list[Message], latency_s: float, max_tokens: int) -> Completion:
        choices = getattr(response, "choices", None)
        if not choices:
            raise EmptyResponse(f"{self.server} ({self.config.model}) answered with no choices")
        choice = choices[0]
        text = (choice.message.content if choice.message is not None else None) or ""
        finish_reason = choice.finish_reason or "stop"
        if not text.strip():
            if finish_reason == "length":
                raise TruncatedResponse(
                    f"{self.config.model} at {self.server} reached max_tokens={max_tokens} before any answer "
                    "text (a reasoning model may spend them thinking); raise max_tokens"
                )
            raise EmptyResponse(f"{self.config.model} at {self.server} answered with empty text")
        usage = response.usage
        if usage is not None and usage.prompt_tokens is not None:
            counted = Usage(int(usage.prompt_tokens), int(usage.completion_tokens or 0))
        else:  # some servers omit usage: estimate rather than store zero
            counted = Usage(estimate_prompt_tokens(messages), estimate_tokens(text))
        return Completion(text, counted, latency_s, str(response.model or self.config.model), str(finish_reason))

    def close(self) -> None:
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()


def _error_detail(error: Any) -> str:
    """The server's error message (OpenAI's {"error": {"message": ...}} or whatever body it sent)."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("message") or inner)
        return str(inner)
    return str(getattr(error, "message", error))[:500]


def _retry_after(error: Any) -> float | None:
    """The Retry-After header in seconds, when the server sent a numeric one."""
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
