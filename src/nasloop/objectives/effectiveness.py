"""Combined model effectiveness (CM), the scalar LeMo-NADe keeps its best model by (METHODS.md section D).

    CM = AW·(Ta + Va) + FW·NF − EW·(TNE + VNE)

Ta, Va: training and validation accuracy as fractions in [0, 1]. NF: normalised frames per second.
TNE, VNE: normalised energy of training and of validation (inference over the validation split).
AW, FW, EW: the user's weights. Higher CM is better.

Normalisation (`EffectivenessConfig.normalisation`):

- `seed` (default): against the run's seed network (or, in a run without one, its first candidate that
  has the metrics): NF = FPS / the seed's FPS, capped at `ratio_cap`, TNE = training energy / the seed's,
  VNE likewise. FPS and energy are measured on the machine the search runs on, where a fixed reference
  means nothing (on a CPU every tiny network is thousands of images per second "faster" than a reference),
  so a network counts as fast or frugal relative to the network the search improves; the cap keeps a much
  smaller network from winning on speed alone, so speed pays only at comparable accuracy. The seed's own
  terms are 1, and a candidate's CM never changes as the run grows.
- `reference`: NF = FPS / reference FPS, TNE = training energy / reference training energy,
  VNE = validation energy / reference validation energy, with reference values the user gives (a target
  FPS, the energy of a baseline model). A candidate's CM then depends on that candidate alone, so it never
  changes as the run grows: the best model so far stays the best unless a better one arrives, and CM values
  stored with candidates, shown in reports or quoted to the LLM stay true.
- `run`: min-max over the run's candidates, NF = (FPS − min) / (max − min) and likewise for energies, so
  each term lies in [0, 1] without knowing the device's scale. The price: a new candidate with an extreme
  FPS or energy rescales every earlier CM, and the ranking of two old candidates can flip. When all
  candidates share one value the range is zero and the term is 0 for all (it cannot tell them apart).

A candidate that lacks a metric a weighted term needs gets no CM (`Effectiveness.value` is None) and a
reason naming the metric; it is never scored as if the metric were 0. A term whose weight is 0 needs no
metric, so energy can be left out on machines that cannot measure it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, model_validator

from nasloop.strict import Strict


class EffectivenessConfig(Strict):
    """Weights, normalisation and metric names of combined model effectiveness (module docstring).

    Defaults: AW = 1 and FW = EW = 0, i.e. CM = Ta + Va, and FPS and energy, once weighted, relative to the
    seed network (`normalisation: seed`). For fixed scales give `reference_fps` / `reference_train_energy_j` /
    `reference_val_energy_j` (which implies `normalisation: reference`), or set `normalisation: run`.
    """

    accuracy_weight: float = Field(default=1.0, ge=0, description="AW, weight of Ta + Va")
    fps_weight: float = Field(default=0.0, ge=0, description="FW, weight of the normalised FPS")
    energy_weight: float = Field(default=0.0, ge=0, description="EW, weight of TNE + VNE (subtracted)")
    normalisation: Literal["seed", "reference", "run"] = "seed"
    ratio_cap: float | None = Field(
        default=2.0, gt=0, description="seed normalisation: FPS above this many times the seed's earns no more"
    )
    reference_fps: float | None = Field(default=None, gt=0, description="FPS that normalises to 1")
    reference_train_energy_j: float | None = Field(default=None, gt=0, description="training energy -> 1")
    reference_val_energy_j: float | None = Field(default=None, gt=0, description="validation energy -> 1")
    train_accuracy_metric: str = "train_acc"
    val_accuracy_metric: str = "val_acc"
    fps_metric: str = Field(default="throughput_ips", description="images per second, as nasloop.hardware measures")
    latency_metric: str | None = Field(
        default="latency_ms",
        description="when the FPS metric is absent, FPS = 1000 / this batch-1 latency in ms; None to disable",
    )
    train_energy_metric: str = "train_energy_j"
    val_energy_metric: str = "val_energy_j"

    @model_validator(mode="before")
    @classmethod
    def _references_mean_reference_normalisation(cls, data: Any) -> Any:
        """Reference values given without a normalisation: normalise against them."""
        references = ("reference_fps", "reference_train_energy_j", "reference_val_energy_j")
        if isinstance(data, dict) and "normalisation" not in data and any(data.get(key) for key in references):
            return {**data, "normalisation": "reference"}
        return data

    @model_validator(mode="after")
    def _references_for_weighted_terms(self) -> EffectivenessConfig:
        if self.normalisation != "reference":
            return self
        needed = {
            "reference_fps": self.fps_weight > 0 and self.reference_fps is None,
            "reference_train_energy_j": self.energy_weight > 0 and self.reference_train_energy_j is None,
            "reference_val_energy_j": self.energy_weight > 0 and self.reference_val_energy_j is None,
        }
        missing = [name for name, is_missing in needed.items() if is_missing]
        if missing:
            raise ValueError(
                f"normalisation 'reference' with a non-zero weight needs {', '.join(missing)} "
                "(or set normalisation: run, or the weight to 0)"
            )
        return self


@dataclass(frozen=True)
class Effectiveness:
    """A candidate's CM, or None with the reason it cannot be computed.

    `terms` holds the normalised parts that went into the value (accuracy sum, NF, TNE, VNE) for reports.
    """

    value: float | None
    reason: str = ""
    terms: dict[str, float] = field(default_factory=dict)


class _MissingMetric(Exception):
    """Internal: a weighted term's metric is absent or invalid; turned into `Effectiveness(None, reason)`."""


