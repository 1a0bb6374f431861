"""The reflective-zero-cost strategy (RZ-NAS) with a scripted LLM and an in-process zero-cost evaluator."""

import hashlib
import json
import random
import re
from concurrent.futures import Future

import jsonschema
import pytest
import torch

from nasloop.candidate import EvalResult, FailureKind, Proposal, Purpose, State
from nasloop.config import build_config
from nasloop.data import load_splits
from nasloop.engine import Search, SearchAborted
from nasloop.evaluate.job import DatasetSpec, EvalJob
from nasloop.evaluate.proxies import ProxyError, compute_proxies
from nasloop.evaluate.stages import StageContext, run_stages
from nasloop.executors.base import Executor, ProgressCallback
from nasloop.llm.base import LLMUnreachable
from nasloop.llm.scripted import ScriptedBackend
from nasloop.prompts import render
from nasloop.registry import spaces
from nasloop.spaces import nb201
from nasloop.store.sqlite import CandidateRecord
from nasloop.strategies.base import Context, Observation, Task
from nasloop.strategies.population import MissingMetricError, describe_change, unseen_child
from nasloop.strategies.reflective_zero_cost import (
    EXAMPLES,
    ReflectiveZeroCostOptions,
    mutation_schema,
    proxy_definition,
)

PROXY_BATCH = 64


class InProcessZeroCost(Executor):
    """Evaluates jobs in this process: the sandbox's own static and build stages, then the job's proxies
    on one normalised training batch when the job asks for the `zero-cost` stage. A job that asks for
    `train` gets a deterministic stand-in `val_acc` from its code (these tests never train)."""

    def __init__(self, dataset: DatasetSpec) -> None:
        self.data = load_splits(dataset).for_sandbox()
        self.jobs: list[EvalJob] = []

    def submit(self, job: EvalJob, on_progress: ProgressCallback | None = None) -> Future[EvalResult]:
        self.jobs.append(job)
        future: Future[EvalResult] = Future()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny tensors: extra threads only wait on each other (like one sandbox)
        try:
            future.set_result(self._evaluate(job))
        finally:
            torch.set_num_threads(threads)
        return future

    def _evaluate(self, job: EvalJob) -> EvalResult:
        context = StageContext(job=job.model_copy(update={"stages": ("static", "build")}), data=self.data,
                               device=torch.device("cpu"))  # fmt: skip
        result = run_stages(context)
        if result.state is not State.COMPLETE:
            return result
        metrics = dict(result.metrics)
        if "train" in job.stages:
            metrics["val_acc"] = 0.5 + hashlib.sha256(job.code.encode()).digest()[0] / 1000
        info = {}
        if "zero-cost" in job.stages:  # like the sandbox's stage: a proxy that fails is named in info
            errors = {}
            for name in job.proxies:
                try:
                    metrics.update(self._proxies(context.model, job, name))
                except ProxyError as error:
                    errors[name] = str(error)
            info = {"proxy_errors": errors} if errors else {}
        return EvalResult(State.COMPLETE, metrics=metrics, stage="zero-cost", info=info)

    def _proxies(self, model, job: EvalJob, name: str) -> dict[str, float]:
        images = self.data.train_x[:PROXY_BATCH].float() / 255.0
        mean = torch.tensor(self.data.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.data.std).view(1, -1, 1, 1)
        targets = self.data.train_y[:PROXY_BATCH]
        return compute_proxies(model, (images - mean) / std, targets, [name],
                               num_classes=self.data.num_classes, seed=job.seed)  # fmt: skip

    def shutdown(self) -> None:
        pass


class AnalyticParams(Executor):
    """Scores rendered NAS-Bench-201 networks with the `params` proxy computed analytically
    (`nb201.network_cost`, equal to the built network's count) instead of building them, to keep the
    tests that exercise the search loop fast. `train` jobs get a stand-in `val_acc` as above."""

    def __init__(self, in_shape=(1, 8, 8), num_classes=10) -> None:
        self.in_shape, self.num_classes = in_shape, num_classes
        self.jobs: list[EvalJob] = []

    def submit(self, job: EvalJob, on_progress: ProgressCallback | None = None) -> Future[EvalResult]:
        self.jobs.append(job)
        cell = nb201.to_string(tuple(re.findall(r'^    \(\d, \d, "(\w+)"\),$', job.code, re.MULTILINE)))
        metrics = {"params": float(nb201.network_cost(cell, self.in_shape, self.num_classes).params)}
        if "train" in job.stages:
            metrics["val_acc"] = 0.5 + hashlib.sha256(job.code.encode()).digest()[0] / 1000
        future: Future[EvalResult] = Future()
        future.set_result(EvalResult(State.COMPLETE, metrics=metrics, stage="zero-cost"))
        return future

    def shutdown(self) -> None:
        pass


