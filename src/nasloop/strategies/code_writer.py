"""How the open-code strategies get a network from the LLM: ask, extract or apply the edit, tidy, retry.

`write_code` is the one entry point `feedback-memory`, `expert-rules` and `one-shot` use. For one request
it

1. asks the generator (`ask_for_code`). With `edit_format: diff` and a parent to edit, the answer is
   SEARCH/REPLACE blocks applied exactly to the parent's code (`nasloop.prompts.edits`); an answer that
   holds a complete module instead is taken as it is. With `full` the answer is the complete module;
2. tidies the code before the static check (`tidy_code`): imports only a training script needs and
   module-level code `Net` does not use are removed, each removal a note (`cleanups`), and a softmax on
   the logits is named (`warnings`); nothing `Net` uses is ever removed (`nasloop.spaces.cleanup`);
3. renames a lone network class to `Net` when the model called it something else (`fix_class_name`);
4. when the code repeats an evaluated candidate's, asks once more with a note saying how that code ended
   and, for a model that trained, a different change to make when the strategy has one (`retry_repeats`),
   or, when it failed on a wrong layer size, fixes the size in code, following fixes made before
   (`fix_sizes`);
5. when an edit did not apply, records that answer as a failed proposal and asks once more, in the same
   conversation, for the complete module: a second proposal with purpose `retry`.

Every proposal carries the calls that made it, its purpose and its parent. `prompt_style: paper` turns
all of nasloop's additions off.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from pydantic import Field

from nasloop.candidate import Failure, FailureKind, Proposal, Purpose, State
from nasloop.llm.base import Message, RecoverableLLMError, Sampling
from nasloop.store.sqlite import CandidateRecord
from nasloop.strategies.base import Context
from nasloop.strict import Strict

REPETITION_MESSAGE = (
    "Your answer fell into a loop, writing the same lines again and again, and was stopped. Write each "
    "layer once and keep `forward` short: build repeated blocks with a for loop or nn.Sequential."
)


EditFormat = Literal["full", "diff"]

#: the edit format each embedded model writes best, as `benchmarks/feedback_memory.py` measured it
EMBEDDED_EDIT_FORMATS: dict[str, EditFormat] = {"qwen2.5-coder-1.5b": "full", "qwen2.5-coder-0.5b": "full"}
DEFAULT_EDIT_FORMAT: EditFormat = "full"


def default_edit_format(model: str) -> EditFormat:
    """The edit format for `model` when the run leaves `edit_format` on auto."""
    return EMBEDDED_EDIT_FORMATS.get(model, DEFAULT_EDIT_FORMAT)


class EditOptions(Strict):
    """How an open-code strategy's answers become code: the edit format and the mechanical clean-ups."""

    edit_format: Literal["auto", "full", "diff"] = Field(
        default="auto",
        description="full: the answer rewrites the module; diff: SEARCH/REPLACE blocks against the model it "
        "edits; auto: the better one for the embedded model (full elsewhere)",
    )
    tidy_code: bool = Field(
        default=True, description="remove training-script imports and module-level code Net does not use"
    )

    def resolved_edit_format(self, model: str) -> EditFormat:
        return default_edit_format(model) if self.edit_format == "auto" else self.edit_format


class RepairOptions(EditOptions):
    """nasloop's handling of failed code, shared by the open-code strategies that feed failures back."""

    retry_repeats: bool = Field(
        default=True, description="re-ask once when the generator repeats the code of an evaluated candidate"
    )
    repeat_temperature: float = Field(default=1.0, ge=0, description="sampling temperature of that re-ask")
    fix_sizes: bool = Field(
        default=True,
        description="repair in code, without the LLM, what strategies.size_fix can fix (a wrong layer size, a "
        "missing flatten or return, a network over max_params)",
    )
    max_size_fixes: int = Field(default=3, ge=1, description="fixes in a row, each on the previous fix's failure")
    fix_class_name: bool = Field(
        default=True, description="rename the one network class of an answer to Net when it is called otherwise"
    )


#: the changes `prompt_style: paper` turns off, so the published loop runs as published
PAPER_OFF = ("retry_repeats", "fix_sizes", "fix_class_name", "tidy_code")


# ----------------------------------------------------------------------------------------------------
# One answer
# ----------------------------------------------------------------------------------------------------


