"""Live progress of a search on the terminal: iteration, best so far, valid rate, tokens, ETA."""

from __future__ import annotations

import sys
from typing import Any

from nasloop.candidate import State


class SearchProgress:
    """A tqdm bar over the iteration budget with the search's vital signs; silent when disabled."""

    def __init__(self, engine: Any, *, enabled: bool = True) -> None:
        self.engine = engine
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            total = engine.config.budget.iterations
            self.bar = tqdm(
                total=total,
                initial=min(engine.iterations_done, total or engine.iterations_done),
                desc=f"{engine.config.strategy}",
                unit="it",
                file=sys.stderr,
                dynamic_ncols=True,
            )
            self._refresh()

    def update(self) -> None:
        if self.bar is None:
            return
        done = self.engine.iterations_done
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
        self._refresh()

    def _refresh(self) -> None:
        engine = self.engine
        history = engine.history
        valid = sum(1 for c in history if c.state is State.COMPLETE)
        best = engine.best()
        totals = engine.store.llm_totals()
        metric = engine.config.selection_metric
        self.bar.set_postfix(
            best=f"{best.metrics[metric]:.4f}" if best else "-",
            valid=f"{valid}/{len(history)}",
            tokens=int(totals["prompt_tokens"] + totals["completion_tokens"]),
            refresh=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
