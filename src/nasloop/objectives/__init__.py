"""Multi-objective tools: objectives and Pareto fronts, quality indicators, hard constraints, and the
combined model effectiveness (CM) scalarisation of LeMo-NADe."""

from nasloop.objectives.constraints import (
    Constraint,
    budget_failure,
    format_value,
    parse_constraint,
    parse_constraints,
    violations,
)
from nasloop.objectives.effectiveness import (
    Effectiveness,
    EffectivenessConfig,
    best_by_effectiveness,
    combined_effectiveness,
)
from nasloop.objectives.indicators import (
    DEFAULT_REFERENCE_POINT,
    Bounds,
    HypervolumeTracker,
    hypervolume,
    hypervolume_of_matrix,
    hypervolume_over_time,
    igd_of_matrix,
    inverted_generational_distance,
    reference_box_volume,
)
from nasloop.objectives.pareto import (
    Objective,
    dominates,
    minimisation_matrix,
    non_dominated_fronts,
    non_dominated_ranks,
    objective_vector,
    pareto_front,
    parse_objectives,
)

__all__ = [
    "DEFAULT_REFERENCE_POINT",
    "Bounds",
    "Constraint",
    "Effectiveness",
    "EffectivenessConfig",
    "HypervolumeTracker",
    "Objective",
    "best_by_effectiveness",
    "budget_failure",
    "combined_effectiveness",
    "dominates",
    "format_value",
    "hypervolume",
    "hypervolume_of_matrix",
    "hypervolume_over_time",
    "igd_of_matrix",
    "inverted_generational_distance",
    "minimisation_matrix",
    "non_dominated_fronts",
    "non_dominated_ranks",
    "objective_vector",
    "pareto_front",
    "parse_constraint",
    "parse_constraints",
    "parse_objectives",
    "reference_box_volume",
    "violations",
]
