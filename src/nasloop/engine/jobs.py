"""The one place an evaluation job is built from a run's config: `nasloop search`, `nasloop eval` and
`nasloop train` all call `job_for`."""

from __future__ import annotations

from nasloop.config import SearchConfig
from nasloop.evaluate.job import EvalJob, Limits
from nasloop.seeds import evaluation_seed


def job_for(
    config: SearchConfig,
    code: str,
    *,
    stages: tuple[str, ...] | None = None,
    limits: Limits | None = None,
    seed: int | None = None,
) -> EvalJob:
    """The job that evaluates `code` as `config` says: its data, recipe, proxies and measurements, with
    `stages` (default the run's), `limits` (default the run's) and `seed` (default the run's evaluation
    seed, `nasloop.seeds.evaluation_seed`)."""
    return EvalJob(
        code=code,
        dataset=config.dataset,
        recipe=config.recipe,
        limits=limits or config.limits,
        stages=stages or config.stages,
        proxies=config.proxies,
        measure=config.measure,
        seed=evaluation_seed(config.seed) if seed is None else seed,
    )


__all__ = ["job_for"]
