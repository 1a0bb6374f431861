"""Search strategies, one module each; importing this package registers them."""

from nasloop.strategies import expert_rules as expert_rules
from nasloop.strategies import feedback_memory as feedback_memory
from nasloop.strategies.base import Context, Observation, Strategy, Task

__all__ = ["Context", "Observation", "Strategy", "Task"]
