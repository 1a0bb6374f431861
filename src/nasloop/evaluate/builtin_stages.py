"""Importing this module registers every built-in evaluation stage in `nasloop.registry.stages`: static,
build and train (`nasloop.evaluate.stages`), hardware and zero-cost (`nasloop.evaluate.measure_stages`,
apart because they need the hardware and proxy packages, which the others do not)."""

from nasloop.evaluate import measure_stages, stages

__all__ = ["measure_stages", "stages"]
