"""Live progress of a search on the terminal: iteration, best so far, valid rate, tokens, and one line per
candidate (what it was made for, how it ended)."""

from __future__ import annotations

import sys
from typing import Any

from nasloop.candidate import Purpose, State


def describe_candidate(record: Any, metric: str) -> str:
    """One line about a stored candidate: `#3 edit of #1: val_acc 0.8123, 41,234 params` or its failure."""
    made = {
        Purpose.SEED: "seed network",
        Purpose.SEARCH: f"edit of #{record.parent}" if record.parent else "new model",
        Purpose.REPAIR: f"repair of #{record.parent}",
        Purpose.RETRY: f"asked again (edit of #{record.parent})" if record.parent else "asked again",
        Purpose.FINAL: f"final evaluation of #{record.parent}",
    }[record.purpose]
    if record.architecture and record.purpose is Purpose.SEARCH:
        made = record.architecture
    if record.purpose is Purpose.REPAIR and record.notes.get("size_fix"):
        made = f"size fix of #{record.parent} ({record.notes['size_fix']})"
    if record.state is State.DUPLICATE:
        outcome = f"duplicate of #{record.duplicate_of}"
    elif record.failure is not None and record.state is not State.COMPLETE:
        first = record.failure.message.splitlines()[0] if record.failure.message else ""
        outcome = f"failed ({record.failure.kind.value}): {first[:90]}"
    elif record.state is State.PRUNED:
        outcome = "stopped early (training loss far behind the best)"
    else:
        score = record.metrics.get(metric)
        outcome = f"{metric} {score:.4f}" if score is not None else "complete"
        params = record.metrics.get("params")
        outcome += f", {int(params):,} params" if params is not None else ""
    return f"#{record.id} {made}: {outcome}"


class SearchProgress:
    """A tqdm bar over the iteration budget with the search's vital signs; silent when disabled."""

    def __init__(self, engine: Any, *, enabled: bool = True) -> None:
        self.engine = engine
        self.bar: Any = None
        self.shown = len(engine.history)
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
        metric = self.engine.config.selection_metric
        for record in self.engine.history[self.shown :]:
            self.bar.write(describe_candidate(record, metric), file=sys.stderr)
        self.shown = len(self.engine.history)
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
