"""The niche-pareto strategy (LLM-NAS) on its own: niches, archives, fronts, predictor, validator, prompts,
ablations and state, driven through `propose`/`observe` with a scripted LLM."""

import json
import math
import random
import re

import pytest
from pydantic import ValidationError

from nasloop.candidate import Failure, FailureKind, Proposal, Purpose, State
from nasloop.hardware.lookup import LatencyNotFound
from nasloop.llm.scripted import ScriptedBackend
from nasloop.objectives import pareto_front
from nasloop.prompts import render
from nasloop.spaces import nb201
from nasloop.spaces.macro import MacroSpace
from nasloop.spaces.nb201 import NB201Space, neighbors
from nasloop.store.sqlite import CandidateRecord
from nasloop.strategies.base import Context, Observation, Reply, Task
from nasloop.strategies.niche_pareto import (
    AccuracyPredictor,
    Member,
    NichePareto,
    NicheParetoOptions,
    signed_log,
)

TASK = Task("digits", (1, 8, 8), 10)


SPACE = NB201Space()
ONE_CONV = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|skip_connect~0|skip_connect~1|none~2|"
TWO_CONV = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
FOUR_CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|none~1|skip_connect~2|"


class ScriptedLLM:
    """The LLM as a strategy sees it, over the real scripted backend: records roles and requests."""

    def __init__(self, answers=None, cycle=False):
        self.backend = ScriptedBackend(answers=answers if answers is not None else [], cycle=cycle)
        self.roles: list[str] = []

    def complete(self, role, messages, sampling):
        self.roles.append(role)
        return Reply(self.backend.complete(messages, sampling), call_id=len(self.roles))

    @property
    def calls(self):
        return self.backend.calls


def context(llm=None, history=(), seed=0) -> Context:
    return Context(llm=llm or ScriptedLLM(), history=tuple(history), rng=random.Random(seed), iteration=0,
                   task=TASK, render=render, space=SPACE)  # fmt: skip


def strategy(**options) -> NichePareto:
    return NichePareto(NicheParetoOptions(**options), TASK, space=SPACE)


def record(candidate_id, architecture, metrics=None, state=State.COMPLETE, **fields) -> CandidateRecord:
    return CandidateRecord(
        id=candidate_id, iteration=candidate_id, state=state, architecture=architecture, space="nb201",
        hash=f"hash-{candidate_id}", metrics=dict(metrics or {}), **fields,
    )  # fmt: skip


def observe(strategy, proposal, candidate_id, metrics, **fields) -> CandidateRecord:
    stored = record(candidate_id, proposal.architecture, metrics, **fields)
    strategy.observe([Observation(proposal, stored)])
    return stored


def metrics_of(architecture: str) -> dict[str, float]:
    """Deterministic stand-in measurements: more convolutions, higher naswot and latency."""
    counts = SPACE.canonical(architecture).count("conv_3x3"), SPACE.canonical(architecture).count("conv_1x1")
    return {"naswot": 100.0 + 10 * counts[0] + 3 * counts[1], "latency_ms": 1.0 + 2 * counts[0] + counts[1]}


def turns(strategy, llm=None, history=(), count=None, seed=0) -> list[Proposal]:
    """`count` proposals, one `propose` call each (default: one generation after generation 0)."""
    count = len(strategy.niches) if count is None else count
    return [strategy.propose(context(llm, history, seed=seed + turn))[0] for turn in range(count)]


def seeded(strategy, seed=0) -> list[CandidateRecord]:
    """Propose and observe generation 0 (the random initial population); the stored records."""
    history = []
    count = len(strategy.niches) * strategy._initial_count()
    for candidate_id, proposal in enumerate(turns(strategy, count=count, seed=seed), start=1):
        history.append(observe(strategy, proposal, candidate_id, metrics_of(proposal.architecture)))
    return history


def knowledge_answer(positive=("Keep a nor_conv_3x3 on the edge 0 -> 1.",), negative=()):
    return json.dumps({"positive": list(positive), "negative": list(negative)})


def evolution_answer(architecture, operation="mutation", rationale="A cheaper edge keeps the accuracy."):
    return json.dumps({"operation": operation, "rationale": rationale, "architecture": architecture})


def evaluated(history) -> set[str]:
    return {SPACE.canonical(record.architecture) for record in history}


def neighbour_in_niche(architecture, niche, taken=()):
    return next(
        other
        for other in neighbors(architecture)
        if SPACE.niche(SPACE.canonical(other)) == niche and SPACE.canonical(other) not in taken
    )