def ask_for_code(
    ctx: Context,
    role: str,
    messages: list[Message],
    sampling: Sampling,
    *,
    edit_of: str | None = None,
    tidy_code: bool = False,
) -> Proposal:
    """Ask the LLM for a model and extract its code; a soft LLM fault becomes an `extraction` failure.

    With `edit_of` (the parent's code) the answer may be SEARCH/REPLACE blocks against it; when they do
    not apply, the proposal fails with notes `edit: failed` and `edit_answer` (the reply, for the retry).
    Notes `edit` say how the code was written (`diff` or `full`). Faults no retry of the prompt can fix
    (server unreachable, model not found, bad config) are raised so the engine stops the run cleanly.
    """
    from nasloop.prompts.extract import extract_code

    try:
        reply = ctx.llm.complete(role, messages, sampling)
    except RecoverableLLMError as error:
        return Proposal(failure=Failure(FailureKind.EXTRACTION, f"the LLM call failed: {error}"))
    calls = (reply.call_id,)
    if reply.completion.finish_reason == "repetition":
        return Proposal(failure=Failure(FailureKind.EXTRACTION, REPETITION_MESSAGE), llm_call_ids=calls)
    truncated = reply.completion.finish_reason in ("length", "deadline")
    notes: dict[str, Any] = {}
    if edit_of is not None:
        edited = apply_answer(edit_of, reply.text, truncated=truncated)
        if edited is not None:
            if isinstance(edited, Failure):
                notes = {"edit": "failed", "edit_answer": reply.text}
                return Proposal(failure=edited, notes=notes, llm_call_ids=calls)
            return tidied(Proposal(code=edited, notes={"edit": "diff"}, llm_call_ids=calls), tidy_code)
        notes = {"edit": "full"}
    extracted = extract_code(reply.text, truncated=truncated)
    if isinstance(extracted, Failure):
        return Proposal(failure=extracted, notes=notes, llm_call_ids=calls)
    return tidied(Proposal(code=extracted, notes=notes, llm_call_ids=calls), tidy_code)


def apply_answer(parent: str, answer: str, *, truncated: bool = False) -> str | Failure | None:
    """The parent's code with the answer's SEARCH/REPLACE blocks applied; a `Failure` when a block does not
    apply (or the answer was cut off inside one); None when the answer holds no blocks."""
    from nasloop.prompts import edits

    result = edits.apply_answer(parent, answer)
    if isinstance(result, str):
        return result
    if not result.attempted:
        return None
    failure = result.to_failure()
    if truncated:
        return Failure(failure.kind, "The answer was cut off before its last edit ended. " + failure.message)
    return failure


def tidied(proposal: Proposal, enabled: bool) -> Proposal:
    """`proposal` with its code tidied (`nasloop.spaces.cleanup.tidy`) and the changes in its notes."""
    from nasloop.spaces.cleanup import tidy

    if not enabled or proposal.code is None:
        return proposal
    result = tidy(proposal.code)
    proposal.code = result.code
    if result.removed:
        proposal.notes["cleanups"] = list(result.removed)
    if result.warnings:
        proposal.notes["warnings"] = list(result.warnings)
    return proposal


def named_net(proposal: Proposal, fix: bool = True) -> Proposal:
    """`proposal` with its one network class renamed to `Net` if it was called otherwise (`net_name_fix`)."""
    from nasloop.strategies.size_fix import net_name_fix

    renamed = net_name_fix(proposal.code) if fix and proposal.code else None
    if renamed is not None:
        proposal.code = renamed[0]
        proposal.notes["renamed_class"] = renamed[1]
    return proposal


def cleanup_feedback(record: CandidateRecord) -> str:
    """What nasloop changed in a candidate's code before evaluating it, and what it warns about, for the
    feedback prompts; empty when nothing."""
    lines = [f"nasloop removed: {note}" for note in record.notes.get("cleanups") or []]
    lines += [f"warning: {note}" for note in record.notes.get("warnings") or []]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Failed code, asked again
# ----------------------------------------------------------------------------------------------------


