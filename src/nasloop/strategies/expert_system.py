"""The rule-based expert system of LeMo-NADe (METHODS.md section D): measured metrics in, LLM instructions out.

Rules are data (YAML, see `strategies/rules/default.yaml`). Each rule has

- `name`: unique within the file;
- `condition`: when it fires, in the condition language below;
- `instruction`: the text given to the LLM when it fires;
- `direction`: `grow`, `shrink` or `neutral`, what the instruction does along `axis`;
- `axis`: what grows or shrinks (default `capacity`); only instructions on the same axis can conflict;
- `serves`: the metric the rule is about (`val_acc`, `fps`, ...), which sets its priority in conflicts.

Condition language (parsed, never evaluated as Python)::

    condition   := disjunction
    disjunction := conjunction ("or" conjunction)*
    conjunction := negation ("and" negation)*
    negation    := "not" negation | "(" disjunction ")" | "failed" | comparison
    comparison  := sum ("<" | "<=" | ">" | ">=" | "==" | "!=" | "contains") sum
    sum         := product (("+" | "-") product)*
    product     := operand (("*" | "/") operand)*
    operand     := number | "quoted text" | reference | "-" operand

A reference is a measured metric (`val_acc`), a user threshold (`target.val_acc`), or the previous
candidate's failure: `failure.kind` (also written `failure`; compared with a failure kind such as `shape`,
or `none` when it did not fail) and `failure.message` (text, for `contains`). `failed` is true when the
previous candidate failed. `contains` tests whether the right text occurs in the left, ignoring case;
`==` and `!=` compare numbers with numbers and text with text. Examples: `val_acc < target.val_acc`,
`train_acc - val_acc > 0.15`, `failure == shape and failure.message contains "mat1 and mat2"`.

Missing values: a comparison that needs a metric or target that is absent (or not finite), or divides
by zero, is *unknown*. `and`/`or`/`not` follow three-valued (Kleene) logic, and a rule fires only when its
condition is true, so a rule about FPS stays silent until FPS is measured and a target is set.

Conflicts: `resolve` keeps, on each axis, the direction of the fired rule whose `serves` metric comes
first in the user's priorities, drops the opposite instructions and explains the choice for the prompt.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from nasloop.candidate import Failure, FailureKind
from nasloop.objectives.constraints import format_value
from nasloop.strict import Strict


class Direction(StrEnum):
    """What an instruction does along its axis."""

    GROW = "grow"
    SHRINK = "shrink"
    NEUTRAL = "neutral"


class ConditionError(ValueError):
    """A condition that does not parse or mixes types; the message names the position."""


class RuleFileError(ValueError):
    """A rule file that cannot be used; the message names the file, the rule and the bad field."""


# ---------------------------------------------------------------------------------------------------------------
# Facts: what a condition is evaluated against.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """The measured metrics, the user's targets, and the previous candidate's failure (None if none)."""

    metrics: Mapping[str, float]
    targets: Mapping[str, float]
    failure: Failure | None = None


Value = float | str | None  # None: unknown (a missing metric or target, a division by zero)


def _number_or_none(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------------------------
# The condition tree. Each node evaluates to a value (expressions) or True/False/None (conditions), and
# describes itself with the values it saw, which becomes the reason text of a fired rule.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    value: float

    def evaluate(self, facts: Facts) -> Value:
        return self.value

    def describe(self, facts: Facts) -> str:
        return format_value(self.value)


@dataclass(frozen=True)
class Text:
    value: str

    def evaluate(self, facts: Facts) -> Value:
        return self.value

    def describe(self, facts: Facts) -> str:
        return f'"{self.value}"'


@dataclass(frozen=True)
class Reference:
    """A metric (`val_acc`), a target (`target.val_acc`), `failure.kind` or `failure.message`."""

    name: str

    @property
    def is_text(self) -> bool:
        return self.name in ("failure.kind", "failure.message")

    def evaluate(self, facts: Facts) -> Value:
        if self.name == "failure.kind":
            return facts.failure.kind.value if facts.failure else "none"
        if self.name == "failure.message":
            return facts.failure.message if facts.failure else ""
        if self.name.startswith("target."):
            return _number_or_none(facts.targets.get(self.name.removeprefix("target.")))
        return _number_or_none(facts.metrics.get(self.name))

    def describe(self, facts: Facts) -> str:
        value = self.evaluate(facts)
        if value is None:
            shown = "missing"
        elif isinstance(value, str):
            shown = value if len(value) <= 80 else value[:77] + "..."
        else:
            shown = format_value(value)
        return f"{self.name} ({shown})"


@dataclass(frozen=True)
class Arithmetic:
    operator: str
    left: Expression
    right: Expression

    def evaluate(self, facts: Facts) -> Value:
        left, right = self.left.evaluate(facts), self.right.evaluate(facts)
        if not isinstance(left, float) or not isinstance(right, float):
            return None
        if self.operator == "+":
            return left + right
        if self.operator == "-":
            return left - right
        if self.operator == "*":
            return left * right
        return left / right if right != 0 else None

    def describe(self, facts: Facts) -> str:
        return f"{self.left.describe(facts)} {self.operator} {self.right.describe(facts)}"


@dataclass(frozen=True)
class Negative:
    operand: Expression

    def evaluate(self, facts: Facts) -> Value:
        value = self.operand.evaluate(facts)
        return -value if isinstance(value, float) else None

    def describe(self, facts: Facts) -> str:
        return f"-{self.operand.describe(facts)}"


Expression = Number | Text | Reference | Arithmetic | Negative

_NUMBER_COMPARISONS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


@dataclass(frozen=True)
class Comparison:
    operator: str
    left: Expression
    right: Expression

    def evaluate(self, facts: Facts) -> bool | None:
        left, right = self.left.evaluate(facts), self.right.evaluate(facts)
        if left is None or right is None:
            return None
        if self.operator == "contains":
            return str(right).lower() in str(left).lower()
        if isinstance(left, str) or isinstance(right, str):
            return (left == right) if self.operator == "==" else (left != right)
        return bool(_NUMBER_COMPARISONS[self.operator](left, right))

    def describe(self, facts: Facts) -> str:
        return f"{self.left.describe(facts)} {self.operator} {self.right.describe(facts)}"


@dataclass(frozen=True)
class PreviousFailed:
    def evaluate(self, facts: Facts) -> bool | None:
        return facts.failure is not None

    def describe(self, facts: Facts) -> str:
        return "failed" if facts.failure else "not failed"


@dataclass(frozen=True)
class Not:
    operand: Condition

    def evaluate(self, facts: Facts) -> bool | None:
        value = self.operand.evaluate(facts)
        return None if value is None else not value

    def describe(self, facts: Facts) -> str:
        return f"not ({self.operand.describe(facts)})"


@dataclass(frozen=True)
class AllOf:
    operands: tuple[Condition, ...]

    def evaluate(self, facts: Facts) -> bool | None:
        values = [operand.evaluate(facts) for operand in self.operands]
        if False in values:
            return False
        return None if None in values else True

    def describe(self, facts: Facts) -> str:
        return " and ".join(_grouped(operand, facts) for operand in self.operands)


@dataclass(frozen=True)
class AnyOf:
    operands: tuple[Condition, ...]

    def evaluate(self, facts: Facts) -> bool | None:
        values = [operand.evaluate(facts) for operand in self.operands]
        if True in values:
            return True
        return None if None in values else False

    def describe(self, facts: Facts) -> str:
        # Name only the branches that held: they are why the rule fired.
        held = [operand for operand in self.operands if operand.evaluate(facts)]
        return " or ".join(_grouped(operand, facts) for operand in held or self.operands)


Condition = Comparison | PreviousFailed | Not | AllOf | AnyOf


def _grouped(condition: Condition, facts: Facts) -> str:
    text = condition.describe(facts)
    return f"({text})" if isinstance(condition, AllOf | AnyOf) else text


# ---------------------------------------------------------------------------------------------------------------
# The parser: tokens, then recursive descent following the grammar in the module docstring.
# ---------------------------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
      | (?P<text>"[^"]*"|'[^']*')
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)
      | (?P<symbol><=|>=|==|!=|<|>|\+|-|\*|/|\(|\))
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "contains", "failed"}
_COMPARISON_OPERATORS = {"<", "<=", ">", ">=", "==", "!=", "contains"}
_FAILURE_KINDS = {kind.value for kind in FailureKind} | {"none"}


@dataclass(frozen=True)
class _Token:
    kind: str  # number, text, name, keyword, symbol, end
    text: str
    column: int


def _tokenise(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(source):
        if source[position:].strip() == "":
            break
        match = _TOKEN.match(source, position)
        if match is None or match.lastgroup is None:
            column = len(source) - len(source[position:].lstrip()) + 1
            raise ConditionError(f"unexpected character {source[column - 1]!r} at column {column}")
        group = match.lastgroup
        text = match.group(group)
        kind = "keyword" if group == "name" and text in _KEYWORDS else group
        tokens.append(_Token(kind, text, match.start(group) + 1))
        position = match.end()
    tokens.append(_Token("end", "", len(source) + 1))
    return tokens


class _Parser:
    def __init__(self, source: str) -> None:
        self.tokens = _tokenise(source)
        self.position = 0

    @property
    def current(self) -> _Token:
        return self.tokens[self.position]

    def advance(self) -> _Token:
        token = self.current
        self.position += 1
        return token

    def accept(self, text: str) -> bool:
        if self.current.kind in ("keyword", "symbol") and self.current.text == text:
            self.position += 1
            return True
        return False

    def fail(self, expected: str) -> ConditionError:
        found = f"{self.current.text!r}" if self.current.kind != "end" else "the end"
        return ConditionError(f"expected {expected} at column {self.current.column}, found {found}")

    def parse(self) -> Condition:
        condition = self.disjunction()
        if self.current.kind != "end":
            raise self.fail("'and', 'or' or the end of the condition")
        return condition

    def disjunction(self) -> Condition:
        operands = [self.conjunction()]
        while self.accept("or"):
            operands.append(self.conjunction())
        return operands[0] if len(operands) == 1 else AnyOf(tuple(operands))

    def conjunction(self) -> Condition:
        operands = [self.negation()]
        while self.accept("and"):
            operands.append(self.negation())
        return operands[0] if len(operands) == 1 else AllOf(tuple(operands))

    def negation(self) -> Condition:
        if self.accept("not"):
            return Not(self.negation())
        if self.accept("("):
            condition = self.disjunction()
            if not self.accept(")"):
                raise self.fail("')'")
            return condition
        if self.accept("failed"):
            return PreviousFailed()
        return self.comparison()

    def comparison(self) -> Comparison:
        left = self.sum()
        operator = self.current.text
        if self.current.kind not in ("symbol", "keyword") or operator not in _COMPARISON_OPERATORS:
            raise self.fail("a comparison (<, <=, >, >=, ==, !=, contains)")
        column = self.advance().column
        right = self.sum()
        return _checked_comparison(operator, left, right, column)

    def sum(self) -> Expression:
        expression = self.product()
        while self.current.text in ("+", "-") and self.current.kind == "symbol":
            operator = self.advance().text
            expression = Arithmetic(operator, expression, self.product())
        return expression

    def product(self) -> Expression:
        expression = self.operand()
        while self.current.text in ("*", "/") and self.current.kind == "symbol":
            operator = self.advance().text
            expression = Arithmetic(operator, expression, self.operand())
        return expression

    def operand(self) -> Expression:
        if self.accept("-"):
            return Negative(self.operand())
        token = self.current
        if token.kind == "number":
            self.advance()
            return Number(float(token.text))
        if token.kind == "text":
            self.advance()
            return Text(token.text[1:-1])
        if token.kind == "name":
            self.advance()
            return _reference(token)
        raise self.fail("a number, a metric, target.<metric>, failure.kind or failure.message")


def _reference(token: _Token) -> Reference:
    name = token.text
    if name == "failure":
        return Reference("failure.kind")
    prefix, dot, _ = name.partition(".")
    if not dot or prefix == "target" or name in ("failure.kind", "failure.message"):
        return Reference(name)
    raise ConditionError(
        f"unknown reference {name!r} at column {token.column}: use a metric name, target.<metric>, "
        "failure.kind or failure.message"
    )


def _is_text(expression: Expression) -> bool:
    return isinstance(expression, Text) or (isinstance(expression, Reference) and expression.is_text)


def _checked_comparison(operator: str, left: Expression, right: Expression, column: int) -> Comparison:
    """Type-check a comparison; a bare name compared with `failure.kind` is read as a failure kind."""
    for kind_side, other in ((left, right), (right, left)):
        if isinstance(kind_side, Reference) and kind_side.name == "failure.kind":
            if isinstance(other, Reference) and not other.is_text and "." not in other.name:
                other = Text(other.name)
                left, right = (kind_side, other) if kind_side is left else (other, kind_side)
            if isinstance(other, Text) and other.value not in _FAILURE_KINDS:
                known = ", ".join(sorted(_FAILURE_KINDS))
                raise ConditionError(f"unknown failure kind {other.value!r} at column {column}; known: {known}")
    _check_types(operator, left, right, column)
    return Comparison(operator, left, right)


def _check_types(operator: str, left: Expression, right: Expression, column: int) -> None:
    for side in (left, right):
        if isinstance(side, Arithmetic | Negative) and _has_text(side):
            raise ConditionError(f"arithmetic on text near column {column}")
    left_text, right_text = _is_text(left), _is_text(right)
    if operator == "contains" and not (left_text and right_text):
        raise ConditionError(f"'contains' at column {column} compares text, e.g. failure.message contains \"...\"")
    if operator in ("<", "<=", ">", ">=") and (left_text or right_text):
        raise ConditionError(f"'{operator}' at column {column} compares numbers, not text")
    if operator in ("==", "!=") and left_text != right_text:
        raise ConditionError(f"'{operator}' at column {column} compares a number with text")


def _has_text(expression: Expression) -> bool:
    if isinstance(expression, Arithmetic):
        return _has_text(expression.left) or _has_text(expression.right)
    if isinstance(expression, Negative):
        return _has_text(expression.operand)
    return _is_text(expression)


def parse_condition(source: str) -> Condition:
    """Parse a condition (module docstring); raises ConditionError naming the column of the problem."""
    if not source.strip():
        raise ConditionError("the condition is empty")
    return _Parser(source).parse()


# ---------------------------------------------------------------------------------------------------------------
# Rules and rule files.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One rule of the expert system (module docstring); `condition_text` is the condition as written."""

    name: str
    condition_text: str
    condition: Condition
    instruction: str
    direction: Direction
    axis: str
    serves: str