# ----------------------------------------------------------------------------------------------------
# Niches
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("architecture", "niche"),
    [
        ("|skip_connect~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|none~1|avg_pool_3x3~2|", "conv3x3=0,conv1x1=0"),
        ("|nor_conv_1x1~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|skip_connect~1|none~2|", "conv3x3=0,conv1x1>=1"),
        (ONE_CONV, "conv3x3=1"),
        (TWO_CONV, "conv3x3=2"),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|nor_conv_3x3~0|none~1|skip_connect~2|", "conv3x3=3"),
        (FOUR_CONV, "conv3x3>=4"),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
         "conv3x3>=4"),
        # the convolution on 0 -> 1 is dead (node 1 feeds nothing): a network without any convolution
        ("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|skip_connect~0|none~1|skip_connect~2|", "conv3x3=0,conv1x1=0"),
    ],
)  # fmt: skip
def test_nb201_niches_count_the_live_3x3_convolutions(architecture, niche):
    assert strategy().partition.niche_of(architecture) == niche


def test_cost_bins_partition_by_analytic_parameters():
    binned = strategy(niche_by="params", niche_bounds=(200_000, 500_000))
    assert binned.partition.names == ("params<200,000", "params 200,000-500,000", "params>=500,000")
    for architecture in (ONE_CONV, TWO_CONV, FOUR_CONV):
        params = SPACE.cost(architecture, TASK.in_shape, TASK.num_classes).params
        expected = 0 if params < 200_000 else 1 if params < 500_000 else 2
        assert binned.partition.niche_of(architecture) == binned.partition.names[expected]
    assert "analytic count on 1x8x8 inputs" in binned.partition.rules["params<200,000"]


def test_the_macro_space_is_searched_in_its_own_niches_without_an_llm():
    macro = MacroSpace(in_shape=TASK.in_shape, num_classes=TASK.num_classes)
    subject = NichePareto(NicheParetoOptions(initial_per_niche=1, llm=False), TASK, space=macro)
    assert subject.partition.names == macro.niches()
    history, operations = [], []
    for turn in range(2 * len(macro.niches())):  # generation 0, then one child per niche
        ctx = Context(llm=ScriptedLLM(), history=tuple(history), rng=random.Random(turn), iteration=turn,
                      task=TASK, render=render, space=macro)  # fmt: skip
        (proposal,) = subject.propose(ctx)
        assert proposal.failure is None and macro.validate(proposal.architecture) is None
        assert macro.niche(macro.canonical(proposal.architecture)) == proposal.notes["niche"]
        cost = macro.cost(proposal.architecture, TASK.in_shape, TASK.num_classes)
        metrics = {"naswot": 100.0 + turn, "latency_ms": cost.flops / 1e6}
        history.append(observe(subject, proposal, turn + 1, metrics))
        operations.append(proposal.notes["operation"])
    assert operations[: len(macro.niches())] == ["initial"] * len(macro.niches())
    assert set(operations[len(macro.niches()) :]) <= {"mutation", "crossover", "random"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"niche_by": "flops"}, "niche_bounds in increasing order"),
        ({"niche_by": "params", "niche_bounds": (5e5, 2e5)}, "niche_bounds in increasing order"),
        ({"latency_table": "table.csv"}, "go together"),
        ({"final_stages": ("train", "fit")}, r"unknown evaluation stage .fit."),
        ({"surprise": 1}, "Extra inputs"),
    ],
)
def test_invalid_options_are_errors(options, message):
    with pytest.raises(ValidationError, match=message):
        NicheParetoOptions(**options)


def test_an_unknown_predictor_proxy_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="regression"):
        strategy(predictor="accuracy-oracle")


# ----------------------------------------------------------------------------------------------------
# Initial population, archives and fronts
# ----------------------------------------------------------------------------------------------------


def test_initial_population_is_random_inside_every_niche_without_the_llm():
    subject = strategy(initial_per_niche=3)
    llm = ScriptedLLM()  # no answers: any call would fail
    proposals = turns(subject, llm, count=18)
    assert len(proposals) == 18 and not llm.roles
    for proposal in proposals:
        assert subject.partition.niche_of(proposal.architecture) == proposal.notes["niche"]
        assert proposal.notes["operation"] == "initial" and proposal.notes["generation"] == 0
    assert len({SPACE.canonical(p.architecture) for p in proposals}) == 18
    assert [p.notes["niche"] for p in proposals[::3]] == list(SPACE.niches())


