"""Helpers shared by the population-based strategies of structured spaces (`reflective-zero-cost`,
`random`, `evolution`): members, fitness of a stored candidate, unseen random samples and finalists.

Fitness is always "higher is better" and read from a stored candidate's metrics: a zero-cost proxy
(`synflow`, `zen`, ...) when the run evaluates with the `zero-cost` stage, or `val_acc` when it trains.
"""

from __future__ import annotations

import difflib
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from nasloop.candidate import Failure, FailureKind, Proposal, Purpose, State
from nasloop.errors import NasloopError
from nasloop.registry import known_names, stages
from nasloop.spaces.base import SearchSpace
from nasloop.store.sqlite import CandidateRecord
from nasloop.strict import Strict

# Metric that says a candidate was already trained, so training it again as a finalist is pointless.
TRAINED_METRIC = "val_acc"
# How many draws `unseen_samples` makes per wanted architecture before it accepts a repeat.
SAMPLE_TRIES = 50
# Random operator draws when listing the children an LLM chooses from (`enumerate_children`).
CHILD_DRAWS = 400


@dataclass(frozen=True)
class Member:
    """One member of a population: the stored candidate's id, its canonical architecture and fitness."""

    id: int
    architecture: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Member:
        return cls(int(data["id"]), str(data["architecture"]), float(data["score"]))


class MissingMetricError(NasloopError, ValueError):
    """A completed candidate lacks the metric the strategy ranks by: the run's stages or proxies do not
    produce it. Raised at the first such candidate, so a misconfigured run stops at once."""


def known_stages(names: tuple[str, ...]) -> tuple[str, ...]:
    """`names` if every one is a registered evaluation stage, else a ValueError naming the unknown one."""
    return known_names(stages, names)


#: the stages finalists are evaluated with, checked against the evaluator's stages
FinalStages = Annotated[tuple[str, ...], Field(min_length=1), AfterValidator(known_stages)]


class FinalizeOptions(Strict):
    """Options every population strategy shares: which finalists to evaluate once the budget is spent.

    `final_top_k` candidates with the best fitness (distinct architectures, not trained yet) are
    evaluated again with `final_stages` (by default trained), as re-evaluations of purpose `final`.
    """

    final_top_k: int = Field(default=3, ge=0, description="finalists trained after the search; 0: none")
    final_stages: FinalStages = ("static", "build", "train")


def metric_error(record: CandidateRecord, metric: str) -> str | None:
    """Why the evaluation could not give `metric` for this candidate, or None: the `zero-cost` stage keeps
    a completed result and names the proxies that failed in `info["proxy_errors"]`, a benchmark's table
    the device metrics it lacks in `info["missing_metrics"]`."""
    errors = {**(record.info.get("proxy_errors") or {}), **(record.info.get("missing_metrics") or {})}
    return str(errors[metric]) if metric in errors else None


def require_metric(record: CandidateRecord, metric: str, strategy: str) -> None:
    """Raise `MissingMetricError` when `record` completed without `metric` and without a proxy error
    that explains it (see the class docstring)."""
    completed = record.usable
    if not completed or metric in record.metrics or metric_error(record, metric) is not None:
        return
    skipped = record.info.get("skipped_stages")
    reason = f" The sandbox skipped stages: {skipped}." if skipped else ""
    raise MissingMetricError(
        f"strategy {strategy!r} ranks candidates by {metric!r}, but candidate {record.id} completed without "
        f"it (its metrics: {', '.join(sorted(record.metrics)) or 'none'}).{reason} For a zero-cost proxy set "
        f"`stages: [static, build, zero-cost]` and `proxies: [{metric}]` in the run config (and "
        f"`objective: {metric}`); for val_acc include the `train` stage."
    )


def seen_architectures(space: SearchSpace, history: Iterable[CandidateRecord]) -> set[str]:
    """Canonical forms of every architecture already proposed in the run (valid or not)."""
    return {space.canonical(record.architecture) for record in history if record.architecture}


def unseen_samples(space: SearchSpace, rng: random.Random, count: int, seen: set[str]) -> list[str]:
    """`count` random valid architectures whose canonical forms are neither in `seen` nor repeated
    among themselves; after `SAMPLE_TRIES` draws per architecture a repeat is accepted (a tiny space may
    be exhausted). `seen` is not modified."""
    taken = set(seen)
    samples: list[str] = []
    for _ in range(count):
        architecture = space.sample(rng)
        for _ in range(SAMPLE_TRIES):
            if space.canonical(architecture) not in taken:
                break
            architecture = space.sample(rng)
        taken.add(space.canonical(architecture))
        samples.append(architecture)
    return samples


def unseen_mutation(space: SearchSpace, parent: str, rng: random.Random, seen: set[str]) -> str | None:
    """A random mutation of `parent` (`space.mutate`) that the run has not evaluated, or None after
    `SAMPLE_TRIES` draws."""
    for _ in range(SAMPLE_TRIES):
        child = space.mutate(parent, rng)
        if space.canonical(child) not in seen:
            return child
    return None


def unseen_children(
    space: SearchSpace, parent: str, rng: random.Random, seen: set[str], limit: int, draws: int = CHILD_DRAWS
) -> list[str]:
    """Up to `limit` distinct mutations of `parent` (`space.mutate`) that the run has not evaluated, in the
    order `draws` random mutations first produced them: every one of a small neighbourhood (NAS-Bench-201's
    24 one-edge changes), a random part of a large one."""
    children: dict[str, str] = {}
    for _ in range(draws):
        child = space.mutate(parent, rng)
        key = space.canonical(child)
        if key not in seen and key not in children:
            children[key] = child
            if len(children) == limit:
                break
    return list(children.values())


