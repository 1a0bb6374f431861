"""Record every completion of a run to a cassette (JSON lines) and replay it exactly.

A cassette line is `{"key": ..., "request": {...}, "completion": {...}}`. The key is the SHA-256 of the
canonical request: messages, temperature, max_tokens, seed, stop and response_format. In replay mode
identical requests get their recorded answers in recorded order; a request with no (or no more)
recorded answer is an `LLMError` that names the cassette, so a replayed run can never silently diverge.
Lines are flushed one by one, so a killed run keeps every completion recorded before it died.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from nasloop.llm.base import (
    DEFAULT_SAMPLING,
    Completion,
    LLMBackend,
    LLMConfigError,
    LLMError,
    Message,
    Sampling,
    validate_messages,
)
from nasloop.llm.config import LLMConfig
from nasloop.registry import llm_backends


def request_record(messages: list[Message], sampling: Sampling) -> dict[str, Any]:
    """The part of a request that decides its answer, JSON-ready (`top_p` is left out, as cassettes
    recorded before it was sampled on still replay)."""
    return {
        "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        "temperature": sampling.temperature,
        "max_tokens": sampling.max_tokens,
        "seed": sampling.seed,
        "stop": list(sampling.stop) or None,
        "response_format": sampling.response_format,
    }


def request_key(request: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a `request_record`."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class MissingFromCassette(LLMError):
    """Replay mode got a request the cassette holds no (further) answer for."""


@llm_backends.register("replay")
class CassetteBackend(LLMBackend):
    """Replays `config.cassette` (mode "replay"), or records every completion of `inner` to it ("record").

    `make_backend` builds this wrapper whenever `cassette` is configured; `backend: replay` alone
    replays without any model.
    """

    name = "replay"

    def __init__(self, config: LLMConfig, inner: LLMBackend | None = None) -> None:
        if config.cassette is None or config.cassette_mode is None:
            raise LLMConfigError("a cassette backend needs cassette=PATH and cassette_mode")
        self.config = config
        self.path = Path(config.cassette)
        self.mode = config.cassette_mode
        self.inner = inner
        self._lock = threading.Lock()
        self._recorded: dict[str, deque[Completion]] = defaultdict(deque)
        if self.mode == "record" and inner is None:
            raise LLMConfigError("recording a cassette needs a backend to record from")
        if self.mode == "replay":
            self._load()

    @property
    def model_name(self) -> str:
        return self.inner.model_name if self.inner is not None else self.config.model

    def _load(self) -> None:
        if not self.path.is_file():
            raise LLMConfigError(f"cassette {self.path} does not exist; record it first (cassette_mode: record)")
        with self.path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    self._recorded[entry["key"]].append(Completion.from_dict(entry["completion"]))
                except (ValueError, KeyError, TypeError) as error:
                    raise LLMConfigError(f"cassette {self.path} line {number} is malformed: {error}") from None

    def complete(
        self,
        messages: list[Message],
        sampling: Sampling = DEFAULT_SAMPLING,
        *,
        deadline_s: float | None = None,
    ) -> Completion:
        validate_messages(messages)
        request = request_record(messages, sampling)
        key = request_key(request)
        if self.mode == "replay":
            return self._replay(key)
        assert self.inner is not None
        completion = self.inner.complete(messages, sampling, deadline_s=deadline_s)
        self._append({"key": key, "request": request, "completion": completion.to_dict()})
        return completion

    def _replay(self, key: str) -> Completion:
        with self._lock:
            answers = self._recorded.get(key)
            if not answers:
                raise MissingFromCassette(
                    f"cassette {self.path} holds no (further) answer for this request (key {key[:12]}); "
                    "the prompts, sampling settings or call order differ from the recorded run — "
                    "record it again with cassette_mode: record"
                )
            return answers.popleft()

    def _append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as cassette:
                cassette.write(line)
                cassette.flush()

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
