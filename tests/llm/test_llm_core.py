"""LLM config, registry, scripted backend, usage accounting and cassettes."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from nasloop.llm import (
    CassetteBackend,
    Completion,
    EmptyResponse,
    InvalidStructuredResponse,
    LLMConfig,
    LLMConfigError,
    LLMError,
    ScriptedBackend,
    TruncatedResponse,
    Usage,
    UsageMeter,
    make_backend,
)
from nasloop.llm.base import Sampling
from nasloop.llm.cassette import MissingFromCassette
from nasloop.registry import UnknownNameError, llm_backends

MESSAGES = [{"role": "system", "content": "You design networks."}, {"role": "user", "content": "Propose one."}]
SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "choice",
        "schema": {"type": "object", "properties": {"width": {"type": "integer"}}, "required": ["width"]},
    },
}

# ----------------------------------------------------------------------------------------------------
# Config and registry
# ----------------------------------------------------------------------------------------------------


def test_config_defaults_to_the_embedded_model() -> None:
    config = LLMConfig()
    assert (config.backend, config.model, config.deadline_s, config.max_retries) == (
        "llama-cpp",
        "qwen2.5-coder-1.5b",
        600.0,
        2,
    )


def test_unknown_config_key_is_an_error_naming_it() -> None:
    with pytest.raises(ValidationError, match="temperatur"):
        LLMConfig.model_validate({"backend": "openai", "model": "m", "temperatur": 0.3})


def test_api_key_env_rejects_a_pasted_key_without_echoing_it() -> None:
    secret = "sk-proj-Abc123-DEF456-very-secret"
    with pytest.raises(ValidationError) as raised:
        LLMConfig(backend="openai", model="m", api_key_env=secret)
    assert secret not in str(raised.value)
    assert "NAME of an environment variable" in str(raised.value)


def test_cassette_needs_both_path_and_mode() -> None:
    with pytest.raises(ValidationError, match="cassette"):
        LLMConfig(cassette="run.jsonl")
    with pytest.raises(ValidationError, match="replay"):
        LLMConfig(backend="replay")


def test_read_api_key_names_the_missing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NASLOOP_TEST_KEY", raising=False)
    config = LLMConfig(backend="openai", model="m", base_url="http://127.0.0.1:1/v1", api_key_env="NASLOOP_TEST_KEY")
    with pytest.raises(LLMConfigError, match="NASLOOP_TEST_KEY"):
        config.read_api_key()
    monkeypatch.setenv("NASLOOP_TEST_KEY", "value")
    assert config.read_api_key() == "value"
    assert LLMConfig(backend="openai", model="m", base_url="http://127.0.0.1:1/v1").read_api_key() == "not-needed"
    assert LLMConfig(backend="openai", model="gpt").api_key_variable() == "OPENAI_API_KEY"


def test_every_backend_is_registered_by_name() -> None:
    assert {"llama-cpp", "openai", "transformers", "replay", "scripted"} <= set(llm_backends.names())


def test_unknown_backend_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match="openai"):
        make_backend(LLMConfig(backend="opneai", model="m"))


def test_make_backend_builds_the_scripted_backend_from_config() -> None:
    backend = make_backend(LLMConfig(backend="scripted", model="fake", responses=("one", "two")))
    assert isinstance(backend, ScriptedBackend)
    assert [backend.complete(MESSAGES).text for _ in range(2)] == ["one", "two"]


# ----------------------------------------------------------------------------------------------------
# Scripted backend: the same contract as the real ones
# ----------------------------------------------------------------------------------------------------


def test_scripted_counts_tokens_plausibly_and_records_requests() -> None:
    backend = ScriptedBackend(answers=["x" * 400])
    completion = backend.complete(MESSAGES, Sampling(temperature=0.2, max_tokens=500, seed=7, stop=["END"]))
    assert completion.usage.completion_tokens == 100
    assert 10 < completion.usage.prompt_tokens < 40
    assert completion.finish_reason == "stop" and completion.latency_s >= 0
    (call,) = backend.calls
    assert (call.temperature, call.max_tokens, call.seed, call.stop) == (0.2, 500, 7, ("END",))


def test_scripted_honours_stop_strings_and_max_tokens() -> None:
    backend = ScriptedBackend(answers=["keep this END drop that", "y" * 100])
    assert backend.complete(MESSAGES, Sampling(stop=["END"])).text == "keep this "
    cut = backend.complete(MESSAGES, Sampling(max_tokens=5))
    assert (cut.text, cut.finish_reason) == ("y" * 20, "length")


def test_scripted_callable_sees_the_messages() -> None:
    backend = ScriptedBackend(answers=lambda messages: messages[-1]["content"].upper())
    assert backend.complete(MESSAGES).text == "PROPOSE ONE."


def test_scripted_raises_scripted_errors_and_runs_out_clearly() -> None:
    backend = ScriptedBackend(answers=[EmptyResponse("scripted empty"), ""])
    with pytest.raises(EmptyResponse, match="scripted empty"):
        backend.complete(MESSAGES)
    with pytest.raises(EmptyResponse):
        backend.complete(MESSAGES)
    with pytest.raises(LLMError, match="ran out of answers"):
        backend.complete(MESSAGES)


def test_scripted_cycle_repeats() -> None:
    backend = ScriptedBackend(answers=["a", "b"], cycle=True)
    assert [backend.complete(MESSAGES).text for _ in range(5)] == ["a", "b", "a", "b", "a"]


def test_scripted_truncated_empty_answer() -> None:
    with pytest.raises(TruncatedResponse):
        ScriptedBackend(answers=["    x"]).complete(MESSAGES, Sampling(max_tokens=1))  # 4 blank characters fit


def test_scripted_validates_structured_answers() -> None:
    backend = ScriptedBackend(answers=['{"width": 64}', '{"width": "wide"}', "no json"])
    assert json.loads(backend.complete(MESSAGES, Sampling(response_format=SCHEMA_FORMAT)).text) == {"width": 64}
    with pytest.raises(InvalidStructuredResponse, match="width"):
        backend.complete(MESSAGES, Sampling(response_format=SCHEMA_FORMAT))
    with pytest.raises(InvalidStructuredResponse, match="does not contain any"):
        backend.complete(MESSAGES, Sampling(response_format=SCHEMA_FORMAT))


@pytest.mark.parametrize(
    "messages",
    [[], [{"role": "robot", "content": "x"}], [{"role": "user"}]],
)
def test_malformed_messages_are_config_errors(messages: list[dict[str, str]]) -> None:
    with pytest.raises(LLMConfigError):
        ScriptedBackend(answers=["x"]).complete(messages)


def test_unsupported_response_format_is_a_config_error() -> None:
    with pytest.raises(LLMConfigError, match="response_format"):
        ScriptedBackend(answers=["{}"]).complete(MESSAGES, Sampling(response_format={"type": "xml"}))


# ----------------------------------------------------------------------------------------------------
# Usage accounting
# ----------------------------------------------------------------------------------------------------


def completion(prompt: int, answer: int, latency: float = 1.0) -> Completion:
    return Completion("text", Usage(prompt, answer), latency, "model")


def test_usage_meter_totals_per_role_and_run_with_cost() -> None:
    meter = UsageMeter.from_config(LLMConfig(price_input_per_mtok=2.0, price_output_per_mtok=10.0))
    meter.add("generator", completion(1_000_000, 100_000, 2.0))
    meter.add("improver", completion(500_000, 0, 1.0))
    meter.add("generator", completion(0, 100_000, 3.0))
    total = meter.totals()
    assert (total.calls, total.prompt_tokens, total.completion_tokens) == (3, 1_500_000, 200_000)
    assert total.cost == pytest.approx(2.0 + 1.0 + 1.0 + 1.0)
    by_role = meter.by_role()
    assert list(by_role) == ["generator", "improver"]
    assert by_role["generator"].cost == pytest.approx(4.0) and by_role["generator"].latency_s == 5.0
    assert meter.summary()["by_role"]["improver"]["total_tokens"] == 500_000


def test_usage_meter_without_prices_reports_unknown_cost() -> None:
    meter = UsageMeter()
    record = meter.add("generator", completion(10, 5))
    assert record.cost is None and meter.totals().cost is None
    assert record.to_dict()["prompt_tokens"] == 10


def test_usage_meter_is_thread_safe() -> None:
    meter = UsageMeter()
    threads = [
        threading.Thread(target=lambda: [meter.add("r", completion(1, 1)) for _ in range(200)]) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert meter.totals().calls == 1600


# ----------------------------------------------------------------------------------------------------
# Cassettes
# ----------------------------------------------------------------------------------------------------


def test_record_then_replay_exactly(tmp_path: Path) -> None:
    cassette = tmp_path / "calls.jsonl"
    recording = make_backend(
        LLMConfig(
            backend="scripted", responses=("first", "second", "third"), cassette=str(cassette), cassette_mode="record"
        )
    )
    assert isinstance(recording, CassetteBackend)
    recorded = [
        recording.complete(MESSAGES, Sampling(seed=1)),
        recording.complete(MESSAGES, Sampling(seed=1)),  # the same request twice: answers replay in order
        recording.complete(MESSAGES, Sampling(seed=2, temperature=0.0)),
    ]
    assert len(cassette.read_text().splitlines()) == 3
    replaying = make_backend(LLMConfig(backend="replay", cassette=str(cassette), cassette_mode="replay"))
    replayed = [
        replaying.complete(MESSAGES, Sampling(seed=1)),
        replaying.complete(MESSAGES, Sampling(seed=1)),
        replaying.complete(MESSAGES, Sampling(seed=2, temperature=0.0)),
    ]
    assert replayed == recorded


def test_replay_of_an_unrecorded_request_is_a_clear_error(tmp_path: Path) -> None:
    cassette = tmp_path / "calls.jsonl"
    recorder = CassetteBackend(
        LLMConfig(cassette=str(cassette), cassette_mode="record"), inner=ScriptedBackend(answers=["a"])
    )
    recorder.complete(MESSAGES, Sampling(seed=1))
    replaying = CassetteBackend(LLMConfig(backend="replay", cassette=str(cassette), cassette_mode="replay"))
    with pytest.raises(MissingFromCassette, match=str(cassette)):
        replaying.complete(MESSAGES, Sampling(seed=2))  # a different seed is a different request
    replaying.complete(MESSAGES, Sampling(seed=1))
    with pytest.raises(MissingFromCassette, match="no \\(further\\) answer"):
        replaying.complete(MESSAGES, Sampling(seed=1))


def test_replay_without_a_cassette_file_says_to_record(tmp_path: Path) -> None:
    with pytest.raises(LLMConfigError, match="record it first"):
        make_backend(LLMConfig(backend="replay", cassette=str(tmp_path / "none.jsonl"), cassette_mode="replay"))


def test_malformed_cassette_line_is_named(tmp_path: Path) -> None:
    cassette = tmp_path / "bad.jsonl"
    cassette.write_text("{not json}\n", encoding="utf-8")
    with pytest.raises(LLMConfigError, match="line 1"):
        CassetteBackend(LLMConfig(backend="replay", cassette=str(cassette), cassette_mode="replay"))


# ----------------------------------------------------------------------------------------------------
# Loops in a generation
# ----------------------------------------------------------------------------------------------------

LOOP_LINES = ["        # (B, 256, 1, 1) -> (B, 256, 1, 1)", "        x = F.relu(self.conv2(x))"]


def test_repeating_tail_finds_a_block_repeated_the_given_number_of_times() -> None:
    from nasloop.llm.base import repeating_tail

    header = "class Net(nn.Module):\n    def forward(self, x):\n"
    assert repeating_tail(header + "\n".join(LOOP_LINES * 8) + "\n", 8) == 2
    assert repeating_tail(header + "\n".join(LOOP_LINES * 7) + "\n", 8) is None
    assert repeating_tail(header + "\n".join(LOOP_LINES * 8) + "\n        # (B, 2", 8) == 2  # growing line ignored
    assert repeating_tail("x = self.block(x)  # (B, 64, 7, 7)\n" * 8, 8) == 1
    assert repeating_tail(")\n" * 30 + "\n" * 10, 8) is None  # thin blocks never count
    varied = "".join(f"x = self.conv{index}(x)  # (B, 64, 7, 7)\n" for index in range(20))
    assert repeating_tail(varied, 8) is None
    assert repeating_tail("", 8) is None


def test_code_from_a_looping_generation_is_an_extraction_failure_with_advice() -> None:
    import random

    from nasloop.candidate import FailureKind
    from nasloop.llm.base import Completion, Usage
    from nasloop.strategies.base import Context, Reply, Task
    from nasloop.strategies.code_writer import ask_for_code

    class LoopingLLM:
        def complete(self, role: str, messages: list, sampling: object) -> Reply:
            text = "```python\nclass Net(nn.Module):\n" + "\n".join(LOOP_LINES * 8) + "\n"
            return Reply(Completion(text, Usage(10, 200), 1.0, "m", "repetition"), call_id=7)

    ctx = Context(LoopingLLM(), [], random.Random(0), 1, Task("digits", (1, 8, 8), 10), render=str)
    proposal = ask_for_code(ctx, "generator", [{"role": "user", "content": "a Net"}], Sampling())
    assert proposal.failure is not None and proposal.failure.kind is FailureKind.EXTRACTION
    assert "fell into a loop" in proposal.failure.message and "nn.Sequential" in proposal.failure.message
    assert proposal.llm_call_ids == (7,)


@pytest.mark.parametrize(
    ("settings", "named"),
    [({"temperature": -0.1}, "temperature"), ({"top_p": 0.0}, "top_p"), ({"max_tokens": 0}, "max_tokens")],
)
def test_sampling_settings_are_checked_when_made(settings, named):
    with pytest.raises(ValueError, match=named):
        Sampling(**settings)
    assert Sampling(stop=["a", "b"]).stop == ("a", "b") and Sampling().to_dict()["stop"] == []
