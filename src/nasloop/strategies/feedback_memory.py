"""`feedback-memory`: iterative LLM NAS with a feedback memory (Gu, Ignatov, Timofte, 2026), and `one-shot`.

Each iteration (METHODS.md section A):

1. the Prompt Improver reads the model to change, its score, and the memory of the last K
   (problem, suggestion, outcome) triples, and answers JSON `{problem, suggestion}`;
2. the Code Generator reads the task, the requirements, the model to change and the suggestion, and
   writes the changed `Net` (a complete module, or SEARCH/REPLACE edits: `edit_format`);
3. the candidate is evaluated; its outcome fills in the pending memory entry; the best is updated.

Failures stay in the memory: "what did not work" is half of the feedback.

**nasloop's form** (the default) starts from a working network and never builds on a broken one:

- the run's seed network (`seed_model`; nasloop's built-in one by default) is evaluated first and is the
  first model to change, so the first prompt already shows a network that trains and its score;
- each new proposal edits the best valid model so far (`parent: best`), or the latest one when it is
  valid (`parent: latest`); a failed candidate goes back to the generator only to be repaired
  (`repair`: one attempt, which does not count as an iteration; `fix_sizes`: a wrong layer size fixed in
  code, without the LLM, chaining up to `max_size_fixes`), and once that repair has failed the next
  proposal edits the best model again, so failures in a row never lose it;
- the improver and the generator share one system prompt and the start of their user prompt (task,
  requirements, the model), so the embedded model reads that part once per iteration;
- the evaluator's full failure message (`precise_errors`), code repeating a failed candidate fixed or sent
  back once (`retry_repeats`), a network class not called `Net` renamed (`fix_class_name`), training-script
  clutter removed before the static check (`tidy_code`), suggestions about the recipe dropped
  (`filter_suggestions`); see `strategies.code_writer`.

`prompt_style: paper` is the published loop: a cold start, the latest model (failed or not) and the best
as reference in every prompt, the published prompt sections, and none of the changes above (each can
still be turned on). Ablations of the paper are options (`improver`, `history_size` (K=0: no history),
`reference_code`).

`one-shot` (the baseline without feedback) samples the generator independently each iteration: edits of
the seed network in nasloop's form, the published cold-start prompt with `prompt_style: paper`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, model_validator

from nasloop.candidate import Failure, FailureKind, Proposal, Purpose, State
from nasloop.llm.base import Message, RecoverableLLMError, Sampling
from nasloop.registry import strategies
from nasloop.store.sqlite import CandidateRecord
from nasloop.strategies.base import Context, Observation, Strategy, Task
from nasloop.strategies.code_writer import (
    PAPER_OFF,
    EditOptions,
    EvaluatedCodes,
    RepairOptions,
    cleanup_feedback,
    write_code,
)
from nasloop.strategies.size_fix import size_fix_repair

IMPROVEMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"problem": {"type": "string"}, "suggestion": {"type": "string"}},
    "required": ["problem", "suggestion"],
}


def improvement_schema(problem_chars: int, suggestion_chars: int) -> dict[str, Any]:
    """The improver's answer with bounded fields: a constrained decoder closes the JSON in time, so an
    answer is never cut off by `max_tokens` half-way through a sentence."""
    properties = {
        "problem": {"type": "string", "maxLength": problem_chars},
        "suggestion": {"type": "string", "maxLength": suggestion_chars},
    }
    return {**IMPROVEMENT_SCHEMA, "properties": properties}


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
    FailureKind.EXTRACTION,
}

# Sentences about what the fixed training recipe decides, which a new architecture cannot change.
RECIPE_TERMS = re.compile(
    r"learning[ -]rate|\blr\b|optimi[sz]er|\bsgd\b|\badam|momentum|weight decay|epochs?\b|batch size|"
    r"augment|scheduler|warm-?up|label smoothing|mixup|cutmix|pre-?train|early stopping|more data",
    re.IGNORECASE,
)

# Architectural changes the improver is offered, a few drawn at random each iteration (nasloop form): a
# small model left to itself suggests "add layers or channels" every time and its generator then writes
# the same network again; a concrete, varied menu keeps the search moving.
IDEAS = (
    "add a third convolution block (convolution, batch normalisation, ReLU, pooling) to the features",
    "double the output channels of every convolution, keeping the layer sizes consistent",
    "add a hidden fully connected layer with ReLU between the features and the output layer",
    "add batch normalisation (nn.BatchNorm1d) of the flattened features before the classifier",
    "add dropout before the output layer",
    "use two 3x3 convolutions (each with batch normalisation and ReLU) before each pooling",
    "use a 5x5 kernel in the first convolution",
    "use LeakyReLU activations instead of ReLU",
    "remove the first pooling so the second convolution sees the full resolution",
    "replace the second max pooling by a stride-2 convolution",
)


class FeedbackMemoryOptions(RepairOptions):
    """Options of `feedback-memory`; `prompt_style: paper` turns nasloop's changes off by default."""

    prompt_style: Literal["nasloop", "paper"] = "nasloop"
    parent: Literal["best", "latest"] = Field(
        default="best",
        description="the model a new proposal edits: the best valid one, or the latest when it is valid "
        "(nasloop form; the paper form always shows the latest, failed or not)",
    )
    history_size: int = Field(default=5, ge=0, description="K: memory entries shown to the improver")
    improver: bool = Field(default=True, description="False: the paper's 'no improver' ablation")
    ideas: int = Field(
        default=3, ge=0, description="nasloop form: architectural ideas offered to the improver, drawn anew each time"
    )
    reference_code: bool = Field(
        default=True, description="paper form: show the best model beside the latest (False: the ablation)"
    )
    precise_errors: bool = True
    repair: bool = True
    filter_suggestions: bool = True
    temperature: float = Field(
        default=0.3, ge=0, description="the generator's: it carries out the suggestion (paper: 0.7 for both roles)"
    )
    improver_temperature: float = Field(default=0.8, ge=0, description="the improver's: it chooses the change")
    top_p: float = Field(default=0.9, gt=0, le=1)
    max_tokens: int = Field(default=2048, gt=0)
    improver_max_tokens: int = Field(default=200, gt=0)
    problem_chars: int = Field(default=160, gt=0, description="nasloop form: the improver's problem, at most")
    suggestion_chars: int = Field(
        default=300, gt=0, description="suggestions are cut to this in prompts (nasloop form: and written at most)"
    )
    error_chars: int = Field(default=200, gt=0, description="errors are cut to this when precise_errors is off")

    @model_validator(mode="before")
    @classmethod
    def _published_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("prompt_style") == "paper":
            changes = ("precise_errors", "repair", "filter_suggestions", *PAPER_OFF)
            published = {"improver_max_tokens": 300, "edit_format": "full", "ideas": 0, "temperature": 0.7,
                         "improver_temperature": 0.7}  # fmt: skip
            data = {**published, **dict.fromkeys(changes, False), **data}
        return data


