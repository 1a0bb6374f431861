"""The search engine: `Search` (ask / tell / run) and what it is made of.

- `search`: `Search`, the one driver of a run, and `Trial`, a candidate between `ask` and `tell`;
- `budget`: the stop rules and what each LLM call may spend (`CallBudget`);
- `pruning`: early stopping of a training whose loss is clearly behind (`Pruner`);
- `jobs`: the one builder of evaluation jobs (`job_for`), shared by search, eval and train;
- `trial`: the candidates in flight (`Trial`, `InFlight`);
- `summary`: what a finished search reports (`RunSummary`).
"""

from nasloop.engine.budget import BudgetExhausted, CallBudget
from nasloop.engine.jobs import job_for
from nasloop.engine.pruning import Pruner
from nasloop.engine.search import Search, SearchAborted, SeedFailed, TableOnly
from nasloop.engine.summary import RunSummary, valid_after_repair
from nasloop.engine.trial import InFlight, Trial

__all__ = [
    "BudgetExhausted",
    "CallBudget",
    "InFlight",
    "Pruner",
    "RunSummary",
    "Search",
    "SearchAborted",
    "SeedFailed",
    "TableOnly",
    "Trial",
    "job_for",
    "valid_after_repair",
]