class _RuleSpec(Strict):
    """The YAML shape of one rule; pydantic's errors are rewritten to name the rule and the field."""

    name: str = Field(min_length=1)
    condition: str = Field(min_length=1)
    instruction: str = Field(min_length=1)
    direction: Direction = Direction.NEUTRAL
    axis: str = Field(default="capacity", min_length=1)
    serves: str = Field(min_length=1)


DEFAULT_RULES = "default.yaml"


def load_rules(path: str | Path | None = None) -> list[Rule]:
    """The rules of a YAML file, or nasloop's default rules when `path` is None.

    The file holds a mapping with one key, `rules`, a list of rule mappings. Raises RuleFileError naming
    the file, the rule (its name, or its position when the name is the problem) and the bad field.
    """
    if path is None:
        source = resources.files("nasloop.strategies").joinpath("rules", DEFAULT_RULES)
        label, text = f"nasloop default rules ({DEFAULT_RULES})", source.read_text(encoding="utf-8")
    else:
        label, text = str(path), Path(path).read_text(encoding="utf-8")
    return parse_rules(text, label)


def parse_rules(text: str, label: str = "<rules>") -> list[Rule]:
    """The rules in YAML `text`; `label` names the source in error messages."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RuleFileError(f"{label}: not valid YAML: {error}") from None
    entries = _rule_entries(document, label)
    rules = [_rule(entry, number, label) for number, entry in enumerate(entries, start=1)]
    _reject_repeated_names(rules, label)
    return rules


def _rule_entries(document: Any, label: str) -> list[Any]:
    if not isinstance(document, dict) or "rules" not in document:
        raise RuleFileError(f"{label}: expected a mapping with a 'rules' list at the top")
    unknown = sorted(str(key) for key in document if key != "rules")
    if unknown:
        raise RuleFileError(f"{label}: unknown top-level key(s) {', '.join(unknown)}; only 'rules' is allowed")
    entries = document["rules"]
    if not isinstance(entries, list) or not entries:
        raise RuleFileError(f"{label}: 'rules' must be a non-empty list of rules")
    return entries


def _rule(entry: Any, number: int, label: str) -> Rule:
    where = f"{label}: rule number {number}"
    if not isinstance(entry, dict):
        raise RuleFileError(f"{where}: expected a mapping with name, condition, instruction, serves, ...")
    if isinstance(entry.get("name"), str) and entry["name"]:
        where = f"{label}: rule {entry['name']!r}"
    try:
        spec = _RuleSpec.model_validate(entry)
    except ValidationError as error:
        raise RuleFileError(f"{where}: {_describe_validation(error)}") from None
    try:
        condition = parse_condition(spec.condition)
    except ConditionError as error:
        raise RuleFileError(f"{where}: field 'condition' ({spec.condition!r}): {error}") from None
    return Rule(spec.name, spec.condition, condition, spec.instruction, spec.direction, spec.axis, spec.serves)


def _describe_validation(error: ValidationError) -> str:
    problems = []
    for problem in error.errors():
        field_name = ".".join(str(part) for part in problem["loc"]) or "rule"
        message = "unknown field" if problem["type"] == "extra_forbidden" else problem["msg"]
        problems.append(f"field {field_name!r}: {message}")
    return "; ".join(problems)


def _reject_repeated_names(rules: Sequence[Rule], label: str) -> None:
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise RuleFileError(f"{label}: rule {rule.name!r}: field 'name': the name is used twice")
        seen.add(rule.name)


# ---------------------------------------------------------------------------------------------------------------
# Firing and conflict resolution.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FiredRule:
    """A rule whose condition held, and why: its condition with the values it saw."""

    rule: Rule
    reason: str


def fire(
    rules: Sequence[Rule],
    metrics: Mapping[str, float],
    targets: Mapping[str, float],
    previous_failure: Failure | None = None,
) -> list[FiredRule]:
    """The rules whose condition is true for these facts, in the rules' order.

    `metrics` are those of the candidate the feedback is about (usually the latest), `targets` the user's
    thresholds by metric name, `previous_failure` that candidate's failure if it failed.
    """
    facts = Facts(metrics, targets, previous_failure)
    return [FiredRule(rule, rule.condition.describe(facts)) for rule in rules if rule.condition.evaluate(facts)]


@dataclass(frozen=True)
class DroppedInstruction:
    """A fired instruction left out because it contradicts a higher-priority one (`winner`, if any)."""

    fired: FiredRule
    winner: FiredRule | None
    reason: str


@dataclass(frozen=True)
class Resolution:
    """The instructions to give the LLM, most important first, what was dropped, and why (prompt text)."""

    instructions: list[str]
    dropped: list[DroppedInstruction]
    explanation: str

    def prompt_text(self) -> str:
        """The instructions as a bulleted list followed by the explanation, ready for a prompt."""
        lines = [f"- {instruction}" for instruction in self.instructions]
        return "\n".join([*lines, self.explanation]) if self.explanation else "\n".join(lines)


def resolve(fired: Sequence[FiredRule], priorities: Sequence[str]) -> Resolution:
    """Resolve contradictions among fired rules by the user's metric `priorities` (first = most important).

    On each axis where some fired rules grow and others shrink, the direction of the rule serving the
    highest-priority metric wins and the opposite instructions are dropped. Metrics not in `priorities`
    rank after all listed ones. When both directions are backed by equally ranked metrics the conflict
    cannot be decided and both sides are dropped (the explanation says so). Neutral rules never conflict.
    Kept instructions are ordered by the priority of the metric they serve, then by rule order, and an
    instruction text given by two rules appears once. `explanation` is empty when nothing conflicted.
    """
    ranking = _Ranking(priorities)
    dropped: list[DroppedInstruction] = []
    explanations: list[str] = []
    for axis in dict.fromkeys(item.rule.axis for item in fired):
        on_axis = [item for item in fired if item.rule.axis == axis and item.rule.direction is not Direction.NEUTRAL]
        if len({item.rule.direction for item in on_axis}) < 2:
            continue
        axis_dropped, explanation = _resolve_axis(axis, on_axis, ranking)
        dropped.extend(axis_dropped)
        explanations.append(explanation)
    dropped_positions = {position for position, item in enumerate(fired) if _is_dropped(item, dropped)}
    kept = sorted(
        (position for position in range(len(fired)) if position not in dropped_positions),
        key=lambda position: (ranking.rank(fired[position]), position),
    )
    instructions = list(dict.fromkeys(fired[position].rule.instruction for position in kept))
    return Resolution(instructions, dropped, " ".join(explanations))


def _is_dropped(item: FiredRule, dropped: Sequence[DroppedInstruction]) -> bool:
    return any(entry.fired is item for entry in dropped)


class _Ranking:
    """Ranks fired rules by the position of the metric they serve in the user's priorities."""

    def __init__(self, priorities: Sequence[str]) -> None:
        repeated = sorted({metric for metric in priorities if list(priorities).count(metric) > 1})
        if repeated:
            raise ValueError(f"the metric priorities list {', '.join(repeated)} more than once")
        self.priorities = list(priorities)

    def rank(self, item: FiredRule) -> int:
        serves = item.rule.serves
        return self.priorities.index(serves) if serves in self.priorities else len(self.priorities)

    def label(self, item: FiredRule) -> str:
        serves = item.rule.serves
        if serves not in self.priorities:
            return f"{serves} (not in the priorities)"
        return f"{serves} (priority {self.priorities.index(serves) + 1})"

    def quoted(self, items: Sequence[FiredRule]) -> str:
        parts = []
        for item in items:
            text = item.rule.instruction
            text = text if len(text) <= 80 else text[:77] + "..."
            parts.append(f"'{text}' (rule '{item.rule.name}', {self.label(item)})")
        return "; ".join(parts)