def filter_suggestion(text: str) -> tuple[str, list[str]]:
    """Drop the sentences of a suggestion that ask for recipe changes; returns (kept text, dropped sentences)."""
    sentences = [part.strip() for part in re.split(r"(?<=[.!?;])\s+|\n+", text) if part.strip()]
    kept = [sentence for sentence in sentences if not RECIPE_TERMS.search(sentence)]
    dropped = [sentence for sentence in sentences if RECIPE_TERMS.search(sentence)]
    return " ".join(kept), dropped


def prompt_messages(
    ctx: Context, template: str, task: Task, *, system: str | None = None, **context: Any
) -> list[Message]:
    """System and user messages from `template` and its system prompt (`system`, default `{template}_system`);
    every prompt variable of the templates has a default."""
    values: dict[str, Any] = {
        "best": None,
        "current": None,
        "parent": None,
        "suggestion": "",
        "repair": "",
        "memory": [],
        "failed": False,
        "edit_format": "full",
        "ideas": [],
    }
    values.update(context)
    return [
        {"role": "system", "content": ctx.render(system or f"{template}_system").strip()},
        {"role": "user", "content": ctx.render(template, task=task, **values).strip()},
    ]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def describe_score(record: CandidateRecord, metric: str) -> str:
    """`val_acc = 0.8123, 19,594 parameters` for a completed candidate."""
    score = record.metrics.get(metric)
    text = f"{metric} = {score:.4f}" if score is not None else "completed"
    params = record.metrics.get("params")
    return text + (f", {int(params):,} parameters" if params is not None else "")