def test_a_niche_the_sampler_cannot_reach_fails_once_and_is_skipped_afterwards():
    subject = strategy(sample_tries=5)  # five draws: the rarer niches are missed
    proposals = turns(subject, count=12)
    failed = [p for p in proposals if p.failure is not None]
    assert failed and all(p.failure.kind is FailureKind.BUDGET for p in failed)
    for proposal in failed:
        niche = proposal.notes["niche"]
        assert subject.niches[niche].unreachable and "skipped from now on" in proposal.failure.message
        later = proposals[proposals.index(proposal) + 1 :]
        assert all(p.notes["niche"] != niche for p in later)
    assert any(p.failure is None for p in proposals)
    with pytest.raises(RuntimeError, match="no niche has an architecture left"):
        turns(strategy(sample_tries=1), count=13)  # one draw each: in the end every niche is retired


def test_completed_candidates_join_their_niche_archive_and_each_niche_has_its_own_front():
    subject = strategy()
    seeded(subject)
    for name, niche in subject.niches.items():
        assert len(niche.members) == 2
        assert all(subject.partition.niche_of(member.architecture) == name for member in niche.members)
        front = subject.front(name)
        points = [subject.values(member) for member in niche.members]
        assert [m.id for m in front] == [niche.members[i].id for i in pareto_front(points, subject.objectives)]
        assert len(niche.recent) == 2 and "val_acc = " in niche.recent[0]["outcome"]


def test_failures_and_duplicates_stay_out_of_the_archive_but_reach_the_next_update():
    subject = strategy()
    proposals = turns(subject, count=2)
    observe(subject, proposals[0], 1, metrics_of(proposals[0].architecture))
    failed = record(2, proposals[1].architecture, state=State.FAILED)
    failed.failure = Failure(FailureKind.OOM, "out of memory")
    subject.observe([Observation(proposals[1], failed)])
    duplicate = record(3, proposals[0].architecture, metrics_of(proposals[0].architecture), state=State.DUPLICATE,
                       duplicate_of=1)  # fmt: skip
    subject.observe([Observation(proposals[0], duplicate)])
    niche = subject.niches[proposals[0].notes["niche"]]
    assert [member.id for member in niche.members] == [1]
    outcomes = [result["outcome"] for result in niche.recent]
    assert outcomes[1].startswith("failed (oom): out of memory") and "same network as candidate 1" in outcomes[2]


def test_union_front_is_the_non_dominated_union_of_the_niche_fronts():
    subject = strategy()
    values = {  # niche -> [(naswot, latency)]
        "conv3x3=1": [(100.0, 1.0), (90.0, 2.0)],  # (90, 2) is dominated in its niche
        "conv3x3=2": [(120.0, 3.0), (110.0, 1.5)],
        "conv3x3>=4": [(115.0, 5.0), (130.0, 6.0)],  # (115, 5) is on its niche's front only
    }
    candidate_id = 0
    for name, points in values.items():
        for naswot, latency in points:
            candidate_id += 1
            architecture = subject._sample_in(name, random.Random(candidate_id), {})
            subject.niches[name].members.append(
                Member(candidate_id, SPACE.canonical(architecture), name, {"naswot": naswot, "latency_ms": latency})
            )
    assert [m.id for m in subject.front("conv3x3>=4")] == [5, 6]
    union = subject.union_front()
    assert sorted((m.metrics["naswot"], m.metrics["latency_ms"]) for m in union) == [
        (100.0, 1.0), (110.0, 1.5), (120.0, 3.0), (130.0, 6.0)
    ]  # fmt: skip


def test_constraints_make_members_infeasible_parents_and_front_members_never():
    subject = strategy(constraints=("latency_ms<=4",))
    seeded(subject)
    heavy = subject.niches["conv3x3>=4"]  # latency 1 + 2 * (>= 4) > 4 for every member
    assert heavy.members and subject.front("conv3x3>=4") == []
    assert "infeasible: latency_ms" in heavy.recent[0]["outcome"]
    assert all(m.metrics["latency_ms"] <= 4 for m in subject.union_front())


def test_objectives_come_from_the_options_then_the_run():
    assert [str(o) for o in strategy().objectives] == ["val_acc:max", "latency_ms:min"]
    custom = strategy(objectives=("val_acc:max", "params:min"))
    assert [str(o) for o in custom.objectives] == ["val_acc:max", "params:min"]
    proposal = Proposal(architecture=ONE_CONV, notes={"niche": "conv3x3=1", "operation": "initial"})
    observe(custom, proposal, 1, {"naswot": 300.0, "params": 5e4})  # no latency needed
    assert custom.values(custom.niches["conv3x3=1"].members[0]) == {"val_acc": 300.0, "params": 5e4}
    task = Task("digits", (1, 8, 8), 10, objectives=("val_acc:max", "flops:min"))
    from_run = NichePareto(NicheParetoOptions(), task, space=SPACE)
    assert [str(o) for o in from_run.objectives] == ["val_acc:max", "flops:min"]


