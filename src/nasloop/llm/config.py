"""Configuration of one LLM backend: which backend, which model, where, and the limits of every call.

The API key itself never appears here: `api_key_env` holds the *name* of the environment variable that
holds it, and the backend reads the variable when it connects. So the key never reaches the resolved
config saved with a run, the logs, the store or the sandbox environment.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from nasloop.llm.base import LLMConfigError
from nasloop.strict import Strict

# Embedded model names the llama-cpp backend resolves to GGUF files shipped in PyPI packages.
EMBEDDED_MODEL_NAMES = ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class LLMConfig(Strict):
    """One backend's configuration (unknown keys are errors).

    `model` means, per backend: llama-cpp — an embedded model name (`qwen2.5-coder-1.5b`, the default for
    real searches, or `qwen2.5-coder-0.5b`, the fast option) or a path to a `.gguf` file; openai — the
    model name the server serves; transformers — a local Hugging Face model directory; scripted — a label.
    """

    # Never echo a rejected value: someone may paste the API key itself into `api_key_env`.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    backend: str = Field(default="llama-cpp", description="registered backend name (nasloop.registry)")
    model: str = "qwen2.5-coder-1.5b"
    base_url: str | None = Field(
        default=None, description="OpenAI-compatible server, e.g. http://localhost:11434/v1 for Ollama"
    )
    api_key_env: str | None = Field(
        default=None,
        description="NAME of the environment variable holding the API key (never the key itself); "
        "OPENAI_API_KEY when base_url is unset",
    )
    deadline_s: float = Field(default=600.0, gt=0, description="total wall time of one call, retries included")
    max_retries: int = Field(default=2, ge=0, description="retries of transient errors within the deadline")
    retry_backoff_s: float = Field(default=1.0, ge=0, description="first backoff; doubles per retry")
    max_concurrency: int = Field(default=4, gt=0, description="concurrent requests (openai)")
    structured_output: Literal["auto", "server", "prompt"] = Field(
        default="auto",
        description="JSON-schema requests: server = send response_format; prompt = put the schema in the "
        "prompt and validate locally; auto = server, falling back to prompt if the server rejects it",
    )
    # Embedded (llama-cpp) and transformers options.
    n_ctx: int = Field(default=8192, gt=0, description="context window in tokens")
    n_threads: int | None = Field(
        default=None,
        gt=0,
        description="CPU threads; default: all cores to read the prompt, and to decode all cores in a search "
        "that never evaluates during a generation (a sequential strategy), else half of them",
    )
    n_batch: int = Field(default=512, gt=0, description="prompt tokens evaluated per batch")
    repetition_limit: int | None = Field(
        default=8,
        ge=2,
        description="llama-cpp: stop a generation whose last lines repeat one block of up to 4 lines this "
        "many times (finish_reason 'repetition'); None: never",
    )
    prompt_lookup: bool | None = Field(
        default=None,
        description="llama-cpp: prompt-lookup speculative decoding: guess the next tokens by copying what "
        "followed an earlier occurrence of the last few tokens (in the prompt or the answer) and keep the "
        "guesses the model itself picks; the same answers up to rounding, faster when an answer copies "
        "code from its prompt; None: the backend's default",
    )
    prompt_lookup_tokens: int = Field(
        default=10, gt=0, description="llama-cpp: tokens guessed per step with prompt lookup"
    )
    prompt_lookup_ngram: int = Field(
        default=2,
        gt=0,
        description="llama-cpp: longest run of last tokens prompt lookup searches for (shorter runs are "
        "tried when it is not found)",
    )
    n_gpu_layers: int | None = Field(default=None, description="layers offloaded; default -1 with a GPU build")
    device: str = Field(default="auto", description="transformers: auto, cpu, cuda or cuda:N")
    # Cost accounting (per million tokens, in the currency of your choice).
    price_input_per_mtok: float | None = Field(default=None, ge=0)
    price_output_per_mtok: float | None = Field(default=None, ge=0)
    # Cassette: record every completion to a JSON-lines file, or replay one exactly.
    cassette: str | None = None
    cassette_mode: Literal["record", "replay"] | None = None
    # Scripted backend (tests, demos): the answers, in order.
    responses: tuple[str, ...] = ()

    @field_validator("api_key_env")
    @classmethod
    def _is_variable_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(
                "api_key_env must be the NAME of an environment variable (like OPENAI_API_KEY), not the key itself"
            )
        return value

    @model_validator(mode="after")
    def _cassette_consistent(self) -> LLMConfig:
        if (self.cassette is None) != (self.cassette_mode is None):
            raise ValueError("cassette and cassette_mode go together: set both or neither")
        if self.backend == "replay" and self.cassette_mode != "replay":
            raise ValueError("backend 'replay' needs cassette=PATH and cassette_mode='replay'")
        return self

    def api_key_variable(self) -> str | None:
        """The environment variable to read the key from (OPENAI_API_KEY for the hosted default)."""
        if self.api_key_env is not None:
            return self.api_key_env
        return "OPENAI_API_KEY" if self.base_url is None else None

    def read_api_key(self) -> str:
        """The API key from the environment; a placeholder for local servers that need none.

        Raises `LLMConfigError` naming the variable (never its value) when a named variable is unset.
        """
        variable = self.api_key_variable()
        if variable is None:
            return "not-needed"  # local servers (Ollama, llama.cpp, vLLM) accept any key
        value = os.environ.get(variable)
        if not value:
            raise LLMConfigError(
                f"the API key variable {variable} is not set; export {variable}=... before running, "
                "or set api_key_env to the variable that holds your key"
            )
        return value
