"""`niche-pareto`: hardware-aware LLM-NAS with complexity niches (Zhu, Zhang, Huang, 2025; METHODS.md C).

The strategy is in `strategy` (its docstring describes the method); `options` holds its options,
`partition` the niches, `predictor` the accuracy objective without training, `archive` the per-niche
archives and their serialisation, `answers` the LLM calls' schemas and typed outcomes.
"""

from nasloop.strategies.niche_pareto.answers import Attempt, evolution_schema, knowledge_schema, response_format
from nasloop.strategies.niche_pareto.archive import Member, Niche
from nasloop.strategies.niche_pareto.options import MissingObjectiveError, NicheParetoOptions
from nasloop.strategies.niche_pareto.partition import Partition, make_partition
from nasloop.strategies.niche_pareto.predictor import AccuracyPredictor, signed_log
from nasloop.strategies.niche_pareto.strategy import NichePareto

__all__ = [
    "AccuracyPredictor",
    "Attempt",
    "Member",
    "MissingObjectiveError",
    "Niche",
    "NichePareto",
    "NicheParetoOptions",
    "Partition",
    "evolution_schema",
    "knowledge_schema",
    "make_partition",
    "response_format",
    "signed_log",
]