class EvaluatedCodes:
    """The canonical hashes of evaluated candidates' code, to catch an LLM that answers with one of them again.

    Small models asked to change a model often return it unchanged, or return one they wrote before;
    evaluating it again only records a duplicate. Each entry maps a hash to `{id, failure, score}`: the
    first candidate evaluated with that code, its failure (`Failure.to_dict`, None when it completed) and
    its score (`metric`, when it has one). JSON-able, for the strategy's state.
    """

    def __init__(self, entries: dict[str, dict[str, Any]] | None = None, metric: str = "val_acc") -> None:
        self.entries: dict[str, dict[str, Any]] = dict(entries or {})
        self.metric = metric

    def add(self, record: CandidateRecord) -> None:
        """Remember `record`'s code: the candidate it first came from and how that ended."""
        from nasloop.spaces.canonical import canonical_hash

        if not record.code:
            return
        failed = record.state is not State.COMPLETE and record.failure is not None
        if not failed and record.state not in (State.COMPLETE, State.DUPLICATE):
            return  # pruned: its score is no score
        score = record.metrics.get(self.metric)
        failure = record.failure.to_dict() if failed and record.failure else None
        entry = {"id": record.duplicate_of or record.id, "failure": failure,
                 "score": float(score) if score is not None and not failed else None}  # fmt: skip
        self.entries.setdefault(canonical_hash(record.code), entry)

    def match(self, code: str | None) -> dict[str, Any] | None:
        """The entry of the candidate evaluated with `code`, if any."""
        from nasloop.spaces.canonical import canonical_hash

        return self.entries.get(canonical_hash(code)) if code else None

    def failed(self, code: str | None) -> dict[str, Any] | None:
        """The entry of the failed candidate with `code`, if one failed with it."""
        entry = self.match(code)
        return entry if entry is not None and entry.get("failure") else None


def ask_for_new_code(
    ctx: Context,
    role: str,
    messages: list[Message],
    codes: EvaluatedCodes,
    options: RepairOptions,
    sampling: Sampling,
    *,
    edit_of: str | None = None,
    instead: str | None = None,
) -> Proposal:
    """`ask_for_code`; if the answer repeats an evaluated candidate's code, that code fixed or one re-ask.

    With `fix_sizes`, a repeat of failed code whose failure named a wrong layer size is fixed mechanically
    (notes `size_fix`), following the fixes already evaluated (a repeat of the first link of a chain of
    fixes goes to its end); when that gives new code no more LLM calls are made. Otherwise, with
    `retry_repeats`, the re-ask shows the model its answer and how that code ended (its failure, or its
    score: the same network again teaches nothing) and, for a repeat of a model that trained, asks for the
    change `instead` when one is given (a model that could not make one change often makes another), and
    samples at `repeat_temperature`; its code is what the engine records (the first answer's code when
    the re-ask yields none). Notes say `repeat_of` the evaluated candidate, and the proposal carries every
    call made.
    """
    first = ask_for_code(ctx, role, messages, sampling, edit_of=edit_of, tidy_code=options.tidy_code)
    proposal = named_net(first, options.fix_class_name)
    repeated = codes.match(proposal.code) if options.retry_repeats else None
    if repeated is None or proposal.code is None:
        return proposal
    notes = {**proposal.notes, "repeat_of": repeated["id"]}
    code, fixes, repeated = _known_fixes(proposal.code, repeated, codes, options)
    if repeated is None:  # the fixes lead to code not evaluated yet
        return Proposal(code=code, notes={**notes, "size_fix": "; ".join(fixes)}, llm_call_ids=proposal.llm_call_ids)
    if repeated.get("failure"):
        failure = Failure.from_dict(repeated["failure"])
        error = f"{failure.kind.value}: {failure.message}".splitlines()[0]
        again = ctx.render("repeated_code", id=repeated["id"], error=error, fixed=bool(fixes))
    else:
        score = repeated.get("score")
        outcome = f"{codes.metric} = {score:.4f}" if score is not None else "a complete evaluation"
        again = ctx.render("repeated_model", id=repeated["id"], outcome=outcome, instead=instead, fixed=bool(fixes))
        if instead is not None:
            notes["asked_instead"] = instead
    follow_up: list[Message] = [
        *messages,
        {"role": "assistant", "content": f"```python\n{proposal.code.strip()}\n```"},
        {"role": "user", "content": again.strip()},
    ]
    retry_sampling = replace(sampling, temperature=options.repeat_temperature)
    retry = named_net(
        ask_for_code(ctx, role, follow_up, retry_sampling, tidy_code=options.tidy_code), options.fix_class_name
    )
    code = retry.code if retry.code is not None else proposal.code
    if retry.code is not None:  # the notes describe the code that is sent
        for key in ("renamed_class", "cleanups", "warnings", "edit"):
            notes.pop(key, None)
        notes.update(retry.notes)
    return Proposal(code=code, notes=notes, llm_call_ids=proposal.llm_call_ids + retry.llm_call_ids)


