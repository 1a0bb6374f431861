"""Quality indicators of a set of candidates: hypervolume (HV) and inverted generational distance (IGD).

Normalisation, as in the literature (e.g. the HW-NAS and EMO papers that report HV and IGD): every
objective is first turned into a minimisation, then min-max normalised with `Bounds` so that the ideal
value maps to 0 and the nadir value maps to 1::

    normalised = (minimised(value) - minimised(ideal)) / (minimised(nadir) - minimised(ideal))

`Bounds` are either given (e.g. accuracy ideal 1.0 / nadir 0.0, latency ideal 0 ms / nadir 50 ms) or taken
from a reference front (its per-objective best and worst values, `Bounds.from_points`). When several runs
are compared, use the same bounds for all, e.g. from the union of their fronts: an indicator is comparable
only across sets normalised the same way, and bounds that move with the run make HV over time meaningless.

HV is the volume of the normalised minimisation space dominated by the set and bounded by a reference
point, by default (1.1, …, 1.1): slightly beyond the nadir so that the extreme points of the front still
contribute (the common choice; Ishibuchi et al. 2018 discuss it). For points within the bounds HV is
then at most 1.1^M for M objectives; divide by `reference_box_volume` to report a fraction.
HV is exact, computed by pymoo (`pymoo.indicators.hv.HV`).

IGD is the mean, over the reference front's points, of the Euclidean distance to the nearest point of
the set, in the same normalised space (lower is better, 0 when the set covers the reference front),
computed by pymoo (`pymoo.indicators.igd.IGD`). nasloop only normalises, validates and names things:
both indicators need pymoo (`pip install 'nasloop[moo]'`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from nasloop.objectives.pareto import Objective, dominates, minimisation_matrix, objective_vector, pymoo_module

DEFAULT_REFERENCE_POINT = 1.1


@dataclass(frozen=True)
class Bounds:
    """Per objective metric, its ideal (best) and nadir (worst) value, in the metric's own units.

    For a maximised metric the ideal is the larger value (accuracy: ideal 1.0, nadir 0.0); for a
    minimised one it is the smaller (latency: ideal 0, nadir 50).
    """

    ideal: Mapping[str, float]
    nadir: Mapping[str, float]

    @classmethod
    def from_points(cls, points: Sequence[Mapping[str, float]], objectives: Sequence[Objective]) -> Bounds:
        """The per-objective best and worst values among `points` (those lacking a metric are skipped)."""
        complete = [metrics for metrics in points if objective_vector(metrics, objectives) is not None]
        if not complete:
            raise ValueError("bounds need at least one point with every objective metric")
        matrix = minimisation_matrix(complete, objectives)
        best, worst = matrix.min(axis=0), matrix.max(axis=0)
        # Map back from the minimisation space to metric units (a negated maximised metric flips back).
        ideal = {o.metric: o.minimised(float(value)) for o, value in zip(objectives, best, strict=True)}
        nadir = {o.metric: o.minimised(float(value)) for o, value in zip(objectives, worst, strict=True)}
        return cls(ideal, nadir)

    def normalise(self, points: Sequence[Mapping[str, float]], objectives: Sequence[Objective]) -> np.ndarray:
        """An (N, M) array of the points that have every objective metric, normalised (ideal 0, nadir 1)."""
        complete = [metrics for metrics in points if objective_vector(metrics, objectives) is not None]
        matrix = minimisation_matrix(complete, objectives)
        ideal, span = self._ideal_and_span(objectives)
        return (matrix - ideal) / span

    def _ideal_and_span(self, objectives: Sequence[Objective]) -> tuple[np.ndarray, np.ndarray]:
        ideal, span = [], []
        for objective in objectives:
            if objective.metric not in self.ideal or objective.metric not in self.nadir:
                raise ValueError(f"bounds give no ideal and nadir for objective {objective.metric!r}")
            best = objective.minimised(self.ideal[objective.metric])
            worst = objective.minimised(self.nadir[objective.metric])
            if not worst > best:
                raise ValueError(
                    f"bounds for {objective} need an ideal better than the nadir, got ideal "
                    f"{self.ideal[objective.metric]} and nadir {self.nadir[objective.metric]}; "
                    "a reference front flat in this objective cannot set its scale, so give bounds explicitly"
                )
            ideal.append(best)
            span.append(worst - best)
        return np.array(ideal), np.array(span)


def _reference_vector(reference_point: float | Sequence[float], dimensions: int) -> np.ndarray:
    if isinstance(reference_point, int | float):
        return np.full(dimensions, float(reference_point))
    vector = np.asarray(reference_point, dtype=np.float64)
    if vector.shape != (dimensions,):
        raise ValueError(f"the reference point has {vector.size} coordinates; the objectives need {dimensions}")
    return vector


def hypervolume_of_matrix(points: ArrayLike, reference_point: float | Sequence[float]) -> float:
    """Exact hypervolume of an (N, M) minimisation-space array bounded by `reference_point` (pymoo's HV).

    Points not strictly better than the reference point in every coordinate contribute nothing.
    """
    matrix = np.asarray(points, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"points must be an (N, M) array, got shape {matrix.shape}")
    reference = _reference_vector(reference_point, matrix.shape[1])
    inside = matrix[np.all(matrix < reference, axis=1)]
    if len(inside) == 0:
        return 0.0
    return float(pymoo_module("pymoo.indicators.hv").HV(ref_point=reference)(inside))


def igd_of_matrix(points: ArrayLike, reference_front: ArrayLike) -> float:
    """Mean distance from each reference-front row to its nearest row of `points` (both (N, M) arrays;
    pymoo's IGD)."""
    matrix = np.asarray(points, dtype=np.float64)
    reference = np.asarray(reference_front, dtype=np.float64)
    if len(reference) == 0:
        raise ValueError("IGD needs a non-empty reference front")
    if len(matrix) == 0:
        raise ValueError("IGD of an empty set is undefined: no candidate has every objective metric")
    if matrix.shape[1] != reference.shape[1]:
        raise ValueError(f"points have {matrix.shape[1]} objectives, the reference front {reference.shape[1]}")
    return float(pymoo_module("pymoo.indicators.igd").IGD(reference)(matrix))


def hypervolume(
    points: Sequence[Mapping[str, float]],
    objectives: Sequence[Objective],
    bounds: Bounds,
    reference_point: float | Sequence[float] = DEFAULT_REFERENCE_POINT,
) -> float:
    """HV of the candidates' metrics in the normalised space (module docstring); 0.0 for an empty set.

    Candidates lacking an objective metric are ignored. `reference_point` is in the normalised space.
    """
    return hypervolume_of_matrix(_normalised(points, objectives, bounds), reference_point)


def inverted_generational_distance(
    points: Sequence[Mapping[str, float]],
    reference_front: Sequence[Mapping[str, float]],
    objectives: Sequence[Objective],
    bounds: Bounds | None = None,
) -> float:
    """IGD of the candidates against `reference_front`, normalised by `bounds` (default: the front's own).

    Raises ValueError when no candidate has every objective metric (IGD of an empty set is undefined).
    """
    scale = bounds if bounds is not None else Bounds.from_points(reference_front, objectives)
    return igd_of_matrix(_normalised(points, objectives, scale), _normalised(reference_front, objectives, scale))


def _normalised(points: Sequence[Mapping[str, float]], objectives: Sequence[Objective], bounds: Bounds) -> np.ndarray:
    return bounds.normalise(points, objectives).reshape(-1, len(objectives))


@dataclass
class HypervolumeTracker:
    """HV after each evaluation, for reports: call `add` once per evaluated candidate, in order.

    A candidate lacking an objective metric (a failure) leaves HV unchanged but still adds an entry, so
    `history[i]` is the HV after the i-th evaluation. Bounds are fixed up front so values stay comparable.
    """

    objectives: Sequence[Objective]
    bounds: Bounds
    reference_point: float | Sequence[float] = DEFAULT_REFERENCE_POINT
    history: list[float] = field(default_factory=list)
    _front: list[np.ndarray] = field(default_factory=list, repr=False)

    def add(self, metrics: Mapping[str, float] | None) -> float:
        """Record one evaluation (None or incomplete metrics for a failure) and return the HV after it."""
        value = self.history[-1] if self.history else 0.0
        if metrics is not None and objective_vector(metrics, self.objectives) is not None:
            point = self.bounds.normalise([metrics], self.objectives)[0]
            if self._improves_front(point):
                value = hypervolume_of_matrix(np.array(self._front), self.reference_point)
        self.history.append(value)
        return value

    def _improves_front(self, point: np.ndarray) -> bool:
        if any(np.all(kept <= point) for kept in self._front):
            return False  # dominated by, or equal to, a point already kept: the HV cannot grow
        self._front = [kept for kept in self._front if not dominates(tuple(point), tuple(kept))]
        self._front.append(point)
        return True


def hypervolume_over_time(
    points: Sequence[Mapping[str, float] | None],
    objectives: Sequence[Objective],
    bounds: Bounds,
    reference_point: float | Sequence[float] = DEFAULT_REFERENCE_POINT,
) -> list[float]:
    """HV after each of `points` in evaluation order (None for a candidate without metrics)."""
    tracker = HypervolumeTracker(objectives, bounds, reference_point)
    for metrics in points:
        tracker.add(metrics)
    return tracker.history


def reference_box_volume(reference_point: float | Sequence[float], dimensions: int) -> float:
    """The volume between the ideal (origin) and the reference point: the largest HV a set can reach."""
    return math.prod(float(value) for value in _reference_vector(reference_point, dimensions))
