"""What a finished (or stopped) search reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nasloop.candidate import Purpose, State
from nasloop.store import CandidateRecord


@dataclass
class RunSummary:
    """What a finished (or stopped) search reports. `valid`: iterations whose own candidate completed;
    `valid_after_repair`: those whose candidate, or a repair or retry of it, completed."""

    run_dir: Path
    candidates: int
    iterations: int
    valid: int
    best: CandidateRecord | None
    metric: str
    stop_reason: str
    llm_totals: dict[str, float] = field(default_factory=dict)
    seed: CandidateRecord | None = None  # the network the search started from, if it had one
    notes: tuple[str, ...] = ()  # the strategy's own summary lines
    valid_after_repair: int = 0

    @property
    def valid_rate(self) -> float:
        return self.valid / self.iterations if self.iterations else 0.0


def valid_after_repair(history: Sequence[CandidateRecord]) -> int:
    """Iterations whose search candidate, or a repair or retry of it, completed. A repair belongs to the
    iteration of the candidate it repairs; a retry (asked right after its iteration's failed answer) to
    the latest search candidate before it."""
    iteration_of: dict[int, int] = {}  # candidate -> the search candidate of its iteration
    valid: set[int] = set()
    latest: int | None = None
    for record in sorted(history, key=lambda candidate: candidate.id):
        root: int | None
        if record.purpose.counts_as_iteration:
            root = latest = record.id
        elif record.purpose is Purpose.REPAIR:
            root = iteration_of.get(record.parent, latest) if record.parent is not None else latest
        elif record.purpose is Purpose.RETRY:
            root = latest
        else:
            continue
        if root is None:
            continue
        iteration_of[record.id] = root
        if record.state is State.COMPLETE:
            valid.add(root)
    return len(valid)


__all__ = ["RunSummary", "valid_after_repair"]
