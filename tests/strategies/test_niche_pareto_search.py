"""niche-pareto inside the engine: generations with a scripted LLM, the ablations, resume, and the CLI."""

import json
import random
import re
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch
import yaml

from nasloop.candidate import EvalResult, State
from nasloop.cli import _search_overrides, build_parser, main
from nasloop.config import build_config, load_config
from nasloop.engine import Search
from nasloop.evaluate.job import DatasetSpec, EvalJob
from nasloop.evaluate.proxies import compute_proxies
from nasloop.executors.base import Executor, ProgressCallback
from nasloop.llm.scripted import ScriptedBackend
from nasloop.spaces.nb201 import NB201Space, neighbors
from nasloop.store import RunDir, RunStore

SPACE = NB201Space()
CHILD = "|nor_conv_1x1~0|+|avg_pool_3x3~0|nor_conv_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
CELL = re.compile(r"NAS-Bench-201 network for the cell (\S+)")


class CellEvaluator(Executor):
    """Evaluates NAS-Bench-201 jobs in this process, quickly and deterministically: the job's zero-cost
    proxies computed for real on a scaled-down rendering of its cell (4 stem channels, one cell per stage)
    and a fixed random batch; the full network's analytic params and FLOPs (`space.cost`); a latency
    proportional to those FLOPs, standing in for the hardware stage (timing would make tests slow and
    flaky). With `train` in the stages, a stand-in val_acc that grows with the FLOPs."""

    def __init__(self, in_shape=(1, 8, 8), num_classes=10) -> None:
        self.in_shape, self.num_classes = in_shape, num_classes
        self.small = NB201Space(stem_channels=4, cells_per_stage=1)
        generator = torch.Generator().manual_seed(0)
        self.inputs = torch.randn((8, *in_shape), generator=generator)
        self.targets = torch.randint(0, num_classes, (8,), generator=generator)
        self.jobs: list[EvalJob] = []

    def submit(self, job: EvalJob, on_progress: ProgressCallback | None = None) -> Future[EvalResult]:
        self.jobs.append(job)
        future: Future[EvalResult] = Future()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny tensors: more threads only wait on each other (like one sandbox)
        try:
            future.set_result(self._evaluate(job))
        finally:
            torch.set_num_threads(threads)
        return future

    def _evaluate(self, job: EvalJob) -> EvalResult:
        architecture = CELL.search(job.code).group(1)
        cost = SPACE.cost(architecture, self.in_shape, self.num_classes)
        metrics = {"params": float(cost.params), "flops": float(cost.flops)}
        if "hardware" in job.stages:
            metrics["latency_ms"] = 0.2 + cost.flops / 1e6
        if "zero-cost" in job.stages:
            namespace: dict = {}
            exec(self.small.render(architecture, self.in_shape, self.num_classes), namespace)  # our own render
            torch.manual_seed(job.seed)
            model = namespace["Net"](self.in_shape, self.num_classes)
            metrics.update(compute_proxies(model, self.inputs, self.targets, job.proxies,
                                           num_classes=self.num_classes, seed=job.seed))  # fmt: skip
        if "train" in job.stages:
            metrics["val_acc"] = 0.5 + min(cost.flops, 4e6) / 1e7
        return EvalResult(State.COMPLETE, metrics=metrics, stage=job.stages[-1])

    def shutdown(self) -> None:
        pass


class Model:
    """The scripted LLM: fixed rules for knowledge updates; for an evolution request, a mutation of the
    first parent listed to a neighbour inside the requested niche (random among them, seeded)."""

    def __init__(self, seed=0):
        self.rng = random.Random(seed)
        self.prompts: list[tuple[str, str]] = []

    def __call__(self, messages):
        prompt = messages[-1]["content"]
        if "Update the knowledge base" in prompt:
            self.prompts.append(("knowledge-base", prompt))
            return json.dumps({"positive": ["Keep nor_conv_3x3 on the edge 0 -> 1."], "negative": ["Avoid none."]})
        self.prompts.append(("evolver", prompt))
        niche = re.search(r"^## Niche (\S+):", prompt, re.MULTILINE).group(1)
        parent = re.search(r"^1\. (\S+):", prompt, re.MULTILINE).group(1)
        inside = [a for a in neighbors(parent) if niche == "all" or SPACE.niche(SPACE.canonical(a)) == niche]
        child = self.rng.choice(inside)
        return json.dumps({"operation": "mutation", "rationale": "One edge cheaper.", "architecture": child})


def search_config(iterations, **options):
    return build_config(
        {
            "strategy": "niche-pareto", "strategy_options": options, "space": "nb201",
            "dataset": {"name": "digits"}, "stages": ["static", "build", "hardware", "zero-cost"],
            "proxies": ["naswot"], "objectives": ["val_acc:max", "latency_ms:min"],
            "budget": {"iterations": iterations}, "llm": {"backend": "scripted", "model": "scripted"},
        }
    )  # fmt: skip


