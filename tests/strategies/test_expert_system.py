from pathlib import Path

import pytest

from nasloop.candidate import Failure, FailureKind
from nasloop.strategies.expert_system import (
    ConditionError,
    Direction,
    Facts,
    FiredRule,
    RuleFileError,
    fire,
    load_rules,
    parse_condition,
    parse_rules,
    resolve,
)

METRICS = {"val_acc": 0.7, "train_acc": 0.9, "fps": 40.0, "params": 2e6, "zero": 0.0}
TARGETS = {"val_acc": 0.8, "fps": 60.0}
SHAPE_FAILURE = Failure(FailureKind.SHAPE, "mat1 and mat2 shapes cannot be multiplied (128x4096 and 1024x10)")


def holds(condition: str, failure: Failure | None = None) -> bool | None:
    return parse_condition(condition).evaluate(Facts(METRICS, TARGETS, failure))


# --- the condition language --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("val_acc < target.val_acc", True),
        ("val_acc <= 0.7", True),
        ("val_acc > 0.7", False),
        ("val_acc >= .7", True),
        ("fps == 40", True),
        ("fps != 40", False),
        ("params > 1e6", True),
        ("params > 2.5E6", False),
        ("train_acc - val_acc > 0.15", True),
        ("1 + 2 * 3 == 7", True),  # * binds tighter than +
        ("10 - 4 - 3 == 3", True),  # left to right
        ("8 / 2 / 2 == 2", True),
        ("-val_acc < 0", True),
        ("val_acc * -2 == -1.4", True),
        ("params * 4 / 1000000 > 7.9", True),
    ],
)
def test_comparisons_and_arithmetic(condition: str, expected: bool) -> None:
    assert holds(condition) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("val_acc < 0.5 or fps < 50 and params > 1", True),  # and binds tighter than or
        ("(val_acc < 0.5 or fps < 50) and params > 1e9", False),
        ("not val_acc < 0.5", True),
        ("not not val_acc < 0.5", False),
        ("val_acc < 0.8 and fps < 60 and params > 1", True),
        ("val_acc > 0.8 or fps > 60 or params < 1", False),
    ],
)
def test_boolean_connectives_and_precedence(condition: str, expected: bool) -> None:
    assert holds(condition) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("latency_ms > 3", None),  # missing metric
        ("fps < target.latency_ms", None),  # missing target
        ("not latency_ms > 3", None),
        ("latency_ms > 3 or fps < 50", True),  # unknown or true
        ("latency_ms > 3 or fps > 50", None),  # unknown or false
        ("latency_ms > 3 and fps > 50", False),  # unknown and false
        ("latency_ms > 3 and fps < 50", None),  # unknown and true
        ("val_acc / zero > 1", None),  # division by zero
    ],
)
def test_missing_values_follow_three_valued_logic(condition: str, expected: bool | None) -> None:
    assert holds(condition) is expected


def test_non_finite_metrics_count_as_missing() -> None:
    facts = Facts({"val_acc": float("nan")}, {"val_acc": 0.8})
    assert parse_condition("val_acc < target.val_acc").evaluate(facts) is None


def test_failure_references() -> None:
    assert holds("failure == shape", SHAPE_FAILURE) is True
    assert holds("failure.kind == 'shape'", SHAPE_FAILURE) is True
    assert holds("shape == failure", SHAPE_FAILURE) is True
    assert holds("failure != build", SHAPE_FAILURE) is True
    assert holds("failure == shape") is False
    assert holds("failure == none") is True
    assert holds("failed", SHAPE_FAILURE) is True
    assert holds("failed") is False
    assert holds('failure.message contains "MAT1 and mat2"', SHAPE_FAILURE) is True
    assert holds('failure.message contains "out of memory"', SHAPE_FAILURE) is False
    assert holds('failure.message contains "x"') is False


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("", "the condition is empty"),
        ("val_acc ? 1", r"unexpected character '\?' at column 9"),
        ("val_acc <", "expected a number, a metric"),
        ("val_acc 0.5", "expected a comparison .* at column 9, found '0.5'"),
        ("val_acc < 0.5 extra", "expected 'and', 'or' or the end of the condition at column 15"),
        ("(val_acc < 0.5", r"expected '\)'"),
        ("val_acc < 0.5 and", "expected a number, a metric.* found the end"),
        ("foo.bar < 1", "unknown reference 'foo.bar'"),
        ("failure.stack contains 'x'", "unknown reference 'failure.stack'"),
        ("failure == shapes", "unknown failure kind 'shapes'"),
        ("failure.message < 3", "'<' at column 17 compares numbers, not text"),
        ("val_acc contains 'x'", "'contains' at column 9 compares text"),
        ("val_acc == 'high'", "'==' at column 9 compares a number with text"),
        ("failure.message + 1 == 2", "arithmetic on text"),
        ("val_acc", "expected a comparison"),
        ("__import__('os').system('true')", r"unexpected character '\.'"),
        ("val_acc < 1 && fps > 2", "unexpected character '&'"),
    ],
)
def test_condition_errors_name_the_problem(condition: str, message: str) -> None:
    with pytest.raises(ConditionError, match=message):
        parse_condition(condition)


