"""`nsga2`: NSGA-II (Deb et al., 2002) through pymoo, the multi-objective baseline without an LLM.

pymoo's own NSGA-II does the work (non-dominated sorting, crowding distance, binary tournaments,
elitist survival, duplicate elimination) in its ask-and-tell form; nasloop supplies the space: a
candidate is one architecture string, drawn with `space.sample`, recombined with `space.crossover` and
changed with `space.mutate`, and two are duplicates when their canonical forms are equal. Each
generation's offspring are proposed one at a time and told to pymoo once all of them are observed.

Objectives are the run's (`objectives`, e.g. `val_acc:max, edgegpu_latency_ms:min`) or the option's. A
candidate that failed, or that lacks an objective (a device latency its table does not have), is told to
pymoo as infeasible (a constraint violation), so every feasible network dominates it; it never gets a
made-up objective value. Needs the `pymoo` package (`pip install 'nasloop[moo]'`).
"""

from __future__ import annotations

import random
from typing import Any

from pydantic import Field

from nasloop.candidate import Proposal
from nasloop.objectives import parse_objectives
from nasloop.registry import strategies
from nasloop.strategies.base import Context, Observation, Strategy, Task, strategy_note
from nasloop.strict import Strict

INSTALL_HINT = "NSGA-II needs pymoo: pip install 'nasloop[moo]'"


class NSGA2Options(Strict):
    """Options of `nsga2`."""

    objectives: tuple[str, ...] | None = Field(default=None, description="'metric:max|min'; None: the run's")
    population_size: int = Field(default=20, ge=2, description="individuals kept; also the offspring per generation")
    crossover_probability: float = Field(default=0.9, ge=0, le=1)


def _import_pymoo() -> Any:
    try:
        import pymoo  # noqa: F401
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    from pymoo.algorithms.moo import nsga2

    return nsga2


