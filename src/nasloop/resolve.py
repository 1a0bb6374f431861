"""What a run needs, filled in before it starts: stages, proxies and option defaults from its strategy.

Each strategy declares the metrics every candidate must carry for it (`Strategy.needs`: the fitness a
population ranks by, the objectives of a Pareto search, the accuracy an open-code loop keeps its best
by), each with the option that asks for it, and may adapt its option defaults to the run
(`Strategy.resolve_options`: on a tabular benchmark, `niche-pareto` reads the table's accuracy instead
of predicting it). `resolve_config` then

- fills in what the user left unset: the evaluation `stages` that produce those metrics (`zero-cost` for
  a proxy, `hardware` for latency, `train` for accuracy, nothing for what a benchmark's table gives), the
  `proxies` the zero-cost stage computes, the `space` of a benchmark;
- refuses a contradiction with a one-line `ConfigError` that names the option to change, before any
  candidate runs: stages that cannot produce a needed metric, a proxy list without the fitness proxy, a
  device latency without the benchmark that has it, a benchmark whose space is not the run's, an option
  the strategy or the space does not have;
- writes out every strategy option and space option with its default, so the saved config says how the
  run was made even after a default changes.

The resolved config is what the run saves, so `resume` and reports see every filled-in value.
"""

from __future__ import annotations

import inspect
from typing import Any

from nasloop.config import ConfigError, SearchConfig
from nasloop.registry import UnknownNameError, benchmarks, ordered_stages, proxies, spaces, strategies

#: metrics the training stage gives (the rest of `train_*` too)
TRAINED = frozenset({"val_acc", "test_acc", "train_acc", "train_energy_j", "val_energy_j"})
#: metrics the hardware stage gives besides `latency_b<N>_ms` and `latency_*` spreads
MEASURED = frozenset({"latency_ms", "throughput_ips", "peak_memory_mb", "energy_j", "co2_g", "flops"})
#: metrics the build stage gives
BUILT = frozenset({"params"})


def stage_for(metric: str, config: SearchConfig) -> str | None:
    """The stage that computes `metric` in this run, None when nothing needs to run for it (the build
    stage, which every evaluation has, or the benchmark's table) or nasloop does not know the metric (a
    user's own stage or executor computes it); ConfigError for a device metric without its benchmark."""
    if config.benchmark is not None and metric in table_metrics(config):
        return None
    if metric in BUILT:
        return None
    if metric in TRAINED or metric.startswith("train_"):
        return "train"
    if metric in MEASURED or metric.startswith("latency_"):
        return "hardware"
    if metric in proxies:
        return "zero-cost"
    if metric in device_metrics():
        raise ConfigError(
            f"{metric} is a device measurement from HW-NAS-Bench: set `benchmark: {{name: nb201, dataset: cifar10}}`"
            " (or give a device_table), or use the latency this machine measures, latency_ms"
        )
    return None  # a metric of the user's own (a stage or executor of theirs): nothing to infer


def table_metrics(config: SearchConfig) -> set[str]:
    """The metrics the run's benchmark table gives: accuracies, params, flops, and device metrics where
    the benchmark has them for the dataset."""
    spec = config.benchmark
    if spec is None:
        return set()
    benchmark = benchmarks.get(spec.name)()
    names = {"val_acc", "test_acc", "params", "flops"}
    if spec.device_table is not None or spec.dataset in benchmark.device_tables:
        names |= set(benchmark.device_metric_names.values())
    return names


def device_metrics() -> set[str]:
    """Every device metric any registered benchmark has (`edgegpu_latency_ms`, ...)."""
    return {name for benchmark in benchmarks.names() for name in benchmarks.get(benchmark).device_metric_names.values()}


def resolve_config(config: SearchConfig) -> SearchConfig:
    """`config` with what its strategy needs filled in; ConfigError naming the option for a contradiction."""
    try:
        strategy_class = strategies.get(config.strategy)
    except UnknownNameError as error:
        raise ConfigError(f"strategy: {error}") from None
    config = _resolve_benchmark(config)
    options = strategy_class.resolve_options(dict(config.strategy_options), config)
    try:
        validated = strategy_class.Options.model_validate(options)
    except ValueError as error:
        raise ConfigError(f"strategy_options of {config.strategy}: {error}") from None
    needs = strategy_class.needs(validated, config)
    config = config.model_copy(update={"strategy_options": validated.model_dump(mode="json")})
    return _resolve_space_options(_resolve_stages(config, needs))


