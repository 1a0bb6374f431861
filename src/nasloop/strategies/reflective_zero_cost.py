"""`reflective-zero-cost`: RZ-NAS, reflective zero-cost NAS (Ji, Zhu, Yuan, Huang, ICML 2025).

A population evolution in a structured space (NAS-Bench-201 cells, macro block strings) in which the LLM
is the mutation operator and a zero-cost proxy is the fitness (METHODS.md section B):

1. **Initial population.** The first `population_size` proposals are random valid points of the space
   that the run has not evaluated yet, proposed `initial_batch_size` at a time (no LLM call), so the
   engine can evaluate a batch in parallel.
2. **Mutation.** Each later proposal picks a parent (uniformly, as Zen-NAS and RZ-NAS do; the best of
   `tournament_size` uniform draws when that is above 1) and asks the LLM for ONE mutation as JSON
   `{reasoning, architecture}`. The prompt holds the space's description (operations, construction
   rules, each block's code), the proxy's definition, an in-context example, the reflection notes and
   the parent. Decoding is constrained by the JSON schema (with the space's architecture pattern unless
   `constrain_pattern` is off); the temperature of each call is drawn from `temperatures` with the
   iteration's RNG (the reflection's is `reflection_temperature`, or drawn too when that is None).
   Changes of nasloop's, each an option whose zero gives the published behaviour: the prompt also lists
   the `show_top` best members with their scores and the children of this parent already evaluated
   (`show_tried`, so the model does not spend a query on one again); the answer's architecture is
   decoded as one of the parent's unseen mutations (`enumerate_children` of them, listed by drawing
   `space.mutate`, an enum in the JSON schema), so a backend that enforces the schema can return neither
   a repeat nor an illegal change, and a parent whose every mutation was evaluated passes the turn to the
   next member without an LLM call (1.5B answers repeated an evaluated network, or changed several
   things, in most first answers, and repeated the same answer when sent back); with `answer: change`
   the model names the change instead (`position 3: 0 -> 1`, one of those children described by
   `population.describe_change` and listed in the prompt): decoding a whole string under the enum lets
   a model copy the parent for as long as some child allows, so its children changed mostly the last
   positions of the string (on NAS-Bench-Macro most of the 1.5B's changed one of the last three layers);
   an answer that repeats an architecture the run already evaluated (small models often return the
   parent or the in-context example unchanged) is sent back `retry_duplicates` times, in the same
   conversation, asking for another one; and one still repeated after that becomes a random unseen
   mutation of the parent (`duplicate_fallback`, notes `operator: mutation-fallback`), so no query is
   spent on a repeat.
3. **Evaluation.** The child goes to the engine, which validates it with the space, renders, dedupes and
   scores it with the run's `zero-cost` stage. An answer that is not valid JSON becomes a failed
   proposal of kind `extraction` (nothing to evaluate); an invalid architecture is still proposed, so the
   engine stores it with the space's own error message as a `build` failure and the reflection sees it.
4. **Population update.** A completed child joins the population unless its canonical form is already a
   member; when the population exceeds `population_size`, the member with the lowest score leaves.
5. **Reflection.** At the start of the next `propose` (`observe` makes no LLM calls), the LLM receives
   the parent, the child, the score change or the error, and writes a short lesson; the latest
   `reflection_memory` distinct lessons go into every later mutation prompt.

Both calls share one static system prompt (role, space, proxy, example), followed by the changing
parts, so the embedded model reuses its cache of the prefix and only evaluates the new suffix.

**Ablation** `llm: false`: each child is a random mutation of the parent that the run has not evaluated
(`space.mutate`), with no reflection, so the LLM's share of a result can be measured on the same
population, selection and budget. It sets `uses_llm` on the instance, so the engine creates no backend.

Once the budget is spent, `finalize` trains the `final_top_k` best distinct candidates by the proxy
(`final_stages`, as re-evaluations of purpose `final`), skipping those a resumed run already trained.

The run must score every candidate with the proxy: `stages: [static, build, zero-cost]`,
`proxies: [<proxy>]`, and usually `objective: <proxy>`. A completed candidate without the proxy's metric
stops the run with a `MissingMetricError` that says so.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from nasloop.candidate import Failure, FailureKind, Proposal
from nasloop.llm.base import Message, RecoverableLLMError, Sampling
from nasloop.registry import strategies
from nasloop.spaces.base import SearchSpace
from nasloop.store.sqlite import CandidateRecord
from nasloop.strategies.base import Context, Observation, Reply, Strategy, Task, strategy_note
from nasloop.strategies.population import (
    FinalizeOptions,
    Member,
    answer_property,
    chosen_child,
    describe_change,
    final_proposals,
    metric_error,
    require_metric,
    seen_architectures,
    unseen_child,
    unseen_children,
    unseen_samples,
)

# One in-context example per known space: (parent, child, reasoning). Other spaces get one made from
# `sample` and `mutate` with a fixed seed.
EXAMPLES: dict[str, tuple[str, str, str]] = {
    "nb201": (
        "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_1x1~2|",
        "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|none~1|nor_conv_1x1~2|",
        "The edge from node 1 to node 2 is an avg_pool_3x3 without weights; a nor_conv_3x3 there adds a "
        "trainable path of two convolutions that reaches the output.",
    ),
    "macro": (
        "SuperConvK3BNRELU(3,32,1,1)SuperResK3K3(32,64,2,32,1)SuperResK1K5K1(64,128,2,32,2)"
        "SuperConvK1BNRELU(128,256,1,1)",
        "SuperConvK3BNRELU(3,32,1,1)SuperResK3K3(32,64,2,32,2)SuperResK1K5K1(64,128,2,32,2)"
        "SuperConvK1BNRELU(128,256,1,1)",
        "The second block has a single sub-layer; a second residual unit adds depth at 16x16 resolution "
        "while staying within the layer and parameter budgets.",
    ),
}

LESSON_SCHEMA_NAME = "reflection"
MUTATION_SCHEMA_NAME = "mutation"


class ReflectiveZeroCostOptions(FinalizeOptions):
    """Options of `reflective-zero-cost` (see the module docstring for what each step does)."""

    proxy: str = Field(default="synflow", description="registered zero-cost proxy used as the fitness")
    fitness: str | None = Field(
        default=None,
        description="the metric the population ranks by; None: `proxy` (or the run's objective when the config "
        "sets one, e.g. the table's val_acc on a benchmark)",
    )
    population_size: int = Field(default=100, ge=2, description="N (100 for NB201 in RZ-NAS, 256 for larger)")
    initial_batch_size: int = Field(
        default=8, ge=1, description="random initial members per proposal batch (evaluated in parallel)"
    )
    tournament_size: int = Field(default=1, ge=1, description="1: uniform parent; k: best of k uniform draws")
    reflection: bool = Field(default=True, description="False: the no-reflection ablation")
    llm: bool = Field(
        default=True, description="False: the no-LLM ablation (a random unseen mutation of the parent, no reflection)"
    )
    reflection_memory: int = Field(default=5, ge=1, description="latest lessons shown in mutation prompts")
    temperatures: tuple[float, ...] = Field(default=(0.2, 0.4, 0.6, 0.8, 1.0), min_length=1)
    reflection_temperature: float | None = Field(
        default=0.2, ge=0, description="None: drawn from `temperatures` like the mutation's"
    )
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_tokens: int = Field(default=512, gt=0, description="mutation answer")
    reflection_max_tokens: int = Field(default=160, gt=0)
    reasoning_chars: int = Field(default=400, gt=0, description="maxLength of the answer's reasoning")
    lesson_chars: int = Field(default=300, gt=0, description="maxLength of a reflection lesson")
    constrain_pattern: bool = Field(
        default=True, description="constrain the architecture string by the space's pattern while decoding"
    )
    retry_duplicates: int = Field(
        default=1,
        ge=0,
        description="times an answer the run already evaluated is sent back for another one (0: the "
        "published behaviour, where it is proposed and recorded as a duplicate)",
    )
    duplicate_fallback: bool = Field(
        default=True, description="a repeat left after the retries becomes a random unseen mutation of the parent"
    )
    enumerate_children: int = Field(
        default=32,
        ge=0,
        description="the answer's architecture is decoded as one of at most this many unseen mutations of the "
        "parent (an enum in the JSON schema), so it can be neither a repeat nor an illegal change; 0: any string "
        "of the space's pattern, as published",
    )
    answer: Literal["architecture", "change"] = Field(
        default="architecture",
        description="what the mutation answer names: the child's `architecture` string, or (with "
        "enumerate_children) the `change` from the parent, one of the enumerated children described position by "
        "position (`position 3: 0 -> 1`), so the choice is made by the first characters the model writes",
    )
    show_top: int = Field(default=3, ge=0, description="best population members shown with their scores")
    show_tried: int = Field(default=8, ge=0, description="evaluated children of the parent shown, to avoid")

    @model_validator(mode="after")
    def _change_needs_choices(self) -> ReflectiveZeroCostOptions:
        if self.answer == "change" and not self.enumerate_children:
            raise ValueError("answer: change names one of the enumerated children; set enumerate_children above 0")
        return self

    @field_validator("temperatures")
    @classmethod
    def _non_negative(cls, temperatures: tuple[float, ...]) -> tuple[float, ...]:
        if any(temperature < 0 for temperature in temperatures):
            raise ValueError("temperatures must be non-negative")
        return temperatures


def proxy_definition(name: str) -> str:
    """The first paragraph of the registered proxy's docstring, on one line (its formula, for prompts).

    Raises ValueError naming the known proxies for an unknown name.
    """
    from nasloop.registry import UnknownNameError, proxies

    try:
        proxy = proxies.get(name)
    except UnknownNameError as error:
        raise ValueError(f"reflective-zero-cost option proxy: {error}") from None
    first_paragraph = (proxy.__doc__ or name).strip().split("\n\n")[0]
    return " ".join(first_paragraph.split())


def score_definition(metric: str) -> str:
    """What a fitness that is not a zero-cost proxy means, for prompts."""
    if metric == "val_acc":
        return "The network's validation accuracy after full training (a fraction; higher is better)."
    return f"The evaluation's {metric} of the network (higher is better)."


def mutation_schema(
    space: SearchSpace,
    reasoning_chars: int,
    *,
    constrain_pattern: bool,
    choices: Sequence[str] = (),
    field: str = "architecture",
) -> dict[str, Any]:
    """JSON schema of a mutation answer `{reasoning, <field>}` (reasoning first: it is written before the
    answer it justifies); with `choices` the answer is one of them. `field` is `architecture` (the child's
    string, constrained by the space's pattern) or `change` (a described change)."""
    answer = answer_property(space, field=field, choices=choices, constrain_pattern=constrain_pattern)
    return {
        "type": "object",
        "properties": {"reasoning": {"type": "string", "maxLength": reasoning_chars}, field: answer},
        "required": ["reasoning", field],
        "additionalProperties": False,
    }


def lesson_schema(lesson_chars: int) -> dict[str, Any]:
    """JSON schema of a reflection answer `{lesson}`."""
    return {
        "type": "object",
        "properties": {"lesson": {"type": "string", "maxLength": lesson_chars}},
        "required": ["lesson"],
        "additionalProperties": False,
    }


def response_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


def example_for(space: SearchSpace, field: str = "architecture") -> dict[str, str]:
    """The in-context example for `space`: the parent and the JSON answer that mutates it, naming the
    child's `architecture` or the `change` (`describe_change`)."""
    import json

    if space.name in EXAMPLES:
        parent, child, reasoning = EXAMPLES[space.name]
    else:
        rng = random.Random(0)
        parent = space.sample(rng)
        child, reasoning = space.mutate(parent, rng), "One small change to the parent."
    answer = describe_change(parent, child) if field == "change" else child
    return {"parent": parent, "answer": json.dumps({"reasoning": reasoning, field: answer})}


def format_score(score: float) -> str:
    return f"{score:.4g}"


def score_change(parent: float, child: float) -> str:
    """How the child's score compares with the parent's, in words an LLM reads easily."""
    if parent > 0 and child > 0:
        ratio = child / parent
        if ratio >= 1:
            return f"{ratio:.3g} times the parent's score (higher is better)"
        return f"{1 / ratio:.3g} times lower than the parent's (higher is better)"
    return f"{child - parent:+.4g} compared with the parent (higher is better)"


@strategies.register("reflective-zero-cost")
class ReflectiveZeroCost(Strategy):
    """RZ-NAS: LLM mutations scored by a zero-cost proxy, guided by reflections; see the module docstring."""

    Options = ReflectiveZeroCostOptions
    sequential = True
    needs_space = True

    @classmethod
    def resolve_options(cls, options: dict[str, Any], config: Any) -> dict[str, Any]:
        """The run's objective becomes the fitness when the config names one (`objective: val_acc` on a
        benchmark ranks by the table's accuracy), unless the options say otherwise."""
        if "fitness" not in options and "objective" in config.model_fields_set:
            return {**options, "fitness": config.objective}
        return options

    @classmethod
    def needs(cls, options: Any, config: Any) -> dict[str, str]:
        if options.fitness is not None:
            source = "objective" if options.fitness == config.objective else "strategy_options.fitness"
            return {options.fitness: source}
        return {options.proxy: "strategy_options.proxy"}

    def __init__(self, options: Any, task: Task, *, space: Any = None, seed: int = 0) -> None:
        super().__init__(options, task, space=space, seed=seed)
        self.opts: ReflectiveZeroCostOptions = options
        # Per instance, so the no-LLM ablation needs no backend; the engine reads the instance attribute.
        self.uses_llm = options.llm  # type: ignore[misc]
        # `proxy` names the fitness in prompts and notes; it is the zero-cost proxy unless `fitness` says else.
        self.proxy = options.fitness or options.proxy
        self.zero_cost = options.fitness is None or options.fitness == options.proxy
        self.proxy_text = proxy_definition(options.proxy) if self.zero_cost else score_definition(self.proxy)
        self.population: list[Member] = []
        self.notes: list[str] = []  # reflection lessons, oldest first
        self.unreflected: dict[str, Any] | None = None  # the latest mutation's outcome, for the reflector
        self.initial_observed = 0
        self.initial_outstanding = 0  # proposed, not observed yet; lost (hence not saved) on resume

    # -- prompts ------------------------------------------------------------------------------------

    def _system(self, ctx: Context) -> Message:
        content = ctx.render(
            "rz_system",
            space_description=self.space.describe(),
            proxy=self.proxy,
            proxy_definition=self.proxy_text,
            zero_cost=self.zero_cost,
            example=example_for(self.space, self.opts.answer),
            answer=self.opts.answer,
        )
        return {"role": "system", "content": content.strip()}

    def mutation_messages(self, ctx: Context, parent: Member, changes: Sequence[str] = ()) -> list[Message]:
        """The prompt of one mutation call (public so tests and tools can inspect it); `changes` lists the
        changes to choose from when the answer names one."""
        best = max(self.population, key=lambda member: member.score)
        ranked = sorted(self.population, key=lambda member: -member.score)[: self.opts.show_top]
        content = ctx.render(
            "rz_mutation",
            proxy=self.proxy,
            notes=list(self.notes),
            parent=parent.architecture,
            parent_score=format_score(parent.score),
            best=best.architecture if best.id != parent.id and not self.opts.show_top else None,
            best_score=format_score(best.score),
            top=[(member.architecture, format_score(member.score)) for member in ranked if member.id != parent.id],
            tried=self._tried_children(ctx, parent),
            changes=list(changes),
        )
        return [self._system(ctx), {"role": "user", "content": content.strip()}]

    def _tried_children(self, ctx: Context, parent: Member) -> list[tuple[str, str]]:
        """The latest `show_tried` evaluated children of `parent`, each with its score or "failed"."""
        tried: dict[str, str] = {}
        for record in ctx.history:
            if record.architecture and record.notes.get("parent_architecture") == parent.architecture:
                score = record.score(self.proxy)
                tried[self.space.canonical(record.architecture)] = (
                    format_score(score) if score is not None else "failed"
                )
        return list(tried.items())[-self.opts.show_tried :] if self.opts.show_tried else []

    def reflection_messages(self, ctx: Context, outcome: dict[str, Any]) -> list[Message]:
        """The prompt of one reflection call on `outcome` (see `_outcome`)."""
        content = ctx.render(
            "rz_reflection",
            proxy=self.proxy,
            parent=outcome["parent"],
            parent_score=format_score(outcome["parent_score"]),
            child=outcome["child"],
            reasoning=outcome["reasoning"],
            outcome=outcome["outcome"],
            failed=outcome["failed"],
        )
        return [self._system(ctx), {"role": "user", "content": content.strip()}]

    # -- the loop -----------------------------------------------------------------------------------

    def propose(self, ctx: Context) -> list[Proposal]:
        missing = self.opts.population_size - self.initial_observed - self.initial_outstanding
        if missing > 0 or not self.population:
            return self._initial(ctx, max(1, min(missing, self.opts.initial_batch_size)))
        if not self.opts.llm:
            return [self._random_mutation(ctx, self._select_parent(ctx.rng))]
        reflection_calls = self._reflect(ctx)
        parent = self._select_parent(ctx.rng)
        proposal = self._mutate(ctx, parent)
        proposal.llm_call_ids = reflection_calls + proposal.llm_call_ids
        return [proposal]

    def _initial(self, ctx: Context, count: int) -> list[Proposal]:
        seen = seen_architectures(self.space, ctx.history)
        architectures = unseen_samples(self.space, ctx.rng, count, seen)
        self.initial_outstanding += len(architectures)
        return [Proposal(architecture=architecture, notes={"operator": "initial"}) for architecture in architectures]

    def _select_parent(self, rng: random.Random) -> Member:
        if self.opts.tournament_size == 1:
            return rng.choice(self.population)
        contestants = rng.sample(self.population, min(self.opts.tournament_size, len(self.population)))
        return max(contestants, key=lambda member: member.score)

    def _random_mutation(self, ctx: Context, parent: Member) -> Proposal:
        """The no-LLM ablation's child: a random mutation of `parent` the run has not evaluated (a repeat
        when none is found)."""
        seen = seen_architectures(self.space, ctx.history)
        architecture = unseen_child(self.space, self._parents_from(parent), ctx.rng, seen)
        notes = strategy_note(
            operator="random-mutation", parent_architecture=parent.architecture, parent_score=parent.score
        )
        return Proposal(architecture=architecture, parent_ids=(parent.id,), notes=notes)

    def _parents_from(self, parent: Member) -> list[str]:
        """`parent` first, then the other members best first: where a fallback looks for an unseen child."""
        others = sorted((m for m in self.population if m.id != parent.id), key=lambda member: -member.score)
        return [parent.architecture, *(member.architecture for member in others)]

    def _mutate(self, ctx: Context, parent: Member) -> Proposal:
        """Ask the LLM for one mutation of `parent`; a soft LLM fault or a non-JSON answer is a failed
        proposal of kind `extraction`, an answer with an invalid architecture goes to the engine. An
        answer the run already evaluated is sent back up to `retry_duplicates` times."""
        from nasloop.prompts.extract import extract_json

        temperature = ctx.rng.choice(self.opts.temperatures)
        notes = strategy_note(
            operator="llm-mutation",
            parent_architecture=parent.architecture,
            parent_score=parent.score,
            temperature=temperature,
        )
        checks = self.opts.retry_duplicates or self.opts.duplicate_fallback or self.opts.enumerate_children
        seen = seen_architectures(self.space, ctx.history) if checks else set()
        choices: list[str] = []
        if self.opts.enumerate_children:
            choices = unseen_children(self.space, parent.architecture, ctx.rng, seen, self.opts.enumerate_children)
            if not choices:  # every mutation of the parent was evaluated: nothing for the LLM to choose
                notes.update(operator="mutation-fallback", exhausted=True)
                architecture = unseen_child(self.space, self._parents_from(parent), ctx.rng, seen)
                return Proposal(architecture=architecture, parent_ids=(parent.id,), notes=notes)
        changes: dict[str, str] = {}
        if self.opts.answer == "change":  # the answer names one of the children by its change
            changes = {describe_change(parent.architecture, child): child for child in choices}
            choices = list(changes)
        messages = self.mutation_messages(ctx, parent, changes=list(changes))
        field = self.opts.answer
        answer_schema = mutation_schema(self.space, self.opts.reasoning_chars, constrain_pattern=False, field=field)
        call_ids: tuple[int, ...] = ()
        answer: dict[str, Any] = {}
        for attempt in range(self.opts.retry_duplicates + 1):
            reply = self._ask(ctx, messages, temperature, choices)
            if isinstance(reply, Failure):
                return Proposal(parent_ids=(parent.id,), notes=notes, failure=reply, llm_call_ids=call_ids)
            call_ids += (reply.call_id,)
            parsed = extract_json(reply.text, answer_schema)
            if isinstance(parsed, Failure):
                return Proposal(parent_ids=(parent.id,), notes=notes, failure=parsed, llm_call_ids=call_ids)
            answer, architecture = parsed, str(parsed[field]).strip()
            if changes:
                child = chosen_child(architecture, changes)
                if isinstance(child, Failure):
                    return Proposal(parent_ids=(parent.id,), notes=notes, failure=child, llm_call_ids=call_ids)
                notes.update(change=architecture)
                architecture = child
            if attempt == self.opts.retry_duplicates or not self._evaluated_before(architecture, seen):
                break
            retry = ctx.render("rz_retry", architecture=architecture, is_parent=self._same(architecture, parent))
            messages = [*messages, {"role": "assistant", "content": reply.text}, {"role": "user", "content": retry}]
        notes.update(strategy_note(reasoning=str(answer["reasoning"]).strip(), retries=attempt))
        if self.opts.duplicate_fallback and self._evaluated_before(architecture, seen):
            notes.update(operator="mutation-fallback", llm_answer=architecture)
            architecture = unseen_child(self.space, self._parents_from(parent), ctx.rng, seen)
        return Proposal(architecture=architecture, parent_ids=(parent.id,), notes=notes, llm_call_ids=call_ids)

    def _ask(
        self, ctx: Context, messages: list[Message], temperature: float, choices: Sequence[str]
    ) -> Reply | Failure:
        """One mutation call (the architecture one of `choices` when given); a soft LLM fault becomes an
        `extraction` failure."""
        schema = mutation_schema(
            self.space,
            self.opts.reasoning_chars,
            constrain_pattern=self.opts.constrain_pattern,
            choices=choices,
            field=self.opts.answer,
        )
        try:
            return ctx.llm.complete(
                "mutator",
                messages,
                Sampling(
                    temperature=temperature,
                    top_p=self.opts.top_p,
                    max_tokens=self.opts.max_tokens,
                    response_format=response_format(MUTATION_SCHEMA_NAME, schema),
                ),
            )
        except RecoverableLLMError as error:
            return Failure(FailureKind.EXTRACTION, f"the LLM call failed: {type(error).__name__}: {error}")

    def _evaluated_before(self, architecture: str, seen: set[str]) -> bool:
        return self.space.validate(architecture) is None and self.space.canonical(architecture) in seen

    def _same(self, architecture: str, member: Member) -> bool:
        return self.space.validate(architecture) is None and self.space.canonical(architecture) == member.architecture

    def _reflect(self, ctx: Context) -> tuple[int, ...]:
        """Turn the latest mutation's outcome into a lesson (bounded memory); the call's id, if any."""
        from nasloop.prompts.extract import extract_json

        outcome = self.unreflected
        if outcome is None or not self.opts.reflection:
            self.unreflected = None
            return ()
        schema = lesson_schema(self.opts.lesson_chars)
        try:
            reply = ctx.llm.complete(
                "reflector",
                self.reflection_messages(ctx, outcome),
                Sampling(
                    temperature=self._reflection_temperature(ctx.rng),
                    top_p=self.opts.top_p,
                    max_tokens=self.opts.reflection_max_tokens,
                    response_format=response_format(LESSON_SCHEMA_NAME, schema),
                ),
            )
        except RecoverableLLMError:
            self.unreflected = None
            return ()  # the failed call is stored by the engine; no lesson this time
        # Cleared only now: after a fatal LLM error the outcome is still waiting when the run resumes.
        self.unreflected = None
        parsed = extract_json(reply.text, schema)
        # A backend that does not enforce the schema may answer in prose: keep it, cut to size.
        lesson = str(parsed["lesson"]) if not isinstance(parsed, Failure) else reply.text
        lesson = " ".join(lesson.split())[: self.opts.lesson_chars]
        if lesson:  # a lesson repeated word for word moves to the end instead of taking a second place
            kept = [note for note in self.notes if note != lesson]
            self.notes = [*kept, lesson][-self.opts.reflection_memory :]
        return (reply.call_id,)

    def _reflection_temperature(self, rng: random.Random) -> float:
        fixed = self.opts.reflection_temperature
        return fixed if fixed is not None else rng.choice(self.opts.temperatures)

    def observe(self, observations: list[Observation]) -> None:
        for observation in observations:
            proposal, record = observation.proposal, observation.record
            if proposal.final_of is not None:
                continue
            require_metric(record, self.proxy, "reflective-zero-cost")
            operator = proposal.notes.get("operator")
            if operator == "initial":
                self.initial_observed += 1
                self.initial_outstanding = max(0, self.initial_outstanding - 1)
            score = record.score(self.proxy)
            if score is not None and record.architecture is not None:
                self._add(Member(record.id, self.space.canonical(record.architecture), score))
            if operator in ("llm-mutation", "mutation-fallback"):
                self.unreflected = self._outcome(proposal, record, score)

    def _add(self, member: Member) -> None:
        """Add `member` unless its architecture is already in; drop the worst when over `population_size`."""
        if any(existing.architecture == member.architecture for existing in self.population):
            return
        self.population.append(member)
        if len(self.population) > self.opts.population_size:
            worst = min(self.population, key=lambda existing: existing.score)
            self.population.remove(worst)

    def _outcome(self, proposal: Proposal, record: CandidateRecord, score: float | None) -> dict[str, Any]:
        """What the reflector is told about one mutation."""
        parent_score = float(proposal.notes["parent_score"])
        if score is not None:
            text = f"{self.proxy} = {format_score(score)}, {score_change(parent_score, score)}"
            if record.duplicate_of is not None:
                text += f"; the same network as candidate {record.duplicate_of}, evaluated before"
        elif record.failure is not None:
            text = f"failed ({record.failure.kind.value}): {record.failure.message[:400]}"
        elif metric_error(record, self.proxy) is not None:
            text = f"{self.proxy} could not be computed for it: {str(metric_error(record, self.proxy))[:400]}"
        else:
            text = f"ended as {record.state.value} without a {self.proxy} score"
        return {
            "parent": proposal.notes["parent_architecture"],
            "parent_score": parent_score,
            "child": record.architecture or "(none: the answer held no usable architecture)",
            "reasoning": str(proposal.notes.get("reasoning", "")),
            "outcome": text,
            "failed": score is None,
        }

    def finalize(self, ctx: Context) -> list[Proposal]:
        return final_proposals(ctx.history, self.proxy, self.opts)

    def state_dict(self) -> dict[str, Any]:
        return {
            "population": [member.to_dict() for member in self.population],
            "notes": list(self.notes),
            "unreflected": self.unreflected,
            "initial_observed": self.initial_observed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.population = [Member.from_dict(item) for item in state.get("population") or []]
        self.notes = [str(note) for note in state.get("notes") or []]
        self.unreflected = state.get("unreflected")
        self.initial_observed = int(state.get("initial_observed", 0))
        self.initial_outstanding = 0


__all__ = [
    "ReflectiveZeroCost",
    "ReflectiveZeroCostOptions",
    "lesson_schema",
    "mutation_schema",
    "proxy_definition",
]