class Model:
    """Scripted LLM. Mutation requests: the next entry of `answers` if any (a string, sent as is), else a
    JSON answer with `space.mutate` of the parent. Reflection requests: JSON lessons "lesson 1", ..."""

    def __init__(self, space_name="nb201", answers=()):
        self.space = spaces.get(space_name)()
        self.answers = list(answers)
        self.rng = random.Random(0)
        self.lessons = 0
        self.calls: list[tuple[str, list]] = []

    def __call__(self, messages):
        if messages[1]["content"].startswith("## Result of the last mutation"):
            self.calls.append(("reflector", messages))
            self.lessons += 1
            return json.dumps({"lesson": f"lesson {self.lessons}"})
        self.calls.append(("mutator", messages))
        if self.answers:
            return self.answers.pop(0)
        child = self.space.mutate(parent_of(messages), self.rng)
        return json.dumps({"reasoning": "a small change", "architecture": child})

    def prompts(self, role):
        """The first user message of each call of `role`."""
        return [messages[1]["content"] for name, messages in self.calls if name == role]


def parent_of(messages):
    """The parent's architecture, read from a mutation prompt."""
    return messages[1]["content"].split("## Parent", 1)[1].splitlines()[1].strip()


def config(iterations=8, space="nb201", proxy="params", stages=("static", "build", "zero-cost"), **options):
    options = {"population_size": 4, "initial_batch_size": 2, "proxy": proxy, **options}
    return build_config(
        {
            "strategy": "reflective-zero-cost", "strategy_options": options, "space": space,
            "dataset": {"name": "digits"}, "stages": list(stages), "proxies": [proxy], "objective": proxy,
            "budget": {"iterations": iterations}, "llm": {"backend": "scripted", "model": "scripted"},
        }
    )  # fmt: skip


def run(tmp_path, model, run_config, executor=None):
    executor = executor or AnalyticParams()
    engine = Search.start(run_config, tmp_path / "run", backend=ScriptedBackend(answers=model), executor=executor,
                          progress=False)  # fmt: skip
    return engine, engine.run(), executor


def search_records(engine):
    return [record for record in engine.history if record.purpose is not Purpose.FINAL]


def test_initial_population_needs_no_llm_then_each_iteration_reflects_and_mutates(tmp_path):
    model = Model()
    run_config = config(iterations=6, population_size=3, initial_batch_size=2, proxy="l2_norm", final_top_k=0)
    engine, summary, executor = run(tmp_path, model, run_config, InProcessZeroCost(run_config.dataset))
    records = search_records(engine)
    assert [record.notes["operator"] for record in records] == ["initial"] * 3 + ["llm-mutation"] * 3
    # the first mutation has nothing to reflect on; each later one follows a reflection on the previous
    assert [role for role, _ in model.calls] == ["mutator", "reflector", "mutator", "reflector", "mutator"]
    assert summary.iterations == 6 and all(record.state is State.COMPLETE for record in records)
    assert all(job.proxies == ("l2_norm",) for job in executor.jobs)
    mutation = records[3]
    assert mutation.parent_ids[0] in {record.id for record in records[:3]}
    assert mutation.notes["parent_score"] == engine.history[mutation.parent_ids[0] - 1].metrics["l2_norm"]
    # the reflection is linked to the mutation proposed after it
    assert len(records[4].llm_call_ids) == 2 and len(records[3].llm_call_ids) == 1


def test_population_keeps_the_best_distinct_members_and_drops_the_worst(tmp_path):
    engine, _, _ = run(tmp_path, Model(), config(iterations=12, final_top_k=0))
    population = engine.strategy.population
    assert len(population) == 4
    completed = {}
    for record in search_records(engine):
        if record.state is State.COMPLETE:
            completed.setdefault(engine.space.canonical(record.architecture), record.metrics["params"])
    assert sorted(member.score for member in population) == sorted(completed.values())[-4:]
    assert len({member.architecture for member in population}) == 4