#: space constructor arguments the engine derives from the run (the task's shape, the parameter limit)
DERIVED_SPACE_OPTIONS = frozenset({"in_shape", "num_classes", "max_params"})


def _resolve_space_options(config: SearchConfig) -> SearchConfig:
    """The space's options with their defaults written out; ConfigError for an option it does not have."""
    if config.space is None:
        return config
    parameters = inspect.signature(spaces.get(config.space)).parameters
    unknown = sorted(set(config.space_options) - set(parameters))
    if unknown:
        known = ", ".join(name for name in parameters if name not in DERIVED_SPACE_OPTIONS) or "none"
        raise ConfigError(
            f"space_options: space {config.space!r} has no option {', '.join(unknown)} (its options: {known})"
        )
    defaults = {
        name: list(parameter.default) if isinstance(parameter.default, tuple) else parameter.default
        for name, parameter in parameters.items()
        if name not in DERIVED_SPACE_OPTIONS and parameter.default is not inspect.Parameter.empty
    }
    return config.model_copy(update={"space_options": {**defaults, **config.space_options}})


def _resolve_benchmark(config: SearchConfig) -> SearchConfig:
    spec = config.benchmark
    if spec is None:
        return config
    try:
        benchmark = benchmarks.get(spec.name)()
    except UnknownNameError as error:
        raise ConfigError(f"benchmark.name: {error}") from None
    if config.space is not None and config.space != benchmark.space:
        raise ConfigError(
            f"space: {config.space!r} is not the space of benchmark {spec.name} ({benchmark.space}); "
            "leave `space` unset or set it to that"
        )
    if spec.dataset not in benchmark.datasets:
        known = ", ".join(benchmark.datasets)
        raise ConfigError(f"benchmark.dataset: {spec.name} has no dataset {spec.dataset!r} ({known})")
    update: dict[str, Any] = {"space": benchmark.space}
    if "dataset" not in config.model_fields_set:  # images of the benchmark's shape for the sandbox's stages
        update["dataset"] = config.dataset.model_copy(update={"name": f"synthetic-{spec.dataset.lower()}"})
    return config.model_copy(update=update)


def _resolve_stages(config: SearchConfig, needs: dict[str, str]) -> SearchConfig:
    """Stages and proxies for `needs` (metric -> the option that asks for it), filled in or checked."""
    user_stages = "stages" in config.model_fields_set
    user_proxies = "proxies" in config.model_fields_set
    wanted: dict[str, str] = {}  # stage -> why
    wanted_proxies: list[str] = []
    for metric, option in needs.items():
        stage = stage_for(metric, config)
        if stage is not None:
            wanted.setdefault(stage, f"{metric} (asked for by {option})")
        if stage == "zero-cost" and metric not in wanted_proxies:
            wanted_proxies.append(metric)
    update: dict[str, Any] = {}
    if user_stages:
        for stage, why in wanted.items():
            if stage not in config.stages:
                raise ConfigError(f"stages: add {stage}, the stage that computes {why}, or leave `stages` unset")
    else:
        chosen = {"static", "build", *wanted}
        update["stages"] = tuple(stage for stage in ordered_stages() if stage in chosen)
    if user_proxies:
        missing = [name for name in wanted_proxies if name not in config.proxies]
        if missing:
            raise ConfigError(
                f"proxies: add {', '.join(missing)} (needed by {needs[missing[0]]}), or leave `proxies` unset"
            )
    elif wanted_proxies:
        update["proxies"] = tuple(wanted_proxies)
    resolved = config.model_copy(update=update)
    # An untrained run selects on its first proxy (on a benchmark, on the table's val_acc).
    untrained = "train" not in resolved.stages and config.benchmark is None
    if untrained and resolved.proxies and "objective" not in config.model_fields_set:
        resolved = resolved.model_copy(update={"objective": resolved.proxies[0]})
    if resolved.space is not None:
        try:
            spaces.get(resolved.space)
        except UnknownNameError as error:
            raise ConfigError(f"space: {error}") from None
    return resolved


__all__ = ["resolve_config", "stage_for", "table_metrics"]
