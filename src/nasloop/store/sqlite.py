"""The run store: one SQLite file per run directory (docs/architecture.md).

Only the driver process writes. Every write is its own transaction, committed before the engine moves on,
so `kill -9` at any moment loses at most the candidates being evaluated. WAL mode lets readers (`nasloop show`,
reports) open the file while a search runs.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasloop.candidate import EvalResult, Failure, Purpose, State

# 2: candidates carry `purpose` and `parent` (version-1 stores are migrated when opened for writing).
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS llm_calls (
    id INTEGER PRIMARY KEY,
    role TEXT NOT NULL,
    iteration INTEGER NOT NULL,
    model TEXT NOT NULL,
    messages TEXT NOT NULL,
    request TEXT NOT NULL,
    completion TEXT,
    error TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    latency_s REAL NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY,
    iteration INTEGER NOT NULL,
    created REAL NOT NULL,
    code TEXT,
    architecture TEXT,
    space TEXT,
    hash TEXT,
    parent_ids TEXT NOT NULL,
    duplicate_of INTEGER,
    notes TEXT NOT NULL,
    state TEXT NOT NULL,
    metrics TEXT NOT NULL,
    failure_kind TEXT,
    failure_message TEXT,
    failure_traceback TEXT,
    timings TEXT NOT NULL,
    stage TEXT NOT NULL,
    curve TEXT NOT NULL,
    info TEXT NOT NULL,
    llm_call_ids TEXT NOT NULL,
    staleness INTEGER NOT NULL DEFAULT 0,
    purpose TEXT NOT NULL DEFAULT 'search',
    parent INTEGER
);
CREATE INDEX IF NOT EXISTS candidates_hash ON candidates (hash);
CREATE TABLE IF NOT EXISTS strategy_state (
    id INTEGER PRIMARY KEY,
    iteration INTEGER NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS artifacts (
    name TEXT PRIMARY KEY,
    content TEXT NOT NULL,
    created REAL NOT NULL
);
"""


