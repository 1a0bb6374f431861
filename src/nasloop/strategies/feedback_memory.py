"""`feedback-memory`: iterative LLM NAS with a feedback memory (Gu, Ignatov, Timofte, 2026), and `one-shot`.

Each iteration (METHODS.md section A):

1. the Prompt Improver reads the best code, the latest code and its outcome, and the memory of the last K
   (problem, suggestion, outcome) triples, and answers JSON `{problem, suggestion}`;
2. the Code Generator reads the task, the requirements, the best code with its score, the latest code with
   its score or error, and the suggestion, and writes a complete `Net`;
3. the candidate is evaluated; its outcome fills in the pending memory entry; the best is updated.

Failures stay in the memory: "what did not work" is half of the feedback. Ablations of the paper are
options (`improver`, `history_size` (K=0: no history), `reference_code`), and so are nasloop's own changes,
each switchable to compare with the published form: `precise_errors` (the evaluator's full failure message
instead of its first 200 characters), `repair` (a failed candidate gets one repair attempt that does not
count as an iteration), `fix_sizes` (when the evaluator named the input size a layer needs, the repair is
made in code, without the LLM, and may chain up to `max_size_fixes`: `strategies.size_fix`),
`retry_repeats` (code identical to an already failed candidate is fixed that way or sent back once, with a
note, before it is recorded), `fix_class_name` (an answer whose one network class is not called `Net`,
an `ImprovedNet` say, is renamed) and `filter_suggestions` (drop suggestions the recipe cannot act on).
`prompt_style: paper` selects the published prompt sections and turns these changes off by default.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, model_validator

from nasloop.candidate import Failure, FailureKind, Proposal, State
from nasloop.evaluate.job import Strict
from nasloop.llm.base import (
    ContextTooLong,
    DeadlineExceeded,
    EmptyResponse,
    InvalidStructuredResponse,
    Message,
    TruncatedResponse,
)
from nasloop.registry import strategies
from nasloop.strategies.base import (
    Context,
    FailedCodes,
    Observation,
    RepairOptions,
    Strategy,
    Task,
    ask_for_code,
    generate_code,
)
from nasloop.strategies.size_fix import size_fix_repair

IMPROVEMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"problem": {"type": "string"}, "suggestion": {"type": "string"}},
    "required": ["problem", "suggestion"],
}

# Failures a repair prompt can fix; a timeout or an out-of-memory usually needs a different design instead.
REPAIRABLE = {
    FailureKind.SYNTAX,
    FailureKind.IMPORT,
    FailureKind.FORBIDDEN,
    FailureKind.BUILD,
    FailureKind.SHAPE,
    FailureKind.NAN,
    FailureKind.BUDGET,
    FailureKind.CRASH,
}

# Sentences about what the fixed training recipe decides, which a new architecture cannot change.
RECIPE_TERMS = re.compile(
    r"learning[ -]rate|\blr\b|optimi[sz]er|\bsgd\b|\badam|momentum|weight decay|epochs?\b|batch size|"
    r"augment|scheduler|warm-?up|label smoothing|mixup|cutmix|pre-?train|early stopping|more data",
    re.IGNORECASE,
)


class FeedbackMemoryOptions(RepairOptions):
    """Options of `feedback-memory`; `prompt_style: paper` turns nasloop's changes off by default."""

    prompt_style: Literal["nasloop", "paper"] = "nasloop"
    history_size: int = Field(default=5, ge=0, description="K: memory entries shown to the improver")
    improver: bool = Field(default=True, description="False: the paper's 'no improver' ablation")
    reference_code: bool = Field(default=True, description="False: the paper's 'no reference code' ablation")
    precise_errors: bool = True
    repair: bool = True
    filter_suggestions: bool = True
    temperature: float = Field(default=0.7, ge=0)
    top_p: float = Field(default=0.9, gt=0, le=1)
    max_tokens: int = Field(default=2048, gt=0)
    improver_max_tokens: int = Field(default=300, gt=0)
    suggestion_chars: int = Field(default=300, gt=0, description="suggestions are cut to this in prompts")
    error_chars: int = Field(default=200, gt=0, description="errors are cut to this when precise_errors is off")

    @model_validator(mode="before")
    @classmethod
    def _published_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("prompt_style") == "paper":
            changes = ("precise_errors", "repair", "retry_repeats", "fix_sizes", "fix_class_name", "filter_suggestions")
            data = {**dict.fromkeys(changes, False), **data}
        return data


def filter_suggestion(text: str) -> tuple[str, list[str]]:
    """Drop the sentences of a suggestion that ask for recipe changes; returns (kept text, dropped sentences)."""
    sentences = [part.strip() for part in re.split(r"(?<=[.!?;])\s+|\n+", text) if part.strip()]
    kept = [sentence for sentence in sentences if not RECIPE_TERMS.search(sentence)]
    dropped = [sentence for sentence in sentences if RECIPE_TERMS.search(sentence)]
    return " ".join(kept), dropped


