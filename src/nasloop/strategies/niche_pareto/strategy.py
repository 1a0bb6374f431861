"""`niche-pareto`: hardware-aware LLM-NAS with complexity niches (Zhu, Zhang, Huang, 2025; METHODS.md C).

The space is partitioned into complexity niches, each with its own Pareto archive under the run's
objectives (by default predicted accuracy, maximised, and latency, minimised). `propose` returns one
proposal per call, niche by niche in turn, so every proposal fits the engine's budget and each niche's
turn sees every result observed before it:

0. **Initial population** (generation 0): `initial_per_niche` random architectures inside each niche,
   drawn by rejection from `space.sample`, never repeating an evaluated one. No LLM call. (Later, a
   niche without a feasible member gets a random architecture of its own again instead of a child.)

In each later generation every niche has one turn of two steps:

1. **Knowledge base update** (one LLM call): the niche's design rules `{positive: [...],
   negative: [...]}` (at most `knowledge_rules` each) are rewritten from the previous round's results in
   that niche: each child's architecture, operation, rationale and outcome (objective values and whether
   it reached the front, or why it failed). Each niche keeps its own knowledge base: what helps a cell
   with one 3x3 convolution need not help one with four.
2. **Guided evolution** (one LLM call): given the niche's Pareto parents, its knowledge base
   and the niche's rule, the LLM chooses crossover or mutation and answers JSON `{operation, rationale,
   architecture}`, decoded under a JSON schema (the architecture constrained by the space's pattern).
   With `operation_choice: random` the operation is drawn instead (crossover with probability
   `crossover_probability`) and the schema fixes it. A validator checks that the architecture is legal
   (`space.validate`), new (no evaluated candidate has its canonical form) and inside the niche; a
   rejected answer is asked again `retries` times with the error in the prompt; then (nasloop's change,
   `fallback`) a random mutation or crossover of the parents inside the niche is proposed instead, with
   the rejection in the notes, so no query is spent on an answer that cannot be evaluated. With
   `fallback: false` it becomes a failed proposal, as published: `build` for an illegal architecture,
   `budget` for one outside the niche's complexity bound, `extraction` for an answer without a usable
   new architecture (a repeat, no JSON, an LLM fault). With `enumerate_children: N` (nasloop's change)
   the architecture is instead decoded as one of up to N children of the parents (mutations, and
   crossovers where the operation allows) that already pass the validator, an enum in the JSON schema,
   so no answer is rejected; a niche whose parents have no such child gets a random operator's child
   without the call. With `answer: change` as well, the prompt lists those children as changes of a
   numbered parent (`parent 2: position 3: 0 -> 1`, `population.describe_change`) and the answer names
   one, so the model chooses a change instead of copying a parent's string until the enum forces a
   difference (which puts the change at the string's end).

So a generation costs two LLM calls per niche (the paper's 10 generations x 6 niches = 120 calls).

**Fitness.** The accuracy objective (`accuracy_metric`, default `val_acc`) is predicted without
training by `predictor`: a registered zero-cost proxy's value (monotone in the prediction, so dominance
is the proxy's), `regression` (ridge least squares on the signed logarithms of `regression_proxies`,
fitted on the candidates trained so far; the first of those proxies until `regression_min_points`
trained candidates exist), or `measured` (the trained value, for runs whose stages include `train`).
Latency is the `hardware` stage's `latency_ms`, or, with `latency_table` and `latency_device`, the value
a `nasloop.hardware.lookup.LatencyTable` holds for the architecture (an architecture missing from it stops
the run with `LatencyNotFound`, or, with `latency_missing: measured`, falls back to the measured value).
Members that break a `constraints` entry stay in the archive but are never parents nor on a front.

**Front.** The final front is the non-dominated union of the niches' fronts (`union_front`).
`finalize` trains its members when `train_front` is set (`final_stages`, purpose `final`), skipping
ones already trained; their trained accuracy then joins the regression's training points.

**Ablations** (the paper's, as options): `partition: false` puts the whole space in one niche (with the
same number of random initial architectures); `llm: false` replaces both LLM calls with a random
mutation or crossover of the niche's Pareto parents (`space.mutate` / `space.crossover`, retried until
new and inside the niche). `llm: false` sets `uses_llm` on the instance, so the engine creates no backend.

**Partitions.** `niche_by: space` uses the space's own niches (NAS-Bench-201: by the number of
`nor_conv_3x3` edges; counted on the canonical cell, so edges that cannot reach the output do not count);
`niche_by: params` or `flops` bins the analytic cost (`space.cost`) at `niche_bounds`.

**State.** `state_dict` holds every niche's archive, knowledge base and unreported results, and the
knowledge base of every generation (`knowledge_history`), so a reader can follow how the rules evolved;
each candidate's notes carry its niche, generation, operation, rationale and the knowledge base it was
proposed with. `artifacts()` renders the latest knowledge bases and the union front as text for a run
store (`knowledge_base/generation-NNN`, `pareto/generation-NNN`).
"""

