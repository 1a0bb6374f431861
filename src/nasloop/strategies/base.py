"""The strategy contract (DESIGN.md contract 4).

A strategy decides what to evaluate next; it never touches storage, processes or files. The engine calls

1. `propose(ctx)` when it has room for more work: return one or more `Proposal`s (code, or a point of the
   configured structured space). LLM calls go through `ctx.llm`, which records every call.
2. `observe(observations)` with the outcome of evaluated proposals, in completion order, each carrying
   the stored candidate (its id, state, metrics or failure).
3. `state_dict()` after every `observe`; the engine stores it, and `load_state_dict` restores it on
   `nasloop resume`. Everything a strategy needs to continue must be in that JSON-able dict.

`propose` may be called again before earlier proposals were observed when the engine pipelines
evaluation (a strategy that cannot work that way sets `sequential = True`, and then only sees `propose`
after the previous proposals were observed).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from pydantic import Field

from nasloop.candidate import Failure, FailureKind, Proposal
from nasloop.evaluate.job import Strict
from nasloop.llm.base import Completion, LLMError, Message
from nasloop.store.sqlite import CandidateRecord


@dataclass(frozen=True)
class Task:
    """What is being searched for, as strategies and prompts describe it."""

    dataset: str
    in_shape: tuple[int, int, int]
    num_classes: int
    metric: str = "val_acc"
    max_params: int | None = None
    recipe: str = ""
    train_images: int = 0
    #: the run's objectives ('val_acc:max', ...) and hard constraints ('params<=1e6'), from the config
    objectives: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reply:
    """A recorded LLM answer: the completion and the id of the stored call."""

    completion: Completion
    call_id: int

    @property
    def text(self) -> str:
        return self.completion.text


class LLM(Protocol):
    """The LLM as a strategy sees it: a role name plus the backend's `complete` arguments."""

    def complete(self, role: str, messages: list[Message], **options: Any) -> Reply: ...


@dataclass
class Context:
    """What `propose` may use: the recording LLM, the run history, a per-iteration RNG and the task."""

    llm: LLM
    history: Sequence[CandidateRecord]
    rng: random.Random
    iteration: int
    task: Task
    render: Callable[..., str]
    space: Any = None


@dataclass(frozen=True)
class Observation:
    """The outcome of one proposal, as stored."""

    proposal: Proposal
    record: CandidateRecord


class NoOptions(Strict):
    """Options of a strategy that has none."""


class Strategy(ABC):
    """Base of every search strategy; register subclasses in `nasloop.registry.strategies`."""

    #: pydantic model of the strategy's options (config key `strategy_options`); unknown keys are errors
    Options: ClassVar[type[Strict]] = NoOptions
    #: whether proposals must wait for the previous observation (feedback loops) or may be pipelined
    sequential: ClassVar[bool] = True
    #: whether the strategy calls the LLM at all
    uses_llm: ClassVar[bool] = True
    #: whether the strategy needs a structured space (`space` config key)
    needs_space: ClassVar[bool] = False

    def __init__(self, options: Strict, task: Task, *, space: Any = None, seed: int = 0) -> None:
        self.options = options
        self.task = task
        self.space = space
        self.seed = seed

    @abstractmethod
    def propose(self, ctx: Context) -> list[Proposal]:
        """Return at least one proposal."""

    def observe(self, observations: list[Observation]) -> None:  # noqa: B027 - optional hook
        """Take the outcome of evaluated proposals into account."""

    def finalize(self, ctx: Context) -> list[Proposal]:
        """Proposals to evaluate once after the budget is spent (e.g. train the top-k of a zero-cost
        search, with `Proposal.stages` and `Proposal.final_of` set). They do not count as iterations."""
        return []

    @property
    def max_unobserved(self) -> int | None:
        """How many proposals may await observation when `propose` is called again (None: no bound
        beyond the run's `executor.max_stale`); islands allow one per island."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for resume."""
        return {}

    def artifacts(self) -> dict[str, str]:
        """Named texts for people to read (a knowledge base, a front), stored with the state after every
        `observe`; a name that comes back again replaces the stored text, so name snapshots by generation."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what `state_dict` returned."""