def prompt_messages(ctx: Context, template: str, task: Task, **context: Any) -> list[Message]:
    """System and user messages from `template` and `template_system`; every prompt variable has a default."""
    values: dict[str, Any] = {
        "best": None,
        "current": None,
        "suggestion": "",
        "repair": "",
        "memory": [],
        "failed": False,
    }
    values.update(context)
    return [
        {"role": "system", "content": ctx.render(f"{template}_system").strip()},
        {"role": "user", "content": ctx.render(template, task=task, **values).strip()},
    ]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


@strategies.register("feedback-memory")
class FeedbackMemory(Strategy):
    """The published feedback-memory loop; see the module docstring."""

    Options = FeedbackMemoryOptions
    sequential = True

    def __init__(self, options: Any, task: Task, *, space: Any = None, seed: int = 0) -> None:
        super().__init__(options, task, space=space, seed=seed)
        self.opts: FeedbackMemoryOptions = options
        self.best: dict[str, Any] | None = None  # {id, code, score}
        self.current: dict[str, Any] | None = None  # {id, code, outcome, failure, repair_of}
        self.memory: list[dict[str, Any]] = []  # {problem, suggestion, outcome, candidate}
        self.pending: dict[str, str] | None = None  # the suggestion the latest proposal applied
        self.failed_codes = FailedCodes()
        # The failed candidate whose repair was proposed last: with `max_stale` above 0 the next proposal can
        # come before that repair's result, and must not repeat the repair. Not state: a resumed run lost
        # the repairs that were in flight.
        self.repaired: int | None = None

    # -- prompts ------------------------------------------------------------------------------------

    def _template(self, role: str) -> str:
        return f"feedback_{role}_paper" if self.opts.prompt_style == "paper" else f"feedback_{role}"

    def _messages(self, ctx: Context, role: str, **context: Any) -> list[Message]:
        return prompt_messages(ctx, self._template(role), self.task, **context)

    def _outcome(self, record: Any) -> str:
        metric = self.task.metric
        if record.state is State.COMPLETE or (record.state is State.DUPLICATE and record.failure is None):
            score = record.metrics.get(metric)
            text = f"{metric} = {score:.4f}" if score is not None else "completed"
            return text + (f" (duplicate of candidate {record.duplicate_of})" if record.duplicate_of else "")
        if record.state is State.PRUNED:
            step = record.metrics.get("pruned_at_step")
            return "stopped early: its training loss was far behind the best models" + (
                f" at step {int(step)}" if step is not None else ""
            )
        failure: Failure = record.failure
        if self.opts.precise_errors:
            tail = failure.traceback.strip().splitlines()[-6:] if failure.traceback else []
            text = f"error ({failure.kind.value}): {failure.message}" + ("\n" + "\n".join(tail) if tail else "")
            if record.state is State.DUPLICATE and record.duplicate_of:
                text = (
                    f"the code was the same as candidate {record.duplicate_of}, which had already failed; "
                    f"the same code fails the same way, so change the failing line. {text}"
                )
            return text
        return "error: " + _cut(failure.message, self.opts.error_chars)

    # -- the loop -----------------------------------------------------------------------------------

    def propose(self, ctx: Context) -> list[Proposal]:
        sampling = {"temperature": self.opts.temperature, "top_p": self.opts.top_p, "max_tokens": self.opts.max_tokens}
        current = self.current
        if current is None:
            proposal = generate_code(ctx, self._messages(ctx, "generator"), self.failed_codes, self.opts, **sampling)
            return [proposal]
        best = self.best if self.opts.reference_code else None
        failed = current["failure"] is not None
        repairable = failed and current["id"] != self.repaired
        if repairable and self.opts.fix_sizes:  # the evaluator named the size to use: no LLM call needed
            failure = Failure.from_dict(current["failure"])
            fixes = int(current.get("size_fixes") or 0)
            repair = size_fix_repair(
                current["id"], current["code"], failure, fixes, self.opts.max_size_fixes, self.failed_codes
            )
            if repair is not None:
                self.repaired = current["id"]
                return [repair]
        if (
            repairable
            and self.opts.repair
            and not current["repair_of"]
            and FailureKind(current["failure"]["kind"]) in REPAIRABLE
        ):
            messages = self._messages(ctx, "generator", best=best, current=current, repair=current["outcome"])
            proposal = generate_code(ctx, messages, self.failed_codes, self.opts, **sampling)
            proposal.notes["repair_of"] = current["id"]
            proposal.parent_ids = (current["id"],)
            self.repaired = current["id"]
            return [proposal]
        suggestion, improver_call = self._improve(ctx, best, current, failed)
        messages = self._messages(ctx, "generator", best=best, current=current, suggestion=suggestion)
        proposal = generate_code(ctx, messages, self.failed_codes, self.opts, **sampling)
        proposal.parent_ids = tuple(dict.fromkeys(i for i in (current["id"], (best or {}).get("id")) if i))
        proposal.llm_call_ids = improver_call + proposal.llm_call_ids
        if self.pending:
            proposal.notes.update(self.pending)
        return [proposal]

    def _improve(
        self, ctx: Context, best: dict[str, Any] | None, current: dict[str, Any], failed: bool
    ) -> tuple[str, tuple[int, ...]]:
        """Ask the improver for (problem, suggestion); it becomes the pending memory entry."""
        self.pending = None
        if not self.opts.improver:
            return "", ()
        from nasloop.prompts.extract import extract_json

        memory = self.memory[-self.opts.history_size :] if self.opts.history_size else []
        memory = [{**entry, "suggestion": _cut(entry["suggestion"], self.opts.suggestion_chars)} for entry in memory]
        messages = self._messages(ctx, "improver", memory=memory, best=best, current=current, failed=failed)
        try:
            reply = ctx.llm.complete(
                "improver",
                messages,
                temperature=self.opts.temperature,
                top_p=self.opts.top_p,
                max_tokens=self.opts.improver_max_tokens,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "improvement", "schema": IMPROVEMENT_SCHEMA},
                },
            )
        except (InvalidStructuredResponse, EmptyResponse, TruncatedResponse, DeadlineExceeded, ContextTooLong):
            # A soft fault of the improver costs this iteration its suggestion, not the run.
            return "", ()
        parsed = extract_json(reply.text, IMPROVEMENT_SCHEMA)
        if isinstance(parsed, Failure):
            problem, suggestion = "", reply.text.strip()
        else:
            problem, suggestion = str(parsed["problem"]).strip(), str(parsed["suggestion"]).strip()
        dropped: list[str] = []
        if self.opts.filter_suggestions:
            suggestion, dropped = filter_suggestion(suggestion)
        self.pending = {"problem": problem, "suggestion": suggestion}
        if dropped:
            self.pending["filtered"] = " ".join(dropped)
        return _cut(suggestion, self.opts.suggestion_chars), (reply.call_id,)

    def observe(self, observations: list[Observation]) -> None:
        for observation in observations:
            record = observation.record
            outcome = self._outcome(record)
            repair_of = record.notes.get("repair_of")
            if repair_of and self.memory and self.memory[-1].get("candidate") == repair_of:
                self.memory[-1]["outcome"] += f"; after one repair: {outcome.splitlines()[0]}"
            elif self.pending is not None:
                self.memory.append({**self.pending, "outcome": outcome.splitlines()[0], "candidate": record.id})
                keep = max(self.opts.history_size, 1)
                self.memory = self.memory[-keep:]
                self.pending = None
            self.failed_codes.add(record)
            self.current = {
                "id": record.id,
                "code": record.code or "",
                "outcome": outcome,
                "failure": record.failure.to_dict() if record.failure and record.state is not State.COMPLETE else None,
                "repair_of": repair_of,
                "size_fixes": record.notes.get("size_fixes", 0),
            }
            score = record.metrics.get(self.task.metric)
            if (
                record.state is State.COMPLETE
                and score is not None
                and (self.best is None or score > self.best["score"])
            ):
                self.best = {"id": record.id, "code": record.code or "", "score": float(score)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "current": self.current,
            "memory": self.memory,
            "pending": self.pending,
            "failed_codes": self.failed_codes.entries,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")
        self.current = state.get("current")
        self.memory = list(state.get("memory") or [])
        self.pending = state.get("pending")
        self.failed_codes = FailedCodes(state.get("failed_codes"))


class OneShotOptions(Strict):
    """Options of `one-shot`: independent samples of the generator, no feedback."""

    prompt_style: Literal["nasloop", "paper"] = "nasloop"
    temperature: float = Field(default=0.7, ge=0)
    top_p: float = Field(default=0.9, gt=0, le=1)
    max_tokens: int = Field(default=2048, gt=0)


@strategies.register("one-shot")
class OneShot(Strategy):
    """The single-shot baseline: the Code Generator alone, every iteration from the same prompt."""

    Options = OneShotOptions
    sequential = False

    def propose(self, ctx: Context) -> list[Proposal]:
        options: OneShotOptions = self.options  # type: ignore[assignment]
        name = "feedback_generator_paper" if options.prompt_style == "paper" else "feedback_generator"
        messages = prompt_messages(ctx, name, self.task)
        return [
            ask_for_code(
                ctx,
                "generator",
                messages,
                temperature=options.temperature,
                top_p=options.top_p,
                max_tokens=options.max_tokens,
            )
        ]