from __future__ import annotations

import difflib
import json
import math
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from nasloop.candidate import Failure, FailureKind, Proposal, Purpose, State
from nasloop.llm.base import Message, RecoverableLLMError, Sampling
from nasloop.objectives import Constraint, Objective, pareto_front, parse_constraints, parse_objectives, violations
from nasloop.registry import strategies
from nasloop.spaces.base import SearchSpace
from nasloop.store.sqlite import CandidateRecord
from nasloop.strategies.base import Context, Observation, Strategy, Task, strategy_note
from nasloop.strategies.niche_pareto.answers import (
    Attempt,
    evolution_schema,
    format_value,
    knowledge_schema,
    response_format,
)
from nasloop.strategies.niche_pareto.archive import Member, Niche
from nasloop.strategies.niche_pareto.options import (
    DEFAULT_OBJECTIVES,
    OPERATIONS,
    RECENT_RESULTS,
    MissingObjectiveError,
    NicheParetoOptions,
)
from nasloop.strategies.niche_pareto.partition import make_partition
from nasloop.strategies.niche_pareto.predictor import AccuracyPredictor
from nasloop.strategies.population import CHILD_DRAWS, chosen_child, describe_change

if TYPE_CHECKING:
    from nasloop.hardware.lookup import LatencyTable