REPETITION_MESSAGE = (
    "Your answer fell into a loop, writing the same lines again and again, and was stopped. Write each "
    "layer once and keep `forward` short: build repeated blocks with a for loop or nn.Sequential."
)


def ask_for_code(ctx: Context, role: str, messages: list[Message], **options: Any) -> Proposal:
    """Ask the LLM for a model and extract its code; a soft LLM fault becomes an `extraction` failure.

    Faults that no retry of the prompt can fix (server unreachable, model not found, bad config) are
    raised so the engine stops the run cleanly.
    """
    from nasloop.llm.base import ContextTooLong, DeadlineExceeded, EmptyResponse, TruncatedResponse
    from nasloop.prompts.extract import extract_code

    try:
        reply = ctx.llm.complete(role, messages, **options)
    except (EmptyResponse, TruncatedResponse, DeadlineExceeded, ContextTooLong) as error:
        return Proposal(failure=Failure(FailureKind.EXTRACTION, f"the LLM call failed: {error}"))
    if reply.completion.finish_reason == "repetition":
        return Proposal(failure=Failure(FailureKind.EXTRACTION, REPETITION_MESSAGE), llm_call_ids=(reply.call_id,))
    extracted = extract_code(reply.text, truncated=reply.completion.finish_reason in ("length", "deadline"))
    if isinstance(extracted, Failure):
        return Proposal(failure=extracted, llm_call_ids=(reply.call_id,))
    return Proposal(code=extracted, llm_call_ids=(reply.call_id,))


class FailedCodes:
    """The canonical hashes of failed candidates' code, to catch an LLM that answers with one of them again.

    Small models asked to fix an error often return the failing code unchanged; evaluating it again only
    records a duplicate. Each entry maps a hash to `{id, failure}`: the first candidate that failed with
    that code and its failure (`Failure.to_dict`). JSON-able, for the strategy's state.
    """

    def __init__(self, entries: dict[str, dict[str, Any]] | None = None) -> None:
        self.entries: dict[str, dict[str, Any]] = dict(entries or {})

    def add(self, record: CandidateRecord) -> None:
        """Remember `record`'s code if the candidate failed (a duplicate of a failed one included)."""
        from nasloop.candidate import State
        from nasloop.spaces.canonical import canonical_hash

        if not record.code or record.state is State.COMPLETE or record.failure is None:
            return
        entry = {"id": record.duplicate_of or record.id, "failure": record.failure.to_dict()}
        self.entries.setdefault(canonical_hash(record.code), entry)

    def match(self, code: str | None) -> dict[str, Any] | None:
        """The entry of the failed candidate with `code`, if one failed with it."""
        from nasloop.spaces.canonical import canonical_hash

        return self.entries.get(canonical_hash(code)) if code else None