def test_reflection_memory_is_bounded_and_feeds_the_next_prompt(tmp_path):
    model = Model()
    engine, _, _ = run(tmp_path, model, config(iterations=9, reflection_memory=2, final_top_k=0))
    mutation_prompts = model.prompts("mutator")
    assert "Lessons" not in mutation_prompts[0]
    assert "- lesson 1\n" in mutation_prompts[1]
    last = mutation_prompts[-1]  # after four reflections, only the two latest lessons are shown
    assert "- lesson 3\n- lesson 4" in last and "lesson 2" not in last
    assert engine.strategy.notes == ["lesson 3", "lesson 4"]
    # the reflector is told the parent, the child and the score change
    reflection = model.prompts("reflector")[0]
    child = search_records(engine)[4]
    assert child.architecture in reflection and "params = " in reflection and "times" in reflection


def test_a_repeated_lesson_is_kept_once(tmp_path):
    class Repetitive(Model):
        def __call__(self, messages):
            answer = super().__call__(messages)
            return json.dumps({"lesson": "use more convolutions"}) if "lesson" in answer else answer

    engine, _, _ = run(tmp_path, Repetitive(), config(iterations=8, reflection_memory=3, final_top_k=0))
    assert engine.strategy.notes == ["use more convolutions"]


def test_no_reflection_ablation_makes_no_reflector_calls(tmp_path):
    model = Model()
    run(tmp_path, model, config(iterations=8, reflection=False, final_top_k=0))
    assert {role for role, _ in model.calls} == {"mutator"}
    assert all("Lessons" not in prompt for prompt in model.prompts("mutator"))


def test_temperature_is_drawn_from_the_configured_set(tmp_path):
    model = Model()
    backend = ScriptedBackend(answers=model)
    run_config = config(iterations=12, temperatures=[0.3, 0.9], reflection_temperature=0.1, final_top_k=0)
    Search.start(run_config, tmp_path / "run", backend=backend, executor=AnalyticParams(),
                 progress=False).run()  # fmt: skip
    roles = [role for role, _ in model.calls]
    mutation = [call.temperature for call, role in zip(backend.calls, roles, strict=True) if role == "mutator"]
    reflection = {call.temperature for call, role in zip(backend.calls, roles, strict=True) if role == "reflector"}
    assert set(mutation) == {0.3, 0.9} and reflection == {0.1}


def test_reflection_temperature_can_be_drawn_too(tmp_path):
    model = Model()
    backend = ScriptedBackend(answers=model)
    run_config = config(iterations=12, temperatures=[0.3, 0.9], reflection_temperature=None, final_top_k=0)
    Search.start(run_config, tmp_path / "run", backend=backend, executor=AnalyticParams(), progress=False).run()
    assert {call.temperature for call in backend.calls} == {0.3, 0.9}


def test_both_calls_share_one_static_system_prompt(tmp_path):
    model = Model()
    run(tmp_path, model, config(iterations=7, final_top_k=0))
    systems = {messages[0]["content"] for _, messages in model.calls}
    assert len(systems) == 1
    (system,) = systems
    assert "NAS-Bench-201 cell space" in system and "Zero-cost proxy: params" in system
    assert EXAMPLES["nb201"][1] in system  # the in-context example's answer


def test_answer_that_is_not_json_is_an_extraction_failure_the_reflector_sees(tmp_path):
    model = Model(answers=["Sure! I would change the first edge."])
    engine, summary, _ = run(tmp_path, model, config(iterations=6, final_top_k=0))
    failed = search_records(engine)[4]
    assert failed.state is State.FAILED and failed.failure.kind is FailureKind.EXTRACTION
    assert failed.architecture is None and failed.parent_ids
    assert "failed (extraction)" in model.prompts("reflector")[0]
    assert summary.iterations == 6  # a failed proposal is an iteration like any other


