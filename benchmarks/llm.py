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

    python benchmarks/llm.py [--models NAME ...] [--prompt-tokens 1024] [--decode-tokens 64]
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

from nasloop.llm import LLMConfig, Message, make_backend
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
    return backend.complete(messages, temperature=0.0, max_tokens=1, seed=0).latency_s


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
        long = backend.complete(follow_up, temperature=0.0, max_tokens=args.decode_tokens, seed=0)
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
    args = parser.parse_args()
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
        report["models"].append(measure_model(name, args))
        if not args.json:
            print(json.dumps(report["models"][-1], indent=2), flush=True)
    report["load_average_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2 if not args.json else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