def combined_effectiveness(
    metrics: Mapping[str, float],
    config: EffectivenessConfig,
    run: Sequence[Mapping[str, float]] | None = None,
    seed: Mapping[str, float] | None = None,
) -> Effectiveness:
    """The CM of one candidate's `metrics`.

    With `normalisation: run`, `run` must hold the metrics of the run's candidates (the candidate itself
    may be among them); their min and max set the scale. With `seed`, `seed` holds the seed network's
    metrics (None: no CM, with the reason). Each is ignored by the other normalisations.
    """
    if config.normalisation == "run" and run is None:
        raise ValueError("normalisation 'run' needs the run's candidates' metrics")
    try:
        terms = _terms(metrics, config, run or (), seed)
    except _MissingMetric as missing:
        return Effectiveness(None, str(missing))
    value = (
        config.accuracy_weight * terms["accuracy"]
        + config.fps_weight * terms["normalised_fps"]
        - config.energy_weight * (terms["normalised_train_energy"] + terms["normalised_val_energy"])
    )
    return Effectiveness(value, "", terms)


def _terms(
    metrics: Mapping[str, float],
    config: EffectivenessConfig,
    run: Sequence[Mapping[str, float]],
    seed: Mapping[str, float] | None,
) -> dict[str, float]:
    # An unweighted term is reported as 0 but needs no metric (see the module docstring).
    terms = {"accuracy": 0.0, "normalised_fps": 0.0, "normalised_train_energy": 0.0, "normalised_val_energy": 0.0}
    if config.accuracy_weight > 0:
        terms["accuracy"] = _accuracy(metrics, config.train_accuracy_metric) + _accuracy(
            metrics, config.val_accuracy_metric
        )
    if config.fps_weight > 0:
        reference = config.reference_fps
        if config.normalisation == "seed":
            reference = _seed_value(seed, lambda seed_metrics: _fps_or_none(seed_metrics, config), "FPS")
        fps = _normalised(_fps(metrics, config), [_fps_or_none(other, config) for other in run], reference, config)
        cap = config.ratio_cap if config.normalisation == "seed" else None
        terms["normalised_fps"] = min(fps, cap) if cap is not None else fps
    if config.energy_weight > 0:
        for term, metric, reference in (
            ("normalised_train_energy", config.train_energy_metric, config.reference_train_energy_j),
            ("normalised_val_energy", config.val_energy_metric, config.reference_val_energy_j),
        ):
            if config.normalisation == "seed":
                reference = _seed_value(seed, _reader(metric), metric)
            energy = _energy(metrics, metric)
            others = [_valid_or_none(other, metric, minimum=0.0) for other in run]
            terms[term] = _normalised(energy, others, reference, config)
    return terms


def _reader(metric: str) -> Callable[[Mapping[str, float]], float | None]:
    """Reads a non-negative `metric` from a candidate's metrics."""

    def read(metrics: Mapping[str, float]) -> float | None:
        return _valid_or_none(metrics, metric, minimum=0.0)

    return read


