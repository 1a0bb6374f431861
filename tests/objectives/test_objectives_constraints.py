import math

import pytest

from nasloop.candidate import FailureKind
from nasloop.objectives import (
    Constraint,
    budget_failure,
    format_value,
    parse_constraint,
    parse_constraints,
    violations,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("params<=1e6", Constraint("params", "<=", 1_000_000.0)),
        ("  latency_ms < 20 ", Constraint("latency_ms", "<", 20.0)),
        ("val_acc>=0.9", Constraint("val_acc", ">=", 0.9)),
        ("fps>30", Constraint("fps", ">", 30.0)),
        ("flops<=2_000_000", Constraint("flops", "<=", 2_000_000.0)),
    ],
)
def test_parse_constraint(text: str, expected: Constraint) -> None:
    assert parse_constraint(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("params=1e6", "is not 'metric OP number'"),
        ("params==1e6", "is not 'metric OP number'"),
        ("<=5", "is not 'metric OP number'"),
        ("params<=", "is not 'metric OP number'"),
        ("params<=lots", "the limit 'lots' is not a number"),
        ("params<=inf", "must be a finite number"),
        ("params <= 1e6 extra", "is not 'metric OP number'"),
    ],
)
def test_parse_constraint_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_constraint(text)


def test_check_names_the_figure_and_the_limit() -> None:
    limit = parse_constraint("params<=1e6")
    assert limit.check({"params": 1_234_567.0}) == "params = 1,234,567 > limit 1,000,000"
    assert limit.check({"params": 1_000_000.0}) is None
    assert parse_constraint("latency_ms<20").check({"latency_ms": 20.0}) == "latency_ms = 20 >= limit 20"
    assert parse_constraint("val_acc>=0.9").check({"val_acc": 0.8512}) == "val_acc = 0.8512 < limit 0.9"
    assert parse_constraint("fps>30").check({"fps": 30.0}) == "fps = 30 <= limit 30"


def test_unmeasured_or_non_finite_metric_does_not_meet_the_limit() -> None:
    limit = parse_constraint("params<=1e6")
    assert limit.check({}) == "params was not measured, so the limit <= 1,000,000 cannot be checked"
    assert limit.check({"params": math.nan}) == "params = nan is not a finite number (limit <= 1,000,000)"


def test_parse_constraints_from_a_string_or_a_list() -> None:
    expected = [Constraint("params", "<=", 1e6), Constraint("latency_ms", "<", 20.0)]
    assert parse_constraints("params<=1e6, latency_ms<20") == expected
    assert parse_constraints(["params<=1e6", "latency_ms<20"]) == expected
    assert parse_constraints("") == []


def test_violations_and_budget_failure() -> None:
    constraints = parse_constraints("params<=1e6, latency_ms<20, val_acc>=0.5")
    metrics = {"params": 2e6, "latency_ms": 25.5, "val_acc": 0.7}
    assert violations(constraints, metrics) == [
        "params = 2,000,000 > limit 1,000,000",
        "latency_ms = 25.5 >= limit 20",
    ]
    failure = budget_failure(constraints, metrics)
    assert failure is not None and failure.kind is FailureKind.BUDGET
    assert failure.message == "params = 2,000,000 > limit 1,000,000; latency_ms = 25.5 >= limit 20"
    assert budget_failure(constraints, {"params": 1.0, "latency_ms": 1.0, "val_acc": 0.9}) is None


@pytest.mark.parametrize(
    ("value", "text"),
    [(1234567.0, "1,234,567"), (0.5, "0.5"), (0.123456, "0.1235"), (-3.0, "-3"), (1e20, "1e+20"), (math.inf, "inf")],
)
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text


def test_constraint_str_round_trips() -> None:
    constraint = parse_constraint("params<=1e6")
    assert str(constraint) == "params<=1,000,000"
    assert parse_constraint("latency_ms<2.5") == parse_constraint(str(parse_constraint("latency_ms<2.5")))
