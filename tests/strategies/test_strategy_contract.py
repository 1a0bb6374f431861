"""The strategy contract, for every registered strategy: propose, observe completed, failed and duplicate
candidates, propose again, finalize, and a state that survives a JSON round trip into a fresh instance."""

import json
import random
from typing import Any

import pytest
from support import fenced, good_net

from nasloop.candidate import Failure, FailureKind, Proposal, Purpose, State
from nasloop.llm.base import Completion, Sampling, Usage
from nasloop.llm.recording import Reply
from nasloop.prompts import render
from nasloop.registry import proxies, strategies
from nasloop.spaces.nb201 import NB201Space
from nasloop.store import CandidateRecord
from nasloop.strategies.base import Context, Observation, Strategy, Task

SPACE = NB201Space()
TASK = Task("digits", (1, 8, 8), 10, objectives=("val_acc:max", "latency_ms:min"))
NAMES = strategies.names()


class SchemaLLM:
    """Answers what is asked: JSON that fits the requested schema (architectures drawn from the space),
    else a fenced model."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.calls = 0

    def complete(self, role: str, messages: list, sampling: Sampling) -> Reply:
        assert isinstance(sampling, Sampling) and messages and all(m["content"] for m in messages)
        self.calls += 1
        response_format = sampling.response_format
        if response_format is None:
            text = fenced(good_net(8 + self.calls))
        else:
            schema = response_format.get("json_schema", {}).get("schema", {})
            text = json.dumps(self.value(schema, "answer"))
        return Reply(Completion(text, Usage(10, 10), 0.01, "contract"), call_id=self.calls)

    def value(self, schema: dict[str, Any], name: str) -> Any:
        if "enum" in schema:
            return schema["enum"][0]
        kind = schema.get("type")
        if kind == "object":
            properties = schema.get("properties", {})
            return {key: self.value(sub, key) for key, sub in properties.items()}
        if kind == "array":
            return [self.value(schema.get("items", {}), name)][: schema.get("maxItems", 1)]
        if kind in ("number", "integer"):
            return schema.get("minimum", 1)
        if "architecture" in name:
            return SPACE.sample(self.rng)
        return "keep the best operations"[: schema.get("maxLength", 100)]


def make(name: str) -> Strategy:
    strategy_class = strategies.get(name)
    space = SPACE if strategy_class.needs_space or name in ("random", "evolution", "nsga2", "llm-history") else None
    return strategy_class(strategy_class.Options(), TASK, space=space, seed=0)


def context(strategy: Strategy, history: list[CandidateRecord], iteration: int) -> Context:
    return Context(SchemaLLM(iteration), tuple(history), random.Random(iteration), iteration, TASK, render,
                   space=strategy.space)  # fmt: skip


def metrics(index: int) -> dict[str, float]:
    values = {name: 1.0 + index for name in proxies.names()}
    values.update(val_acc=0.5 + index / 100, test_acc=0.5 + index / 100, train_acc=0.6, params=1000.0 + index,
                  flops=2e4 + index, latency_ms=1.0 + index / 10, throughput_ips=500.0)  # fmt: skip
    return values


def stored(proposal: Proposal, candidate_id: int, state: State, **fields: Any) -> CandidateRecord:
    code = proposal.code or (SPACE.render(proposal.architecture, TASK.in_shape, TASK.num_classes)
                             if proposal.architecture else None)  # fmt: skip
    return CandidateRecord(
        id=candidate_id, iteration=candidate_id, state=state, code=code, architecture=proposal.architecture,
        space="nb201" if proposal.architecture else None, hash=f"hash-{candidate_id}", notes=proposal.notes,
        purpose=proposal.purpose, parent=proposal.parent, **fields,
    )  # fmt: skip


def run_rounds(strategy: Strategy, rounds: int) -> list[CandidateRecord]:
    """Propose and observe `rounds` times: each round's first proposal completes, a second one fails,
    and a third is a duplicate of the first."""
    history: list[CandidateRecord] = []
    for iteration in range(rounds):
        proposals = strategy.propose(context(strategy, history, iteration))
        assert proposals and all(isinstance(p, Proposal) for p in proposals)
        for proposal in proposals:
            assert proposal.failure is not None or proposal.code is not None or proposal.architecture is not None
            assert isinstance(proposal.purpose, Purpose)
            if proposal.failure is not None:
                record = stored(proposal, len(history) + 1, State.FAILED, failure=proposal.failure)
            else:
                record = stored(proposal, len(history) + 1, State.COMPLETE, metrics=metrics(len(history)))
            history.append(record)
            strategy.observe([Observation(proposal, record)])
        first = proposals[0]
        failure = Failure(FailureKind.SHAPE, "mat1 and mat2 shapes cannot be multiplied (2x10 and 12x4)")
        failed = stored(first, len(history) + 1, State.FAILED, failure=failure)
        history.append(failed)
        strategy.observe([Observation(first, failed)])
        twin = stored(first, len(history) + 1, State.DUPLICATE, metrics=history[-2].metrics,
                      duplicate_of=history[-2].id)  # fmt: skip
        history.append(twin)
        strategy.observe([Observation(first, twin)])
    return history


@pytest.mark.parametrize("name", NAMES)
def test_a_strategy_proposes_observes_and_proposes_again(name):
    strategy = make(name)
    history = run_rounds(strategy, 4)
    again = strategy.propose(context(strategy, history, 4))
    assert again
    finals = strategy.finalize(context(strategy, history, 5))
    assert all(proposal.purpose is Purpose.FINAL and proposal.parent is not None for proposal in finals)
    assert all(line and isinstance(line, str) for line in strategy.summary())
    assert all(isinstance(text, str) for text in strategy.artifacts().values())


@pytest.mark.parametrize("name", NAMES)
def test_a_strategy_state_survives_a_json_round_trip(name):
    strategy = make(name)
    history = run_rounds(strategy, 3)
    state = json.loads(json.dumps(strategy.state_dict()))
    fresh = make(name)
    fresh.load_state_dict(state)
    assert json.loads(json.dumps(fresh.state_dict())) == state
    assert fresh.propose(context(fresh, history, 3))


@pytest.mark.parametrize("name", NAMES)
def test_a_strategy_ranks_usable_candidates_best_first(name):
    strategy_class = strategies.get(name)
    from nasloop.config import build_config

    config = build_config({"strategy": name})
    records = [stored(Proposal(code=good_net(8 + i)), i + 1, State.COMPLETE, metrics=metrics(i)) for i in range(3)]
    records.append(stored(Proposal(code=good_net(20)), 4, State.FAILED, failure=Failure(FailureKind.NAN, "nan")))
    ranking = strategy_class.rank(records, config)
    assert [record.id for record, _ in ranking.scored] == [3, 2, 1]
    assert ranking.best is not None and ranking.best.id == 3


def test_every_registered_strategy_is_covered():
    assert {"random", "evolution", "feedback-memory", "reflective-zero-cost", "niche-pareto", "nsga2"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_a_strategy_options_with_their_defaults_load_again(name):
    options_class = strategies.get(name).Options
    written = options_class().model_dump(mode="json")
    assert options_class.model_validate(json.loads(json.dumps(written))) == options_class()