def _seed_value(
    seed: Mapping[str, float] | None, read: Callable[[Mapping[str, float]], float | None], what: str
) -> float:
    """The seed network's value of a term (positive), else `_MissingMetric` saying so."""
    if seed is None:
        raise _MissingMetric(f"no seed network to normalise {what} against")
    value = read(seed)
    if value is None or value <= 0:
        raise _MissingMetric(f"the seed network's {what} is unknown, so {what} cannot be normalised against it")
    return value


def _normalised(
    value: float, run_values: Sequence[float | None], reference: float | None, config: EffectivenessConfig
) -> float:
    if config.normalisation in ("reference", "seed"):
        if reference is None:  # EffectivenessConfig's validator prevents this for weighted terms
            raise ValueError("reference normalisation without a reference value")
        return value / reference
    known = [other for other in run_values if other is not None] + [value]
    low, high = min(known), max(known)
    return 0.0 if high == low else (value - low) / (high - low)


def _accuracy(metrics: Mapping[str, float], metric: str) -> float:
    value = _required(metrics, metric)
    if not 0.0 <= value <= 1.0:
        raise _MissingMetric(f"{metric} = {value} is not a fraction in [0, 1]")
    return value


def _energy(metrics: Mapping[str, float], metric: str) -> float:
    value = _required(metrics, metric)
    if value < 0:
        raise _MissingMetric(f"{metric} = {value} is negative")
    return value


def _fps(metrics: Mapping[str, float], config: EffectivenessConfig) -> float:
    value = _fps_or_none(metrics, config)
    if value is None:
        fallback = f", and so is {config.latency_metric}" if config.latency_metric else ""
        raise _MissingMetric(f"FPS is unknown: {config.fps_metric} is missing or not positive{fallback}")
    return value


def _fps_or_none(metrics: Mapping[str, float], config: EffectivenessConfig) -> float | None:
    fps = _valid_or_none(metrics, config.fps_metric, minimum=0.0)
    if fps is not None and fps > 0:
        return fps
    if config.latency_metric is None:
        return None
    latency_ms = _valid_or_none(metrics, config.latency_metric, minimum=0.0)
    # Batch-1 latency: one frame per `latency_ms` milliseconds.
    return 1000.0 / latency_ms if latency_ms is not None and latency_ms > 0 else None


def _valid_or_none(metrics: Mapping[str, float], metric: str, minimum: float) -> float | None:
    value = metrics.get(metric)
    if value is None or not math.isfinite(value) or value < minimum:
        return None
    return float(value)


def _required(metrics: Mapping[str, float], metric: str) -> float:
    value = metrics.get(metric)
    if value is None:
        raise _MissingMetric(f"{metric} is missing")
    if not math.isfinite(value):
        raise _MissingMetric(f"{metric} = {value} is not a finite number")
    return float(value)


def best_by_effectiveness(
    points: Sequence[Mapping[str, float]], config: EffectivenessConfig, seed: Mapping[str, float] | None = None
) -> int | None:
    """Index of the candidate with the highest CM (the first on ties), None when no candidate has a CM.

    Under `normalisation: run` the scale comes from `points` themselves, under `seed` from `seed`.
    """
    best_index: int | None = None
    best_value = -math.inf
    for index, metrics in enumerate(points):
        value = combined_effectiveness(metrics, config, run=points, seed=seed).value
        if value is not None and value > best_value:
            best_index, best_value = index, value
    return best_index


def describe_normalisation(config: EffectivenessConfig, seed_id: int | None = None) -> str:
    """What a CM was normalised against, in one line for a run's summary."""
    weights = (
        f"CM = {config.accuracy_weight:g}·(Ta + Va) + {config.fps_weight:g}·NF − {config.energy_weight:g}·(TNE + VNE)"
    )
    if config.fps_weight == 0 and config.energy_weight == 0:
        return weights + " (accuracy only: nothing to normalise)"
    if config.normalisation == "seed":
        against = f"candidate {seed_id}, the run's first completed" if seed_id is not None else "none completed"
        cap = f", FPS counted up to {config.ratio_cap:g}x the seed's" if config.ratio_cap is not None else ""
        return f"{weights}; FPS and energy relative to the seed network ({against}){cap}"
    if config.normalisation == "reference":
        return (
            f"{weights}; FPS relative to {config.reference_fps} images/s, energy to "
            f"{config.reference_train_energy_j} J (training) and {config.reference_val_energy_j} J (validation)"
        )
    return f"{weights}; FPS and energy min-max scaled over the run's candidates"