def test_invalid_architecture_is_stored_with_the_space_message(tmp_path):
    bad = "|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    model = Model(answers=[json.dumps({"reasoning": "bigger kernel", "architecture": bad})])
    engine, _, executor = run(
        tmp_path, model, config(iterations=6, constrain_pattern=False, enumerate_children=0, final_top_k=0)
    )
    failed = search_records(engine)[4]
    assert failed.state is State.FAILED and failed.failure.kind is FailureKind.BUILD
    assert failed.architecture == bad and "unknown operation 'nor_conv_5x5'" in failed.failure.message
    assert len(executor.jobs) == 5  # the invalid child never reached the evaluator
    reflection = model.prompts("reflector")[0]
    assert "failed (build)" in reflection and "nor_conv_5x5" in reflection and "not a valid" in reflection
    assert failed.id not in {member.id for member in engine.strategy.population}


def test_pattern_constrained_answer_outside_the_pattern_is_an_extraction_failure(tmp_path):
    bad = "|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    model = Model(answers=[json.dumps({"reasoning": "bigger kernel", "architecture": bad})])
    engine, _, _ = run(tmp_path, model, config(iterations=5, final_top_k=0))
    failed = search_records(engine)[4]
    assert failed.failure.kind is FailureKind.EXTRACTION and "does not match" in failed.failure.message


class Repeat(Model):
    """Answers every mutation request with the parent unchanged (the first `times` times, then mutates)."""

    def __init__(self, times=10**9):
        super().__init__()
        self.times = times

    def __call__(self, messages):
        if "## Parent" in messages[1]["content"] and self.times > 0:
            self.times -= 1
            self.calls.append(("mutator", messages))
            return json.dumps({"reasoning": "keep it", "architecture": parent_of(messages)})
        return super().__call__(messages)


@pytest.mark.parametrize("retries", [0, 1])
def test_mutation_equal_to_its_parent_is_a_duplicate_and_not_added_twice(tmp_path, retries):
    model = Repeat()
    run_config = config(
        iterations=5, retry_duplicates=retries, duplicate_fallback=False, enumerate_children=0, final_top_k=0
    )
    engine, _, _ = run(tmp_path, model, run_config)
    child = search_records(engine)[4]
    assert child.state is State.DUPLICATE and child.duplicate_of == child.parent_ids[0]
    assert len(engine.strategy.population) == 4 and len(model.prompts("mutator")) == 1 + retries
    assert engine.strategy.unreflected["outcome"].endswith("evaluated before")


def test_answer_repeating_an_evaluated_architecture_is_sent_back_once(tmp_path):
    model = Repeat(times=1)
    engine, _, _ = run(tmp_path, model, config(iterations=5, enumerate_children=0, final_top_k=0))
    child = search_records(engine)[4]
    assert child.state is State.COMPLETE and child.notes["retries"] == 1 and len(child.llm_call_ids) == 2
    first, second = [messages for role, messages in model.calls if role == "mutator"]
    assert second[:2] == first and second[2]["role"] == "assistant"  # the same conversation, continued
    assert "is the parent itself" in second[3]["content"]
    assert child.architecture in nb201.neighbors(parent_of(first))


def test_a_repeat_left_after_the_retries_becomes_an_unseen_mutation_of_the_parent(tmp_path):
    model = Repeat()
    engine, _, _ = run(tmp_path, model, config(iterations=5, retry_duplicates=1, enumerate_children=0, final_top_k=0))
    child = search_records(engine)[4]
    assert child.state is State.COMPLETE and child.notes["operator"] == "mutation-fallback"
    assert child.notes["llm_answer"] == child.notes["parent_architecture"]
    assert child.architecture in nb201.neighbors(child.notes["parent_architecture"])
    assert child.id in {member.id for member in engine.strategy.population}


def test_the_prompt_shows_the_best_members_and_the_parents_evaluated_children(tmp_path):
    model = Model()
    engine, _, _ = run(tmp_path, model, config(iterations=8, final_top_k=0, show_top=2))
    prompts = model.prompts("mutator")
    assert all(prompt.count("(params = ") >= 2 for prompt in prompts)  # the parent and a top member at least
    assert "## Best in the population" in prompts[-1]
    records = search_records(engine)
    parents = [record.notes["parent_architecture"] for record in records if record.notes.get("parent_architecture")]
    assert len(set(parents)) < len(parents)  # 8 mutations of 4 members: some parent is drawn again
    assert any("Already evaluated mutations of this parent" in prompt for prompt in prompts)


