"""The openai backend against a real loopback HTTP server that misbehaves on purpose.

The server is a small `http.server` in a thread on 127.0.0.1. Each test scripts how it answers: slowly,
with 500s or 429s, malformed JSON, 404 model-not-found, context-too-long errors, by hanging or by
trickling bytes. The deadline must hold every time, retries must be bounded, and the right
exception must be raised. The API key must never leak. The last section runs the common contract over
every registered backend (the server stands in for the openai one).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from nasloop.llm import (
    ContextTooLong,
    DeadlineExceeded,
    EmptyResponse,
    InvalidStructuredResponse,
    LLMConfig,
    LLMConfigError,
    LLMUnreachable,
    ModelNotFound,
    TruncatedResponse,
    make_backend,
)
from nasloop.llm.base import Sampling
from nasloop.llm.openai_backend import OpenAIBackend

MESSAGES = [{"role": "user", "content": "Propose a network."}]
SLACK_S = 0.6  # thread start, socket close and scheduling on a loaded 2-core machine
SCHEMA = {"type": "object", "properties": {"width": {"type": "integer"}}, "required": ["width"]}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "choice", "schema": SCHEMA}}


def chat_response(text: str, finish_reason: str = "stop", usage: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "served-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
    }
    if usage:
        body["usage"] = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    return body


@dataclass
class Reply:
    """How the server answers one request."""

    status: int = 200
    body: Any = None  # dict → JSON; str → raw text
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    trickle_s: float = 0.0  # send the body one byte at a time with this pause


Behaviour = Callable[[dict[str, Any]], Reply]


@dataclass
class FakeServer:
    """What the server saw, and how it should behave."""

    url: str
    behaviour: Behaviour
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def script(self, *replies: Reply) -> None:
        """Answer the n-th request with replies[n] (the last one repeats)."""
        queue = list(replies)

        def behaviour(request: dict[str, Any]) -> Reply:
            return queue.pop(0) if len(queue) > 1 else queue[0]

        self.behaviour = behaviour


def make_handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            request = json.loads(self.rfile.read(length) or b"{}")
            server.requests.append(request)
            server.headers.append(dict(self.headers))
            reply = server.behaviour(request)
            time.sleep(reply.delay_s)
            payload = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
            data = payload.encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if reply.trickle_s:
                    for byte in data:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(reply.trickle_s)
                else:
                    self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up at its deadline

    return Handler


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer(url="", behaviour=lambda request: Reply(body=chat_response("hello")))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(fake))
    httpd.daemon_threads = True
    httpd.block_on_close = False  # hanging handlers must not block the test's teardown
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    httpd.shutdown()
    httpd.server_close()


def backend_for(server: FakeServer, **overrides: Any) -> OpenAIBackend:
    settings: dict[str, Any] = {
        "backend": "openai",
        "model": "served-model",
        "base_url": server.url,
        "deadline_s": 2.0,
        "max_retries": 2,
        "retry_backoff_s": 0.05,
    }
    settings.update(overrides)
    backend = make_backend(LLMConfig(**settings))
    assert isinstance(backend, OpenAIBackend)
    return backend


def timed(call: Callable[[], Any]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


# ----------------------------------------------------------------------------------------------------
# The happy path
# ----------------------------------------------------------------------------------------------------


def test_completion_passes_every_sampling_setting(server: FakeServer) -> None:
    completion = backend_for(server).complete(
        MESSAGES, Sampling(temperature=0.3, max_tokens=99, seed=5, stop=["```\n"], top_p=0.9)
    )
    assert completion.text == "hello" and completion.model == "served-model"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (11, 7)
    request = server.requests[0]
    assert request["messages"] == MESSAGES
    assert (request["temperature"], request["max_tokens"], request["seed"], request["stop"], request["top_p"]) == (
        0.3,
        99,
        5,
        ["```\n"],
        0.9,
    )


def test_missing_usage_is_estimated_not_zero(server: FakeServer) -> None:
    server.script(Reply(body=chat_response("a longer answer text", usage=False)))
    completion = backend_for(server).complete(MESSAGES)
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0


# ----------------------------------------------------------------------------------------------------
# Deadline
# ----------------------------------------------------------------------------------------------------


def test_slow_server_within_the_deadline_answers(server: FakeServer) -> None:
    server.script(Reply(body=chat_response("late but fine"), delay_s=0.5))
    assert backend_for(server).complete(MESSAGES).text == "late but fine"


@pytest.mark.parametrize(
    "reply",
    [
        Reply(body=chat_response("too late"), delay_s=4.0),  # slow headers
        Reply(body=chat_response("x" * 200), trickle_s=0.05),  # slow body: each read is quick
    ],
    ids=["hang", "trickle"],
)
def test_deadline_holds_against_a_hanging_or_trickling_server(server: FakeServer, reply: Reply) -> None:
    server.script(reply)
    backend = backend_for(server, deadline_s=1.0)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="deadline of 1 s"):
        backend.complete(MESSAGES)
    assert time.monotonic() - started <= 1.0 + SLACK_S


def test_retries_never_run_past_the_deadline(server: FakeServer) -> None:
    server.script(Reply(status=500, body={"error": {"message": "overloaded"}}, delay_s=0.4))
    backend = backend_for(server, deadline_s=1.0, max_retries=10, retry_backoff_s=0.2)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="overloaded"):
        backend.complete(MESSAGES)
    assert time.monotonic() - started <= 1.0 + SLACK_S
    assert len(server.requests) < 10


def test_concurrency_is_bounded_by_max_concurrency(server: FakeServer) -> None:
    in_flight = {"now": 0, "most": 0}
    lock = threading.Lock()

    def behaviour(request: dict[str, Any]) -> Reply:
        with lock:
            in_flight["now"] += 1
            in_flight["most"] = max(in_flight["most"], in_flight["now"])
        time.sleep(0.3)
        with lock:
            in_flight["now"] -= 1
        return Reply(body=chat_response("ok"))

    server.behaviour = behaviour
    backend = backend_for(server, deadline_s=5.0, max_concurrency=2)
    callers = [threading.Thread(target=backend.complete, args=(MESSAGES,)) for _ in range(5)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(server.requests) == 5 and in_flight["most"] == 2


def test_an_abandoned_trickling_request_frees_its_slot(server: FakeServer) -> None:
    server.script(Reply(body=chat_response("x" * 400), trickle_s=0.05), Reply(body=chat_response("next")))
    backend = backend_for(server, deadline_s=0.8, max_concurrency=1)
    with pytest.raises(DeadlineExceeded):
        backend.complete(MESSAGES)
    assert backend.complete(MESSAGES).text == "next"  # the slot came back long before the trickle ended


# ----------------------------------------------------------------------------------------------------
# Retries and error mapping
# ----------------------------------------------------------------------------------------------------


def test_transient_500_then_success_is_retried(server: FakeServer) -> None:
    server.script(Reply(status=500, body={"error": {"message": "boom"}}), Reply(body=chat_response("recovered")))
    assert backend_for(server).complete(MESSAGES).text == "recovered"
    assert len(server.requests) == 2


def test_retries_are_bounded(server: FakeServer) -> None:
    server.script(Reply(status=503, body={"error": {"message": "unavailable"}}))
    with pytest.raises(LLMUnreachable, match="failed 3 times"):
        backend_for(server, max_retries=2).complete(MESSAGES)
    assert len(server.requests) == 3


def test_rate_limit_honours_retry_after(server: FakeServer) -> None:
    server.script(
        Reply(status=429, body={"error": {"message": "slow down"}}, headers={"Retry-After": "0.3"}),
        Reply(body=chat_response("ok")),
    )
    elapsed = timed(lambda: backend_for(server, retry_backoff_s=0.01).complete(MESSAGES))
    assert elapsed >= 0.3 and len(server.requests) == 2


def test_unreachable_server_is_reported_after_bounded_retries() -> None:
    backend = make_backend(
        LLMConfig(backend="openai", model="m", base_url="http://127.0.0.1:9/v1", max_retries=1, retry_backoff_s=0.01)
    )
    started = time.monotonic()
    with pytest.raises(LLMUnreachable, match=r"127\.0\.0\.1:9"):
        backend.complete(MESSAGES)
    assert time.monotonic() - started < 5


def test_model_not_found_is_not_retried(server: FakeServer) -> None:
    server.script(Reply(status=404, body={"error": {"message": "The model `served-model` does not exist."}}))
    with pytest.raises(ModelNotFound, match="served-model"):
        backend_for(server).complete(MESSAGES)
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "message",
    [
        "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",
        "the request exceeds the available context size, try increasing it",
    ],
)
def test_context_too_long_is_mapped_and_not_retried(server: FakeServer, message: str) -> None:
    server.script(Reply(status=400, body={"error": {"message": message, "code": "context_length_exceeded"}}))
    with pytest.raises(ContextTooLong, match="context window"):
        backend_for(server).complete(MESSAGES)
    assert len(server.requests) == 1


def test_malformed_json_body_is_a_clear_error(server: FakeServer) -> None:
    server.script(Reply(body="<html>not an API</html>"))
    with pytest.raises(LLMUnreachable, match="base_url"):
        backend_for(server).complete(MESSAGES)


def test_bad_credentials_are_a_config_error(server: FakeServer) -> None:
    server.script(Reply(status=401, body={"error": {"message": "invalid api key"}}))
    with pytest.raises(LLMConfigError, match="credentials"):
        backend_for(server).complete(MESSAGES)
    assert len(server.requests) == 1


def test_empty_and_truncated_answers(server: FakeServer) -> None:
    server.script(Reply(body=chat_response("")), Reply(body=chat_response("", finish_reason="length")))
    backend = backend_for(server)
    with pytest.raises(EmptyResponse):
        backend.complete(MESSAGES)
    with pytest.raises(TruncatedResponse, match="max_tokens"):
        backend.complete(MESSAGES)


# ----------------------------------------------------------------------------------------------------
# Structured output
# ----------------------------------------------------------------------------------------------------


def test_schema_request_is_sent_and_the_answer_validated(server: FakeServer) -> None:
    server.script(Reply(body=chat_response('{"width": 32}')), Reply(body=chat_response('{"width": "x"}')))
    backend = backend_for(server)
    assert json.loads(backend.complete(MESSAGES, Sampling(response_format=SCHEMA_FORMAT)).text) == {"width": 32}
    assert server.requests[0]["response_format"] == SCHEMA_FORMAT
    with pytest.raises(InvalidStructuredResponse, match="width"):
        backend.complete(MESSAGES, Sampling(response_format=SCHEMA_FORMAT))


def test_auto_mode_falls_back_to_prompting_when_the_server_rejects_schemas(server: FakeServer) -> None:
    def behaviour(request: dict[str, Any]) -> Reply:
        if "response_format" in request:
            return Reply(status=400, body={"error": {"message": "response_format is not supported"}})
        return Reply(body=chat_response('Here it is: ```json\n{"width": 8}\n```'))

    server.behaviour = behaviour
    backend = backend_for(server)
    assert backend.complete(MESSAGES, Sampling(response_format=SCHEMA_FORMAT)).text.endswith("```")
    assert [request.get("response_format", {}).get("type") for request in server.requests] == [
        "json_schema",
        "json_object",
        None,
    ]
    assert "json schema" in server.requests[2]["messages"][-1]["content"].lower()
    backend.complete(MESSAGES, Sampling(response_format=SCHEMA_FORMAT))
    assert len(server.requests) == 4  # the accepted mode is remembered: no more rejected requests


def test_a_500_rejecting_json_schema_moves_to_json_mode_without_retries(server: FakeServer) -> None:
    # llama.cpp's Python server answers an unknown response_format type with a 500 validation error.
    def behaviour(request: dict[str, Any]) -> Reply:
        if request.get("response_format", {}).get("type") == "json_schema":
            return Reply(
                status=500,
                body={"error": {"message": "body.response_format.type: Input should be 'text' or 'json_object'"}},
            )
        return Reply(body=chat_response('{"width": 16}'))

    server.behaviour = behaviour
    completion = backend_for(server, max_retries=0).complete(MESSAGES, Sampling(response_format=SCHEMA_FORMAT))
    assert json.loads(completion.text) == {"width": 16}
    assert server.requests[1]["response_format"] == {"type": "json_object", "schema": SCHEMA}


def test_server_mode_does_not_fall_back(server: FakeServer) -> None:
    server.script(Reply(status=400, body={"error": {"message": "response_format is not supported"}}))
    with pytest.raises(Exception, match="rejected the request"):
        backend_for(server, structured_output="server").complete(MESSAGES, Sampling(response_format=SCHEMA_FORMAT))


# ----------------------------------------------------------------------------------------------------
# Secrets
# ----------------------------------------------------------------------------------------------------


def test_api_key_never_appears_in_config_repr_or_logs(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-test-4f9c2b7e1d8a-SECRET"
    monkeypatch.setenv("NASLOOP_TEST_API_KEY", secret)
    caplog.set_level(logging.DEBUG)
    config = LLMConfig(backend="openai", model="served-model", base_url=server.url, api_key_env="NASLOOP_TEST_API_KEY")
    backend = make_backend(config)
    server.script(Reply(status=500, body={"error": {"message": "boom"}}), Reply(body=chat_response("ok")))
    backend.complete(MESSAGES)
    sent = {name.lower(): value for name, value in server.headers[-1].items()}
    assert sent["authorization"] == f"Bearer {secret}"  # the key is used ...
    dumped = [config.model_dump_json(), json.dumps(config.model_dump()), repr(config), str(config), repr(backend)]
    for text in dumped:  # ... but never shown
        assert secret not in text
    assert caplog.records, "the openai client logs at DEBUG; the test must see those records"
    for record in caplog.records:
        assert secret not in record.getMessage()
        assert secret not in str(record.args)


# ----------------------------------------------------------------------------------------------------
# The contract, over every registered backend
# ----------------------------------------------------------------------------------------------------

CONTRACT_CASES = [
    "scripted",
    "replay",
    "openai",
    pytest.param("llama-cpp", marks=[pytest.mark.llm, pytest.mark.slow]),
    pytest.param("transformers", marks=pytest.mark.skip(reason="needs a local Hugging Face model directory")),
]


def contract_backend(name: str, server: FakeServer, tmp_path: Any) -> Any:
    answer = "```python\nclass Net: pass\n```"
    if name == "scripted":
        return make_backend(LLMConfig(backend="scripted", model="scripted", responses=(answer,)))
    if name == "replay":
        cassette = str(tmp_path / "contract.jsonl")
        recorder = make_backend(
            LLMConfig(
                backend="scripted", model="scripted", responses=(answer,), cassette=cassette, cassette_mode="record"
            )
        )
        recorder.complete(MESSAGES, Sampling(temperature=0.0, max_tokens=32, seed=1))
        return make_backend(LLMConfig(backend="replay", cassette=cassette, cassette_mode="replay"))
    if name == "openai":
        server.script(Reply(body=chat_response(answer)))
        return backend_for(server)
    if name == "llama-cpp":
        from nasloop.llm.embedded import is_installed

        if importlib.util.find_spec("llama_cpp") is None or not is_installed("qwen2.5-coder-0.5b"):
            pytest.skip("needs llama-cpp-python and the qwen2.5-coder-0.5b parts")
        return make_backend(LLMConfig(backend="llama-cpp", model="qwen2.5-coder-0.5b", n_ctx=1024, n_threads=1))
    raise AssertionError(f"no contract case for backend {name!r}")


def test_every_registered_backend_has_a_contract_case() -> None:
    from nasloop.registry import llm_backends

    cases = {case if isinstance(case, str) else case.values[0] for case in CONTRACT_CASES}
    assert cases == set(llm_backends.names())


@pytest.mark.parametrize("name", CONTRACT_CASES)
def test_backend_contract(name: str, server: FakeServer, tmp_path: Any) -> None:
    backend = contract_backend(name, server, tmp_path)
    completion = backend.complete(MESSAGES, Sampling(temperature=0.0, max_tokens=32, seed=1))
    assert completion.text.strip() and completion.model
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert completion.latency_s >= 0 and completion.finish_reason in ("stop", "length", "deadline")
    with pytest.raises(LLMConfigError):
        backend.complete([{"role": "narrator", "content": "x"}])
    backend.close()
    backend.close()  # idempotent
