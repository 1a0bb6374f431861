import math
import re

import pytest
from pydantic import ValidationError

from nasloop.objectives import EffectivenessConfig, best_by_effectiveness, combined_effectiveness

REFERENCE = EffectivenessConfig(
    accuracy_weight=1.0,
    fps_weight=0.5,
    energy_weight=0.25,
    reference_fps=100.0,
    reference_train_energy_j=1000.0,
    reference_val_energy_j=10.0,
)
FULL_METRICS = {
    "train_acc": 0.8,
    "val_acc": 0.7,
    "throughput_ips": 50.0,
    "train_energy_j": 500.0,
    "val_energy_j": 2.0,
}


def test_reference_normalisation_by_hand() -> None:
    result = combined_effectiveness(FULL_METRICS, REFERENCE)
    # AW(0.8 + 0.7) + FW·50/100 − EW(500/1000 + 2/10) = 1.5 + 0.25 − 0.175
    assert result.value == pytest.approx(1.575)
    assert result.reason == ""
    assert result.terms == pytest.approx(
        {"accuracy": 1.5, "normalised_fps": 0.5, "normalised_train_energy": 0.5, "normalised_val_energy": 0.2}
    )


def test_default_config_is_accuracy_only_and_needs_no_device_metrics() -> None:
    result = combined_effectiveness({"train_acc": 0.6, "val_acc": 0.5}, EffectivenessConfig())
    assert result.value == pytest.approx(1.1)


def test_fps_falls_back_to_batch_one_latency() -> None:
    metrics = {key: value for key, value in FULL_METRICS.items() if key != "throughput_ips"}
    metrics["latency_ms"] = 4.0  # 250 frames per second
    result = combined_effectiveness(metrics, REFERENCE)
    assert result.terms["normalised_fps"] == pytest.approx(2.5)
    no_fallback = REFERENCE.model_copy(update={"latency_metric": None})
    assert combined_effectiveness(metrics, no_fallback).value is None


@pytest.mark.parametrize(
    ("drop_or_change", "reason"),
    [
        ({"val_acc": None}, "val_acc is missing"),
        ({"train_acc": None}, "train_acc is missing"),
        ({"throughput_ips": None}, "FPS is unknown: throughput_ips is missing or not positive, and so is latency_ms"),
        ({"train_energy_j": None}, "train_energy_j is missing"),
        ({"val_energy_j": math.nan}, "val_energy_j = nan is not a finite number"),
        ({"val_acc": 71.5}, r"val_acc = 71.5 is not a fraction in \[0, 1\]"),
        ({"train_energy_j": -1.0}, "train_energy_j = -1.0 is negative"),
    ],
)
def test_missing_or_invalid_metrics_give_no_value_and_a_reason(
    drop_or_change: dict[str, float | None], reason: str
) -> None:
    metrics = dict(FULL_METRICS)
    for key, value in drop_or_change.items():
        if value is None:
            del metrics[key]
        else:
            metrics[key] = value
    result = combined_effectiveness(metrics, REFERENCE)
    assert result.value is None
    assert result.terms == {}
    assert re.search(reason, result.reason)


def test_unweighted_terms_need_no_metric() -> None:
    config = REFERENCE.model_copy(update={"energy_weight": 0.0})
    metrics = {"train_acc": 0.8, "val_acc": 0.7, "throughput_ips": 50.0}
    assert combined_effectiveness(metrics, config).value == pytest.approx(1.75)


def test_config_rejects_weighted_terms_without_reference_values() -> None:
    with pytest.raises(ValidationError, match="needs reference_fps"):
        EffectivenessConfig(fps_weight=1.0, normalisation="reference")
    with pytest.raises(ValidationError, match="reference_train_energy_j, reference_val_energy_j"):
        EffectivenessConfig(energy_weight=1.0, normalisation="reference")
    assert EffectivenessConfig(fps_weight=1.0).normalisation == "seed"  # the default needs no reference
    assert EffectivenessConfig(fps_weight=1.0, reference_fps=5.0).normalisation == "reference"  # implied
    EffectivenessConfig(fps_weight=1.0, energy_weight=1.0, normalisation="run")  # no references needed
    with pytest.raises(ValidationError, match="accuracy_weight"):
        EffectivenessConfig(accuracy_weight=-1.0)
    with pytest.raises(ValidationError, match="fps_wieght"):
        EffectivenessConfig.model_validate({"fps_wieght": 1.0})


RUN_CONFIG = EffectivenessConfig(fps_weight=1.0, energy_weight=1.0, normalisation="run")