def test_finalize_trains_the_top_k_by_proxy_once(tmp_path):
    run_config = config(iterations=8, final_top_k=2)
    engine, summary, _ = run(tmp_path, Model(), run_config)
    search = [record for record in search_records(engine) if record.state is State.COMPLETE]
    best_two = sorted(search, key=lambda record: (-record.metrics["params"], record.id))[:2]
    finals = [record for record in engine.history if record.purpose is Purpose.FINAL]
    assert [record.parent for record in finals] == [record.id for record in best_two]
    assert all(record.architecture == original.architecture for record, original in zip(finals, best_two, strict=True))
    assert summary.iterations == 8  # finalists are not iterations
    # a resumed run that reaches finalize again does not retrain them
    assert engine.strategy.finalize(finalize_context(engine, engine.history)) == []


def finalize_context(engine, history):
    """What `finalize` reads: the history (it makes no LLM call and draws no random numbers)."""
    return Context(llm=None, history=tuple(history), rng=random.Random(0), iteration=0, task=engine.task,
                   render=render, space=engine.space)  # fmt: skip


def test_finalist_proposals_ask_for_training_and_skip_trained_candidates(tmp_path):
    engine, _, _ = run(tmp_path, Model(), config(iterations=6, final_top_k=3))
    history = [record for record in engine.history if record.purpose is not Purpose.FINAL]
    ctx = finalize_context(engine, history)
    proposals = engine.strategy.finalize(ctx)
    assert len(proposals) == 3
    assert all(p.stages == ("static", "build", "train") and p.final_of == p.parent_ids[0] for p in proposals)
    best = max((r for r in history if r.state is State.COMPLETE), key=lambda r: (r.metrics["params"], -r.id))
    assert proposals[0].final_of == best.id
    best.metrics["val_acc"] = 0.9  # already trained: not a finalist any more
    assert best.id not in {p.final_of for p in engine.strategy.finalize(ctx)}


def test_finalist_jobs_run_the_final_stages(tmp_path):
    _, _, executor = run(tmp_path, Model(), config(iterations=6, final_top_k=1))
    assert executor.jobs[-1].stages == ("static", "build", "train")


def test_resume_restores_population_reflections_and_pending_reflection(tmp_path):
    model = Model()
    calls = {"count": 0}

    def flaky(messages):
        calls["count"] += 1
        if calls["count"] == 6:  # the sixth call (a reflection) finds the server gone
            raise LLMUnreachable("server down")
        return model(messages)

    run_config = config(iterations=10, reflection_memory=3, final_top_k=0)
    engine = Search.start(run_config, tmp_path / "run", backend=ScriptedBackend(answers=flaky),
                          executor=AnalyticParams(), progress=False)  # fmt: skip
    with pytest.raises(SearchAborted):
        engine.run()
    saved = json.loads(json.dumps(engine.strategy.state_dict()))  # JSON-able
    assert saved["unreflected"] is not None and saved["notes"] == ["lesson 1", "lesson 2"]

    resumed = Search.resume(tmp_path / "run", backend=ScriptedBackend(answers=model),
                            executor=AnalyticParams(), progress=False)  # fmt: skip
    strategy = resumed.strategy
    assert [m.to_dict() for m in strategy.population] == saved["population"]
    assert strategy.notes == saved["notes"] and strategy.unreflected == saved["unreflected"]
    summary = resumed.run()
    assert summary.iterations == 10 and strategy.notes[-1] == f"lesson {model.lessons}"
    assert len(strategy.notes) == 3


def test_macro_space_search_runs(tmp_path):
    model = Model("macro")
    run_config = config(iterations=6, space="macro", proxy="l2_norm", enumerate_children=0, final_top_k=0)
    engine, summary, _ = run(tmp_path, model, run_config, InProcessZeroCost(run_config.dataset))
    assert summary.valid == 6
    assert "Macro block space" in model.calls[0][1][0]["content"]
    assert all(engine.space.validate(record.architecture) is None for record in search_records(engine))


def test_stages_without_the_fitness_proxy_fail_before_the_run_with_the_fix(tmp_path):
    from nasloop.config import ConfigError

    with pytest.raises(ConfigError, match=r"stages: add zero-cost, the stage that computes l2_norm"):
        run_config = config(iterations=4, proxy="l2_norm", stages=("static", "build"))
        run(tmp_path, Model(), run_config, InProcessZeroCost(run_config.dataset))
    assert not (tmp_path / "run").exists()  # nothing was started


