"""Every default rule fires on a case written for it and stays silent on a near miss."""

from dataclasses import dataclass, field

import pytest

from nasloop.candidate import Failure, FailureKind
from nasloop.strategies.expert_system import fire, load_rules, resolve

TARGETS = {
    "val_acc": 0.80,
    "fps": 100.0,
    "latency_ms": 5.0,
    "flops": 50e6,
    "params": 1e6,
    "size_mb": 4.0,
    "peak_memory_mb": 200.0,
    "energy_j": 0.01,
    "train_energy_j": 5000.0,
    "power_w": 30.0,
    "co2_g": 0.001,
}


@dataclass
class Case:
    metrics: dict[str, float] = field(default_factory=dict)
    failure: Failure | None = None


def failure(kind: FailureKind, message: str = "it broke") -> Failure:
    return Failure(kind, message)


# rule name -> (a case where it fires, a near miss where it does not)
CASES: dict[str, tuple[Case, Case]] = {
    "accuracy-below-target": (Case({"val_acc": 0.79}), Case({"val_acc": 0.80})),
    "underfitting": (
        Case({"train_acc": 0.60, "val_acc": 0.58}),
        Case({"train_acc": 0.60, "val_acc": 0.50}),  # a large train/val gap is not underfitting
    ),
    "overfitting": (Case({"train_acc": 0.95, "val_acc": 0.80}), Case({"train_acc": 0.88, "val_acc": 0.80})),
    "accuracy-margin-for-efficiency": (Case({"val_acc": 0.83}), Case({"val_acc": 0.81})),
    "fps-below-target": (Case({"throughput_ips": 90.0}), Case({"throughput_ips": 120.0})),
    "latency-above-target": (Case({"latency_ms": 6.0}), Case({"latency_ms": 5.0})),
    "flops-above-target": (Case({"flops": 60e6}), Case({"flops": 40e6})),
    "params-above-target": (Case({"params": 1.5e6}), Case({"params": 0.9e6})),
    # 1.1 M float32 parameters are 4.4 MB; 0.9 M are 3.6 MB.
    "size-above-target": (Case({"params": 1.1e6}), Case({"params": 0.9e6})),
    "energy-above-target": (Case({"power_w": 45.0}), Case({"energy_j": 0.005, "power_w": 20.0})),
    "co2-above-target": (Case({"co2_g": 0.002}), Case({"co2_g": 0.0005})),
    "flatten-size-mismatch": (
        Case(failure=failure(FailureKind.SHAPE, "mat1 and mat2 shapes cannot be multiplied (64x4096 and 1024x10)")),
        Case(failure=failure(FailureKind.SHAPE, "Given groups=1, weight of size [16, 3, 3, 3], expected input")),
    ),
    "shape-error": (Case(failure=failure(FailureKind.SHAPE)), Case(failure=failure(FailureKind.BUILD))),
    "invalid-code": (Case(failure=failure(FailureKind.SYNTAX)), Case(failure=failure(FailureKind.OOM))),
    "resources-exceeded": (Case(failure=failure(FailureKind.TIMEOUT)), Case(failure=failure(FailureKind.NAN))),
    "non-finite-values": (Case(failure=failure(FailureKind.NAN)), Case(failure=failure(FailureKind.CRASH))),
}

RULES = load_rules()


def test_the_default_file_is_sane_and_every_rule_has_a_case() -> None:
    names = [rule.name for rule in RULES]
    assert 10 <= len(RULES) <= 16
    assert set(names) == set(CASES)
    served = {rule.serves for rule in RULES}
    assert {"val_acc", "fps", "latency_ms", "params", "size_mb", "energy_j", "co2_g", "validity"} <= served


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_fires_on_its_case(name: str) -> None:
    case = CASES[name][0]
    assert name in [item.rule.name for item in fire(RULES, case.metrics, TARGETS, case.failure)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_stays_silent_on_the_near_miss(name: str) -> None:
    case = CASES[name][1]
    assert name not in [item.rule.name for item in fire(RULES, case.metrics, TARGETS, case.failure)]


def test_nothing_fires_without_metrics_targets_or_failure() -> None:
    assert fire(RULES, {}, {}) == []
    assert fire(RULES, {"val_acc": 0.1, "fps": 1.0, "params": 1e9}, {}) == []


def test_every_failure_kind_gets_advice() -> None:
    # CRASH has no specific advice beyond the failure text itself; every other kind has a rule.
    for kind in FailureKind:
        if kind is FailureKind.CRASH:
            continue
        assert fire(RULES, {}, {}, failure(kind)), f"no default rule fires for a {kind.value} failure"


def test_accuracy_first_beats_fps_with_the_default_rules() -> None:
    metrics = {"val_acc": 0.70, "train_acc": 0.72, "throughput_ips": 50.0}
    fired = fire(RULES, metrics, TARGETS)
    assert {"accuracy-below-target", "underfitting", "fps-below-target"} <= {item.rule.name for item in fired}
    accuracy_first = resolve(fired, ["val_acc", "fps"])
    assert [item.fired.rule.name for item in accuracy_first.dropped] == ["fps-below-target"]
    assert "val_acc (priority 1)" in accuracy_first.explanation
    fps_first = resolve(fired, ["fps", "val_acc"])
    assert {item.fired.rule.name for item in fps_first.dropped} == {"accuracy-below-target", "underfitting"}