def _known_fixes(
    code: str, repeated: dict[str, Any], codes: EvaluatedCodes, options: RepairOptions
) -> tuple[str, list[str], dict[str, Any] | None]:
    """`code` (which repeats the evaluated `repeated`) after the size fixes of each failure on the way, up to
    `max_size_fixes`: (the code, the fixes made, the evaluated entry it still repeats or None)."""
    from nasloop.strategies.size_fix import size_fix

    fixes: list[str] = []
    entry: dict[str, Any] | None = repeated
    while entry is not None and entry.get("failure") and options.fix_sizes and len(fixes) < options.max_size_fixes:
        fixed = size_fix(code, Failure.from_dict(entry["failure"]))
        if fixed is None:
            break
        code, entry = fixed[0], codes.match(fixed[0])
        fixes.append(fixed[1])
    return code, fixes, entry


# ----------------------------------------------------------------------------------------------------
# The entry point
# ----------------------------------------------------------------------------------------------------


def _no_repairs(options: EditOptions) -> RepairOptions:
    """`options` for a strategy without feedback (one-shot): its format and clean-ups, no repairs."""
    off = dict.fromkeys(("retry_repeats", "fix_sizes", "fix_class_name"), False)
    return RepairOptions(edit_format=options.edit_format, tidy_code=options.tidy_code, **off)


def write_code(
    ctx: Context,
    messages: list[Message],
    codes: EvaluatedCodes,
    options: EditOptions,
    sampling: Sampling,
    *,
    parent: CandidateRecord | None = None,
    purpose: Purpose = Purpose.SEARCH,
    role: str = "generator",
    instead: str | None = None,
) -> list[Proposal]:
    """The generator's answer to `messages` as proposals (see the module docstring): one, or two when a
    SEARCH/REPLACE edit of `parent` did not apply (the failed answer, then the complete module asked for
    once more, purpose `retry`). `parent` is the candidate the prompt asks to change, if any; `instead`
    the change to ask for when the answer repeats a model that trained (`ask_for_new_code`)."""
    edit_format = options.resolved_edit_format(ctx.task.llm_model)
    edit_of = parent.code if parent is not None and parent.code and edit_format == "diff" else None
    repair = options if isinstance(options, RepairOptions) else _no_repairs(options)
    proposal = ask_for_new_code(ctx, role, messages, codes, repair, sampling, edit_of=edit_of, instead=instead)
    proposals = [proposal]
    if proposal.notes.get("edit") == "failed":
        answer = proposal.notes.pop("edit_answer")
        assert proposal.failure is not None
        follow_up: list[Message] = [
            *messages,
            {"role": "assistant", "content": answer},
            {"role": "user", "content": ctx.render("edit_failed", error=proposal.failure.message).strip()},
        ]
        retry = ask_for_new_code(ctx, role, follow_up, codes, repair, sampling, instead=instead)
        retry.purpose = Purpose.RETRY
        retry.notes["edit"] = "full"
        proposals.append(retry)
    parent_id = parent.id if parent is not None else None
    for item in proposals:
        item.parent = parent_id
        if item.purpose is Purpose.SEARCH:
            item.purpose = purpose
    return proposals


__all__ = [
    "DEFAULT_EDIT_FORMAT",
    "EMBEDDED_EDIT_FORMATS",
    "PAPER_OFF",
    "REPETITION_MESSAGE",
    "EditOptions",
    "EvaluatedCodes",
    "RepairOptions",
    "apply_answer",
    "ask_for_code",
    "ask_for_new_code",
    "cleanup_feedback",
    "default_edit_format",
    "named_net",
    "tidied",
    "write_code",
]