def test_a_proxy_error_is_an_outcome_not_a_configuration_error():
    from nasloop.store import CandidateRecord
    from nasloop.strategies.population import require_metric
    from nasloop.strategies.reflective_zero_cost import ReflectiveZeroCost

    failing = CandidateRecord(
        id=7,
        iteration=6,
        state=State.COMPLETE,
        architecture=EXAMPLES["nb201"][1],
        metrics={"params": 1.0},
        info={"proxy_errors": {"synflow": "synflow: overflows"}},
    )
    require_metric(failing, "synflow", "test")  # explained by the sandbox: no error
    with pytest.raises(MissingMetricError, match="candidate 7"):
        require_metric(failing, "zen", "test")
    strategy = ReflectiveZeroCost(ReflectiveZeroCostOptions(), Task("digits", (1, 8, 8), 10, metric="synflow"),
                                  space=spaces.get("nb201")())  # fmt: skip
    proposal = Proposal(architecture=failing.architecture, parent_ids=(1,),
                        notes={"operator": "llm-mutation", "parent_architecture": EXAMPLES["nb201"][0],
                               "parent_score": 2.0})  # fmt: skip
    strategy.observe([Observation(proposal, failing)])
    assert not strategy.population
    assert strategy.unreflected["outcome"] == "synflow could not be computed for it: synflow: overflows"
    assert strategy.unreflected["failed"] is True


def test_options_are_strict_and_the_proxy_must_exist():
    with pytest.raises(Exception, match="population_sise"):
        ReflectiveZeroCostOptions.model_validate({"population_sise": 3})
    with pytest.raises(Exception, match=r"unknown evaluation stage .training."):
        ReflectiveZeroCostOptions.model_validate({"final_stages": ["static", "training"]})
    with pytest.raises(ValueError, match="Did you mean synflow"):
        proxy_definition("synflw")
    assert proxy_definition("synflow").startswith("Total synaptic flow")


@pytest.mark.parametrize("name", ["nb201", "macro"])
def test_examples_and_answer_schema_fit_the_space(name):
    space = spaces.get(name)()
    parent, child, _ = EXAMPLES[name]
    assert space.validate(parent) is None and space.validate(child) is None
    assert space.canonical(parent) != space.canonical(child)
    schema = mutation_schema(space, 400, constrain_pattern=True)
    jsonschema.validate({"reasoning": "x", "architecture": space.sample(random.Random(3))}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"reasoning": "x", "architecture": "anything"}, schema)
    llama_grammar = pytest.importorskip("llama_cpp.llama_grammar")
    llama_grammar.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)  # decodable constraint


@pytest.mark.parametrize("name", ["rz_nas_nb201.yaml", "rz_nas_macro.yaml", "random_nb201.yaml"])
def test_example_configs_build_their_strategy(name):
    from pathlib import Path

    from nasloop.config import load_config
    from nasloop.registry import strategies

    run_config = load_config(Path(__file__).parents[2] / "examples" / name)
    strategy_class = strategies.get(run_config.strategy)
    options = strategy_class.Options.model_validate(run_config.strategy_options)
    strategy = strategy_class(options, Task("fashion-mnist", (1, 28, 28), 10, metric=run_config.objective),
                              space=spaces.get(run_config.space)())  # fmt: skip
    assert run_config.objective in run_config.proxies and "zero-cost" in run_config.stages
    assert getattr(strategy, "proxy", run_config.objective) == run_config.objective


def test_no_llm_ablation_mutates_the_parent_at_random_without_a_backend(tmp_path):
    run_config = config(iterations=10, population_size=3, tournament_size=3, llm=False, final_top_k=0)
    engine = Search.start(run_config, tmp_path / "run", executor=AnalyticParams(), progress=False)  # no backend
    assert engine.strategy.uses_llm is False
    engine.run()
    records = search_records(engine)
    assert [record.notes["operator"] for record in records] == ["initial"] * 3 + ["random-mutation"] * 7
    assert len({engine.space.canonical(record.architecture) for record in records}) == 10  # no repeat
    for record in records[3:]:  # tournament over the whole population: the best member is the parent
        parent = engine.history[record.parent_ids[0] - 1]
        earlier = [other for other in records if other.id < record.id and other.state is State.COMPLETE]
        assert parent.metrics["params"] == max(other.metrics["params"] for other in earlier)
        assert record.architecture in nb201.neighbors(record.notes["parent_architecture"])


