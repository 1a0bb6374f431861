"""The accuracy objective of `niche-pareto` without training: a proxy, a regression on proxies, or the
measured value."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


def signed_log(value: float) -> float:
    """sign(x)·log(1+|x|): proxies such as synflow span tens of orders of magnitude."""
    return math.copysign(math.log1p(abs(value)), value)


@dataclass
class AccuracyPredictor:
    """Predicted accuracy of a candidate from its zero-cost proxies (see `predictor` in the module docstring).

    `kind` is a proxy name, `regression` or `measured`. For `regression`, `fit` takes the metrics of the
    trained candidates (each holding `accuracy_metric` and every proxy of `proxies`); with fewer than
    `min_points` of them `predict` returns the first proxy's value.
    """

    kind: str
    accuracy_metric: str
    proxies: tuple[str, ...] = ()
    min_points: int = 5
    ridge: float = 1e-3
    points: int = 0
    _mean: np.ndarray | None = field(default=None, repr=False)
    _scale: np.ndarray | None = field(default=None, repr=False)
    _weights: np.ndarray | None = field(default=None, repr=False)
    _intercept: float = 0.0

    @property
    def inputs(self) -> tuple[str, ...]:
        """The metrics `predict` reads."""
        if self.kind == "measured":
            return (self.accuracy_metric,)
        return self.proxies if self.kind == "regression" else (self.kind,)

    @property
    def fitted(self) -> bool:
        return self._weights is not None

    def fit(self, trained: Sequence[Mapping[str, float]]) -> None:
        """Refit on the trained candidates' metrics; a no-op unless `kind` is `regression`."""
        usable = [m for m in trained if all(name in m for name in (*self.proxies, self.accuracy_metric))]
        self.points = len(usable)
        if self.kind != "regression" or len(usable) < self.min_points:
            self._weights = None
            return
        features = np.array([[signed_log(m[name]) for name in self.proxies] for m in usable])
        targets = np.array([m[self.accuracy_metric] for m in usable])
        self._mean, scale = features.mean(axis=0), features.std(axis=0)
        self._scale = np.where(scale > 0, scale, 1.0)  # a constant feature carries no signal
        standardised = (features - self._mean) / self._scale
        self._intercept = float(targets.mean())
        gram = standardised.T @ standardised + self.ridge * len(usable) * np.eye(len(self.proxies))
        self._weights = np.linalg.solve(gram, standardised.T @ (targets - self._intercept))

    def predict(self, metrics: Mapping[str, float]) -> float | None:
        """The predicted accuracy, or None when a needed metric is missing."""
        if self.kind == "measured":
            return metrics.get(self.accuracy_metric)
        if self.kind != "regression":
            return metrics.get(self.kind)
        if self._weights is None or self._mean is None or self._scale is None:
            return metrics.get(self.proxies[0])
        if any(name not in metrics for name in self.proxies):
            return None
        features = (np.array([signed_log(metrics[name]) for name in self.proxies]) - self._mean) / self._scale
        return float(self._intercept + features @ self._weights)

    def describe(self) -> str:
        """One line for prompts and notes."""
        if self.kind == "measured":
            return "measured after training"
        if self.kind != "regression":
            return f"the value of the zero-cost proxy {self.kind}, which predicts accuracy without training"
        if not self.fitted:
            return (
                f"the value of the zero-cost proxy {self.proxies[0]} until {self.min_points} candidates are "
                f"trained, then a regression on {', '.join(self.proxies)}"
            )
        return f"predicted by a regression on {', '.join(self.proxies)} fitted on {self.points} trained candidates"


__all__ = ["AccuracyPredictor", "signed_log"]