def test_a_network_whose_proxy_could_not_be_computed_stays_out_of_the_archive():
    subject = strategy()
    proposal = subject.propose(context())[0]
    error = "naswot: the activation-code kernel is singular: some inputs share an activation pattern"
    observe(subject, proposal, 1, {"latency_ms": 0.5}, info={"proxy_errors": {"naswot": error}})
    niche = subject.niches[proposal.notes["niche"]]
    assert niche.members == [] and "without a score: naswot: naswot: the activation-code" in niche.recent[0]["outcome"]


def test_a_completed_candidate_without_the_predictor_proxy_stops_the_run_with_advice():
    subject = strategy()
    proposal = subject.propose(context())[0]
    with pytest.raises(ValueError, match=r"zero-cost\]` and `proxies: \[naswot\]"):
        observe(subject, proposal, 1, {"latency_ms": 3.0})


# ----------------------------------------------------------------------------------------------------
# The accuracy predictor
# ----------------------------------------------------------------------------------------------------


def test_regression_predictor_fits_the_trained_candidates_and_falls_back_before():
    predictor = AccuracyPredictor("regression", "val_acc", ("synflow", "naswot"), min_points=5, ridge=0.0)
    rng = random.Random(0)
    trained = []
    for _ in range(8):
        synflow, naswot = 10 ** rng.uniform(5, 30), rng.uniform(100, 900)
        accuracy = 0.3 + 0.01 * signed_log(synflow) + 0.05 * signed_log(naswot)
        trained.append({"synflow": synflow, "naswot": naswot, "val_acc": accuracy})
    predictor.fit(trained[:4])
    assert not predictor.fitted and predictor.predict(trained[5]) == trained[5]["synflow"]  # the first proxy
    predictor.fit(trained[:6])
    assert predictor.fitted and predictor.points == 6
    for point in trained[6:]:  # unseen points of the same linear law are predicted exactly (no ridge)
        assert predictor.predict(point) == pytest.approx(point["val_acc"], abs=1e-9)
    assert predictor.predict({"synflow": 1e10}) is None  # a missing proxy: no prediction


def test_ridge_shrinks_the_regression_towards_the_mean():
    points = [{"naswot": float(x), "val_acc": 0.5 + 0.1 * math.log1p(x)} for x in (10, 100, 1000, 10_000, 100_000)]
    plain = AccuracyPredictor("regression", "val_acc", ("naswot",), min_points=5, ridge=0.0)
    shrunk = AccuracyPredictor("regression", "val_acc", ("naswot",), min_points=5, ridge=10.0)
    plain.fit(points)
    shrunk.fit(points)
    mean = sum(p["val_acc"] for p in points) / len(points)
    assert abs(shrunk.predict(points[-1]) - mean) < abs(plain.predict(points[-1]) - mean)


def test_finalist_accuracy_feeds_the_regression_and_the_front_is_trained_once():
    subject = strategy(predictor="regression", regression_proxies=("naswot",), regression_min_points=2,
                       train_front=True, final_max=3)  # fmt: skip
    history = seeded(subject)
    finals = subject.finalize(context(history=history))
    assert 1 <= len(finals) <= 3 and {p.final_of for p in finals} <= {m.id for m in subject.union_front()}
    assert all(p.stages == ("static", "build", "train") and p.parent_ids == (p.final_of,) for p in finals)
    next_id = len(history) + 1
    for offset, proposal in enumerate(finals):
        trained = record(next_id + offset, proposal.architecture, {"val_acc": 0.8 + offset / 100},
                         purpose=Purpose.FINAL, parent=proposal.final_of)  # fmt: skip
        subject.observe([Observation(proposal, trained)])
        history.append(trained)
    assert subject.trained == {p.final_of: 0.8 + i / 100 for i, p in enumerate(finals)}
    assert subject.predictor.points == len(finals) and subject.predictor.fitted == (len(finals) >= 2)
    again = subject.finalize(context(history=history))
    assert not {p.final_of for p in again} & set(subject.trained)  # each finalist is trained once


# ----------------------------------------------------------------------------------------------------
# The LLM stages: knowledge base and guided evolution
# ----------------------------------------------------------------------------------------------------


