"""LLM backends (docs/architecture.md), usage accounting and cassette record/replay.

`make_backend(config)` builds the backend registered under `config.backend` in
`nasloop.registry.llm_backends`, wrapped in a cassette recorder/replayer when `config.cassette` is set.
Importing this package registers every backend; heavy dependencies (openai, llama_cpp, transformers)
are imported only when a backend is built.
"""

from __future__ import annotations

# Importing a backend module registers it; heavy dependencies load only when a backend is built.
from nasloop.llm import cassette, llama_cpp_backend, openai_backend, scripted, transformers_backend
from nasloop.llm.base import (
    Completion,
    ContextTooLong,
    DeadlineExceeded,
    EmptyResponse,
    InvalidStructuredResponse,
    LLMBackend,
    LLMConfigError,
    LLMError,
    LLMUnreachable,
    Message,
    ModelNotFound,
    Sampling,
    TruncatedResponse,
    Usage,
)
from nasloop.llm.cassette import CassetteBackend
from nasloop.llm.config import LLMConfig
from nasloop.llm.scripted import ScriptedBackend
from nasloop.llm.usage import CallRecord, UsageMeter, UsageTotals
from nasloop.registry import llm_backends

__all__ = [
    "CallRecord",
    "CassetteBackend",
    "Completion",
    "ContextTooLong",
    "DeadlineExceeded",
    "EmptyResponse",
    "InvalidStructuredResponse",
    "LLMBackend",
    "LLMConfig",
    "LLMConfigError",
    "LLMError",
    "LLMUnreachable",
    "Message",
    "ModelNotFound",
    "Sampling",
    "ScriptedBackend",
    "TruncatedResponse",
    "Usage",
    "UsageMeter",
    "UsageTotals",
    "cassette",
    "llama_cpp_backend",
    "make_backend",
    "openai_backend",
    "scripted",
    "transformers_backend",
]


def make_backend(config: LLMConfig) -> LLMBackend:
    """The backend `config` describes, resolved by name through `nasloop.registry.llm_backends`.

    With `cassette_mode: replay` the answers come from the cassette and no model is built; with
    `cassette_mode: record` the named backend is wrapped so that every completion is recorded.
    """
    if config.cassette_mode == "replay":
        return CassetteBackend(config)
    backend_class = llm_backends.get(config.backend)
    backend: LLMBackend = backend_class(config)
    if config.cassette_mode == "record":
        return CassetteBackend(config, inner=backend)
    return backend