@dataclass
class CandidateRecord:
    """A stored candidate: what was proposed, how it ended, and where it came from."""

    id: int
    iteration: int
    state: State
    code: str | None = None
    architecture: str | None = None
    space: str | None = None
    hash: str | None = None
    parent_ids: tuple[int, ...] = ()
    duplicate_of: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    failure: Failure | None = None
    timings: dict[str, float] = field(default_factory=dict)
    stage: str = ""
    curve: list[tuple[int, float]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    llm_call_ids: tuple[int, ...] = ()
    staleness: int = 0
    created: float = 0.0
    purpose: Purpose = Purpose.SEARCH
    parent: int | None = None

    @property
    def usable(self) -> bool:
        """Whether its evaluation completed (a duplicate of a completed candidate included), so its metrics
        are a result: the one test strategies, rankings and reports apply."""
        return self.state is State.COMPLETE or (self.state is State.DUPLICATE and self.failure is None)

    def score(self, metric: str) -> float | None:
        """`metric` of a usable candidate, None otherwise or when it lacks the metric."""
        value = self.metrics.get(metric) if self.usable else None
        return float(value) if value is not None else None

    @property
    def result(self) -> EvalResult:
        """The evaluation outcome as an `EvalResult` (a duplicate reads as its original's state)."""
        state = self.state
        if state is State.DUPLICATE:
            state = State.FAILED if self.failure else State.COMPLETE
        return EvalResult(
            state, dict(self.metrics), self.failure, dict(self.timings), self.stage, list(self.curve), dict(self.info)
        )


@dataclass
class LLMCallRecord:
    """A stored LLM exchange."""

    id: int
    role: str
    iteration: int
    model: str
    messages: list[dict[str, str]]
    request: dict[str, Any]
    completion: str | None
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cost_usd: float
    created: float


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _lineage(row: sqlite3.Row) -> dict[str, Any]:
    """`purpose` and `parent` of a candidate row; a version-1 store opened read-only keeps them in notes."""
    if "purpose" in row.keys():  # noqa: SIM118 - `in row` would look among the values
        return {"purpose": Purpose(row["purpose"]), "parent": row["parent"]}
    purpose, parent = lineage_from_notes(json.loads(row["notes"]))
    return {"purpose": purpose, "parent": parent}


def lineage_from_notes(notes: dict[str, Any]) -> tuple[Purpose, int | None]:
    """The purpose and parent a version-1 store recorded as notes (`repair_of`, `final_of`)."""
    for key, purpose in (("repair_of", Purpose.REPAIR), ("final_of", Purpose.FINAL)):
        if notes.get(key):
            return purpose, int(notes[key])
    return Purpose.SEARCH, None


class RunStore:
    """SQLite store of one run. Open one writer (the engine); any number of readers with `readonly=True`."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            if not self.path.exists():
                raise FileNotFoundError(f"no run store at {self.path}")
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        self._db.row_factory = sqlite3.Row
        if not readonly:
            self._migrate()

    def _migrate(self) -> None:
        """Bring a store written by an older nasloop to `SCHEMA_VERSION` (a new store is already there)."""
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(candidates)")}
        if "purpose" not in columns:  # version 1: purpose and parent lived in the notes, if anywhere
            with self.transaction():
                self._db.execute("ALTER TABLE candidates ADD COLUMN purpose TEXT NOT NULL DEFAULT 'search'")
                self._db.execute("ALTER TABLE candidates ADD COLUMN parent INTEGER")
                for row in self._db.execute("SELECT id, notes FROM candidates").fetchall():
                    purpose, parent = lineage_from_notes(json.loads(row["notes"]))
                    self._db.execute(
                        "UPDATE candidates SET purpose = ?, parent = ? WHERE id = ?", (purpose.value, parent, row["id"])
                    )
        self.set_meta("schema_version", str(SCHEMA_VERSION))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes so they land together or not at all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- meta and artifacts -------------------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put_artifact(self, name: str, content: str) -> None:
        """Store a named text artifact (a knowledge base snapshot, a Pareto front, ...)."""
        self._db.execute(
            "INSERT OR REPLACE INTO artifacts (name, content, created) VALUES (?, ?, ?)",
            (name, content, time.time()),
        )

    def artifacts(self, prefix: str = "") -> dict[str, str]:
        rows = self._db.execute("SELECT name, content FROM artifacts WHERE name LIKE ? ORDER BY name", (prefix + "%",))
        return {row["name"]: row["content"] for row in rows}

    # -- LLM calls ----------------------------------------------------------------------------------

    def add_llm_call(
        self,
        *,
        role: str,
        iteration: int,
        model: str,
        messages: list[dict[str, str]],
        request: dict[str, Any],
        completion: str | None,
        error: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        latency_s: float,
        cost_usd: float,
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO llm_calls (role, iteration, model, messages, request, completion, error, prompt_tokens,"
            " completion_tokens, latency_s, cost_usd, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                role,
                iteration,
                model,
                _dumps(messages),
                _dumps(request),
                completion,
                error,
                prompt_tokens,
                completion_tokens,
                latency_s,
                cost_usd,
                time.time(),
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def llm_calls(self) -> list[LLMCallRecord]:
        rows = self._db.execute("SELECT * FROM llm_calls ORDER BY id")
        return [
            LLMCallRecord(
                id=row["id"],
                role=row["role"],
                iteration=row["iteration"],
                model=row["model"],
                messages=json.loads(row["messages"]),
                request=json.loads(row["request"]),
                completion=row["completion"],
                error=row["error"],
                prompt_tokens=row["prompt_tokens"],
                completion_tokens=row["completion_tokens"],
                latency_s=row["latency_s"],
                cost_usd=row["cost_usd"],
                created=row["created"],
            )
            for row in rows
        ]

    def llm_totals(self) -> dict[str, float]:
        """Calls, tokens, seconds and money over the whole run."""
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),"
            " COALESCE(SUM(latency_s), 0), COALESCE(SUM(cost_usd), 0) FROM llm_calls"
        ).fetchone()
        return {
            "calls": row[0],
            "prompt_tokens": row[1],
            "completion_tokens": row[2],
            "latency_s": row[3],
            "cost_usd": row[4],
        }

    # -- candidates ---------------------------------------------------------------------------------

    def next_candidate_id(self) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM candidates").fetchone()
        return int(row[0]) + 1

    def add_candidate(self, record: CandidateRecord) -> None:
        failure = record.failure
        self._db.execute(
            "INSERT INTO candidates (id, iteration, created, code, architecture, space, hash, parent_ids,"
            " duplicate_of, notes, state, metrics, failure_kind, failure_message, failure_traceback, timings,"
            " stage, curve, info, llm_call_ids, staleness, purpose, parent)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.iteration,
                record.created or time.time(),
                record.code,
                record.architecture,
                record.space,
                record.hash,
                _dumps(list(record.parent_ids)),
                record.duplicate_of,
                _dumps(record.notes),
                record.state.value,
                _dumps(record.metrics),
                failure.kind.value if failure else None,
                failure.message if failure else None,
                failure.traceback if failure else None,
                _dumps(record.timings),
                record.stage,
                _dumps([list(point) for point in record.curve]),
                _dumps(record.info),
                _dumps(list(record.llm_call_ids)),
                record.staleness,
                record.purpose.value,
                record.parent,
            ),
        )

    def candidates(self) -> list[CandidateRecord]:
        return [self._candidate(row) for row in self._db.execute("SELECT * FROM candidates ORDER BY id")]

    def candidate(self, candidate_id: int) -> CandidateRecord:
        row = self._db.execute("SELECT * FROM candidates WHERE id = ?", (candidate_id,)).fetchone()
        if row is None:
            raise KeyError(f"no candidate {candidate_id} in {self.path}")
        return self._candidate(row)

    def find_by_hash(self, code_hash: str) -> CandidateRecord | None:
        """The first evaluated (non-duplicate) candidate with this canonical hash."""
        row = self._db.execute(
            "SELECT * FROM candidates WHERE hash = ? AND state != ? ORDER BY id LIMIT 1",
            (code_hash, State.DUPLICATE.value),
        ).fetchone()
        return None if row is None else self._candidate(row)

    @staticmethod
    def _candidate(row: sqlite3.Row) -> CandidateRecord:
        failure = None
        if row["failure_kind"]:
            failure = Failure.from_dict(
                {
                    "kind": row["failure_kind"],
                    "message": row["failure_message"],
                    "traceback": row["failure_traceback"] or "",
                }
            )
        return CandidateRecord(
            id=row["id"],
            iteration=row["iteration"],
            state=State(row["state"]),
            code=row["code"],
            architecture=row["architecture"],
            space=row["space"],
            hash=row["hash"],
            parent_ids=tuple(json.loads(row["parent_ids"])),
            duplicate_of=row["duplicate_of"],
            notes=json.loads(row["notes"]),
            metrics=json.loads(row["metrics"]),
            failure=failure,
            timings=json.loads(row["timings"]),
            stage=row["stage"],
            curve=[(int(s), float(v)) for s, v in json.loads(row["curve"])],
            info=json.loads(row["info"]),
            llm_call_ids=tuple(json.loads(row["llm_call_ids"])),
            staleness=row["staleness"],
            created=row["created"],
            **_lineage(row),
        )

    # -- strategy state -----------------------------------------------------------------------------

    def save_strategy_state(self, iteration: int, state: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO strategy_state (iteration, state, created) VALUES (?, ?, ?)",
            (iteration, _dumps(state), time.time()),
        )

    def latest_strategy_state(self) -> tuple[int, dict[str, Any]] | None:
        row = self._db.execute("SELECT iteration, state FROM strategy_state ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else (int(row[0]), json.loads(row[1]))
