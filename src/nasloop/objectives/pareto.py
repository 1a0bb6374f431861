"""Objectives and Pareto dominance over candidates' metrics.

A candidate is described by its metrics dict (`EvalResult.metrics`). An `Objective` names one metric and
whether it is maximised or minimised. Internally every objective is turned into a minimisation (a
maximised metric is negated), so "smaller is better" holds in every coordinate.

A candidate *lacks* an objective when the metric is absent or not a finite number. Such a candidate is
never compared and never on a front: it has no rank (`None`). Callers pass the metrics of the candidates
they want ranked (normally the complete ones); failed candidates carry no accuracy and drop out here.

Ties and duplicates: a point dominates another only if it is no worse in every objective and strictly
better in at least one, so two candidates with identical objective values do not dominate each other and
share a rank; both are on the front when their value is non-dominated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Direction = Literal["max", "min"]
_DIRECTIONS: tuple[str, ...] = ("max", "min")


@dataclass(frozen=True)
class Objective:
    """One metric to optimise: `metric` is a key of `EvalResult.metrics`, `direction` is max or min."""

    metric: str
    direction: Direction

    def __post_init__(self) -> None:
        if not self.metric:
            raise ValueError("an objective needs a metric name")
        if self.direction not in _DIRECTIONS:
            raise ValueError(f"objective {self.metric!r}: direction must be 'max' or 'min', not {self.direction!r}")

    def minimised(self, value: float) -> float:
        """`value` in the minimisation space: negated when the metric is maximised."""
        return -value if self.direction == "max" else value

    def __str__(self) -> str:
        return f"{self.metric}:{self.direction}"


def parse_objectives(text: str) -> list[Objective]:
    """Parse `"val_acc:max,latency_ms:min"` into objectives, in order.

    Each comma-separated item is `metric:direction` with direction `max` or `min`. Errors name the item:
    an empty list, a missing or unknown direction, an empty metric name, a metric listed twice.
    """
    items = [item.strip() for item in text.split(",")]
    if not text.strip():
        raise ValueError("no objectives given; write them as 'metric:max,metric:min'")
    objectives: list[Objective] = []
    for item in items:
        objectives.append(_parse_objective(item))
    _reject_repeated_metrics(objectives)
    return objectives


def _parse_objective(item: str) -> Objective:
    if not item:
        raise ValueError("empty objective in the list (two commas in a row, or a trailing comma?)")
    metric, separator, direction = item.partition(":")
    metric, direction = metric.strip(), direction.strip().lower()
    if not separator:
        raise ValueError(f"objective {item!r} has no direction; write '{item}:max' or '{item}:min'")
    if not metric:
        raise ValueError(f"objective {item!r} has no metric name before ':'")
    if direction not in _DIRECTIONS:
        raise ValueError(f"objective {item!r}: direction must be 'max' or 'min', not {direction!r}")
    return Objective(metric, "max" if direction == "max" else "min")


def _reject_repeated_metrics(objectives: Sequence[Objective]) -> None:
    seen: set[str] = set()
    for objective in objectives:
        if objective.metric in seen:
            raise ValueError(f"metric {objective.metric!r} is listed twice among the objectives")
        seen.add(objective.metric)


def objective_vector(metrics: Mapping[str, float], objectives: Sequence[Objective]) -> tuple[float, ...] | None:
    """The candidate's point in the minimisation space, or None when it lacks an objective metric."""
    vector: list[float] = []
    for objective in objectives:
        value = metrics.get(objective.metric)
        if value is None or not math.isfinite(value):
            return None
        vector.append(objective.minimised(float(value)))
    return tuple(vector)


def dominates(first: Sequence[float], second: Sequence[float]) -> bool:
    """True when `first` is no worse than `second` everywhere and better somewhere (minimisation)."""
    strictly_better = False
    for a, b in zip(first, second, strict=True):
        if a > b:
            return False
        if a < b:
            strictly_better = True
    return strictly_better


def non_dominated_fronts(points: Sequence[Mapping[str, float]], objectives: Sequence[Objective]) -> list[list[int]]:
    """Non-dominated sorting (Deb et al., NSGA-II; pymoo's `NonDominatedSorting`): the indices of
    `points`, front by front.

    Front 0 is the Pareto front; front k holds the points dominated only by points of fronts < k.
    Points lacking an objective metric are in no front. Indices within a front are ascending.
    """
    if not objectives:
        raise ValueError("non-dominated sorting needs at least one objective")
    indices = [index for index, metrics in enumerate(points) if objective_vector(metrics, objectives) is not None]
    if not indices:
        return []
    matrix = minimisation_matrix([points[index] for index in indices], objectives)
    sorting = pymoo_module("pymoo.util.nds.non_dominated_sorting").NonDominatedSorting()
    return [sorted(indices[int(position)] for position in front) for front in sorting.do(matrix)]


def pymoo_module(name: str) -> Any:
    """A pymoo module (pymoo computes nasloop's non-dominated sorting, hypervolume and IGD); ImportError
    saying how to install it when it is missing."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ImportError(
            "Pareto fronts, hypervolume and IGD are computed by pymoo, which is not installed: "
            "pip install 'nasloop[moo]'"
        ) from None


def minimisation_matrix(points: Sequence[Mapping[str, float]], objectives: Sequence[Objective]) -> np.ndarray:
    """An (N, M) float array of the points in the minimisation space; every point must have every metric."""
    rows = []
    for position, metrics in enumerate(points):
        vector = objective_vector(metrics, objectives)
        if vector is None:
            missing = [o.metric for o in objectives if not math.isfinite(metrics.get(o.metric, math.nan))]
            raise ValueError(f"point {position} lacks objective metric(s) {', '.join(missing)}")
        rows.append(vector)
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(objectives))


def non_dominated_ranks(points: Sequence[Mapping[str, float]], objectives: Sequence[Objective]) -> list[int | None]:
    """The front number of each point (0 = Pareto front), None for a point lacking an objective metric."""
    ranks: list[int | None] = [None] * len(points)
    for rank, front in enumerate(non_dominated_fronts(points, objectives)):
        for index in front:
            ranks[index] = rank
    return ranks


def pareto_front(points: Sequence[Mapping[str, float]], objectives: Sequence[Objective]) -> list[int]:
    """Indices of the non-dominated points (ascending). Duplicates of a front point are all included."""
    fronts = non_dominated_fronts(points, objectives)
    return fronts[0] if fronts else []
