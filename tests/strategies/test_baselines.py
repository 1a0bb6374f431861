"""The `random` and `evolution` baselines of structured spaces, on a synthetic fitness."""

import json
import re
import statistics
from concurrent.futures import Future

import pytest

from nasloop.candidate import EvalResult, Purpose, State
from nasloop.config import build_config
from nasloop.engine import Search
from nasloop.evaluate.job import EvalJob
from nasloop.executors.base import Executor, ProgressCallback
from nasloop.spaces import nb201
from nasloop.strategies.baselines import EvolutionOptions, RandomSearch, RegularizedEvolution

CELL_EDGE = re.compile(r'^    \(\d, \d, "(\w+)"\),$', re.MULTILINE)


class ConvolutionCount(Executor):
    """A synthetic fitness for rendered NAS-Bench-201 networks: `conv3x3`, the number of the cell's live
    edges (those that reach the output) that are nor_conv_3x3 (0 to 6; the optimum is the all-convolution
    cell)."""

    def __init__(self) -> None:
        self.jobs: list[EvalJob] = []

    def submit(self, job: EvalJob, on_progress: ProgressCallback | None = None) -> Future[EvalResult]:
        self.jobs.append(job)
        operations = CELL_EDGE.findall(job.code)
        assert len(operations) == 6, "not a rendered NAS-Bench-201 network"
        future: Future[EvalResult] = Future()
        live = nb201.live_cell(tuple(operations))
        future.set_result(EvalResult(State.COMPLETE, metrics={"conv3x3": float(live.count("nor_conv_3x3"))}))
        return future

    def shutdown(self) -> None:
        pass


def search(tmp_path, strategy, iterations, seed=0, name="run", **options):
    config = build_config(
        {
            "strategy": strategy, "strategy_options": {"final_top_k": 0, **options}, "space": "nb201",
            "dataset": {"name": "digits"}, "objective": "conv3x3", "budget": {"iterations": iterations},
            "seed": seed,
        }
    )  # fmt: skip
    engine = Search.start(config, tmp_path / name, executor=ConvolutionCount(), progress=False)
    return engine, engine.run()


def test_random_search_proposes_valid_unseen_points_without_an_llm(tmp_path):
    engine, summary = search(tmp_path, "random", iterations=25)
    architectures = [record.architecture for record in engine.history]
    assert summary.iterations == 25 and RandomSearch.uses_llm is False and RandomSearch.sequential is False
    assert all(engine.space.validate(architecture) is None for architecture in architectures)
    assert len({engine.space.canonical(architecture) for architecture in architectures}) == 25  # no repeats
    assert summary.llm_totals["calls"] == 0


def test_evolution_mutates_tournament_winners_and_removes_the_oldest(tmp_path):
    engine, _ = search(tmp_path, "evolution", iterations=20, population_size=6, sample_size=3)
    records = engine.history
    assert all(engine.space.validate(record.architecture) is None for record in records)
    assert [record.notes["operator"] for record in records] == ["initial"] * 6 + ["mutation"] * 14
    for child in records[6:]:  # one edge away from its parent
        parent = engine.history[child.parent_ids[0] - 1]
        assert child.architecture in nb201.neighbors(engine.space.canonical(parent.architecture))
    # aging: the population is the six youngest evaluated candidates, whatever their fitness
    assert [member.id for member in engine.strategy.population] == [record.id for record in records[-6:]]


def test_evolution_beats_random_search_on_the_same_budget(tmp_path):
    # Random search finds 3 to 5 convolutions in 60 draws (6 has probability 1/15,625 per draw); the
    # tournaments climb one edge at a time.
    best: dict[str, list[float]] = {"random": [], "evolution": []}
    for seed in range(3):
        for strategy in best:
            options = {"population_size": 8, "sample_size": 4} if strategy == "evolution" else {}
            _, summary = search(tmp_path, strategy, iterations=60, seed=seed, name=f"{strategy}{seed}", **options)
            best[strategy].append(summary.best.metrics["conv3x3"])
    assert statistics.mean(best["evolution"]) > statistics.mean(best["random"])


def test_evolution_resumes_from_its_state(tmp_path):
    engine, _ = search(tmp_path, "evolution", iterations=12, population_size=5, sample_size=2)
    state = json.loads(json.dumps(engine.strategy.state_dict()))
    restored = RegularizedEvolution(EvolutionOptions(population_size=5, sample_size=2), engine.task,
                                    space=engine.space)  # fmt: skip
    restored.load_state_dict(state)
    assert restored.population == engine.strategy.population
    assert restored.initial_observed == 5 and restored.initial_outstanding == 0


@pytest.mark.parametrize("strategy", ["random", "evolution"])
def test_baselines_finalize_their_top_k(tmp_path, strategy):
    engine, summary = search(tmp_path, strategy, iterations=10, final_top_k=2)
    finals = [record for record in engine.history if record.purpose is Purpose.FINAL]
    searched = [record for record in engine.history if record.purpose is not Purpose.FINAL]
    ranked = sorted(searched, key=lambda record: (-record.metrics["conv3x3"], record.id))
    assert [record.parent for record in finals] == [ranked[0].id, ranked[1].id]
    assert summary.iterations == 10


def test_evolution_options_are_checked():
    with pytest.raises(ValueError, match="sample_size"):
        EvolutionOptions(population_size=4, sample_size=5)
    with pytest.raises(ValueError, match="populaton_size"):
        EvolutionOptions.model_validate({"populaton_size": 4})