def run(tmp_path, iterations, model=None, **options):
    backend = ScriptedBackend(answers=model) if model is not None else None
    engine = Search.start(search_config(iterations, **options), tmp_path / "run", backend=backend,
                          executor=CellEvaluator(), progress=False)  # fmt: skip
    return engine, engine.run()


def test_two_generations_call_the_llm_twice_per_niche_and_fill_per_niche_archives(tmp_path):
    model = Model()
    engine, summary = run(tmp_path, iterations=18, model=model, initial_per_niche=1)  # 6 initial, 2 x 6 children
    assert summary.iterations == 18 and summary.llm_totals["calls"] >= 24
    roles = [role for role, _ in model.prompts]
    assert roles[:2] == ["knowledge-base", "evolver"] and roles.count("knowledge-base") == 12
    strategy = engine.strategy
    for name, niche in strategy.niches.items():
        assert niche.members and all(strategy.partition.niche_of(m.architecture) == name for m in niche.members)
    # the second generation's knowledge prompts quote the first generation's children with their rationale
    second_round = [prompt for role, prompt in model.prompts if role == "knowledge-base"][6:]
    children = [c for c in engine.history if c.notes.get("generation") == 1]
    assert children and all(child.architecture in "".join(second_round) for child in children)
    assert "rationale: One edge cheaper." in second_round[0]
    for candidate in engine.history[6:]:
        assert candidate.notes["niche"] in strategy.niches and candidate.notes["generation"] in (1, 2)
        assert candidate.notes["knowledge"]["negative"] == ["Avoid none."]
    with RunStore(RunDir(tmp_path / "run").store_path, readonly=True) as store:
        _, saved = store.latest_strategy_state()
    assert len(saved["knowledge_history"]) == 12 and (saved["generation"], saved["step"]) == (2, 6)
    assert {m.id for m in strategy.union_front()} <= {c.id for c in engine.history if c.state is State.COMPLETE}


def test_the_run_store_keeps_the_knowledge_base_and_front_of_every_generation(tmp_path):
    engine, _ = run(tmp_path, iterations=18, model=Model(), initial_per_niche=1)
    with RunStore(RunDir(tmp_path / "run").store_path, readonly=True) as store:
        knowledge = store.artifacts("knowledge_base/")
        fronts = store.artifacts("pareto/")
    assert list(knowledge) == [f"knowledge_base/generation-{g:03d}" for g in (0, 1, 2)]
    assert json.loads(knowledge["knowledge_base/generation-000"])["conv3x3=1"] == {"positive": [], "negative": []}
    assert json.loads(knowledge["knowledge_base/generation-002"])["conv3x3=1"]["negative"] == ["Avoid none."]
    last_front = json.loads(fronts["pareto/generation-002"])
    assert {m["id"] for m in last_front} == {m.id for m in engine.strategy.union_front()}
    assert all({"val_acc", "latency_ms", "architecture", "niche"} <= set(m) for m in last_front)