def answer_for_each_niche(subject, history, wrong=None):
    """Knowledge then evolution answers for generation 1, the child a new neighbour inside each niche."""
    taken = evaluated(history)
    answers = []
    for name in subject.niches:
        parent = subject.front(name)[0].architecture
        child = neighbour_in_niche(parent, name, taken)
        taken.add(SPACE.canonical(child))
        answers += [knowledge_answer((f"Rule for {name}.",)), evolution_answer(child)]
    return answers


def test_generation_updates_each_niche_knowledge_from_last_round_then_asks_for_one_child():
    subject = strategy()
    history = seeded(subject)
    llm = ScriptedLLM(answer_for_each_niche(subject, history))
    proposals = turns(subject, llm, history)
    assert llm.roles == ["knowledge-base", "evolver"] * 6 and len(proposals) == 6
    first_knowledge_prompt = llm.calls[0].messages[-1]["content"]
    for result in history[:2]:  # the first niche's initial results, with their outcome
        assert result.architecture in first_knowledge_prompt
    assert "joined the Pareto front of the niche" in first_knowledge_prompt
    evolution_prompt = llm.calls[1].messages[-1]["content"]
    assert "Rule for conv3x3=0,conv1x1=0." in evolution_prompt and "## Pareto parents" in evolution_prompt
    for proposal, name in zip(proposals, subject.niches, strict=True):
        assert proposal.notes["niche"] == name and proposal.notes["knowledge"]["positive"] == [f"Rule for {name}."]
        assert proposal.notes["operation"] == "mutation" and proposal.notes["rationale"].startswith("A cheaper edge")
        assert proposal.parent_ids and proposal.llm_call_ids and proposal.failure is None
    assert [entry["niche"] for entry in subject.knowledge_history] == list(subject.niches)
    assert all(not niche.recent for niche in subject.niches.values())


def test_the_answers_are_schema_constrained():
    subject = strategy()
    history = seeded(subject)
    llm = ScriptedLLM(answer_for_each_niche(subject, history))
    subject.propose(context(llm, history))
    knowledge_schema = llm.calls[0].response_format["json_schema"]["schema"]
    assert knowledge_schema["properties"]["positive"]["maxItems"] == 4
    evolution_schema = llm.calls[1].response_format["json_schema"]["schema"]
    assert evolution_schema["properties"]["operation"]["enum"] == ["mutation", "crossover"]
    assert evolution_schema["required"] == ["operation", "rationale", "architecture"]
    assert "(?:" not in evolution_schema["properties"]["architecture"]["pattern"]  # llama.cpp grammar form


def test_a_drawn_operation_is_fixed_by_the_schema_and_the_prompt():
    subject = strategy(operation_choice="random", crossover_probability=1.0)
    history = seeded(subject)
    answers = [json.loads(answer) for answer in answer_for_each_niche(subject, history)]
    for answer in answers[1::2]:
        answer["operation"] = "crossover"
    llm = ScriptedLLM([json.dumps(answer) for answer in answers])
    subject.propose(context(llm, history))
    assert llm.calls[1].response_format["json_schema"]["schema"]["properties"]["operation"]["enum"] == ["crossover"]
    assert "Perform a crossover" in llm.calls[1].messages[-1]["content"]


