"""`llm-history`: the simplest LLM search of a structured space, after GENIUS (Zheng et al., 2023).

Every proposal shows the LLM the space and every (architecture, score) pair evaluated so far, oldest
first, and asks for the next architecture as JSON `{"architecture": ...}`; nothing else: no population,
no mutation operator, no reflection. It is the baseline the elaborate LLM strategies must beat
(`reflective-zero-cost`, `niche-pareto`), next to `random` and `evolution`, which need no LLM at all.

The history is listed in the order it was evaluated, so each prompt extends the previous one and the
embedded model reads only the new lines; the best so far is named at the end. An answer that repeats an
architecture the run already evaluated is sent back up to `retry_duplicates` times, in the same
conversation, naming it; a repeat left after the retries becomes a random unseen mutation of the LLM's
answer (`duplicate_fallback`, notes `operator: mutation-fallback` and `llm_answer`), so no query is spent
on a network the run already has (`duplicate_fallback: false` keeps the plain GENIUS loop, repeats
included). An answer without a usable architecture is a failed proposal (`extraction`).
The score is the run's objective (`metric` to choose another), for example the table's `val_acc` on a
tabular benchmark.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from nasloop.candidate import Failure, FailureKind, Proposal
from nasloop.llm.base import Message, RecoverableLLMError, Sampling
from nasloop.registry import strategies
from nasloop.store.sqlite import CandidateRecord
from nasloop.strategies.base import Context, Observation, Reply, Strategy, Task, strategy_note
from nasloop.strategies.population import require_metric, seen_architectures, unseen_child
from nasloop.strict import Strict


class LLMHistoryOptions(Strict):
    """Options of `llm-history`."""

    metric: str | None = Field(default=None, description="the score shown to the LLM; None: the run's objective")
    temperature: float = Field(default=0.7, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_tokens: int = Field(default=160, gt=0)
    retry_duplicates: int = Field(
        default=1, ge=0, description="times an already evaluated answer is sent back for another architecture"
    )
    duplicate_fallback: bool = Field(
        default=True, description="a repeat left after the retries becomes a random unseen mutation of the answer"
    )
    constrain_pattern: bool = Field(default=True, description="constrain the answer by the space's pattern")


@strategies.register("llm-history")
class LLMHistory(Strategy):
    """GENIUS-style: the LLM sees every (architecture, score) so far and proposes the next one."""

    Options = LLMHistoryOptions
    sequential = True
    needs_space = True

    @classmethod
    def needs(cls, options: Any, config: Any) -> dict[str, str]:
        if options.metric:
            return {options.metric: "strategy_options.metric"}
        return super().needs(options, config)

    def __init__(self, options: Any, task: Task, *, space: Any = None, seed: int = 0) -> None:
        super().__init__(options, task, space=space, seed=seed)
        self.opts: LLMHistoryOptions = options
        self.metric = options.metric or task.metric

    # -- prompts ------------------------------------------------------------------------------------

    def messages(self, ctx: Context) -> list[Message]:
        """The prompt of the next proposal (public so tests and tools can inspect it)."""
        system = ctx.render("history_system", space_description=self.space.describe(), metric=self.metric)
        tried = [self._line(record) for record in ctx.history if record.architecture]
        scored = [(score, record.architecture) for record in ctx.history
                  if record.architecture and (score := record.score(self.metric)) is not None]  # fmt: skip
        best = max(scored, default=None)
        user = ctx.render(
            "history_next", metric=self.metric, tried=tried, best=best[1] if best else None,
            best_score=f"{best[0]:.4g}" if best else "",
        )  # fmt: skip
        return [{"role": "system", "content": system.strip()}, {"role": "user", "content": user.strip()}]

    def _line(self, record: CandidateRecord) -> str:
        score = record.score(self.metric)
        if score is not None:
            return f"{record.architecture} -> {self.metric} {score:.4g}"
        why = record.failure.message.splitlines()[0][:160] if record.failure else record.state.value
        return f"{record.architecture} -> failed: {why}"

    # -- the loop -----------------------------------------------------------------------------------

    def propose(self, ctx: Context) -> list[Proposal]:
        from nasloop.prompts.extract import extract_json

        messages = self.messages(ctx)
        seen = seen_architectures(self.space, ctx.history)
        schema = self.space.json_schema() if self.opts.constrain_pattern else _plain_schema()
        calls: tuple[int, ...] = ()
        architecture = ""
        for attempt in range(self.opts.retry_duplicates + 1):
            reply = self._ask(ctx, messages, schema)
            if isinstance(reply, Failure):
                return [Proposal(failure=reply, llm_call_ids=calls)]
            calls += (reply.call_id,)
            parsed = extract_json(reply.text, _plain_schema())
            if isinstance(parsed, Failure):
                return [Proposal(failure=parsed, llm_call_ids=calls)]
            architecture = str(parsed["architecture"]).strip()
            repeated = self.space.validate(architecture) is None and self.space.canonical(architecture) in seen
            if not repeated or attempt == self.opts.retry_duplicates:
                break
            again = ctx.render("history_retry", architecture=architecture)
            messages = [*messages, {"role": "assistant", "content": reply.text}, {"role": "user", "content": again}]
        notes = strategy_note(operator="llm-history", retries=attempt)
        if repeated and self.opts.duplicate_fallback:
            notes.update(operator="mutation-fallback", llm_answer=architecture)
            architecture = unseen_child(self.space, [architecture, *self._best_first(ctx)], ctx.rng, seen)
        return [Proposal(architecture=architecture, notes=notes, llm_call_ids=calls)]

    def _best_first(self, ctx: Context) -> list[str]:
        """The run's scored architectures, best first."""
        scored = [(score, record.architecture) for record in ctx.history
                  if record.architecture and (score := record.score(self.metric)) is not None]  # fmt: skip
        return [architecture for _, architecture in sorted(scored, key=lambda pair: -pair[0])]

    def _ask(self, ctx: Context, messages: list[Message], schema: dict[str, Any]) -> Reply | Failure:
        try:
            return ctx.llm.complete(
                "proposer",
                messages,
                Sampling(
                    temperature=self.opts.temperature,
                    top_p=self.opts.top_p,
                    max_tokens=self.opts.max_tokens,
                    response_format={"type": "json_schema", "json_schema": {"name": "next", "schema": schema}},
                ),
            )
        except RecoverableLLMError as error:
            return Failure(FailureKind.EXTRACTION, f"the LLM call failed: {type(error).__name__}: {error}")

    def observe(self, observations: list[Observation]) -> None:
        for observation in observations:
            if observation.proposal.final_of is None:
                require_metric(observation.record, self.metric, "llm-history")


def _plain_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"architecture": {"type": "string"}},
        "required": ["architecture"],
        "additionalProperties": False,
    }


__all__ = ["LLMHistory", "LLMHistoryOptions"]
