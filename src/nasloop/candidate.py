"""The vocabulary shared by every part of nasloop: states, failure kinds, results and proposals.

A *candidate* is one network proposed during a search. It ends in exactly one terminal `State`. When it
did not complete, a `Failure` says why, with a `FailureKind` from a fixed taxonomy and a message precise
enough to be sent back to the LLM. A failure is data: it is never raised through the engine and never
turned into a fake metric.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class State(StrEnum):
    """Terminal state of a candidate."""

    COMPLETE = "complete"
    FAILED = "failed"
    PRUNED = "pruned"
    # Added by the engine, never by an evaluator: an equivalent candidate was already evaluated.
    DUPLICATE = "duplicate"


class Purpose(StrEnum):
    """Why a candidate was made, and from what (its `parent`).

    Only `search` candidates count as iterations of the budget: the seed is the run's starting point, a
    repair or a retry is a second attempt at the same iteration, and a final candidate re-evaluates one
    already found.
    """

    SEED = "seed"  # the network the search starts from (the user's, or the built-in one), evaluated first
    SEARCH = "search"  # a new network of the search: an improvement of its parent, a mutation, a sample
    REPAIR = "repair"  # the fix of a failed candidate (the parent)
    RETRY = "retry"  # the same request asked again: an edit that did not apply, code that repeated a failure
    FINAL = "final"  # a re-evaluation of a finalist with other stages (e.g. training a zero-cost search's best)

    @property
    def counts_as_iteration(self) -> bool:
        """Whether a candidate of this purpose uses one iteration of the budget (the run's one rule)."""
        return self is Purpose.SEARCH


class FailureKind(StrEnum):
    """Why a candidate did not complete. The taxonomy is fixed (docs/architecture.md)."""

    EXTRACTION = "extraction"  # no code could be extracted from the LLM's answer
    SYNTAX = "syntax"  # the code does not parse
    IMPORT = "import"  # imports a module outside the allow-list, or the import fails
    FORBIDDEN = "forbidden"  # uses a forbidden construct (open, exec, dunder internals, downloads, ...)
    BUILD = "build"  # `Net(in_shape, num_classes)` raised
    SHAPE = "shape"  # the forward pass raised, or the logits have the wrong shape
    NAN = "nan"  # non-finite logits or loss
    OOM = "oom"  # out of memory (host or device)
    TIMEOUT = "timeout"  # wall-clock limit reached; the process group was killed
    BUDGET = "budget"  # a hard budget (params, FLOPs, latency, ...) was exceeded
    CRASH = "crash"  # anything else: a signal, sys.exit, a sandbox limit, an unexpected exception


@dataclass(frozen=True)
class Failure:
    """A failure record: the kind, a one-paragraph message for people and LLMs, and a traceback tail."""

    kind: FailureKind
    message: str
    traceback: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind.value, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Failure:
        return cls(FailureKind(data["kind"]), str(data["message"]), str(data.get("traceback", "")))

    def short(self, limit: int = 200) -> str:
        """`kind: message` cut to `limit` characters, as the feedback-memory prompts quote errors."""
        text = f"{self.kind.value}: {self.message}"
        return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class EvalResult:
    """What an evaluation returns to the parent (docs/architecture.md).

    `metrics` holds floats whose names carry their unit (`val_acc`, `latency_ms`, `energy_j`, ...).
    `stage` is the last stage the evaluation reached. `curve` is the training-loss curve as
    `(step, loss)` pairs, used for pruning and reports. `info` holds non-numeric facts about a metric
    (for example whether energy was measured or estimated).
    """

    state: State
    metrics: dict[str, float] = field(default_factory=dict)
    failure: Failure | None = None
    timings: dict[str, float] = field(default_factory=dict)
    stage: str = ""
    curve: list[tuple[int, float]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state is State.FAILED and self.failure is None:
            raise ValueError("a failed EvalResult needs a Failure")
        if self.state is State.COMPLETE and self.failure is not None:
            raise ValueError("a complete EvalResult cannot carry a Failure")

    @classmethod
    def failed(cls, kind: FailureKind, message: str, traceback: str = "", **kwargs: Any) -> EvalResult:
        return cls(State.FAILED, failure=Failure(kind, message, traceback), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "metrics": dict(self.metrics),
            "failure": self.failure.to_dict() if self.failure else None,
            "timings": dict(self.timings),
            "stage": self.stage,
            "curve": [list(point) for point in self.curve],
            "info": dict(self.info),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        failure = data.get("failure")
        return cls(
            state=State(data["state"]),
            metrics={str(k): float(v) for k, v in (data.get("metrics") or {}).items()},
            failure=Failure.from_dict(failure) if failure else None,
            timings={str(k): float(v) for k, v in (data.get("timings") or {}).items()},
            stage=str(data.get("stage", "")),
            curve=[(int(step), float(loss)) for step, loss in data.get("curve") or []],
            info=dict(data.get("info") or {}),
        )


@dataclass
class Proposal:
    """One candidate as a strategy proposes it, before evaluation.

    Exactly one of `code` (open code space) or `architecture` (a point of a structured space, rendered
    to code by the engine through `space`) is normally set. A proposal whose LLM answer yielded no usable
    code carries `failure` instead (kind `extraction` or `syntax`); the engine stores it as a failed
    candidate without evaluating it. `notes` is free-form strategy data stored with the candidate.
    `purpose` says why it was made and `parent` the candidate it was made from (the model it edits, the
    failed candidate it repairs); `parent_ids` lists every candidate its prompt showed.
    """

    code: str | None = None
    architecture: str | None = None
    space: str | None = None
    parent_ids: tuple[int, ...] = ()
    notes: dict[str, Any] = field(default_factory=dict)
    failure: Failure | None = None
    llm_call_ids: tuple[int, ...] = ()
    purpose: Purpose = Purpose.SEARCH
    parent: int | None = None
    # Evaluation stages for this proposal instead of the run's (e.g. training the finalists of a
    # zero-cost search); None keeps the run's stages.
    stages: tuple[str, ...] | None = None

    @property
    def final_of(self) -> int | None:
        """The candidate this proposal re-evaluates, if it is a final one."""
        return self.parent if self.purpose is Purpose.FINAL else None