@strategies.register("niche-pareto")
class NichePareto(Strategy):
    """LLM-NAS with complexity niches and per-niche Pareto archives; see the module docstring."""

    Options = NicheParetoOptions
    sequential = True
    needs_space = True

    @classmethod
    def resolve_options(cls, options: dict[str, Any], config: Any) -> dict[str, Any]:
        """On a tabular benchmark the accuracy is the table's, measured, not predicted (unless set)."""
        if config.benchmark is not None and "predictor" not in options:
            return {**options, "predictor": "measured"}
        return options

    @classmethod
    def needs(cls, options: Any, config: Any) -> dict[str, str]:
        texts = options.objectives or tuple(config.objectives) or DEFAULT_OBJECTIVES
        source = "strategy_options.objectives" if options.objectives else "objectives"
        needed: dict[str, str] = {}
        for objective in parse_objectives(",".join(texts)):
            if objective.metric != options.accuracy_metric or options.predictor == "measured":
                needed[objective.metric] = source
            elif options.predictor == "regression":
                needed.update(dict.fromkeys(options.regression_proxies, "strategy_options.regression_proxies"))
            else:
                needed[options.predictor] = "strategy_options.predictor"
        if options.latency_table is not None:
            needed.pop(options.latency_metric, None)  # the latency table gives it
        return needed

    @classmethod
    def stored_metric(cls, options: Any, metric: str) -> str:
        """The accuracy objective predicted by one proxy is ranked by that proxy's value (monotone in it)."""
        if metric == options.accuracy_metric and options.predictor not in ("measured", "regression"):
            return str(options.predictor)
        return metric

    def __init__(self, options: Any, task: Task, *, space: Any = None, seed: int = 0) -> None:
        super().__init__(options, task, space=space, seed=seed)
        self.opts: NicheParetoOptions = options
        # Per instance, so the no-LLM ablation needs no backend; the engine reads the instance attribute.
        self.uses_llm = options.llm  # type: ignore[misc]
        self.objectives: list[Objective] = parse_objectives(",".join(self._objective_texts(options, task)))
        self.constraints: list[Constraint] = parse_constraints(options.constraints or task.constraints)
        self.predictor = self._make_predictor(options)
        self.partition = make_partition(space, options, task)
        self.latency_table = self._load_latency_table(options, space)
        self.niches: dict[str, Niche] = {name: Niche(name) for name in self.partition.names}
        self.generation = 0
        self.step = 0  # proposals made in the current generation (turns, see `_next_turn`)
        self.outstanding: set[str] = set()  # canonical forms proposed, not observed yet; lost on resume
        self.knowledge_history: list[dict[str, Any]] = []
        self.trained: dict[int, float] = {}  # candidate id -> trained accuracy (finalists)

    # -- construction -------------------------------------------------------------------------------

    @staticmethod
    def _objective_texts(options: NicheParetoOptions, task: Task) -> tuple[str, ...]:
        """The option, else the run's objectives (when the task carries them), else the default."""
        return options.objectives or task.objectives or DEFAULT_OBJECTIVES

    def _make_predictor(self, options: NicheParetoOptions) -> AccuracyPredictor:
        from nasloop.registry import UnknownNameError, proxies

        names = options.regression_proxies if options.predictor == "regression" else (options.predictor,)
        if options.predictor != "measured":
            for name in names:
                try:
                    proxies.get(name)
                except UnknownNameError as error:
                    raise ValueError(f"niche-pareto predictor: {error} (or use 'regression' or 'measured')") from None
        return AccuracyPredictor(
            options.predictor, options.accuracy_metric, options.regression_proxies,
            options.regression_min_points, options.regression_ridge,
        )  # fmt: skip

    @staticmethod
    def _load_latency_table(options: NicheParetoOptions, space: SearchSpace) -> LatencyTable | None:
        if options.latency_table is None or options.latency_device is None:
            return None
        from nasloop.hardware.lookup import LatencyTable

        return LatencyTable.load(options.latency_table, options.latency_device, canonical=space.canonical)

    # -- objective values ---------------------------------------------------------------------------

    def values(self, member: Member) -> dict[str, float] | None:
        """The member's objective values (accuracy predicted), or None when one cannot be had."""
        values: dict[str, float] = {}
        for objective in self.objectives:
            if objective.metric == self.opts.accuracy_metric:
                value = self.predictor.predict(member.metrics)
            else:
                value = member.metrics.get(objective.metric)
            if value is None or not math.isfinite(value):
                return None
            values[objective.metric] = float(value)
        return values

    def feasible(self, member: Member) -> bool:
        """Whether the member has every objective value and meets every constraint."""
        values = self.values(member)
        return values is not None and not violations(self.constraints, {**member.metrics, **values})

    def front(self, niche: str) -> list[Member]:
        """The Pareto front of one niche's feasible members, in archive order."""
        return self._front_of(self.niches[niche].members)

    def union_front(self) -> list[Member]:
        """The final front: the non-dominated members of the union of every niche's front."""
        return self._front_of([member for name in self.niches for member in self.front(name)])

    def _front_of(self, members: Sequence[Member]) -> list[Member]:
        candidates = [member for member in members if self.feasible(member)]
        points = [self.values(member) or {} for member in candidates]
        return [candidates[index] for index in pareto_front(points, self.objectives)] if candidates else []

    def _describe_values(self, member: Member) -> str:
        values = self.values(member) or {}
        return ", ".join(f"{metric} = {format_value(value)}" for metric, value in values.items())

    def objective_lines(self) -> list[str]:
        """Each objective in words, for prompts."""
        lines = []
        for objective in self.objectives:
            goal = "maximise" if objective.direction == "max" else "minimise"
            if objective.metric == self.opts.accuracy_metric:
                how = self.predictor.describe()
            elif objective.metric == self.opts.latency_metric:
                how = (
                    f"looked up for device {self.latency_table.device}"
                    if self.latency_table is not None
                    else "measured batch-1 inference latency in milliseconds"
                )
            else:
                how = "measured"
            lines.append(f"{objective.metric}: {goal}; {how}")
        return lines

    # -- prompts ------------------------------------------------------------------------------------

    def _system(self, ctx: Context) -> Message:
        content = ctx.render(
            "niche_system",
            space_description=self.space.describe(),
            objectives=self.objective_lines(),
            partitioned=len(self.niches) > 1,
        )
        return {"role": "system", "content": content.strip()}

    def knowledge_messages(self, ctx: Context, niche: Niche) -> list[Message]:
        """The prompt of one knowledge-base update (public so tests and tools can inspect it)."""
        content = ctx.render(
            "niche_knowledge",
            niche=niche.name,
            niche_rule=self.partition.rules[niche.name],
            positive=list(niche.positive),
            negative=list(niche.negative),
            results=list(niche.recent),
            front=[(member.architecture, self._describe_values(member)) for member in self.front(niche.name)],
            max_rules=self.opts.knowledge_rules,
        )
        return [self._system(ctx), {"role": "user", "content": content.strip()}]

    def evolution_messages(
        self,
        ctx: Context,
        niche: Niche,
        parents: Sequence[Member],
        operation: str | None,
        rejected: Sequence[str],
        changes: Sequence[str] = (),
    ) -> list[Message]:
        """The prompt of one evolution call; `rejected` holds the earlier answers' errors, `changes` the
        changes to choose from when the answer names one."""
        content = ctx.render(
            "niche_evolve",
            niche=niche.name,
            niche_rule=self.partition.rules[niche.name],
            positive=list(niche.positive),
            negative=list(niche.negative),
            parents=[
                (member.architecture, self._describe_values(member), self.partition.explain(member.architecture))
                for member in parents
            ],
            operation=operation,
            can_cross=len(parents) >= 2,
            rejected=list(rejected),
            changes=list(changes),
        )
        return [self._system(ctx), {"role": "user", "content": content.strip()}]

    # -- the loop -----------------------------------------------------------------------------------

    def propose(self, ctx: Context) -> list[Proposal]:
        """One proposal: the next niche's turn (see `_next_turn`)."""
        niche = self._next_turn()
        taken = self._evaluated(ctx.history)
        if self.generation == 0 or not self.front(niche.name):
            proposal = self._initial(ctx.rng, niche, taken)
        else:
            proposal = self._offspring(ctx, niche, taken)
        if proposal.architecture is not None and proposal.failure is None:
            self.outstanding.add(self.space.canonical(proposal.architecture))
        return [proposal]

    def _next_turn(self) -> Niche:
        """The niche whose turn it is, advancing the turn: generation 0 visits each niche `_initial_count()`
        times in a row, later generations each niche once, in the partition's order; unreachable niches
        are passed over. One proposal per call keeps every proposal inside the engine's budget and lets
        each niche's turn see every result observed before it."""
        if all(niche.unreachable for niche in self.niches.values()):
            raise RuntimeError("niche-pareto: no niche has an architecture left to propose")
        order = list(self.niches.values())
        while True:
            turns = self._initial_count() if self.generation == 0 else 1
            if self.step >= len(order) * turns:
                self.generation, self.step = self.generation + 1, 0
                continue
            niche = order[self.step // turns]
            self.step += 1
            if not niche.unreachable and self._has_turn(niche):
                return niche

    def _has_turn(self, niche: Niche) -> bool:
        """Whether `niche` takes its turn this generation: always, unless it holds no member of the union
        front and the generation is not a multiple of `off_front_every` (a single-objective run's union
        front is its best network, so the turns go to the niche that holds it)."""
        if self.opts.off_front_every == 1 or self.generation == 0 or self.generation % self.opts.off_front_every == 0:
            return True
        front = self.union_front()
        return not front or any(member.niche == niche.name for member in front)

    def _initial_count(self) -> int:
        """Random initial architectures per niche; the single niche of `partition: false` gets as many as
        the niches of the partition together, so both variants start from the same number."""
        if self.opts.partition:
            return self.opts.initial_per_niche
        niches = len(self.space.niches()) if self.opts.niche_by == "space" else len(self.opts.niche_bounds) + 1
        return self.opts.initial_per_niche * niches

    def _evaluated(self, history: Sequence[CandidateRecord]) -> dict[str, int]:
        """Canonical architecture -> candidate id, for every architecture the engine evaluated, plus the
        proposals not observed yet (id -1)."""
        taken = dict.fromkeys(self.outstanding, -1)
        taken.update(
            (self.space.canonical(record.architecture), record.id)
            for record in history
            if record.architecture and record.hash is not None
        )
        return taken

    def _notes(self, niche: Niche, operation: str, **more: Any) -> dict[str, Any]:
        return strategy_note(
            niche=niche.name, generation=self.generation, operation=operation, knowledge=niche.knowledge(), **more
        )

    def _initial(self, rng: random.Random, niche: Niche, taken: Mapping[str, int]) -> Proposal:
        """A random new architecture of the niche; a `budget` failure that retires the niche when the
        sampler finds none."""
        architecture = self._sample_in(niche.name, rng, taken)
        if architecture is None:
            niche.unreachable = True
            failure = Failure(
                FailureKind.BUDGET,
                f"no new architecture of niche {niche.name} ({self.partition.rules[niche.name]}) found in "
                f"{self.opts.sample_tries} random draws; the niche is skipped from now on",
            )
            return Proposal(notes=self._notes(niche, "initial"), failure=failure)
        return Proposal(architecture=architecture, notes=self._notes(niche, "initial"))

    def _sample_in(self, niche: str, rng: random.Random, taken: Mapping[str, int]) -> str | None:
        """A random new architecture of `niche` (rejection sampling), or None after `sample_tries` draws."""
        for _ in range(self.opts.sample_tries):
            architecture = self.space.sample(rng)
            if self.space.canonical(architecture) not in taken and self.partition.niche_of(architecture) == niche:
                return architecture
        return None

    def _parents(self, niche: Niche, rng: random.Random) -> list[Member]:
        """Up to `max_parents` members of the niche's front (a random subset of a larger front); a front of
        one is joined by the best-ranked other feasible member so crossover stays possible."""
        front = self.front(niche.name)
        parents = rng.sample(front, self.opts.max_parents) if len(front) > self.opts.max_parents else list(front)
        if len(parents) == 1:
            others = [m for m in niche.members if m.id != parents[0].id and self.feasible(m)]
            second = self._front_of(others)
            if second:
                parents.append(second[0])
        return parents

    def _offspring(self, ctx: Context, niche: Niche, taken: Mapping[str, int]) -> Proposal:
        calls = self._update_knowledge(ctx, niche) if self.opts.llm else ()
        parents = self._parents(niche, ctx.rng)
        operation = self._drawn_operation(ctx.rng, parents)
        fallback: dict[str, Any] = {}
        if self.opts.llm:
            children = self._new_children(ctx.rng, niche, parents, operation, taken)
            if self.opts.enumerate_children and not children:  # nothing for the LLM to choose from
                attempt = self._random_operator(ctx.rng, niche, parents, operation or "mutation", taken)
                fallback = {"fallback": "no new child of the parents inside the niche to enumerate"}
            else:
                choices: Sequence[str] | Mapping[str, str] = children
                if self.opts.answer == "change":
                    choices = {self._change_from(parents, child): child for child in children}
                attempt = self._ask(ctx, niche, parents, operation, taken, choices)
            if attempt.failure is not None and self.opts.fallback and not fallback:
                fallback = {"fallback": f"{attempt.failure.kind.value}: {attempt.failure.message[:200]}"}
                chosen = attempt.operation if attempt.operation in OPERATIONS and len(parents) >= 2 else "mutation"
                random_child = self._random_operator(ctx.rng, niche, parents, chosen, taken)
                attempt = Attempt(random_child.architecture, random_child.operation, "", random_child.failure,
                                  attempt.errors, attempt.call_ids)  # fmt: skip
        else:
            attempt = self._random_operator(ctx.rng, niche, parents, operation or "mutation", taken)
        notes = self._notes(
            niche, attempt.operation, rationale=attempt.rationale, attempts=len(attempt.errors) + 1,
            rejected=attempt.errors, **fallback,
        )  # fmt: skip
        parent_ids = tuple(member.id for member in self._closest(attempt.architecture, parents, attempt.operation))
        call_ids = calls + attempt.call_ids
        if attempt.failure is not None:
            return Proposal(architecture=attempt.architecture, parent_ids=parent_ids, notes=notes,
                            failure=attempt.failure, llm_call_ids=call_ids)  # fmt: skip
        return Proposal(architecture=attempt.architecture, parent_ids=parent_ids, notes=notes, llm_call_ids=call_ids)

    def _drawn_operation(self, rng: random.Random, parents: Sequence[Member]) -> str | None:
        """The operation to perform when it is drawn (`operation_choice: random`, or no LLM), else None."""
        if len(parents) < 2:
            return "mutation"
        if self.opts.operation_choice == "llm" and self.opts.llm:
            return None
        return "crossover" if rng.random() < self.opts.crossover_probability else "mutation"

    def _new_children(
        self,
        rng: random.Random,
        niche: Niche,
        parents: Sequence[Member],
        operation: str | None,
        taken: Mapping[str, int],
    ) -> list[str]:
        """Up to `enumerate_children` distinct children of `parents` that pass `validation_error` (legal, new,
        inside the niche): mutations of each parent in turn and, where the operation allows, crossovers of
        two, alternately, in the order `CHILD_DRAWS` random draws produced them. Empty when the option
        is 0."""
        limit = self.opts.enumerate_children
        if not limit:
            return []
        operations = [operation] if operation else [*OPERATIONS] if len(parents) >= 2 else ["mutation"]
        children: dict[str, str] = {}
        for draw in range(CHILD_DRAWS):
            if operations[draw % len(operations)] == "crossover":
                first, second = rng.sample(list(parents), 2)
                child = self.space.crossover(first.architecture, second.architecture, rng)
            else:
                child = self.space.mutate(parents[(draw // len(operations)) % len(parents)].architecture, rng)
            key = self.space.canonical(child)
            if key not in children and self.validation_error(child, niche.name, taken) is None:
                children[key] = child
                if len(children) == limit:
                    break
        return list(children.values())

    @staticmethod
    def _change_from(parents: Sequence[Member], child: str) -> str:
        """`child` named as the smallest change of one of `parents` (`parent 2: position 3: 0 -> 1`),
        parents counted from 1 in the order the prompt lists them."""
        changes = [(describe_change(member.architecture, child), index) for index, member in enumerate(parents, 1)]
        change, index = min(changes, key=lambda pair: (pair[0].count(";"), pair[1]))
        return f"parent {index}: {change}"

    @staticmethod
    def _closest(architecture: str | None, parents: Sequence[Member], operation: str) -> list[Member]:
        """The parents the child most resembles: one for a mutation, two for a crossover."""
        if architecture is None:
            return list(parents[:1])
        count = 2 if operation == "crossover" else 1

        def similarity(member: Member) -> float:
            return difflib.SequenceMatcher(None, member.architecture, architecture).ratio()

        return sorted(parents, key=similarity, reverse=True)[:count]

    # -- validation ---------------------------------------------------------------------------------

    def validation_error(
        self, architecture: str, niche: str, taken: Mapping[str, int]
    ) -> tuple[str, FailureKind] | None:
        """Why `architecture` cannot be this niche's child (message, failure kind), or None when it can."""
        problem = self.space.validate(architecture)
        if problem is not None:
            return f"the architecture is not legal: {problem}", FailureKind.BUILD
        canonical = self.space.canonical(architecture)
        if canonical in taken:
            earlier = taken[canonical]
            which = f"candidate {earlier}" if earlier >= 0 else "another proposal of this generation"
            return f"the architecture is not new: {which} already has it ({canonical}); propose a different one", (
                FailureKind.EXTRACTION
            )
        found = self.partition.niche_of(architecture)
        if found != niche:
            detail = self.partition.explain(architecture)
            return (
                f"the architecture belongs to niche {found}"
                + (f" ({detail})" if detail else "")
                + f", but it must stay in niche {niche}: {self.partition.rules[niche]}",
                FailureKind.BUDGET,
            )
        return None

    # -- the LLM calls ------------------------------------------------------------------------------

    def _update_knowledge(self, ctx: Context, niche: Niche) -> tuple[int, ...]:
        """Stage 1: rewrite the niche's knowledge base from its unreported results; the call's id, if any."""
        from nasloop.prompts.extract import extract_json

        if not niche.recent:
            return ()
        schema = knowledge_schema(self.opts.knowledge_rules, self.opts.rule_chars)
        try:
            reply = ctx.llm.complete(
                "knowledge-base",
                self.knowledge_messages(ctx, niche),
                Sampling(
                    temperature=self.opts.knowledge_temperature,
                    top_p=self.opts.top_p,
                    max_tokens=self.opts.knowledge_max_tokens,
                    response_format=response_format("knowledge_base", schema),
                ),
            )
        except RecoverableLLMError:
            return ()  # the failed call is stored by the engine; the rules stay as they were
        niche.recent = []  # cleared only now: after a fatal LLM error the results wait for the resumed run
        parsed = extract_json(reply.text, schema)
        if not isinstance(parsed, Failure):
            niche.positive = self._rules(parsed["positive"])
            niche.negative = self._rules(parsed["negative"])
        self.knowledge_history.append({"generation": self.generation, "niche": niche.name, **niche.knowledge()})
        return (reply.call_id,)

    def _rules(self, items: Sequence[Any]) -> list[str]:
        rules = [" ".join(str(item).split())[: self.opts.rule_chars] for item in items]
        return [rule for rule in dict.fromkeys(rules) if rule][: self.opts.knowledge_rules]

    def _ask(
        self,
        ctx: Context,
        niche: Niche,
        parents: Sequence[Member],
        operation: str | None,
        taken: Mapping[str, int],
        choices: Sequence[str] | Mapping[str, str] = (),
    ) -> Attempt:
        """Stage 2: ask for a child (one of `choices` when given: architectures, or changes mapped to the
        architectures they make), re-asking `retries` times with the validator's error."""
        errors: list[str] = []
        call_ids: tuple[int, ...] = ()
        for _ in range(self.opts.retries + 1):
            answer, call_id = self._evolution_call(ctx, niche, parents, operation, errors, choices)
            call_ids += call_id
            if isinstance(answer, Failure):
                errors.append(answer.message)
                failure, architecture, chosen, rationale = answer, None, operation or "mutation", ""
                continue
            chosen, rationale, architecture = answer
            problem = self.validation_error(architecture, niche.name, taken)
            if problem is None:
                return Attempt(architecture, chosen, rationale, None, errors, call_ids)
            errors.append(f"{architecture}: {problem[0]}")
            failure = Failure(problem[1], problem[0])
        return Attempt(architecture, chosen, rationale, failure, errors[:-1], call_ids)

    def _evolution_call(
        self,
        ctx: Context,
        niche: Niche,
        parents: Sequence[Member],
        operation: str | None,
        errors: Sequence[str],
        choices: Sequence[str] | Mapping[str, str] = (),
    ) -> tuple[tuple[str, str, str] | Failure, tuple[int, ...]]:
        """One evolution call: (operation, rationale, architecture) or an `extraction` failure; call ids.
        With `choices` a mapping, the answer names one of its changes and gets its architecture."""
        from nasloop.prompts.extract import extract_json

        operations = [operation] if operation else list(OPERATIONS)
        changes = choices if isinstance(choices, Mapping) else {}
        field = "change" if changes else "architecture"
        schema = evolution_schema(
            self.space,
            operations,
            self.opts.rationale_chars,
            constrain_pattern=self.opts.constrain_pattern,
            choices=list(choices),
            field=field,
        )
        try:
            reply = ctx.llm.complete(
                "evolver",
                self.evolution_messages(ctx, niche, parents, operation, errors, changes=list(changes)),
                Sampling(
                    temperature=self.opts.temperature,
                    top_p=self.opts.top_p,
                    max_tokens=self.opts.max_tokens,
                    response_format=response_format("evolution", schema),
                ),
            )
        except RecoverableLLMError as error:
            return Failure(FailureKind.EXTRACTION, f"the LLM call failed: {type(error).__name__}: {error}"), ()
        answer_schema = evolution_schema(
            self.space, operations, self.opts.rationale_chars, constrain_pattern=False, field=field
        )
        parsed = extract_json(reply.text, answer_schema)
        if isinstance(parsed, Failure):
            return parsed, (reply.call_id,)
        rationale = " ".join(str(parsed["rationale"]).split())
        architecture = str(parsed[field]).strip()
        if changes:
            child = chosen_child(architecture, changes)
            if isinstance(child, Failure):
                return child, (reply.call_id,)
            rationale, architecture = f"{rationale} [{architecture}]", child
        return (str(parsed["operation"]), rationale, architecture), (reply.call_id,)

    def _random_operator(
        self, rng: random.Random, niche: Niche, parents: Sequence[Member], operation: str, taken: Mapping[str, int]
    ) -> Attempt:
        """The no-LLM ablation: mutate one parent or cross two, until the child is new and in the niche; a
        random architecture of the niche after `random_tries` draws."""
        for _ in range(self.opts.random_tries):
            if operation == "crossover":
                first, second = rng.sample(list(parents), 2)
                child = self.space.crossover(first.architecture, second.architecture, rng)
            else:
                child = self.space.mutate(rng.choice(list(parents)).architecture, rng)
            if self.validation_error(child, niche.name, taken) is None:
                return Attempt(child, operation, "", None, [], ())
        sample = self._sample_in(niche.name, rng, taken)
        if sample is not None:
            return Attempt(sample, "random", "", None, [], ())
        failure = Failure(FailureKind.BUDGET, f"no new architecture of niche {niche.name} could be found")
        return Attempt(None, operation, "", failure, [], ())

    # -- observations -------------------------------------------------------------------------------

    def observe(self, observations: list[Observation]) -> None:
        for observation in observations:
            proposal, record = observation.proposal, observation.record
            if proposal.architecture is not None:
                self.outstanding.discard(self.space.canonical(proposal.architecture))
            if proposal.final_of is not None:
                self._observe_final(proposal.final_of, record)
                continue
            niche = self.niches.get(str(proposal.notes.get("niche", "")))
            if niche is None:
                continue  # proposed by another strategy or an older layout of niches
            outcome = self._outcome(niche, proposal, record)
            if not self.opts.llm:
                continue  # no knowledge base without an LLM: nothing would read the results
            niche.recent.append(
                {
                    "architecture": record.architecture or "(none)",
                    "operation": str(proposal.notes.get("operation", "")),
                    "rationale": str(proposal.notes.get("rationale", "")),
                    "outcome": outcome,
                }
            )
            niche.recent = niche.recent[-RECENT_RESULTS:]
        self.predictor.fit(self._trained_points())

    def _outcome(self, niche: Niche, proposal: Proposal, record: CandidateRecord) -> str:
        """Add a completed candidate to its niche's archive; the outcome in words for the knowledge update."""
        completed = record.usable
        if not completed or record.architecture is None:
            if record.failure is not None:
                return f"failed ({record.failure.kind.value}): {record.failure.message[:300]}"
            return f"ended as {record.state.value}"
        unscored = self._proxy_failures(record)
        if unscored:
            return f"completed, but without a score: {unscored}"
        member = self._member(niche, proposal, record)
        if record.state is State.DUPLICATE or any(m.architecture == member.architecture for m in niche.members):
            return f"the same network as candidate {record.duplicate_of or 'evaluated before'}"
        niche.members.append(member)
        values = self._describe_values(member) or "objective values missing"
        broken = violations(self.constraints, {**member.metrics, **(self.values(member) or {})})
        if broken:
            return f"{values}; infeasible: {'; '.join(broken)}"
        on_front = any(m.id == member.id for m in self.front(niche.name))
        return f"{values}; {'joined the Pareto front of the niche' if on_front else 'dominated in the niche'}"

    def _proxy_failures(self, record: CandidateRecord) -> str:
        """The evaluator's errors for the needed metrics it could not give for this network (a NASWOT
        kernel that is singular; a device latency the benchmark's table lacks for the cell): such a
        candidate stays out of the archive, failed on that objective. Empty if none."""
        errors = {**(record.info.get("proxy_errors") or {}), **(record.info.get("missing_metrics") or {})}
        missing = [name for name in self._needed_metrics() if name not in record.metrics and name in errors]
        return "; ".join(f"{name}: {str(errors[name])[:200]}" for name in missing)

    def _member(self, niche: Niche, proposal: Proposal, record: CandidateRecord) -> Member:
        """The archive entry of a completed candidate, with the latency looked up when a table is given."""
        assert record.architecture is not None
        needed = self._needed_metrics()
        metrics = {name: float(record.metrics[name]) for name in needed if name in record.metrics}
        if self.opts.accuracy_metric in record.metrics:
            metrics[self.opts.accuracy_metric] = float(record.metrics[self.opts.accuracy_metric])
        if self.latency_table is not None:
            latency = self.latency_table.get(record.architecture)
            if latency is not None:
                metrics[self.opts.latency_metric] = latency
            elif self.opts.latency_missing == "error":
                self.latency_table.latency_ms(record.architecture)  # raises LatencyNotFound with the details
        missing = [name for name in needed if name not in metrics]
        if missing:
            raise MissingObjectiveError(
                f"niche-pareto needs {', '.join(missing)} but candidate {record.id} completed without "
                f"(its metrics: {', '.join(sorted(record.metrics)) or 'none'}). Evaluate with "
                f"`stages: [static, build, hardware, zero-cost]` and `proxies: [{', '.join(self.predictor.inputs)}]`"
                f" (or give a latency_table)."
            )
        operation, rationale = str(proposal.notes.get("operation", "initial")), str(proposal.notes.get("rationale", ""))
        return Member(record.id, self.space.canonical(record.architecture), niche.name, metrics, operation, rationale)

    def _needed_metrics(self) -> list[str]:
        """The metrics a member must carry: the predictor's inputs and the other objectives' metrics."""
        needed: list[str] = []
        for objective in self.objectives:
            if objective.metric == self.opts.accuracy_metric:
                needed.extend(self.predictor.inputs)
            else:
                needed.append(objective.metric)
        needed.extend(c.metric for c in self.constraints if c.metric != self.opts.accuracy_metric)
        return list(dict.fromkeys(needed))

    def _observe_final(self, member_id: int, record: CandidateRecord) -> None:
        accuracy = record.metrics.get(self.opts.accuracy_metric)
        if record.state is State.COMPLETE and accuracy is not None:
            self.trained[member_id] = float(accuracy)

    def _trained_points(self) -> list[dict[str, float]]:
        """Metrics of every member with a trained accuracy (trained during the search or as a finalist)."""
        points = []
        for niche in self.niches.values():
            for member in niche.members:
                metrics = dict(member.metrics)
                if member.id in self.trained:
                    metrics[self.opts.accuracy_metric] = self.trained[member.id]
                if self.opts.accuracy_metric in metrics:
                    points.append(metrics)
        return points

    # -- the end of the search ----------------------------------------------------------------------

    def finalize(self, ctx: Context) -> list[Proposal]:
        """Train the union front (best predicted accuracy first) when `train_front` is set, once each."""
        if not self.opts.train_front:
            return []
        done = {record.parent for record in ctx.history if record.purpose is Purpose.FINAL}
        accuracy = next((o for o in self.objectives if o.metric == self.opts.accuracy_metric), None)
        front = self.union_front()
        if accuracy is not None:
            front.sort(key=lambda member: accuracy.minimised((self.values(member) or {})[accuracy.metric]))
        trained = done | set(self.trained)
        chosen = [m for m in front if m.id not in trained and self.opts.accuracy_metric not in m.metrics]
        return [
            Proposal(
                architecture=member.architecture,
                parent_ids=(member.id,),
                notes={"operator": "final", "niche": member.niche},
                stages=self.opts.final_stages,
                purpose=Purpose.FINAL,
                parent=member.id,
            )
            for member in chosen[: self.opts.final_max]
        ]

    # -- state --------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "step": self.step,
            "niches": {name: niche.to_dict() for name, niche in self.niches.items()},
            "knowledge_history": list(self.knowledge_history),
            "trained": {str(key): value for key, value in self.trained.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generation = int(state.get("generation", 0))
        self.step = int(state.get("step", 0))
        self.outstanding = set()
        saved = state.get("niches") or {}
        self.niches = {name: Niche.from_dict(name, saved.get(name) or {}) for name in self.partition.names}
        self.knowledge_history = [dict(entry) for entry in state.get("knowledge_history") or []]
        self.trained = {int(key): float(value) for key, value in (state.get("trained") or {}).items()}
        self.predictor.fit(self._trained_points())

    def artifacts(self) -> dict[str, str]:
        """The latest knowledge bases and the union front as JSON texts, named by generation, for a run
        store (`knowledge_base/generation-NNN`, `pareto/generation-NNN`)."""
        generation = f"generation-{self.generation:03d}"
        knowledge = {name: niche.knowledge() for name, niche in self.niches.items()}
        front = [
            {"id": m.id, "niche": m.niche, "architecture": m.architecture, **(self.values(m) or {})}
            for m in self.union_front()
        ]
        return {
            f"knowledge_base/{generation}": json.dumps(knowledge, indent=1),
            f"pareto/{generation}": json.dumps(front, indent=1),
        }


__all__ = ["NichePareto"]