def unseen_child(space: SearchSpace, parents: Sequence[str], rng: random.Random, seen: set[str]) -> str:
    """A random unseen mutation of the first of `parents` that still has one (`unseen_mutation`), else a
    random unseen architecture: a parent whose neighbourhood the run has exhausted (an elitist search
    stuck at a local optimum) passes the turn to the next, so no query goes to a repeat."""
    for parent in parents:
        child = unseen_mutation(space, parent, rng, seen)
        if child is not None:
            return child
    return unseen_samples(space, rng, 1, seen)[0]


def fields(architecture: str) -> list[str]:
    """The positions an architecture string is made of, for naming a change: the parts between `|`, `+`
    and spaces (NAS-Bench-201 edges, ViT blocks), whole `Name(...)` blocks (macro strings), or, for a
    string that is one run of digits (NAS-Bench-Macro layers, Channel-Bench widths), its digits."""
    parts = re.findall(r"\w+\([^)]*\)|[^|+\s()]+", architecture)
    if len(parts) == 1 and parts[0].isdigit():
        return list(parts[0])
    return parts


def describe_change(parent: str, child: str) -> str:
    """What `child` changes in `parent`, position by position (counted from 1 in the parent; when the
    lengths differ, as `difflib` aligns them), e.g. `position 3: 0 -> 1`, or
    `position 1: E128 -> E96; remove position 3 (M3H2)`."""
    before, after = fields(parent), fields(child)
    if len(before) == len(after):  # position by position: two changed digits are two changes, not a move
        pairs = enumerate(zip(before, after, strict=True), start=1)
        return "; ".join(f"position {index}: {old} -> {new}" for index, (old, new) in pairs if old != new) or (
            "no change"
        )
    changes = []
    for tag, start, end, new_start, new_end in difflib.SequenceMatcher(
        None, before, after, autojunk=False
    ).get_opcodes():
        old, new = " ".join(before[start:end]), " ".join(after[new_start:new_end])
        where = f"position {start + 1}" if end - start <= 1 else f"positions {start + 1}-{end}"
        if tag == "replace":
            changes.append(f"{where}: {old} -> {new}")
        elif tag == "delete":
            changes.append(f"remove {where} ({old})")
        elif tag == "insert":
            changes.append(f"insert {new} at position {start + 1}")
    return "; ".join(changes) or "no change"


def chosen_child(change: str, changes: Mapping[str, str]) -> str | Failure:
    """The architecture that the answer's `change` names among `changes` (described change -> child), or
    an `extraction` failure for a change that is not listed."""
    if change not in changes:
        return Failure(
            FailureKind.EXTRACTION, f"the answer's change {change!r} is not one of the {len(changes)} listed"
        )
    return changes[change]


def answer_property(
    space: SearchSpace, *, field: str, choices: Sequence[str], constrain_pattern: bool
) -> dict[str, Any]:
    """The JSON schema of an LLM answer's architecture (`field` `architecture`: one of `choices`, else
    the space's pattern when `constrain_pattern`) or described change (`change`: one of `choices`)."""
    answer: dict[str, Any] = {"type": "string"}
    pattern = space.architecture_pattern() if constrain_pattern and field == "architecture" else None
    if choices:
        answer["enum"] = list(choices)
    elif pattern is not None:
        answer["pattern"] = pattern
    return answer


def finalists(history: Sequence[CandidateRecord], metric: str, top_k: int) -> list[CandidateRecord]:
    """The `top_k` completed candidates with the highest `metric`, one per architecture (hash), best
    first; finalist re-evaluations and candidates that already carry a trained accuracy are left out."""
    if top_k <= 0:
        return []
    ranked = sorted(
        (
            record
            for record in history
            if record.state is State.COMPLETE
            and record.architecture
            and metric in record.metrics
            and TRAINED_METRIC not in record.metrics
            and record.purpose is not Purpose.FINAL
        ),
        key=lambda record: (-record.metrics[metric], record.id),
    )
    chosen: list[CandidateRecord] = []
    hashes: set[str | None] = set()
    for record in ranked:
        if record.hash is not None and record.hash in hashes:
            continue
        hashes.add(record.hash)
        chosen.append(record)
        if len(chosen) == top_k:
            break
    return chosen


def final_proposals(history: Sequence[CandidateRecord], metric: str, options: FinalizeOptions) -> list[Proposal]:
    """Re-evaluation proposals of the finalists (`finalists`), skipping those the run already
    re-evaluated (a resumed run does not train them twice)."""
    done = {record.parent for record in history if record.purpose is Purpose.FINAL}
    return [
        Proposal(
            architecture=record.architecture,
            space=record.space,
            parent_ids=(record.id,),
            notes={"operator": "final"},
            stages=options.final_stages,
            purpose=Purpose.FINAL,
            parent=record.id,
        )
        for record in finalists(history, metric, options.final_top_k)
        if record.id not in done
    ]


__all__ = [
    "CHILD_DRAWS",
    "FinalStages",
    "FinalizeOptions",
    "Member",
    "MissingMetricError",
    "answer_property",
    "chosen_child",
    "describe_change",
    "fields",
    "final_proposals",
    "finalists",
    "known_stages",
    "metric_error",
    "require_metric",
    "seen_architectures",
    "unseen_child",
    "unseen_children",
    "unseen_mutation",
    "unseen_samples",
]