def test_a_parent_whose_neighbourhood_is_exhausted_passes_the_turn_to_the_next_member():
    space = spaces.get("nb201")()
    best, second = space.sample(random.Random(1)), space.sample(random.Random(2))
    exhausted = {space.canonical(best), space.canonical(second)} | {space.canonical(n) for n in nb201.neighbors(best)}
    child = unseen_child(space, [best, second], random.Random(0), exhausted)
    assert child in nb201.neighbors(second) and space.canonical(child) not in exhausted
    everything = {space.canonical(n) for n in nb201.neighbors(second)} | exhausted
    fresh = unseen_child(space, [best, second], random.Random(0), everything)
    assert space.canonical(fresh) not in everything  # a random unseen architecture in the end


class FirstChoice(Model):
    """Answers every mutation with the first architecture its schema allows (the parent when it has no enum)."""

    def __init__(self):
        super().__init__()
        self.schemas = []

    def __call__(self, messages):
        if messages[1]["content"].startswith("## Result of the last mutation"):
            return super().__call__(messages)
        self.calls.append(("mutator", messages))
        return json.dumps({"reasoning": "the first one", "architecture": self.next_choice or parent_of(messages)})


def test_the_answer_is_decoded_as_one_of_the_parents_unseen_mutations(tmp_path):
    model = FirstChoice()
    backend = ScriptedBackend(answers=model)
    complete = backend.complete

    def recording(messages, sampling, **kwargs):  # the schema the strategy sent, and its first choice
        schema = sampling.response_format["json_schema"]["schema"]
        model.schemas.append(schema)
        model.next_choice = (schema["properties"].get("architecture", {}).get("enum") or [None])[0]
        return complete(messages, sampling, **kwargs)

    backend.complete = recording
    run_config = config(iterations=7, population_size=3, tournament_size=3, final_top_k=0)
    engine = Search.start(run_config, tmp_path / "run", backend=backend, executor=AnalyticParams(), progress=False)
    engine.run()
    records = search_records(engine)
    mutations = [schema for schema in model.schemas if "architecture" in schema["properties"]]
    assert len(mutations) == 4 and all(record.state is State.COMPLETE for record in records)
    for record, schema in zip(records[3:], mutations, strict=True):
        choices = schema["properties"]["architecture"]["enum"]
        parent = record.notes["parent_architecture"]
        earlier = {engine.space.canonical(other.architecture) for other in records if other.id < record.id}
        unseen = {engine.space.canonical(n) for n in nb201.neighbors(parent)} - earlier - {parent}
        assert {engine.space.canonical(choice) for choice in choices} == unseen  # all 24 - seen, each once
        assert len(choices) == len(unseen) and record.architecture == choices[0]
        assert record.notes["operator"] == "llm-mutation"


def test_a_parent_with_every_mutation_evaluated_gets_a_child_without_an_llm_call(tmp_path):
    model = Model()
    run_config = config(iterations=5, population_size=4, final_top_k=0)
    engine = Search.start(run_config, tmp_path / "run", backend=ScriptedBackend(answers=model),
                          executor=AnalyticParams(), progress=False)  # fmt: skip
    engine.run()
    strategy = engine.strategy
    best = max(strategy.population, key=lambda member: member.score)
    neighbours = [
        CandidateRecord(id=100 + index, iteration=100 + index, state=State.COMPLETE, architecture=neighbour,
                        space="nb201", hash=f"neighbour-{index}")
        for index, neighbour in enumerate(nb201.neighbors(best.architecture))
    ]  # fmt: skip
    history = [*engine.history, *neighbours]
    ctx = Context(llm=None, history=history, rng=random.Random(0), iteration=9, task=strategy.task, render=render,
                  space=engine.space)  # fmt: skip
    proposal = strategy._mutate(ctx, best)  # no LLM is reachable: ctx.llm is None
    assert proposal.notes["operator"] == "mutation-fallback" and proposal.notes["exhausted"] is True
    taken = {engine.space.canonical(record.architecture) for record in history if record.architecture}
    assert engine.space.canonical(proposal.architecture) not in taken and not proposal.llm_call_ids