def training_fingerprint(record: CandidateRecord) -> list[float] | None:
    """What identifies a completed candidate's network and training: its parameters and validation score,
    and its final training loss where there is one; None for a candidate that did not train."""
    if record.state is not State.COMPLETE or not {"params", "val_acc"} <= set(record.metrics):
        return None
    return [float(record.metrics[name]) for name in ("params", "val_acc", "train_loss") if name in record.metrics]


def model_view(record: CandidateRecord, metric: str, *, repair: bool = False) -> dict[str, str]:
    """The model section of a nasloop-form prompt: a title and the code."""
    if repair:
        return {"title": f"Model to repair (candidate {record.id}, it failed)", "code": record.code or ""}
    kind = "the seed network" if record.purpose is Purpose.SEED else f"candidate {record.id}"
    return {"title": f"Model to improve ({kind}: {describe_score(record, metric)})", "code": record.code or ""}


@strategies.register("feedback-memory")
class FeedbackMemory(Strategy):
    """The feedback-memory loop; see the module docstring."""

    Options = FeedbackMemoryOptions
    sequential = True

    def __init__(self, options: Any, task: Task, *, space: Any = None, seed: int = 0) -> None:
        super().__init__(options, task, space=space, seed=seed)
        self.opts: FeedbackMemoryOptions = options
        self.best: dict[str, Any] | None = None  # {id, code, score}
        self.current: dict[str, Any] | None = None  # the latest candidate: {id, code, outcome, failure, ...}
        self.memory: list[dict[str, Any]] = []  # {problem, suggestion, outcome, candidate}
        self.pending: dict[str, str] | None = None  # the suggestion the latest proposal applied
        self.evaluated_codes = EvaluatedCodes(metric=task.metric)
        # Whether the attempt under way (a search candidate with its repairs and retries) was repaired by
        # the LLM already: a failed repair is not repaired again.
        self.repair_tried = False
        # The failed candidate whose repair was proposed last: with `max_stale` above 0 the next proposal can
        # come before that repair's result, and must not repeat the repair. Not state: a resumed run lost
        # the repairs that were in flight.
        self.repaired: int | None = None

    @property
    def paper(self) -> bool:
        return self.opts.prompt_style == "paper"

    def takes_seed(self, *, explicit: bool) -> bool:
        return explicit or not self.paper

    # -- prompts ------------------------------------------------------------------------------------

    def _messages(self, ctx: Context, role: str, **context: Any) -> list[Message]:
        if self.paper:
            return prompt_messages(ctx, f"feedback_{role}_paper", self.task, **context)
        edit_format = self.opts.resolved_edit_format(self.task.llm_model)
        return prompt_messages(
            ctx, f"feedback_{role}", self.task, system="feedback_system", edit_format=edit_format, **context
        )

    def _outcome(self, record: CandidateRecord) -> str:
        metric = self.task.metric
        notes = cleanup_feedback(record)
        if record.state is State.COMPLETE or (record.state is State.DUPLICATE and record.failure is None):
            text = describe_score(record, metric) if not self.paper else self._paper_score(record)
            if record.duplicate_of:
                text += f" (duplicate of candidate {record.duplicate_of})"
            elif not self.paper and self._same_as_parent(record):
                text += (
                    f"; the same network as candidate {record.parent}, which it was to change (identical "
                    "parameters and training): the change was not made"
                )
            return text + (f"\n{notes}" if notes else "")
        if record.state is State.PRUNED:
            step = record.metrics.get("pruned_at_step")
            return "stopped early: its training loss was far behind the best models" + (
                f" at step {int(step)}" if step is not None else ""
            )
        failure = record.failure
        assert failure is not None  # neither complete nor pruned: failed
        if self.opts.precise_errors:
            tail = failure.traceback.strip().splitlines()[-6:] if failure.traceback else []
            text = f"error ({failure.kind.value}): {failure.message}" + ("\n" + "\n".join(tail) if tail else "")
            if record.state is State.DUPLICATE and record.duplicate_of:
                text = (
                    f"the code was the same as candidate {record.duplicate_of}, which had already failed; "
                    f"the same code fails the same way, so change the failing line. {text}"
                )
            return text + (f"\n{notes}" if notes else "")
        return "error: " + _cut(failure.message, self.opts.error_chars)

    def _same_as_parent(self, record: CandidateRecord) -> bool:
        """Whether a completed candidate trained exactly like its parent: code written differently that
        computes the same network (training is seeded, so the same network gives the same figures)."""
        known = {entry["id"]: entry.get("fingerprint") for entry in (self.best, self.current) if entry}
        fingerprint = known.get(record.parent) if record.parent is not None else None
        return fingerprint is not None and fingerprint == training_fingerprint(record)

    def _paper_score(self, record: CandidateRecord) -> str:
        score = record.metrics.get(self.task.metric)
        return f"{self.task.metric} = {score:.4f}" if score is not None else "completed"

    # -- the loop -----------------------------------------------------------------------------------

    def _sampling(self) -> Sampling:
        return Sampling(temperature=self.opts.temperature, top_p=self.opts.top_p, max_tokens=self.opts.max_tokens)

    def propose(self, ctx: Context) -> list[Proposal]:
        current = self.current
        if current is None:  # a cold start: nothing to edit yet
            return self._generate(ctx, self._messages(ctx, "generator"), parent=None)
        repair = self._repair(ctx, current)
        if repair is not None:
            return repair
        if self.paper:
            return self._propose_paper(ctx, current)
        parent = self._parent(ctx)
        view = model_view(parent, self.task.metric) if parent is not None else None
        ideas = ctx.rng.sample(IDEAS, min(self.opts.ideas, len(IDEAS))) if parent is not None else []
        suggestion, improver_call = self._improve(ctx, parent=view, ideas=ideas)
        messages = self._messages(ctx, "generator", parent=view, suggestion=suggestion)
        others = [idea for idea in IDEAS if idea not in ideas]  # asked for when the answer repeats a model
        instead = ctx.rng.choice(others) if ideas and others else None
        proposals = self._generate(ctx, messages, parent=parent, instead=instead)
        proposals[0].llm_call_ids = improver_call + proposals[0].llm_call_ids
        return proposals

    def finish(self, ctx: Context) -> list[Proposal]:
        return self._repair(ctx, self.current) or [] if self.current is not None else []

    def _parent(self, ctx: Context) -> CandidateRecord | None:
        """The model the next proposal edits: the latest when it is valid and `parent` is latest, else the best."""
        current = self.current
        if self.opts.parent == "latest" and current is not None and current["failure"] is None:
            record = _find(ctx, current["id"])
            if record is not None and record.state is State.COMPLETE:
                return record
        return _find(ctx, self.best["id"]) if self.best is not None else None

    def _repair(self, ctx: Context, current: dict[str, Any]) -> list[Proposal] | None:
        """The repair of the latest candidate if it failed and may be repaired: in code when the evaluator
        named the size to use, else (`repair`) one LLM attempt per failed search candidate."""
        failed = current["failure"] is not None
        if not failed or current["id"] == self.repaired:
            return None
        failure = Failure.from_dict(current["failure"])
        if self.opts.fix_sizes:  # the evaluator named the size to use: no LLM call needed
            fixes = int(current.get("size_fixes") or 0)
            repair = size_fix_repair(
                current["id"], current["code"], failure, fixes, self.opts.max_size_fixes, self.evaluated_codes
            )
            if repair is not None:
                self.repaired = current["id"]
                return [repair]
        if not self.opts.repair or self.repair_tried or failure.kind not in REPAIRABLE or not current["code"]:
            return None
        record = _find(ctx, current["id"])
        if record is None:
            return None
        self.repaired = current["id"]
        if self.paper:
            best = self.best if self.opts.reference_code else None
            messages = self._messages(ctx, "generator", best=best, current=current, repair=current["outcome"])
        else:
            view = model_view(record, self.task.metric, repair=True)
            messages = self._messages(ctx, "generator", parent=view, repair=current["outcome"])
        proposals = self._generate(ctx, messages, parent=record, purpose=Purpose.REPAIR)
        for proposal in proposals:
            proposal.parent_ids = (current["id"],)
        return proposals

    def _propose_paper(self, ctx: Context, current: dict[str, Any]) -> list[Proposal]:
        """The published iteration: the improver and the generator see the latest model, failed or not."""
        best = self.best if self.opts.reference_code else None
        suggestion, improver_call = self._improve(
            ctx, best=best, current=current, failed=current["failure"] is not None
        )
        messages = self._messages(ctx, "generator", best=best, current=current, suggestion=suggestion)
        proposals = self._generate(ctx, messages, parent=_find(ctx, current["id"]))
        proposals[0].parent_ids = tuple(dict.fromkeys(i for i in (current["id"], (best or {}).get("id")) if i))
        proposals[0].llm_call_ids = improver_call + proposals[0].llm_call_ids
        return proposals

    def _generate(
        self,
        ctx: Context,
        messages: list[Message],
        *,
        parent: CandidateRecord | None,
        purpose: Purpose = Purpose.SEARCH,
        instead: str | None = None,
    ) -> list[Proposal]:
        proposals = write_code(
            ctx,
            messages,
            self.evaluated_codes,
            self.opts,
            self._sampling(),
            parent=parent,
            purpose=purpose,
            instead=instead,
        )
        for proposal in proposals:
            if parent is not None and not proposal.parent_ids:
                proposal.parent_ids = (parent.id,)
            if self.pending and purpose is Purpose.SEARCH:
                proposal.notes.update(self.pending)
        return proposals

    def _improvement_schema(self) -> dict[str, Any]:
        if self.paper:
            return IMPROVEMENT_SCHEMA
        return improvement_schema(self.opts.problem_chars, self.opts.suggestion_chars)

    def _improve(self, ctx: Context, **context: Any) -> tuple[str, tuple[int, ...]]:
        """Ask the improver for (problem, suggestion); it becomes the pending memory entry."""
        self.pending = None
        if not self.opts.improver:
            return "", ()
        from nasloop.prompts.extract import extract_json

        memory = self.memory[-self.opts.history_size :] if self.opts.history_size else []
        memory = [{**entry, "suggestion": _cut(entry["suggestion"], self.opts.suggestion_chars)} for entry in memory]
        messages = self._messages(ctx, "improver", memory=memory, **context)
        try:
            reply = ctx.llm.complete(
                "improver",
                messages,
                Sampling(
                    temperature=self.opts.improver_temperature,
                    top_p=self.opts.top_p,
                    max_tokens=self.opts.improver_max_tokens,
                    response_format={
                        "type": "json_schema",
                        "json_schema": {"name": "improvement", "schema": self._improvement_schema()},
                    },
                ),
            )
        except RecoverableLLMError:
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
            self._remember(record, outcome)
            self.evaluated_codes.add(record)
            self.current = {
                "id": record.id,
                "code": record.code or "",
                "fingerprint": training_fingerprint(record),
                "outcome": outcome,
                "failure": record.failure.to_dict() if record.failure and record.state is not State.COMPLETE else None,
                "purpose": record.purpose.value,
                "size_fixes": record.notes.get("size_fixes", 0),
            }
            score = record.metrics.get(self.task.metric)
            if (
                record.state is State.COMPLETE
                and score is not None
                and (self.best is None or score > self.best["score"])
            ):
                self.best = {
                    "id": record.id,
                    "code": record.code or "",
                    "score": float(score),
                    "fingerprint": training_fingerprint(record),
                }

    def _remember(self, record: CandidateRecord, outcome: str) -> None:
        """Fill in the memory: a search candidate's outcome completes the pending entry; a repair's or a
        retry's is added to the entry of the attempt it belongs to."""
        first_line = outcome.splitlines()[0] if outcome else ""
        cleanups = cleanup_feedback(record)
        if cleanups:  # what nasloop changed stays visible in the history, in one line
            first_line += " (" + "; ".join(cleanups.splitlines()) + ")"
        if record.purpose is Purpose.SEARCH:
            self.repair_tried = False
        elif record.purpose is Purpose.REPAIR:  # a size fix too: after it the LLM repairs no more
            self.repair_tried = True
        if record.purpose in (Purpose.REPAIR, Purpose.RETRY):
            if self.memory and self.memory[-1].get("attempt_open"):
                how = "after a repair" if record.purpose is Purpose.REPAIR else "asked again for the whole module"
                self.memory[-1]["outcome"] += f"; {how}: {first_line}"
            return
        for entry in self.memory:
            entry.pop("attempt_open", None)
        if self.pending is not None and record.purpose is Purpose.SEARCH:
            self.memory.append({**self.pending, "outcome": first_line, "candidate": record.id, "attempt_open": True})
            self.memory = self.memory[-max(self.opts.history_size, 1) :]
        self.pending = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "current": self.current,
            "memory": self.memory,
            "pending": self.pending,
            "evaluated_codes": self.evaluated_codes.entries,
            "repair_tried": self.repair_tried,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")
        self.current = state.get("current")
        self.memory = list(state.get("memory") or [])
        self.pending = state.get("pending")
        self.evaluated_codes = EvaluatedCodes(
            state.get("evaluated_codes") or state.get("failed_codes"), self.task.metric
        )
        self.repair_tried = bool(state.get("repair_tried", False))


