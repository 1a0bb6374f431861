"""The `islands` strategy: independent chains of feedback-memory, migration of the best code, resume,
and concurrent LLM calls through the `openai` backend against a real loopback server."""

from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from support import FakeExecutor, fenced, good_net

from nasloop.config import build_config
from nasloop.engine import Search
from nasloop.llm.scripted import ScriptedBackend
from nasloop.registry import strategies
from nasloop.store import RunDir, RunStore
from nasloop.strategies.base import Task

SUGGESTION = {"problem": "too shallow", "suggestion": "Add a second convolution block."}


WIDTHS = itertools.count(8)  # every generated network differs, so none is a duplicate


def scripted_model(messages: list[dict[str, str]]) -> str:
    if "JSON" in messages[0]["content"] or "JSON" in messages[-1]["content"][-200:]:
        return json.dumps(SUGGESTION)
    return fenced(good_net(next(WIDTHS)))


def islands_config(iterations: int, llm: dict[str, Any] | None = None, **options: Any):
    return build_config(
        {
            "strategy": "islands", "strategy_options": options, "dataset": {"name": "digits"},
            "seed_model": "none",  # the islands' first answers are the models these tests follow
            "budget": {"iterations": iterations}, "llm": llm or {"backend": "scripted", "model": "scripted"},
        }
    )  # fmt: skip


def run(tmp_path, iterations: int, **options: Any) -> Search:
    engine = Search.start(
        islands_config(iterations, **options), tmp_path / "run", backend=ScriptedBackend(answers=scripted_model),
        executor=FakeExecutor(capacity=2), progress=False,
    )  # fmt: skip
    engine.run()
    return engine


def test_islands_are_independent_chains(tmp_path):
    engine = run(tmp_path, 6, islands=2)
    island_of = {record.id: record.notes["island"] for record in engine.history}
    assert sorted(island_of.values()) == [0, 0, 0, 1, 1, 1]
    for record in engine.history:  # a chain builds only on its own candidates
        assert all(island_of[parent] == island_of[record.id] for parent in record.parent_ids)
    state = engine.strategy.state_dict()
    assert [island["iterations"] for island in state["islands"]] == [3, 3]
    for index, island in enumerate(state["islands"]):
        assert all(island_of[entry["candidate"]] == index for entry in island["state"]["memory"])
    assert engine.strategy.sequential is False


def test_migration_brings_the_best_code_of_another_island(tmp_path):
    engine = run(tmp_path, 8, islands=2, migration_interval=1)
    migrations = engine.strategy.state_dict()["migrations"]
    assert migrations, "one island was behind the other at some point"
    island_of = {record.id: record.notes["island"] for record in engine.history}
    for migration in migrations:
        assert island_of[migration["candidate"]] != migration["island"]
    noted = [record for record in engine.history if "migrated_from" in record.notes]
    assert noted and all(island_of[r.notes["migrated_from"]] != r.notes["island"] for r in noted)
    # the migrant became the island's reference code: its next proposal names it as a parent
    assert all(record.notes["migrated_from"] in record.parent_ids for record in noted)


def test_every_island_state_is_saved_for_resume(tmp_path):
    engine = run(tmp_path, 4, islands=2)
    with RunStore(RunDir(tmp_path / "run").store_path, readonly=True) as store:
        _, saved = store.latest_strategy_state()
    task = Task(dataset="digits", in_shape=(1, 8, 8), num_classes=10)
    islands_class = strategies.get("islands")
    restored = islands_class(islands_class.Options(islands=2), task)
    restored.load_state_dict(saved)
    assert restored.state_dict() == engine.strategy.state_dict()
    with pytest.raises(ValueError, match="2 islands"):
        islands_class(islands_class.Options(islands=3), task).load_state_dict(saved)


# ----------------------------------------------------------------------------------- concurrent LLM calls


class ChatServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 that answers after `delay_s` and
    counts how many requests it was serving at once."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.serving = 0
        self.most_serving = 0
        self.requests = 0
        self.lock = threading.Lock()
        self.widths = itertools.count(8)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def answer(self, request: dict[str, Any]) -> str:
        if request.get("response_format"):
            return json.dumps(SUGGESTION)
        with self.lock:
            width = next(self.widths)
        return fenced(good_net(width))

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests += 1
                    server.serving += 1
                    server.most_serving = max(server.most_serving, server.serving)
                time.sleep(server.delay_s)
                body = json.dumps(
                    {
                        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "served-model",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": server.answer(request)}}],
                        "usage": {"prompt_tokens": 50, "completion_tokens": 40, "total_tokens": 90},
                    }
                ).encode()  # fmt: skip
                with server.lock:
                    server.serving -= 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> ChatServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("max_concurrency", [4, 2])
def test_islands_keep_several_llm_calls_in_flight_within_the_backend_bound(tmp_path, max_concurrency):
    with ChatServer(delay_s=0.4) as server:
        llm = {"backend": "openai", "model": "served-model", "base_url": server.url, "deadline_s": 30,
               "max_concurrency": max_concurrency}  # fmt: skip
        config = islands_config(6, llm=llm, islands=3)
        engine = Search.start(config, tmp_path / "run", executor=FakeExecutor(capacity=3), progress=False)
        summary = engine.run()
    assert summary.iterations == 6 and summary.valid == 6
    assert server.most_serving == min(3, max_concurrency)  # three islands, bounded by the backend
    assert server.requests == summary.llm_totals["calls"] == 3 + 3 * 2  # generator, then improver + generator