def test_describe_shows_the_values_seen() -> None:
    facts = Facts(METRICS, TARGETS)
    described = parse_condition("val_acc < target.val_acc and latency_ms < 5").describe(facts)
    assert described == "val_acc (0.7) < target.val_acc (0.8) and latency_ms (missing) < 5"
    # Only the branches of an `or` that held are named.
    assert parse_condition("latency_ms > 1 or fps < 50").describe(facts) == "fps (40) < 50"


# --- rule files --------------------------------------------------------------------------------------------

GOOD_RULE = """
  - name: slow
    condition: fps < target.fps
    instruction: Use fewer channels.
    direction: shrink
    serves: fps
"""


def test_load_rules_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:" + GOOD_RULE + "  - {name: any-failure, condition: failed, instruction: Fix it., serves: validity}\n"
    )
    slow, any_failure = load_rules(path)
    assert (slow.name, slow.direction, slow.axis, slow.serves) == ("slow", Direction.SHRINK, "capacity", "fps")
    assert slow.condition_text == "fps < target.fps"
    assert any_failure.direction is Direction.NEUTRAL


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [\n", "not valid YAML"),
        ("- name: x\n", "expected a mapping with a 'rules' list"),
        ("rules: []\n", "'rules' must be a non-empty list"),
        ("rules:" + GOOD_RULE + "extends: default\n", "unknown top-level key.* extends"),
        ("rules:\n  - just text\n", "rule number 1: expected a mapping"),
        ("rules:" + GOOD_RULE.replace("    serves: fps\n", ""), "rule 'slow': field 'serves': Field required"),
        ("rules:" + GOOD_RULE.replace("shrink", "smaller"), "rule 'slow': field 'direction': Input should be"),
        ("rules:" + GOOD_RULE + "    colour: red\n", "rule 'slow': field 'colour': unknown field"),
        ("rules:" + GOOD_RULE.replace("fps < target.fps", "fps << 3"), "rule 'slow': field 'condition'.*column 6"),
        ("rules:" + GOOD_RULE.replace("name: slow", "name: ''"), "rule number 1: field 'name'"),
        ("rules:" + GOOD_RULE + GOOD_RULE, "rule 'slow': field 'name': the name is used twice"),
        ("rules:" + GOOD_RULE.replace("instruction: Use fewer channels.", "instruction: ''"), "field 'instruction'"),
    ],
)
def test_bad_rule_files_name_the_rule_and_the_field(text: str, message: str) -> None:
    with pytest.raises(RuleFileError, match=message) as caught:
        parse_rules(text, "my_rules.yaml")
    assert str(caught.value).startswith("my_rules.yaml: ")


def test_a_missing_rule_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_rules(tmp_path / "absent.yaml")


# --- firing and conflicts ----------------------------------------------------------------------------------

CONFLICTING = parse_rules(
    """
rules:
  - {name: accuracy-low, condition: val_acc < target.val_acc, instruction: Grow the last stage.,
     direction: grow, serves: val_acc}
  - {name: fps-low, condition: fps < target.fps, instruction: Reduce channels., direction: shrink, serves: fps}
  - {name: params-high, condition: params > 1e6, instruction: Use depthwise convolutions.,
     direction: shrink, serves: params}
  - {name: overfit, condition: train_acc - val_acc > 0.1, instruction: Add dropout., serves: val_acc}
  - {name: resolution, condition: fps < target.fps, instruction: Downsample earlier., direction: shrink,
     axis: resolution, serves: fps}
  - {name: never, condition: val_acc > 0.99, instruction: Never shown., direction: grow, serves: val_acc}
"""
)