def _find(ctx: Context, candidate_id: int) -> CandidateRecord | None:
    """The stored candidate with this id (the latest records first)."""
    return next((record for record in reversed(ctx.history) if record.id == candidate_id), None)


class OneShotOptions(EditOptions):
    """Options of `one-shot`: independent samples of the generator, no feedback."""

    prompt_style: Literal["nasloop", "paper"] = "nasloop"
    temperature: float = Field(default=0.7, ge=0)
    top_p: float = Field(default=0.9, gt=0, le=1)
    max_tokens: int = Field(default=2048, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _published_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("prompt_style") == "paper":
            data = {"edit_format": "full", "tidy_code": False, **data}
        return data


@strategies.register("one-shot")
class OneShot(Strategy):
    """The single-shot baseline: the Code Generator alone, every iteration from the same prompt (an
    improvement of the seed network in nasloop's form, the published cold start with `prompt_style: paper`)."""

    Options = OneShotOptions
    sequential = False

    def __init__(self, options: Any, task: Task, *, space: Any = None, seed: int = 0) -> None:
        super().__init__(options, task, space=space, seed=seed)
        self.opts: OneShotOptions = options
        self.seed_id: int | None = None

    def takes_seed(self, *, explicit: bool) -> bool:
        return explicit or self.opts.prompt_style != "paper"

    def propose(self, ctx: Context) -> list[Proposal]:
        seed = _find(ctx, self.seed_id) if self.seed_id is not None else None
        if self.opts.prompt_style == "paper" and seed is None:
            messages = prompt_messages(ctx, "feedback_generator_paper", self.task)
        else:
            edit_format = self.opts.resolved_edit_format(self.task.llm_model)
            view = model_view(seed, self.task.metric) if seed is not None else None
            messages = prompt_messages(
                ctx, "feedback_generator", self.task, system="feedback_system", parent=view, edit_format=edit_format
            )
        codes = EvaluatedCodes(metric=self.task.metric)
        sampling = Sampling(temperature=self.opts.temperature, top_p=self.opts.top_p, max_tokens=self.opts.max_tokens)
        return write_code(ctx, messages, codes, self.opts, sampling, parent=seed)

    def observe(self, observations: list[Observation]) -> None:
        for observation in observations:
            if observation.record.purpose is Purpose.SEED and observation.record.state is State.COMPLETE:
                self.seed_id = observation.record.id

    def state_dict(self) -> dict[str, Any]:
        return {"seed_id": self.seed_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed_id = state.get("seed_id")
