"""A local Hugging Face model directory through transformers (GPU when present).

`config.model` is a directory holding a chat model (config, tokenizer with a chat template, weights).
transformers and torch are imported when the backend is built; without transformers the error says
`pip install 'nasloop[transformers]'`. The deadline is checked after every generated token (a stopping
criterion) and, as with the llama-cpp backend, reaching it returns the text so far with
`finish_reason="deadline"`, or raises `DeadlineExceeded` when there is none. A JSON-schema
`response_format` is put into the prompt and the answer validated (no constrained decoding here).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nasloop.llm.base import (
    DEFAULT_SAMPLING,
    Completion,
    DeadlineExceeded,
    EmptyResponse,
    LLMBackend,
    LLMConfigError,
    Message,
    ModelNotFound,
    Sampling,
    TruncatedResponse,
    Usage,
    validate_messages,
)
from nasloop.llm.config import LLMConfig
from nasloop.llm.structured import parse_and_validate, schema_instruction, schema_of
from nasloop.registry import llm_backends

INSTALL_HINT = "pip install 'nasloop[transformers]'"


def import_transformers() -> Any:
    """The `transformers` module, or `LLMConfigError` with the install command."""
    try:
        import transformers
    except ImportError as error:
        raise LLMConfigError(f"the transformers backend needs transformers: {INSTALL_HINT} ({error})") from None
    return transformers


def model_directory(model: str) -> Path:
    """`model` as an existing local model directory; `ModelNotFound` otherwise (nothing is downloaded)."""
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise ModelNotFound(
            f"the transformers backend needs a local model directory with config.json; {path} is not one "
            "(nasloop never downloads weights: download the model first and point llm.model at it)"
        )
    return path


@llm_backends.register("transformers")
class TransformersBackend(LLMBackend):
    """Chat completions from a local transformers model (see the module docstring)."""

    name = "transformers"

    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        self.path = model_directory(config.model)
        transformers = import_transformers()
        import torch

        self._torch = torch
        self.device = _device(config.device, torch)
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self._model = transformers.AutoModelForCausalLM.from_pretrained(
            self.path, local_files_only=True, torch_dtype="auto"
        ).to(self.device)
        self._model.eval()
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self.path.name

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
        if schema is not None:
            messages = [
                *messages[:-1],
                {**messages[-1], "content": messages[-1]["content"] + "\n\n" + schema_instruction(schema)},
            ]
        if not self._lock.acquire(timeout=self.config.deadline_s):
            raise DeadlineExceeded(f"{self.model_name}: busy with other calls for the whole deadline")
        try:
            text, prompt_tokens, new_tokens, finish_reason = self._generate(
                messages, sampling.temperature, sampling.max_tokens, sampling.seed, sampling.top_p, deadline
            )
        finally:
            self._lock.release()
        text, finish_reason = _cut_at_stop(text, sampling.stop, finish_reason)
        if not text.strip():
            if finish_reason == "deadline":
                raise DeadlineExceeded(f"{self.model_name}: no text within {self.config.deadline_s:g} s")
            if finish_reason == "length":
                raise TruncatedResponse(f"{self.model_name} reached max_tokens={sampling.max_tokens} without text")
            raise EmptyResponse(f"{self.model_name} answered with empty text")
        if schema is not None:
            parse_and_validate(text, schema, model=self.model_name)
        usage = Usage(prompt_tokens, new_tokens)
        return Completion(text, usage, time.monotonic() - started, self.model_name, finish_reason)

    def _generate(
        self,
        messages: list[Message],
        temperature: float,
        max_tokens: int,
        seed: int | None,
        top_p: float,
        deadline: float,
    ) -> tuple[str, int, int, str]:
        torch = self._torch
        inputs = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.device)
        prompt_length = int(inputs["input_ids"].shape[1])
        if seed is not None:
            torch.manual_seed(seed)
        clock = _DeadlineCriterion(deadline)
        with torch.no_grad():
            output = self._model.generate(
                **inputs,
                max_new_tokens=max_tokens,
                do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None,
                top_p=top_p if temperature > 0 else None,
                stopping_criteria=[clock],
            )
        new = output[0, prompt_length:]
        text = self._tokenizer.decode(new, skip_special_tokens=True)
        ended = bool(new.numel()) and int(new[-1]) == self._tokenizer.eos_token_id
        finish_reason = "deadline" if clock.hit else "stop" if ended or len(new) < max_tokens else "length"
        return text, prompt_length, int(new.numel()), finish_reason


class _DeadlineCriterion:
    """A transformers stopping criterion that ends generation at the deadline."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.hit = False

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
        self.hit = self.hit or time.monotonic() >= self.deadline
        return self.hit


def _device(requested: str, torch: Any) -> str:
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def _cut_at_stop(text: str, stop: Sequence[str], finish_reason: str) -> tuple[str, str]:
    for stop_string in stop or []:
        index = text.find(stop_string)
        if index >= 0:
            return text[:index], "stop"
    return text, finish_reason