def test_validator_names_illegal_repeated_and_out_of_niche_architectures():
    subject = strategy()
    illegal = subject.validation_error("|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "conv3x3=1", {})
    assert illegal[1] is FailureKind.BUILD and "nor_conv_5x5" in illegal[0]
    repeated = subject.validation_error(ONE_CONV, "conv3x3=1", {SPACE.canonical(ONE_CONV): 7})
    assert repeated[1] is FailureKind.EXTRACTION and "candidate 7 already has it" in repeated[0]
    outside = subject.validation_error(TWO_CONV, "conv3x3=1", {})
    assert outside[1] is FailureKind.BUDGET
    assert "belongs to niche conv3x3=2 (2 nor_conv_3x3 and 0 nor_conv_1x1 live edges)" in outside[0]
    assert "must stay in niche conv3x3=1: exactly 1 nor_conv_3x3 edge" in outside[0]
    assert subject.validation_error(ONE_CONV, "conv3x3=1", {}) is None


def only_first_niche(subject) -> None:
    """Leave one reachable niche, so a test scripts the answers of a single niche."""
    for niche in list(subject.niches.values())[1:]:
        niche.unreachable = True


def test_a_rejected_answer_is_retried_with_the_error_then_recorded_as_failed():
    subject = strategy(fallback=False)
    history = seeded(subject)
    only_first_niche(subject)
    first = "conv3x3=0,conv1x1=0"
    parent = subject.front(first)[0].architecture
    llm = ScriptedLLM([knowledge_answer(), evolution_answer(TWO_CONV), evolution_answer(parent)])
    (proposal,) = subject.propose(context(llm, history))
    assert llm.roles == ["knowledge-base", "evolver", "evolver"]
    retry_prompt = llm.calls[2].messages[-1]["content"]
    assert "## Rejected earlier answers" in retry_prompt and "must stay in niche conv3x3=0,conv1x1=0" in retry_prompt
    assert proposal.failure.kind is FailureKind.EXTRACTION and "is not new" in proposal.failure.message
    assert proposal.architecture == parent and proposal.notes["attempts"] == 2
    assert "belongs to niche conv3x3=2" in proposal.notes["rejected"][0]
    assert proposal.llm_call_ids == (1, 2, 3)
    failed = record(len(history) + 1, proposal.architecture, state=State.FAILED, failure=proposal.failure)
    failed.hash = None  # the engine never renders a failed proposal
    subject.observe([Observation(proposal, failed)])
    assert subject.niches[first].recent[-1]["outcome"].startswith("failed (extraction): the architecture is not new")


def test_a_retry_can_succeed_and_an_answer_outside_the_schema_counts_as_rejected():
    subject = strategy()
    history = seeded(subject)
    only_first_niche(subject)
    first = "conv3x3=0,conv1x1=0"
    child = neighbour_in_niche(subject.front(first)[0].architecture, first, evaluated(history))
    llm = ScriptedLLM([knowledge_answer(), evolution_answer(child, operation="swap"), evolution_answer(child)])
    (proposal,) = subject.propose(context(llm, history))
    assert proposal.failure is None and proposal.architecture == child and proposal.notes["attempts"] == 2
    assert "InvalidStructuredResponse" in proposal.notes["rejected"][0]


def test_retries_exhausted_on_an_illegal_architecture_is_a_build_failure():
    subject = strategy(constrain_pattern=False, retries=0, fallback=False)
    history = seeded(subject)
    only_first_niche(subject)
    llm = ScriptedLLM([knowledge_answer(), evolution_answer("|conv~0|+|none~0|")])
    (proposal,) = subject.propose(context(llm, history))
    assert proposal.failure.kind is FailureKind.BUILD and proposal.notes["attempts"] == 1


def test_with_fallback_a_rejected_answer_becomes_a_random_child_inside_the_niche():
    subject = strategy()
    history = seeded(subject)
    only_first_niche(subject)
    first = "conv3x3=0,conv1x1=0"
    parent = subject.front(first)[0].architecture
    llm = ScriptedLLM([knowledge_answer(), evolution_answer(TWO_CONV), evolution_answer(parent)])
    (proposal,) = subject.propose(context(llm, history))
    assert proposal.failure is None and proposal.notes["fallback"].startswith("extraction: ")
    assert subject.partition.niche_of(proposal.architecture) == first
    assert subject.space.canonical(proposal.architecture) not in evaluated(history)
    assert proposal.notes["attempts"] == 2 and proposal.llm_call_ids == (1, 2, 3)


class EnumPickingLLM(ScriptedLLM):
    """Answers every knowledge call with a rule and every evolution call with the last architecture (or
    change) its schema enumerates, as constrained decoding would have to (the scripted backend checks the
    schema)."""

    def __init__(self):
        super().__init__(answers=lambda messages: self.answer)
        self.answer = ""

    def complete(self, role, messages, sampling):
        if role == "knowledge-base":
            self.answer = knowledge_answer()
        else:
            properties = sampling.response_format["json_schema"]["schema"]["properties"]
            field = "change" if "change" in properties else "architecture"
            self.answer = json.dumps({"operation": "mutation", "rationale": "the last one",
                                      field: properties[field]["enum"][-1]})  # fmt: skip
        return super().complete(role, messages, sampling)


def enumerated_generation(**options):
    """A strategy with `options` after generation 0 and one generation answered by `EnumPickingLLM`:
    (strategy, architectures evaluated before, the LLM, the generation's proposals)."""
    subject = strategy(enumerate_children=8, **options)
    history = seeded(subject)
    taken = evaluated(history)
    llm = EnumPickingLLM()
    proposals = turns(subject, llm, history)
    assert llm.roles == ["knowledge-base", "evolver"] * 6
    return subject, taken, llm, proposals


def test_enumerated_children_are_new_legal_and_inside_the_niche_and_the_answer_is_one_of_them():
    subject, taken, llm, proposals = enumerated_generation()
    for call, proposal, name in zip(llm.calls[1::2], proposals, subject.niches, strict=True):
        choices = call.response_format["json_schema"]["schema"]["properties"]["architecture"]["enum"]
        assert 1 <= len(choices) <= 8 and len({SPACE.canonical(choice) for choice in choices}) == len(choices)
        for choice in choices:
            assert SPACE.validate(choice) is None and subject.partition.niche_of(choice) == name
            assert SPACE.canonical(choice) not in taken
        assert proposal.failure is None and proposal.architecture == choices[-1] and "fallback" not in proposal.notes
        assert proposal.notes["attempts"] == 1


def test_enumerated_mutations_of_an_exhausted_neighbourhood_skip_the_evolution_call():
    subject = strategy(enumerate_children=8, operation_choice="random", crossover_probability=0.0)
    history = seeded(subject)
    only_first_niche(subject)
    first = "conv3x3=0,conv1x1=0"
    for member in subject.niches[first].members:  # every mutation of every member is taken
        subject.outstanding.update(SPACE.canonical(other) for other in neighbors(member.architecture))
    blocked = evaluated(history) | subject.outstanding
    llm = EnumPickingLLM()
    (proposal,) = subject.propose(context(llm, history))
    assert llm.roles == ["knowledge-base"]
    assert proposal.failure is None and proposal.notes["fallback"].startswith("no new child of the parents")
    assert subject.partition.niche_of(proposal.architecture) == first
    assert SPACE.canonical(proposal.architecture) not in blocked


def made_by(parent: str, change: str) -> str:
    """The NB201 cell that `position N: old -> new; ...` makes of `parent` (independent of the strategy)."""
    edges = list(nb201.parse(parent))
    for position, old, new in re.findall(r"position (\d): (\S+) -> ([^;\s]+)", change):
        assert old.startswith(f"{edges[int(position) - 1]}~")
        edges[int(position) - 1] = new.split("~")[0]
    return nb201.to_string(tuple(edges))


def test_a_change_answer_names_a_listed_change_of_a_numbered_parent_and_gets_that_child():
    subject, taken, llm, proposals = enumerated_generation(answer="change")
    for call, proposal, name in zip(llm.calls[1::2], proposals, subject.niches, strict=True):
        properties = call.response_format["json_schema"]["schema"]["properties"]
        changes = properties["change"]["enum"]
        assert "architecture" not in properties and 1 <= len(changes) <= 8
        prompt = call.messages[-1]["content"]
        parents = re.findall(r"^\d+\. (\S+):", prompt, re.MULTILINE)
        assert all(f"- {change}\n" in prompt for change in changes) and '"change": "<one line' in prompt
        number, change = re.fullmatch(r"parent (\d+): (.+)", changes[-1]).groups()
        assert proposal.failure is None and proposal.architecture == made_by(parents[int(number) - 1], change)
        assert subject.partition.niche_of(proposal.architecture) == name
        assert SPACE.canonical(proposal.architecture) not in taken and proposal.notes["rationale"].endswith(
            f"[{changes[-1]}]"
        )


def test_a_change_answer_needs_enumerated_children():
    with pytest.raises(ValidationError, match=r"answer: change .* set enumerate_children above 0"):
        NicheParetoOptions(answer="change")


# ----------------------------------------------------------------------------------------------------
# Ablations, hardware target and state
# ----------------------------------------------------------------------------------------------------


def test_no_llm_variant_mutates_and_crosses_pareto_parents_inside_the_niche():
    subject = strategy(llm=False, crossover_probability=0.5)
    assert subject.uses_llm is False and NichePareto.uses_llm is True  # per instance
    history = seeded(subject)
    llm = ScriptedLLM()  # no answers: any call would fail
    operations = []
    for generation in range(3):
        for turn in range(len(subject.niches)):
            proposal = subject.propose(context(llm, history, seed=10 * generation + turn))[0]
            assert proposal.failure is None and proposal.parent_ids
            assert subject.partition.niche_of(proposal.architecture) == proposal.notes["niche"]
            operations.append(proposal.notes["operation"])
            history.append(observe(subject, proposal, len(history) + 1, metrics_of(proposal.architecture)))
    assert not llm.roles and {"mutation", "crossover"} <= set(operations)
    assert len(evaluated(history)) == len(history)  # every child is new
    assert all(not niche.recent for niche in subject.niches.values())


def test_no_partition_variant_is_one_niche_with_the_same_initial_budget():
    subject = strategy(partition=False, initial_per_niche=2)
    assert list(subject.niches) == ["all"]
    history = seeded(subject)
    assert len(history) == 12 and len(subject.niches["all"].members) == 12
    parent = subject.front("all")[0].architecture
    child = neighbour_in_niche(parent, SPACE.niche(SPACE.canonical(parent)), evaluated(history))
    llm = ScriptedLLM([knowledge_answer(), evolution_answer(child)])
    (proposal,) = subject.propose(context(llm, history))
    assert proposal.architecture == child
    assert "stay in this niche: any architecture" in llm.calls[1].messages[-1]["content"]
    assert "complexity niches" not in llm.calls[1].messages[0]["content"]


def test_latency_table_replaces_the_measured_latency(tmp_path):
    table = tmp_path / "latency.csv"
    table.write_text(f"arch,edgegpu\n{ONE_CONV},7.5\n")
    subject = strategy(latency_table=str(table), latency_device="edgegpu")
    proposal = Proposal(architecture=ONE_CONV, notes={"niche": "conv3x3=1", "operation": "initial"})
    observe(subject, proposal, 1, {"naswot": 300.0})  # no measured latency needed
    (member,) = subject.niches["conv3x3=1"].members
    assert member.metrics["latency_ms"] == 7.5 and "looked up for device edgegpu" in subject.objective_lines()[1]
    unknown = Proposal(architecture=TWO_CONV, notes={"niche": "conv3x3=2", "operation": "initial"})
    with pytest.raises(LatencyNotFound, match="edgegpu"):
        observe(subject, unknown, 2, {"naswot": 300.0, "latency_ms": 2.0})
    fallback = strategy(latency_table=str(table), latency_device="edgegpu", latency_missing="measured")
    observe(fallback, unknown, 2, {"naswot": 300.0, "latency_ms": 2.0})
    assert fallback.niches["conv3x3=2"].members[0].metrics["latency_ms"] == 2.0


def test_state_dict_round_trip_restores_archives_knowledge_and_predictor():
    subject = strategy(predictor="regression", regression_proxies=("naswot",), regression_min_points=2)
    history = seeded(subject)
    turns(subject, ScriptedLLM(answer_for_each_niche(subject, history)), history)
    subject.trained = {history[0].id: 0.7, history[5].id: 0.9}
    subject.predictor.fit(subject._trained_points())
    state = json.loads(json.dumps(subject.state_dict()))  # JSON-able, as the store keeps it
    restored = strategy(predictor="regression", regression_proxies=("naswot",), regression_min_points=2)
    restored.load_state_dict(state)
    assert restored.state_dict() == state and (restored.generation, restored.step) == (1, 6)
    assert restored.predictor.fitted and restored.knowledge_history == subject.knowledge_history
    assert [m.id for m in restored.union_front()] == [m.id for m in subject.union_front()]
    assert restored.niches["conv3x3=2"].positive == ["Rule for conv3x3=2."]


def test_artifacts_hold_the_knowledge_bases_and_the_union_front():
    subject = strategy()
    history = seeded(subject)
    turns(subject, ScriptedLLM(answer_for_each_niche(subject, history)), history)
    artifacts = subject.artifacts()
    assert set(artifacts) == {"knowledge_base/generation-001", "pareto/generation-001"}
    knowledge = json.loads(artifacts["knowledge_base/generation-001"])
    assert knowledge["conv3x3=1"] == {"positive": ["Rule for conv3x3=1."], "negative": []}
    front = json.loads(artifacts["pareto/generation-001"])
    assert [entry["id"] for entry in front] == [m.id for m in subject.union_front()]
    assert {"val_acc", "latency_ms", "niche", "architecture"} <= set(front[0])


def test_niches_off_the_union_front_take_a_turn_only_every_off_front_every_generations():
    subject = strategy(llm=False, objectives=("val_acc:max",), predictor="measured", off_front_every=3)
    history = []
    for candidate_id, proposal in enumerate(turns(subject, count=12), start=1):  # generation 0: every niche twice
        accuracy = 0.5 + 0.05 * SPACE.canonical(proposal.architecture).count("conv_3x3")
        history.append(observe(subject, proposal, candidate_id, {"val_acc": accuracy}))
    (best,) = subject.union_front()  # one objective: the front is the best network
    niches_by_generation: dict[int, list[str]] = {}
    for turn in range(8):
        proposal = subject.propose(context(history=history, seed=turn))[0]
        niches_by_generation.setdefault(proposal.notes["generation"], []).append(proposal.notes["niche"])
        history.append(observe(subject, proposal, len(history) + 1, {"val_acc": 0.1}))  # never a new best
    assert niches_by_generation[1] == [best.niche] and niches_by_generation[2] == [best.niche]
    assert niches_by_generation[3] == list(SPACE.niches())  # every third generation: every niche
    published = strategy(llm=False, objectives=("val_acc:max",), predictor="measured")
    assert published.opts.off_front_every == 1