def _candidate(accuracy: float, fps: float, train_energy: float, val_energy: float) -> dict[str, float]:
    return {
        "train_acc": accuracy,
        "val_acc": accuracy,
        "throughput_ips": fps,
        "train_energy_j": train_energy,
        "val_energy_j": val_energy,
    }


def test_run_normalisation_min_max_by_hand() -> None:
    run = [_candidate(0.5, 100.0, 10.0, 1.0), _candidate(0.6, 300.0, 30.0, 3.0), _candidate(0.7, 200.0, 20.0, 2.0)]
    # Third: fps (200-100)/200 = 0.5, energies (20-10)/20 = 0.5 and (2-1)/2 = 0.5.
    result = combined_effectiveness(run[2], RUN_CONFIG, run=run)
    assert result.value == pytest.approx(1.4 + 0.5 - 1.0)
    with pytest.raises(ValueError, match="needs the run"):
        combined_effectiveness(run[2], RUN_CONFIG)


def test_run_normalisation_rescales_old_candidates_but_reference_does_not() -> None:
    first, second = _candidate(0.5, 100.0, 10.0, 1.0), _candidate(0.6, 300.0, 30.0, 3.0)
    newcomer = _candidate(0.6, 1000.0, 10.0, 1.0)
    before = combined_effectiveness(second, RUN_CONFIG, run=[first, second]).value
    after = combined_effectiveness(second, RUN_CONFIG, run=[first, second, newcomer]).value
    assert before != pytest.approx(after)
    reference_before = combined_effectiveness(FULL_METRICS, REFERENCE).value
    assert combined_effectiveness(FULL_METRICS, REFERENCE, run=[newcomer]).value == reference_before


def test_run_normalisation_with_zero_range_contributes_zero() -> None:
    only = _candidate(0.5, 100.0, 10.0, 1.0)
    assert combined_effectiveness(only, RUN_CONFIG, run=[only]).terms["normalised_fps"] == 0.0


def test_best_by_effectiveness() -> None:
    config = EffectivenessConfig(fps_weight=1.0, reference_fps=100.0)
    points = [
        {"train_acc": 0.9, "val_acc": 0.9, "throughput_ips": 10.0},  # 1.8 + 0.1
        {"train_acc": 0.8, "val_acc": 0.8, "throughput_ips": 100.0},  # 1.6 + 1.0: best
        {"train_acc": 0.99, "val_acc": 0.99},  # no FPS: no value, not a zero
    ]
    assert best_by_effectiveness(points, config) == 1
    assert best_by_effectiveness([{"val_acc": 0.5}], config) is None
    assert best_by_effectiveness([], config) is None


SEED_CONFIG = EffectivenessConfig(fps_weight=0.5, energy_weight=0.25)
SEED = _candidate(0.8, 1000.0, 100.0, 10.0)


def test_seed_normalisation_by_hand_and_the_cap() -> None:
    faster = _candidate(0.7, 1500.0, 50.0, 20.0)
    # 0.7 + 0.7 + 0.5·1500/1000 − 0.25·(50/100 + 20/10)
    assert combined_effectiveness(faster, SEED_CONFIG, seed=SEED).value == pytest.approx(1.4 + 0.75 - 0.625)
    assert combined_effectiveness(SEED, SEED_CONFIG, seed=SEED).value == pytest.approx(1.6 + 0.5 - 0.5)
    tiny = _candidate(0.24, 169_000.0, 10.0, 1.0)  # 169x the seed's FPS counts as 2x
    assert combined_effectiveness(tiny, SEED_CONFIG, seed=SEED).terms["normalised_fps"] == 2.0
    # so a tiny, inaccurate network no longer wins on speed alone
    seed_cm = combined_effectiveness(SEED, SEED_CONFIG, seed=SEED).value
    assert combined_effectiveness(tiny, SEED_CONFIG, seed=SEED).value < seed_cm
    uncapped = SEED_CONFIG.model_copy(update={"ratio_cap": None})
    assert combined_effectiveness(tiny, uncapped, seed=SEED).terms["normalised_fps"] == pytest.approx(169.0)


def test_seed_normalisation_without_a_seed_figure_gives_a_reason() -> None:
    assert combined_effectiveness(SEED, SEED_CONFIG).reason == "no seed network to normalise FPS against"
    slow_seed = {key: value for key, value in SEED.items() if key != "throughput_ips"}
    result = combined_effectiveness(SEED, SEED_CONFIG, seed=slow_seed)
    assert result.value is None and "the seed network's FPS is unknown" in result.reason
