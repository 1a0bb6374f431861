from pathlib import Path

import pytest
import yaml

from nasloop.config import ConfigError, build_config, dump_config, load_config

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))


def test_unknown_top_level_key_is_named():
    with pytest.raises(ConfigError, match=r"strategee: unknown key"):
        build_config({"strategee": "x"})


def test_unknown_nested_key_is_named():
    with pytest.raises(ConfigError, match=r"budget\.iteration: unknown key"):
        build_config({"budget": {"iteration": 3}})


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match=r"dataset\.val_fraction"):
        build_config({"dataset": {"val_fraction": 2}})


def test_overrides_apply_dotted_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("strategy: one-shot\nbudget:\n  iterations: 3\n")
    config = load_config(path, {"budget.iterations": 7, "dataset.name": "digits", "seed": None})
    assert config.strategy == "one-shot" and config.budget.iterations == 7 and config.dataset.name == "digits"


def test_resolved_config_round_trips(tmp_path):
    config = build_config({"strategy": "one-shot", "dataset": {"name": "digits", "train_subset": 100}})
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


def test_paper_protocol_selects_on_test_and_never_prunes():
    config = build_config({"protocol": "paper"})
    assert config.selection_metric == "test_acc"
    assert config.pruning.enabled is False
    assert build_config({}).selection_metric == "val_acc"


def test_a_run_without_training_selects_on_its_first_proxy_unless_told_otherwise(tmp_path):
    zero_cost = {"stages": ["static", "build", "zero-cost"], "proxies": ["synflow", "naswot"]}
    config = build_config(zero_cost)
    assert config.objective == config.selection_metric == "synflow"
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(config))
    assert load_config(path).objective == "synflow"
    assert build_config({**zero_cost, "objective": "params"}).objective == "params"
    assert build_config({"proxies": ["synflow"]}).objective == "val_acc"  # trained runs keep val_acc


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_the_examples_are_found():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_config_loads(path):
    config = load_config(path)
    from nasloop.registry import strategies

    assert config.strategy in strategies
    strategies.get(config.strategy).Options.model_validate(config.strategy_options)


@pytest.mark.parametrize(
    ("override", "named", "suggestion"),
    [
        ({"stages": ["static", "build", "zero_cost"]}, "zero_cost", "zero-cost"),
        ({"stages": ["static", "build", "zero-cost"], "proxies": ["synflw"]}, "synflw", "synflow"),
        ({"limits": {"min_proxy": {"nasowt": 1.0}}}, "nasowt", "naswot"),
    ],
)
def test_a_misspelt_stage_or_proxy_fails_at_load_naming_it(tmp_path, override, named, suggestion):
    with pytest.raises(ConfigError, match=named) as raised:
        build_config(override)
    assert suggestion in str(raised.value)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(override))
    with pytest.raises(ConfigError, match=named):
        load_config(path)


def test_the_resolved_config_writes_out_strategy_and_space_options():
    from nasloop.resolve import resolve_config

    options = {"population_size": 6, "sample_size": 3}
    resolved = resolve_config(build_config({"strategy": "evolution", "space": "nb201", "stages": ["static", "build"],
                                            "objective": "params", "strategy_options": options}))  # fmt: skip
    assert (
        resolved.strategy_options["population_size"] == 6
        and resolved.strategy_options["sample_size"] == 3
        and "final_top_k" in resolved.strategy_options
    )
    assert resolved.space_options == {"stem_channels": 16, "cells_per_stage": 5}
    with pytest.raises(ConfigError, match="space_options: space 'nb201' has no option stem_width"):
        resolve_config(build_config({"space": "nb201", "space_options": {"stem_width": 8}}))