def test_show_lists_and_prints_the_stored_artifacts(tmp_path, capsys):
    run(tmp_path, iterations=12, model=Model(), initial_per_niche=1)
    assert main(["show", str(tmp_path / "run")]) == 0
    assert (
        "4 artifacts (knowledge_base/generation-000, knowledge_base/generation-001, pareto/" in capsys.readouterr().out
    )
    assert main(["show", str(tmp_path / "run"), "--artifact", "pareto/generation-001"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("# pareto/generation-001\n") and json.loads(printed.split("\n", 1)[1])
    assert main(["show", str(tmp_path / "run"), "--artifact", "knowledge"]) == 0
    assert capsys.readouterr().out.count("# knowledge_base/") == 2
    assert main(["show", str(tmp_path / "run"), "--artifact", "nope"]) == 2
    assert "no artifact named 'nope'* in" in capsys.readouterr().err


def test_the_runs_objectives_and_constraints_reach_the_strategy(tmp_path):
    config = search_config(6, initial_per_niche=1).model_copy(
        update={"objectives": ("val_acc:max", "params:min"), "constraints": ("params<=1e6",)}
    )
    engine = Search.start(config, tmp_path / "run", backend=None, executor=CellEvaluator(), progress=False)
    assert engine.task.objectives == ("val_acc:max", "params:min") and engine.task.constraints == ("params<=1e6",)
    assert [str(o) for o in engine.strategy.objectives] == ["val_acc:max", "params:min"]
    assert [(c.metric, c.op, c.value) for c in engine.strategy.constraints] == [("params", "<=", 1e6)]


def test_no_llm_and_no_partition_variants_run_with_the_same_budget(tmp_path):
    engine, summary = run(tmp_path / "nollm", iterations=14, llm=False)  # no backend: any call would fail
    assert engine.strategy.uses_llm is False and summary.llm_totals["calls"] == 0 and summary.valid == 14
    operations = {c.notes["operation"] for c in engine.history[12:]}
    assert operations <= {"mutation", "crossover", "random"} and operations & {"mutation", "crossover"}

    model = Model()
    engine, summary = run(tmp_path / "single", iterations=8, model=model, partition=False, initial_per_niche=1)
    assert list(engine.strategy.niches) == ["all"] and summary.iterations == 8
    assert [role for role, _ in model.prompts] == ["knowledge-base", "evolver"] * 2
    assert {c.notes["niche"] for c in engine.history} == {"all"}


def test_resume_continues_with_the_restored_archives(tmp_path):
    model = Model()
    engine, _ = run(tmp_path, iterations=6, model=model, initial_per_niche=1)
    before = engine.strategy.state_dict()
    config_path = RunDir(tmp_path / "run").config_path
    config = yaml.safe_load(config_path.read_text())
    config["budget"]["iterations"] = 12
    config_path.write_text(yaml.safe_dump(config))
    resumed = Search.resume(tmp_path / "run", backend=ScriptedBackend(answers=model), executor=CellEvaluator(),
                            progress=False)  # fmt: skip
    assert resumed.strategy.state_dict() == before
    summary = resumed.run()
    assert summary.iterations == 12 and [role for role, _ in model.prompts] == ["knowledge-base", "evolver"] * 6


def test_the_search_command_parses_and_starts_niche_pareto(tmp_path):
    argv = ["search", "--strategy", "niche-pareto", "--space", "nb201", "--objectives", "val_acc:max,latency_ms:min",
            "--llm", "scripted", "--dataset", "digits", "--iterations", "6"]  # fmt: skip
    args = build_parser().parse_args(argv)
    config = load_config(None, _search_overrides(args))
    config = config.model_copy(update={"stages": ("static", "build", "hardware", "zero-cost"), "proxies": ("naswot",)})
    engine = Search.start(config, tmp_path / "run", backend=ScriptedBackend(answers=[]), executor=CellEvaluator(),
                          progress=False)  # fmt: skip
    assert type(engine.strategy).__name__ == "NichePareto" and config.objectives == ("val_acc:max", "latency_ms:min")
    summary = engine.run()  # generation 0 alone: random initial architectures, no LLM answer needed
    assert summary.iterations == 6 and summary.valid == 6


def test_the_example_config_runs_its_first_generation(tmp_path):
    example = Path(__file__).parents[2] / "examples" / "niche_pareto_nb201.yaml"
    config = load_config(example, {"llm.backend": "scripted", "budget.iterations": 24})
    config = config.model_copy(update={"dataset": DatasetSpec(name="digits")})
    engine = Search.start(config, tmp_path / "run", backend=ScriptedBackend(answers=[]), executor=CellEvaluator(),
                          progress=False)  # fmt: skip
    assert engine.strategy.opts.initial_per_niche == 4 and engine.strategy.opts.predictor == "naswot"
    summary = engine.run()  # the 24 random initial cells: no LLM call yet
    assert summary.valid == 24 and summary.best.metrics["naswot"] > 0 and summary.llm_totals["calls"] == 0


@pytest.mark.slow
def test_the_search_command_runs_niche_pareto_through_the_real_sandbox(tmp_path, capsys):
    answers = [
        json.dumps({"positive": ["Convolutions near the input pay off."], "negative": []}),
        json.dumps({"operation": "mutation", "rationale": "Swap a pooling edge for a 1x1 convolution.",
                    "architecture": CHILD}),
    ]  # fmt: skip
    config = {
        "strategy_options": {"partition": False, "initial_per_niche": 1},
        "llm": {"responses": answers}, "stages": ["static", "build", "hardware", "zero-cost"],
        "proxies": ["naswot"], "limits": {"timeout_s": 120}, "recipe": {"threads": 1},
    }  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = ["search", "--config", str(path), "--strategy", "niche-pareto", "--space", "nb201", "--objectives",
            "val_acc:max,latency_ms:min", "--llm", "scripted", "--dataset", "digits", "--iterations", "7",
            "--run-dir", str(tmp_path / "run"), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert "iterations: 7, valid: 7" in capsys.readouterr().out
    with RunStore(RunDir(tmp_path / "run").store_path, readonly=True) as store:
        candidates = store.candidates()
        artifacts = store.artifacts()
    assert all("latency_ms" in c.metrics and "naswot" in c.metrics for c in candidates)
    assert candidates[-1].notes["operation"] == "mutation" and candidates[-1].notes["niche"] == "all"
    knowledge = json.loads(artifacts["knowledge_base/generation-001"])
    assert knowledge["all"]["positive"] == ["Convolutions near the input pay off."]
    front = json.loads(artifacts["pareto/generation-001"])
    assert front and all(member["id"] in {c.id for c in candidates} for member in front)
