"""Pruning: stop a candidate's training early when its loss is clearly above the best curves so far."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from nasloop.candidate import State
from nasloop.config import SearchConfig
from nasloop.store import CandidateRecord


def loss_at(curve: Sequence[tuple[int, float]], step: int) -> float | None:
    """The curve's loss at `step`, linearly interpolated; None outside the curve."""
    if not curve or step < curve[0][0] or step > curve[-1][0]:
        return None
    for (step_a, loss_a), (step_b, loss_b) in itertools.pairwise(curve):
        if step_a <= step <= step_b:
            if step_b == step_a:
                return loss_b
            return loss_a + (loss_b - loss_a) * (step - step_a) / (step_b - step_a)
    return curve[-1][1]


class Pruner:
    """Stops a candidate whose smoothed loss is clearly above the top-k curves at the same step."""

    def __init__(self, config: SearchConfig) -> None:
        self.settings = config.pruning
        self.metric = config.selection_metric
        self.reference: list[list[tuple[int, float]]] = []

    def update(self, history: Sequence[CandidateRecord]) -> None:
        """Recompute the reference curves from the completed candidates (called by the engine thread)."""
        complete = [c for c in history if c.state is State.COMPLETE and c.curve and self.metric in c.metrics]
        if len(complete) < self.settings.min_completed:
            self.reference = []
            return
        best = sorted(complete, key=lambda c: c.metrics[self.metric], reverse=True)[: self.settings.top_k]
        self.reference = [list(c.curve) for c in best]

    def callback(self) -> Callable[[int, float], bool] | None:
        """A progress callback for one job, or None when pruning is off or has no reference yet."""
        if not self.settings.enabled or not self.reference:
            return None
        reference = [list(curve) for curve in self.reference]
        total_steps = max(curve[-1][0] for curve in reference)
        settings = self.settings
        if total_steps < settings.min_steps:
            return None
        seen: list[tuple[int, float]] = []

        def should_stop(step: int, loss: float) -> bool:
            # Compare like with like: the mean of the last few reported losses against the reference
            # curves' mean at the same steps (an EMA would lag behind a falling curve and prune good ones).
            seen.append((step, loss))
            if step < settings.min_fraction * total_steps:
                return False
            window = seen[-3:]
            own = sum(value for _, value in window) / len(window)
            worst_reference = None
            for curve in reference:
                values = [loss_at(curve, s) for s, _ in window]
                if all(value is not None for value in values):
                    mean = sum(v for v in values if v is not None) / len(values)
                    worst_reference = mean if worst_reference is None else max(worst_reference, mean)
            return worst_reference is not None and own > worst_reference * (1 + settings.margin)

        return should_stop


__all__ = ["Pruner", "loss_at"]
