"""Search strategies, one module each; importing this package registers them."""

from nasloop.strategies import baselines as baselines
from nasloop.strategies import expert_rules as expert_rules
from nasloop.strategies import feedback_memory as feedback_memory
from nasloop.strategies import islands as islands
from nasloop.strategies import llm_history as llm_history
from nasloop.strategies import niche_pareto as niche_pareto
from nasloop.strategies import nsga2 as nsga2
from nasloop.strategies import reflective_zero_cost as reflective_zero_cost
from nasloop.strategies.base import Context, Observation, Strategy, Task

__all__ = ["Context", "Observation", "Strategy", "Task"]
