"""The embedded default backend: a local GGUF model through llama-cpp-python, in-process.

* **Model.** `config.model` is an embedded model name (joined and verified from its PyPI parts on first
  use, see `nasloop.llm.embedded`) or a path to a `.gguf` file. All layers go to the GPU when
  llama-cpp-python was built with GPU support (`n_gpu_layers=-1`), else the model runs on the CPU.
* **Prefix reuse.** On CPU the prompt prefill dominates the cost of a call. The chat prompt is rendered
  with the model's own chat template and tokenised here, and one `Llama` instance is kept, so the KV
  cache of the longest common token prefix with the previous call (system prompt, task description,
  unchanged history) is reused and only the new suffix is evaluated.
* **Deadline.** While the prompt is evaluated, llama.cpp's abort callback checks the clock, so even a
  long prefill stops at the deadline; during generation a stopping criterion checks it after every
  token. Reaching the deadline returns the text generated so far with `finish_reason="deadline"`
  (partial code is still useful feedback), or raises `DeadlineExceeded` when no text was generated yet.
  The abort callback is switched off once generation starts, because calling into Python at every graph
  node halves the decoding speed.
* **Loops.** A small model can repeat the same lines until the deadline. Every few tokens the text is
  checked (`repeating_tail`); a block of lines repeated `repetition_limit` times stops the generation
  with `finish_reason="repetition"`, minutes before the deadline would.
* **Structured output.** A JSON-schema `response_format` becomes a grammar
  (`LlamaGrammar.from_json_schema`), so decoding can only produce JSON of that shape; it is validated
  afterwards all the same.
* **Prompt lookup** (`llm.prompt_lookup`; default `prompt_lookup_default`). An edit answer copies most of
  its parent's code from the prompt. llama-cpp-python's `LlamaPromptLookupDecoding` guesses the next
  `prompt_lookup_tokens` tokens: it finds the first earlier occurrence of the last `prompt_lookup_ngram`
  tokens (fewer if there is none) in the prompt and answer, and copies what followed it. One batch
  evaluates the guesses, and `Llama.generate` keeps those the sampler itself picks, in order, up to the
  first it does not. Every token is still the sampler's own draw from the model's logits at that
  position (greedy, seeded sampling and grammars alike), so the answer is the one without prompt lookup,
  up to the rounding differences of a batched evaluation (measured with the 1.5B model on three edit
  prompts: 4 of 6 greedy answers identical, the others parting at a near-tie); only the speed changes.
  It pays only when decoding leaves cores idle, since checking the guesses is batched work: on 2 cores,
  decoding on 1 thread went from 7.9 to 12.8 tokens/s with it (1.61x), on 2 threads from 12.6 to 12.2
  (0.97x; `benchmarks/llm.py --prompt-lookup-compare`), so it is on by default when the decode threads
  are fewer than the cores.
* **Build check.** A llama-cpp-python built for the machine's own instruction set enables llama.cpp's
  AMX kernels on CPUs that have AMX, and those crash the process on the first generation
  (ggml-org/llama.cpp#20824), which no Python code can catch. Such a build (its system info reports
  `AMX_INT8 = 1`) is refused at load with the reinstall command (`AMX_REBUILD_HINT`), unless the
  environment sets `NASLOOP_ALLOW_LLAMA_AMX=1` (for a llama.cpp where the crash is fixed).
* Calls are serialised (one model, one KV cache); waiting for the model counts against the deadline.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasloop.llm.base import (
    DEFAULT_SAMPLING,
    Completion,
    ContextTooLong,
    DeadlineExceeded,
    EmptyResponse,
    InvalidStructuredResponse,
    LLMBackend,
    LLMConfigError,
    LLMError,
    Message,
    Sampling,
    TruncatedResponse,
    Usage,
    repeating_tail,
    validate_messages,
)
from nasloop.llm.config import LLMConfig
from nasloop.llm.embedded import resolve_model_path
from nasloop.llm.structured import parse_and_validate, schema_of
from nasloop.registry import llm_backends

INSTALL_HINT = "pip install 'nasloop[embedded]' (llama-cpp-python)"
AMX_REBUILD_HINT = (
    "CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON' "
    "pip install --no-cache-dir --force-reinstall --no-deps llama-cpp-python"
)
ALLOW_AMX_ENV = "NASLOOP_ALLOW_LLAMA_AMX"
# Fewer free tokens than this after the prompt cannot hold a useful answer.
MIN_ANSWER_TOKENS = 16
# Generated tokens between two checks for a loop (`repeating_tail`).
REPETITION_CHECK_TOKENS = 8


def prompt_lookup_default(decode_threads: int) -> bool:
    """Whether prompt lookup is on when `llm.prompt_lookup` is not set: when decoding leaves cores idle
    (see the module docstring for the measurements)."""
    return decode_threads < available_cores()


def import_llama_cpp() -> Any:
    """The `llama_cpp` module, or `LLMConfigError` with the install command."""
    try:
        import llama_cpp
    except ImportError as error:
        raise LLMConfigError(f"the llama-cpp backend needs llama-cpp-python: {INSTALL_HINT} ({error})") from None
    return llama_cpp


def check_build(system_info: str, environ: Any = os.environ) -> None:
    """`LLMConfigError` for a llama.cpp build with AMX kernels (see the module docstring), whose
    `system_info` (`llama_print_system_info()`) reports `AMX_INT8 = 1`."""
    if "AMX_INT8 = 1" in system_info and environ.get(ALLOW_AMX_ENV) != "1":
        raise LLMConfigError(
            "this llama-cpp-python was built with llama.cpp's AMX kernels, which crash on the first "
            f"generation (ggml-org/llama.cpp#20824); rebuild it for AVX2: {AMX_REBUILD_HINT} "
            f"(or set {ALLOW_AMX_ENV}=1 if your llama.cpp has the fix)"
        )


def available_cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_threads() -> tuple[int, int]:
    """(decode threads, prefill threads) when `n_threads` is not configured.

    Decoding one token synchronises all threads at every layer, so it collapses when the cores are
    oversubscribed (measured: 0.5 vs 4.4 tokens/s for 2 vs 1 threads on a busy 2-core machine) and
    gains little from hyper-threads: half the cores, as llama-cpp-python itself defaults to. The
    batched prompt prefill uses every core.
    """
    cores = available_cores()
    return max(1, cores // 2), cores


@functools.cache
def prompt_lookup_llama(llama_class: Any) -> Any:
    """A subclass of `llama_class` (`llama_cpp.Llama`) whose `eval` suits a draft model.

    With a draft model, `Llama.eval` asks llama.cpp for the logits of every position, the prompt's
    included, and copies them into `scores`, which has `n_batch` rows: past `n_batch` evaluated tokens
    it fails (`could not broadcast`). `logits_all=True` would give `scores` `n_ctx` rows (4.6 GiB for
    8192 x 151,936 floats) and still compute and copy the prompt's logits, a third more prefill work for
    the 0.5B model. This `eval` asks for the logits `Llama.generate` samples from, the last position of
    a prompt and every position of a batch of guesses, and leaves them in llama.cpp, where the sampler
    reads them (`scores` only serves logprobs, which nasloop never asks for, and the stopping criteria's
    second argument, which `_generate`'s criterion ignores).

    It also counts the tokens it samples (`sampled_tokens`): after the generation, `_create_completion`
    calls the stopping criteria once more with every evaluated token, and with prompt lookup those
    include guesses that were never checked, so the criterion's view overcounts the answer.
    """

    class PromptLookupLlama(llama_class):
        sampled_tokens = 0  # since the caller last set it to 0: one per token kept, guesses dropped excluded

        def sample(self, *args: Any, **kwargs: Any) -> Any:
            self.sampled_tokens += 1
            return super().sample(*args, **kwargs)

        def eval(self, tokens: Sequence[int]) -> None:
            # A batch of guesses is the last sampled token and at most num_pred_tokens guesses.
            guesses = len(tokens) <= self.draft_model.num_pred_tokens + 1
            self._ctx.kv_cache_seq_rm(-1, self.n_tokens, -1)
            for start in range(0, len(tokens), self.n_batch):
                batch = tokens[start : start + self.n_batch]
                self._batch.set_batch(batch=batch, n_past=self.n_tokens, logits_all=guesses)
                self._ctx.decode(self._batch)
                self.input_ids[self.n_tokens : self.n_tokens + len(batch)] = batch
                self.n_tokens += len(batch)
            self._requires_eval = False

    return PromptLookupLlama


@dataclass
class _Generation:
    """The state of one call while it generates: the deadline, the clock checks and the token count."""

    deadline: float
    prompt_tokens: int
    longest_sequence: int = 0
    deadline_hit: bool = False
    generating: bool = False
    chunks: list[str] = field(default_factory=list)
    repetition_limit: int | None = None
    repeating: bool = False
    checked_at: int = 0
    sampled_tokens: int | None = None  # counted by the model itself (prompt lookup), else from the sequence

    def in_a_loop(self) -> bool:
        """Whether the text so far ends in a loop; checked every `REPETITION_CHECK_TOKENS` tokens."""
        if self.repetition_limit is None or self.longest_sequence - self.checked_at < REPETITION_CHECK_TOKENS:
            return self.repeating
        self.checked_at = self.longest_sequence
        self.repeating = repeating_tail("".join(self.chunks), self.repetition_limit) is not None
        return self.repeating

    def past_deadline(self) -> bool:
        if time.monotonic() >= self.deadline:
            self.deadline_hit = True
        return self.deadline_hit

    @property
    def completion_tokens(self) -> int:
        if self.sampled_tokens is not None:
            return self.sampled_tokens
        # The stopping criterion sees every token but the newest one already in the sequence.
        return max(0, self.longest_sequence - self.prompt_tokens + 1) if self.generating else 0


@llm_backends.register("llama-cpp")
class LlamaCppBackend(LLMBackend):
    """A GGUF model in-process (see the module docstring for prefix reuse, deadline and grammar)."""

    name = "llama-cpp"

    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        self._llama_cpp = import_llama_cpp()
        self.model_path: Path = resolve_model_path(config.model)
        self._lock = threading.Lock()
        self._current: _Generation | None = None
        self._llama: Any = self._load()
        self._formatter = self._chat_formatter()
        # ctypes callbacks must stay referenced while llama.cpp may call them.
        self._abort_callback = self._llama_cpp.ggml_abort_callback(self._should_abort)
        self._no_abort_callback = self._llama_cpp.ggml_abort_callback()

    def __repr__(self) -> str:
        return f"LlamaCppBackend(model={self.config.model!r}, path={str(self.model_path)!r})"

    @property
    def model_name(self) -> str:
        return self.config.model

    @property
    def gpu_offload(self) -> bool:
        """Whether this llama-cpp-python build can offload layers to a GPU."""
        return bool(self._llama_cpp.llama_supports_gpu_offload())

    @property
    def threads(self) -> tuple[int, int]:
        """(decode threads, prefill threads): `llm.n_threads` for both, else `default_threads()`."""
        if self.config.n_threads is not None:
            return self.config.n_threads, self.config.n_threads
        return default_threads()

    @property
    def prompt_lookup(self) -> bool:
        """Whether generation uses prompt-lookup speculative decoding (see the module docstring)."""
        if self.config.prompt_lookup is None:
            return prompt_lookup_default(self.threads[0])
        return self.config.prompt_lookup

    def _load(self) -> Any:
        check_build(self._llama_cpp.llama_print_system_info().decode(errors="replace"))
        gpu_layers = self.config.n_gpu_layers
        if gpu_layers is None:
            gpu_layers = -1 if self.gpu_offload else 0
        decode_threads, prefill_threads = self.threads
        llama_class, draft_model = self._llama_cpp.Llama, None
        if self.prompt_lookup:
            llama_class = prompt_lookup_llama(llama_class)
            draft_model = self._llama_cpp.llama_speculative.LlamaPromptLookupDecoding(
                max_ngram_size=self.config.prompt_lookup_ngram, num_pred_tokens=self.config.prompt_lookup_tokens
            )
        try:
            return llama_class(
                model_path=str(self.model_path),
                n_ctx=self.config.n_ctx,
                n_batch=self.config.n_batch,
                n_threads=decode_threads,
                n_threads_batch=prefill_threads,
                n_gpu_layers=gpu_layers,
                draft_model=draft_model,
                verbose=False,
            )
        except (ValueError, RuntimeError) as error:
            raise LLMConfigError(f"llama.cpp could not load {self.model_path}: {error}") from None

    def _chat_formatter(self) -> Any:
        """The model's own chat template (from the GGUF metadata) as a llama-cpp-python formatter."""
        from llama_cpp import llama_chat_format

        template = self._llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise LLMConfigError(f"{self.model_path} has no chat template; use an instruct (chat) GGUF model")
        eos_id = self._llama.token_eos()
        bos_id = self._llama.token_bos()
        return llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=self._llama._model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=self._llama._model.token_get_text(bos_id) if bos_id != -1 else "",
            stop_token_ids=[eos_id],
        )

    def prompt_tokens(self, messages: list[Message]) -> tuple[list[int], list[str]]:
        """The chat prompt as tokens, and the template's stop strings."""
        formatted = self._formatter(messages=messages)
        tokens = self._llama.tokenize(
            formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        stops = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop] if formatted.stop else []
        return list(tokens), [str(stop) for stop in stops]

    def complete(
        self,
        messages: list[Message],
        sampling: Sampling = DEFAULT_SAMPLING,
        *,
        deadline_s: float | None = None,
    ) -> Completion:
        validate_messages(messages)
        if self._llama is None:
            raise LLMConfigError(f"the llama-cpp backend for {self.model_name} was closed")
        started = time.monotonic()
        allowed = self.call_deadline_s(self.config.deadline_s, deadline_s)
        deadline = started + allowed
        schema = schema_of(sampling.response_format)
        if not self._lock.acquire(timeout=allowed):
            raise DeadlineExceeded(
                f"{self.model_name}: the model was busy with other calls for the whole deadline "
                f"({self.config.deadline_s:g} s); lower the concurrency or raise llm.deadline_s"
            )
        try:
            tokens, template_stops = self.prompt_tokens(messages)
            budget = self._answer_budget(len(tokens), sampling.max_tokens)
            generation = _Generation(
                deadline=deadline, prompt_tokens=len(tokens), repetition_limit=self.config.repetition_limit
            )
            finish_reason = self._generate(
                generation,
                tokens,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=budget,
                seed=sampling.seed,
                stop=[*(sampling.stop or []), *template_stops],
                grammar=self._grammar(schema) if schema is not None else None,
            )
        finally:
            self._lock.release()
        text = "".join(generation.chunks)
        self._check_text(text, finish_reason, schema, budget)
        usage = Usage(len(tokens), generation.completion_tokens)
        return Completion(text, usage, time.monotonic() - started, self.model_name, finish_reason)

    def _answer_budget(self, prompt_length: int, max_tokens: int) -> int:
        """`max_tokens`, shortened to what the context window leaves after the prompt."""
        room = self.config.n_ctx - prompt_length
        if room < MIN_ANSWER_TOKENS:
            raise ContextTooLong(
                f"{self.model_name}: the prompt has {prompt_length} tokens and the context window "
                f"{self.config.n_ctx}; shorten the prompt or raise llm.n_ctx"
            )
        return min(max_tokens, room)

    def _grammar(self, schema: dict[str, Any]) -> Any:
        from llama_cpp import llama_grammar

        if not schema:
            return llama_grammar.LlamaGrammar.from_string(llama_grammar.JSON_GBNF, verbose=False)
        try:
            return llama_grammar.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        except (ValueError, RuntimeError, KeyError, NotImplementedError, AssertionError) as error:
            raise LLMConfigError(f"the response_format schema cannot be turned into a grammar: {error}") from None

    def _generate(self, generation: _Generation, tokens: list[int], **sampling: Any) -> str:
        """Run one generation into `generation.chunks`; the finish reason (stop, length, deadline)."""
        from llama_cpp import StoppingCriteriaList

        def stop_at_deadline(input_ids: Any, logits: Any) -> bool:
            if not generation.generating:
                generation.generating = True
                self._set_abort_callback(enabled=False)  # prefill is over
            generation.longest_sequence = max(generation.longest_sequence, len(input_ids))
            return generation.past_deadline() or generation.in_a_loop()

        self._current = generation
        self._set_abort_callback(enabled=True)
        if self.prompt_lookup:
            self._llama.sampled_tokens = 0
        finish_reason = "stop"
        try:
            for chunk in self._stream(tokens, StoppingCriteriaList([stop_at_deadline]), sampling):
                choice = chunk["choices"][0]
                generation.chunks.append(choice["text"])
                finish_reason = choice.get("finish_reason") or finish_reason
        except RuntimeError as error:
            self._llama.reset()  # an aborted decode leaves the KV cache out of step with the tokens
            if not generation.deadline_hit:
                raise LLMError(f"{self.model_name}: llama.cpp failed while generating: {error}") from None
        finally:
            self._set_abort_callback(enabled=False)
            self._current = None
            if self.prompt_lookup:
                generation.sampled_tokens = self._llama.sampled_tokens
        if generation.deadline_hit:
            if not "".join(generation.chunks).strip():
                raise DeadlineExceeded(
                    f"{self.model_name}: no text within the deadline of {self.config.deadline_s:g} s "
                    f"(prompt of {len(tokens)} tokens); raise llm.deadline_s, shorten the prompt or use "
                    "a smaller model"
                )
            return "deadline"
        if generation.repeating:
            return "repetition"
        return str(finish_reason)

    def _stream(self, tokens: list[int], stopping: Any, sampling: dict[str, Any]) -> Iterator[dict[str, Any]]:
        stream: Iterator[dict[str, Any]] = self._llama.create_completion(
            tokens,
            max_tokens=sampling["max_tokens"],
            temperature=sampling["temperature"],
            top_p=sampling["top_p"],
            seed=sampling["seed"],
            stop=sampling["stop"],
            grammar=sampling["grammar"],
            stopping_criteria=stopping,
            stream=True,
        )
        return stream

    def _should_abort(self, _data: object) -> bool:
        generation = self._current
        return generation is not None and generation.past_deadline()

    def _set_abort_callback(self, *, enabled: bool) -> None:
        callback = self._abort_callback if enabled else self._no_abort_callback
        self._llama_cpp.llama_set_abort_callback(self._llama._ctx.ctx, callback, None)

    def _check_text(self, text: str, finish_reason: str, schema: dict[str, Any] | None, budget: int) -> None:
        if not text.strip():
            if finish_reason == "length":
                raise TruncatedResponse(
                    f"{self.model_name} reached max_tokens={budget} without producing text; raise max_tokens"
                )
            raise EmptyResponse(f"{self.model_name} answered with empty text; try again or rephrase the prompt")
        if schema is None:
            return
        try:
            parse_and_validate(text, schema, model=self.model_name)
        except InvalidStructuredResponse as error:
            if finish_reason in ("length", "deadline", "repetition"):
                raise TruncatedResponse(
                    f"{self.model_name}: the JSON answer was cut off ({finish_reason}) before it was complete; "
                    "raise max_tokens or llm.deadline_s"
                ) from error
            raise

    def close(self) -> None:
        llama = getattr(self, "_llama", None)
        if llama is not None:
            llama.close()
            self._llama = None