def fired_names(fired: list[FiredRule]) -> list[str]:
    return [item.rule.name for item in fired]


def test_fire_keeps_rule_order_and_gives_reasons() -> None:
    fired = fire(CONFLICTING, METRICS, TARGETS)
    assert fired_names(fired) == ["accuracy-low", "fps-low", "params-high", "overfit", "resolution"]
    assert fired[0].reason == "val_acc (0.7) < target.val_acc (0.8)"


def test_higher_priority_metric_wins_a_conflict_and_the_explanation_says_why() -> None:
    resolution = resolve(fire(CONFLICTING, METRICS, TARGETS), ["val_acc", "fps", "params"])
    assert resolution.instructions == ["Grow the last stage.", "Add dropout.", "Downsample earlier."]
    assert [item.fired.rule.name for item in resolution.dropped] == ["fps-low", "params-high"]
    assert all(item.winner is not None and item.winner.rule.name == "accuracy-low" for item in resolution.dropped)
    assert resolution.explanation == (
        "Conflict on capacity: val_acc (priority 1) ranks first and rule 'accuracy-low' fired "
        "(val_acc (0.7) < target.val_acc (0.8)), so grow; ignored: 'Reduce channels.' (rule 'fps-low', "
        "fps (priority 2)); 'Use depthwise convolutions.' (rule 'params-high', params (priority 3))."
    )


def test_reversed_priorities_reverse_the_outcome_and_order_instructions() -> None:
    resolution = resolve(fire(CONFLICTING, METRICS, TARGETS), ["fps", "params", "val_acc"])
    assert resolution.instructions == [
        "Reduce channels.",
        "Downsample earlier.",
        "Use depthwise convolutions.",
        "Add dropout.",
    ]
    assert [item.fired.rule.name for item in resolution.dropped] == ["accuracy-low"]
    assert "fps (priority 1) ranks first" in resolution.explanation
    assert "'Grow the last stage.' (rule 'accuracy-low', val_acc (priority 3))" in resolution.explanation


def test_unlisted_metrics_rank_last() -> None:
    resolution = resolve(fire(CONFLICTING, METRICS, TARGETS), ["params"])
    assert "Grow the last stage." not in resolution.instructions
    assert "val_acc (not in the priorities)" in resolution.explanation


def test_a_tie_drops_both_sides_and_says_so() -> None:
    resolution = resolve(fire(CONFLICTING, METRICS, TARGETS), [])
    assert resolution.instructions == ["Add dropout.", "Downsample earlier."]
    assert {item.fired.rule.name for item in resolution.dropped} == {"accuracy-low", "fps-low", "params-high"}
    assert all(item.winner is None for item in resolution.dropped)
    assert "with equal priority, so neither is given" in resolution.explanation


def test_no_conflict_no_explanation_and_identical_instructions_once() -> None:
    rules = parse_rules(
        """
rules:
  - {name: a, condition: fps < 50, instruction: Reduce channels., direction: shrink, serves: fps}
  - {name: b, condition: params > 1, instruction: Reduce channels., direction: shrink, serves: params}
  - {name: c, condition: failed, instruction: Fix the error., serves: validity}
"""
    )
    resolution = resolve(fire(rules, METRICS, TARGETS, SHAPE_FAILURE), ["fps"])
    assert resolution.instructions == ["Reduce channels.", "Fix the error."]
    assert resolution.dropped == [] and resolution.explanation == ""
    assert resolution.prompt_text() == "- Reduce channels.\n- Fix the error."
    assert resolve([], ["fps"]).instructions == []


def test_prompt_text_ends_with_the_explanation() -> None:
    resolution = resolve(fire(CONFLICTING, METRICS, TARGETS), ["val_acc"])
    lines = resolution.prompt_text().splitlines()
    assert lines[0] == "- Grow the last stage."
    assert lines[-1] == resolution.explanation


def test_repeated_priorities_are_an_error() -> None:
    with pytest.raises(ValueError, match="list fps more than once"):
        resolve([], ["fps", "val_acc", "fps"])