@strategies.register("nsga2")
class NSGA2(Strategy):
    """NSGA-II in pymoo's ask-and-tell form over a structured space; see the module docstring."""

    Options = NSGA2Options
    sequential = True  # an offspring batch is told to pymoo only once all of it is observed
    uses_llm = False
    needs_space = True

    @classmethod
    def needs(cls, options: Any, config: Any) -> dict[str, str]:
        texts = options.objectives or tuple(config.objectives)
        source = "strategy_options.objectives" if options.objectives else "objectives"
        if not texts:
            return {config.selection_metric: "objective"}
        return {objective.metric: source for objective in parse_objectives(",".join(texts))}

    def __init__(self, options: Any, task: Task, *, space: Any = None, seed: int = 0) -> None:
        super().__init__(options, task, space=space, seed=seed)
        self.opts: NSGA2Options = options
        texts = options.objectives or task.objectives or (f"{task.metric}:max",)
        self.objectives = parse_objectives(",".join(texts))
        self.algorithm = self._make_algorithm(seed)
        self.batch: list[str] = []  # offspring not proposed yet
        self.results: dict[str, tuple[list[float], float]] = {}  # canonical -> (minimised objectives, violation)
        self.asked: list[str] = []  # the offspring of the batch being evaluated, in pymoo's order
        self.offspring: Any = None  # pymoo's Population of that batch

    def _make_algorithm(self, seed: int) -> Any:
        nsga2 = _import_pymoo()
        import numpy as np
        from pymoo.core.crossover import Crossover
        from pymoo.core.duplicate import ElementwiseDuplicateElimination
        from pymoo.core.mutation import Mutation
        from pymoo.core.problem import Problem
        from pymoo.core.sampling import Sampling

        space = self.space

        def rng(random_state: Any) -> random.Random:
            return random.Random(int(random_state.integers(2**32)))

        class SpaceSampling(Sampling):
            def _do(self, problem: Any, n_samples: int, *args: Any, random_state: Any = None, **kwargs: Any) -> Any:
                draw = rng(random_state)
                return np.array([[space.sample(draw)] for _ in range(n_samples)], dtype=object)

        class SpaceCrossover(Crossover):
            def __init__(self, probability: float) -> None:
                super().__init__(2, 1, prob=probability)

            def _do(self, problem: Any, X: Any, *args: Any, random_state: Any = None, **kwargs: Any) -> Any:
                draw = rng(random_state)
                children = np.empty((1, X.shape[1], 1), dtype=object)
                for mating in range(X.shape[1]):
                    children[0, mating, 0] = space.crossover(X[0, mating, 0], X[1, mating, 0], draw)
                return children

        class SpaceMutation(Mutation):
            def _do(self, problem: Any, X: Any, *args: Any, random_state: Any = None, **kwargs: Any) -> Any:
                draw = rng(random_state)
                for row in range(len(X)):
                    X[row, 0] = space.mutate(X[row, 0], draw)
                return X

        class SameNetwork(ElementwiseDuplicateElimination):
            def is_equal(self, a: Any, b: Any) -> bool:
                return bool(space.canonical(a.X[0]) == space.canonical(b.X[0]))

        problem = Problem(n_var=1, n_obj=len(self.objectives), n_ieq_constr=1, vtype=object)
        algorithm = nsga2.NSGA2(
            pop_size=self.opts.population_size, sampling=SpaceSampling(),
            crossover=SpaceCrossover(self.opts.crossover_probability), mutation=SpaceMutation(),
            eliminate_duplicates=SameNetwork(), seed=seed,
        )  # fmt: skip
        algorithm.setup(problem, termination=("n_gen", 10**9))
        return algorithm

    # -- the loop -----------------------------------------------------------------------------------

    def propose(self, ctx: Context) -> list[Proposal]:
        if not self.batch:
            self.offspring = self.algorithm.ask()
            self.asked = [str(x[0]) for x in self.offspring.get("X")]
            self.batch = list(self.asked)
        architecture = self.batch.pop(0)
        notes = strategy_note(operator="nsga2", generation=int(self.algorithm.n_iter or 0))
        return [Proposal(architecture=architecture, notes=notes)]

    def observe(self, observations: list[Observation]) -> None:
        for observation in observations:
            record = observation.record
            if observation.proposal.final_of is not None or record.architecture is None:
                continue
            self.results[self.space.canonical(record.architecture)] = self._told(record)
        if self.offspring is not None and not self.batch and all(self._known(arch) for arch in self.asked):
            self._tell()

    def _known(self, architecture: str) -> bool:
        return self.space.canonical(architecture) in self.results

    def _told(self, record: Any) -> tuple[list[float], float]:
        """(minimised objective values, constraint violation) of a stored candidate."""
        completed = record.usable
        values = [record.metrics.get(objective.metric) for objective in self.objectives]
        if not completed or any(value is None for value in values):
            return [0.0] * len(self.objectives), 1.0  # infeasible: dominated by every feasible network
        return [
            objective.minimised(float(value)) for objective, value in zip(self.objectives, values, strict=True)
        ], 0.0

    def _tell(self) -> None:
        import numpy as np

        told = [self.results[self.space.canonical(arch)] for arch in self.asked]
        self.offspring.set("F", np.array([values for values, _ in told], dtype=float))
        self.offspring.set("G", np.array([[violation] for _, violation in told], dtype=float))
        self.algorithm.tell(infills=self.offspring)
        self.offspring, self.asked = None, []

    # -- resume -------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The surviving population with its values (pymoo's own objects are rebuilt from it)."""
        population = self.algorithm.pop
        members = [] if population is None else [str(x[0]) for x in population.get("X")]
        return {"population": members, "results": {arch: list(value) for arch, value in self.results.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import numpy as np
        from pymoo.core.population import Population

        self.results = {
            arch: (list(values), float(violation)) for arch, (values, violation) in (state.get("results") or {}).items()
        }
        members = [arch for arch in state.get("population") or [] if self.space.canonical(arch) in self.results]
        if not members:
            return
        population = Population.new("X", np.array([[arch] for arch in members], dtype=object))
        told = [self.results[self.space.canonical(arch)] for arch in members]
        population.set("F", np.array([values for values, _ in told], dtype=float))
        population.set("G", np.array([[violation] for _, violation in told], dtype=float))
        self.algorithm.tell(infills=population)  # pymoo's survival sorts it, as after a generation


__all__ = ["NSGA2", "NSGA2Options"]
