"""The archives of `niche-pareto`: each niche's members, knowledge base and unreported results, with
their serialisation (the strategy's state)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Member:
    """An evaluated architecture of a niche's archive: the stored candidate's id, its canonical form and the
    metrics the objectives and the predictor read (measured or looked up)."""

    id: int
    architecture: str
    niche: str
    metrics: dict[str, float]
    operation: str = "initial"
    rationale: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Member:
        metrics = {str(key): float(value) for key, value in dict(data["metrics"]).items()}
        return cls(int(data["id"]), str(data["architecture"]), str(data["niche"]), metrics,
                   str(data.get("operation", "initial")), str(data.get("rationale", "")))  # fmt: skip


@dataclass
class Niche:
    """One niche: its archive, its knowledge base and the results not yet shown to the knowledge update."""

    name: str
    members: list[Member] = field(default_factory=list)
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    recent: list[dict[str, str]] = field(default_factory=list)
    unreachable: bool = False

    def knowledge(self) -> dict[str, list[str]]:
        return {"positive": list(self.positive), "negative": list(self.negative)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "members": [member.to_dict() for member in self.members],
            **self.knowledge(),
            "recent": list(self.recent),
            "unreachable": self.unreachable,
        }

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> Niche:
        return cls(
            name,
            [Member.from_dict(item) for item in data.get("members") or []],
            [str(rule) for rule in data.get("positive") or []],
            [str(rule) for rule in data.get("negative") or []],
            [dict(item) for item in data.get("recent") or []],
            bool(data.get("unreachable", False)),
        )


__all__ = ["Member", "Niche"]