def _resolve_axis(axis: str, on_axis: Sequence[FiredRule], ranking: _Ranking) -> tuple[list[DroppedInstruction], str]:
    """Decide one contested axis: the dropped instructions and one sentence saying why."""
    grow = min((item for item in on_axis if item.rule.direction is Direction.GROW), key=ranking.rank)
    shrink = min((item for item in on_axis if item.rule.direction is Direction.SHRINK), key=ranking.rank)
    if ranking.rank(grow) == ranking.rank(shrink):
        dropped = [DroppedInstruction(item, None, "grow and shrink have equal priority") for item in on_axis]
        return dropped, (
            f"Conflict on {axis}: {ranking.label(grow)} asks to grow and {ranking.label(shrink)} to shrink "
            f"with equal priority, so neither is given; ignored: {ranking.quoted(on_axis)}. "
            "Put one of these metrics ahead of the other in the priorities to decide."
        )
    winner = grow if ranking.rank(grow) < ranking.rank(shrink) else shrink
    losers = [item for item in on_axis if item.rule.direction is not winner.rule.direction]
    dropped = [DroppedInstruction(item, winner, f"{winner.rule.serves} outranks {item.rule.serves}") for item in losers]
    return dropped, (
        f"Conflict on {axis}: {ranking.label(winner)} ranks first and rule '{winner.rule.name}' fired "
        f"({winner.reason}), so {winner.rule.direction.value}; ignored: {ranking.quoted(losers)}."
    )