@pytest.mark.parametrize(
    ("parent", "child", "change"),
    [
        ("10011122", "10111122", "position 3: 0 -> 1"),
        ("1234123", "1234124", "position 7: 3 -> 4"),
        ("20012122", "20012102", "position 7: 2 -> 0"),
        ("20012122", "20021122", "position 4: 1 -> 2; position 5: 2 -> 1"),
        (EXAMPLES["nb201"][0], EXAMPLES["nb201"][1], "position 3: avg_pool_3x3~1 -> nor_conv_3x3~1"),
        ("E128|M4H4|M3H2", "E96|M4H4", "position 1: E128 -> E96; remove position 3 (M3H2)"),
        ("E128|M4H4", "E128|M4H4|M2H2", "insert M2H2 at position 3"),
        (EXAMPLES["macro"][0], EXAMPLES["macro"][1],
         "position 2: SuperResK3K3(32,64,2,32,1) -> SuperResK3K3(32,64,2,32,2)"),
    ],
)  # fmt: skip
def test_a_change_is_named_position_by_position(parent, child, change):
    assert describe_change(parent, child) == change


class ChangeChoice(Model):
    """Answers every mutation with the last change its schema allows, recording the schemas."""

    def __init__(self):
        super().__init__()
        self.schemas = []
        self.next_choice = None

    def __call__(self, messages):
        if messages[1]["content"].startswith("## Result of the last mutation"):
            return super().__call__(messages)
        self.calls.append(("mutator", messages))
        return json.dumps({"reasoning": "the last one", "change": self.next_choice})


def apply_change(parent: str, change: str) -> str:
    """An NB201 cell with one edge replaced as `position N: old -> new` says (independent of the strategy)."""
    position, old, new = re.fullmatch(r"position (\d): (\S+) -> (\S+)", change).groups()
    edges = nb201.parse(parent)
    assert f"{edges[int(position) - 1]}~" in old
    return nb201.to_string(tuple(new.split("~")[0] if i == int(position) - 1 else op for i, op in enumerate(edges)))


def test_a_change_answer_names_one_of_the_listed_changes_and_gets_that_child(tmp_path):
    model = ChangeChoice()
    backend = ScriptedBackend(answers=model)
    complete = backend.complete

    def recording(messages, sampling, **kwargs):
        schema = sampling.response_format["json_schema"]["schema"]
        model.schemas.append(schema)
        model.next_choice = (schema["properties"].get("change", {}).get("enum") or [None])[-1]
        return complete(messages, sampling, **kwargs)

    backend.complete = recording
    run_config = config(iterations=7, population_size=3, tournament_size=3, final_top_k=0, answer="change")
    engine = Search.start(run_config, tmp_path / "run", backend=backend, executor=AnalyticParams(), progress=False)
    engine.run()
    records = search_records(engine)
    mutations = [schema for schema in model.schemas if "change" in schema["properties"]]
    assert len(mutations) == 4 and all(record.state is State.COMPLETE for record in records)
    prompts = model.prompts("mutator")
    system = next(messages[0]["content"] for name, messages in model.calls if name == "mutator")
    assert '"change": "<the change, exactly as listed>"' in system and '"change": "position 3:' in system
    for record, schema, prompt in zip(records[3:], mutations, prompts, strict=True):
        changes = schema["properties"]["change"]["enum"]
        assert record.notes["change"] == changes[-1] and "architecture" not in schema["properties"]
        parent = record.notes["parent_architecture"]
        assert record.architecture == apply_change(parent, changes[-1])
        earlier = {engine.space.canonical(other.architecture) for other in records if other.id < record.id}
        assert {engine.space.canonical(apply_change(parent, change)) for change in changes}.isdisjoint(earlier)
        assert all(f"- {change}\n" in prompt for change in changes)


def test_a_change_answer_needs_enumerated_children():
    with pytest.raises(ValueError, match=r"answer: change .* set enumerate_children above 0"):
        ReflectiveZeroCostOptions.model_validate({"answer": "change", "enumerate_children": 0})