def ask_for_new_code(
    ctx: Context,
    role: str,
    messages: list[Message],
    failed: FailedCodes,
    *,
    retry_temperature: float,
    fix_sizes: bool = False,
    fix_class_name: bool = False,
    **options: Any,
) -> Proposal:
    """`ask_for_code`; if the answer repeats a failed candidate's code, that code fixed or one re-ask.

    With `fix_class_name`, each answer's network class is renamed to `Net` if it was called otherwise
    (`named_net`). With `fix_sizes`, a repeat whose failure named a wrong layer size is fixed mechanically
    (`size_fix`; the notes say `size_fix`) and no more LLM calls are made. Otherwise the re-ask shows the
    model its answer and the failure, and samples at `retry_temperature`; its code is what the engine
    records (the first answer's code when the re-ask yields none). Notes say `repeat_of` the failed
    candidate, and the proposal carries every call made.
    """
    from nasloop.strategies.size_fix import size_fix

    proposal = named_net(ask_for_code(ctx, role, messages, **options), fix_class_name)
    repeated = failed.match(proposal.code) if proposal.code is not None else None
    if repeated is None or proposal.code is None:
        return proposal
    failure = Failure.from_dict(repeated["failure"])
    notes = {**proposal.notes, "repeat_of": repeated["id"]}
    fixed = size_fix(proposal.code, failure) if fix_sizes else None
    if fixed is not None:
        return Proposal(code=fixed[0], notes={**notes, "size_fix": fixed[1]}, llm_call_ids=proposal.llm_call_ids)
    error = f"{failure.kind.value}: {failure.message}".splitlines()[0]
    follow_up: list[Message] = [
        *messages,
        {"role": "assistant", "content": f"```python\n{proposal.code.strip()}\n```"},
        {"role": "user", "content": ctx.render("repeated_code", id=repeated["id"], error=error).strip()},
    ]
    retry = named_net(
        ask_for_code(ctx, role, follow_up, **{**options, "temperature": retry_temperature}), fix_class_name
    )
    code = retry.code if retry.code is not None else proposal.code
    if retry.code is not None:  # the notes describe the code that is sent
        notes.pop("renamed_class", None)
        notes.update(retry.notes)
    return Proposal(code=code, notes=notes, llm_call_ids=proposal.llm_call_ids + retry.llm_call_ids)


class RepairOptions(Strict):
    """nasloop's handling of failed code, shared by the open-code strategies that feed failures back."""

    retry_repeats: bool = Field(
        default=True, description="re-ask once when the generator repeats the code of a failed candidate"
    )
    repeat_temperature: float = Field(default=1.0, ge=0, description="sampling temperature of that re-ask")
    fix_sizes: bool = Field(
        default=True, description="fix a layer declared for the wrong input size in code, without the LLM"
    )
    max_size_fixes: int = Field(default=3, ge=1, description="fixes in a row, each on the previous fix's failure")
    fix_class_name: bool = Field(
        default=True, description="rename the one network class of an answer to Net when it is called otherwise"
    )


def generate_code(
    ctx: Context, messages: list[Message], failed: FailedCodes, options: RepairOptions, **sampling: Any
) -> Proposal:
    """The generator's answer to `messages`, with the network class renamed to `Net` when
    `options.fix_class_name` is on and the answer named it otherwise (notes: `renamed_class`), and
    `ask_for_new_code`'s handling of repeats when `options.retry_repeats` is on."""
    if not options.retry_repeats:
        return named_net(ask_for_code(ctx, "generator", messages, **sampling), options.fix_class_name)
    return ask_for_new_code(
        ctx,
        "generator",
        messages,
        failed,
        retry_temperature=options.repeat_temperature,
        fix_sizes=options.fix_sizes,
        fix_class_name=options.fix_class_name,
        **sampling,
    )


def named_net(proposal: Proposal, fix: bool = True) -> Proposal:
    """`proposal` with its one network class renamed to `Net` if it was called otherwise (`net_name_fix`)."""
    from nasloop.strategies.size_fix import net_name_fix

    renamed = net_name_fix(proposal.code) if fix and proposal.code else None
    if renamed is not None:
        proposal.code = renamed[0]
        proposal.notes["renamed_class"] = renamed[1]
    return proposal


def is_fatal(error: LLMError) -> bool:
    """Whether an LLM error should stop the run rather than count as a failed candidate."""
    from nasloop.llm.base import LLMConfigError, LLMUnreachable, ModelNotFound

    return isinstance(error, LLMUnreachable | ModelNotFound | LLMConfigError)


def strategy_note(**notes: Any) -> dict[str, Any]:
    """Notes stored with a candidate, without empty values."""
    return {key: value for key, value in notes.items() if value not in (None, "", [], {})}


__all__ = [
    "LLM",
    "Context",
    "FailedCodes",
    "NoOptions",
    "Observation",
    "RepairOptions",
    "Reply",
    "Strategy",
    "Task",
    "ask_for_code",
    "ask_for_new_code",
    "generate_code",
    "is_fatal",
    "named_net",
    "strategy_note",
]
