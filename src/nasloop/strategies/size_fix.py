"""Mechanical repair of the most common failure of small models: a layer declared for the wrong input size.

When a forward pass fails inside a `Linear`, a convolution or a batch norm whose declared input size does
not match what it received, the evaluator's message names the layer and the size to use (`It failed in
layer `fc1` = Linear(...) ... set in_features=3136`). `size_fix` applies exactly that change to the code:
it finds the layer's constructor call (`self.fc1 = nn.Linear(...)`, or an entry of an `nn.Sequential`
such as `features.3`) and replaces its input-size argument with the number, leaving every other character
of the code as it was. When the layer cannot be found unambiguously it returns None, and the strategy asks
the LLM as usual. `size_fix_repair` wraps a fix as a repair proposal; fixes may chain (the fixed model can
fail at the next wrong size) up to a limit. `net_name_fix` is the other mechanical repair: the one network
class of an answer renamed to `Net` when the model called it something else.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from typing import TYPE_CHECKING

from nasloop.candidate import Failure, FailureKind, Proposal, Purpose
from nasloop.spaces.open_code import defines_net

if TYPE_CHECKING:
    from nasloop.strategies.code_writer import EvaluatedCodes

SIZE_MESSAGE = re.compile(
    r"It failed in layer `(?P<layer>[\w.]+)` = \w+\(.*?set (?P<field>in_features|in_channels|num_features)="
    r"(?P<value>\d+)",
    re.DOTALL,
)


def size_fix(code: str, failure: Failure) -> tuple[str, str] | None:
    """`(fixed code, "layer.field=value")` for a failure that names a wrong layer size; None otherwise."""
    if failure.kind is not FailureKind.SHAPE:
        return None
    match = SIZE_MESSAGE.search(failure.message)
    if match is None:
        return None
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    call = _layer_call(tree, match["layer"].split("."))
    if call is None:
        return None
    field, value = match["field"], match["value"]
    argument = next((keyword.value for keyword in call.keywords if keyword.arg == field), None)
    if argument is None and call.args and not isinstance(call.args[0], ast.Starred):
        argument = call.args[0]
    if argument is None:
        return None
    fixed = _replace(code, argument, value)
    try:
        ast.parse(fixed)
    except SyntaxError:
        return None
    return fixed, f"{match['layer']}.{field}={value}"


def size_fix_repair(
    candidate: int, code: str, failure: Failure, fixes_so_far: int, limit: int, failed: EvaluatedCodes
) -> Proposal | None:
    """The repair of failed `candidate` made by `size_fix`, without the LLM; None when there is none, when
    the candidate already is the `limit`-th fix of a chain (one fix can uncover the next wrong size), or
    when the fix would give code that has `failed` already (fixes that would alternate between two sizes).

    Its purpose is `repair` (not an iteration) with `candidate` as the parent; notes: `size_fix`
    ("layer.field=value") and `size_fixes` (its place in the chain).
    """
    if fixes_so_far >= limit:
        return None
    fixed = size_fix(code, failure)
    if fixed is None or failed.failed(fixed[0]) is not None:
        return None
    notes = {"size_fix": fixed[1], "size_fixes": fixes_so_far + 1}
    return Proposal(code=fixed[0], notes=notes, parent_ids=(candidate,), purpose=Purpose.REPAIR, parent=candidate)


def net_name_fix(code: str) -> tuple[str, str] | None:
    """`(code with the class renamed to Net, old name)` when the code defines no top-level `Net` but exactly
    one top-level module class built as `Cls(in_shape, num_classes)` (an `ImprovedNet`, say); None otherwise.

    Every use of the old name is renamed (tokens, not text: strings and comments are left alone)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    if defines_net(tree):
        return None
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    networks = [node for node in classes if _is_module(node) and _init_arity(node) == 2]
    if len(networks) != 1 or _defines_name(tree, "Net"):
        return None
    old = networks[0].name
    renamed = _rename(code, old)
    return (renamed, old) if renamed is not None else None


def _rename(code: str, old: str) -> str | None:
    """`code` with every NAME token `old` replaced by `Net`, all other characters kept."""
    lines = code.splitlines(keepends=True)
    edits: list[tuple[int, int, int]] = []  # (line, start column, end column), in source order
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            if token.type == tokenize.NAME and token.string == old:
                edits.append((token.start[0], token.start[1], token.end[1]))
    except (tokenize.TokenError, SyntaxError):
        return None
    for line, start, end in reversed(edits):
        text = lines[line - 1]
        lines[line - 1] = text[:start] + "Net" + text[end:]
    return "".join(lines)


def _is_module(node: ast.ClassDef) -> bool:
    return any(
        (isinstance(base, ast.Attribute) and base.attr == "Module")
        or (isinstance(base, ast.Name) and base.id == "Module")
        for base in node.bases
    )


def _init_arity(node: ast.ClassDef) -> int | None:
    """Positional parameters of the class's `__init__` besides self (None without an `__init__`)."""
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and item.name == "__init__":
            return len(item.args.posonlyargs) + len(item.args.args) - 1
    return None


def _defines_name(tree: ast.Module, name: str) -> bool:
    return any(isinstance(node, ast.Name) and node.id == name for node in ast.walk(tree))


def _layer_call(tree: ast.Module, path: list[str]) -> ast.Call | None:
    """The constructor call of the layer at `path` (`fc1`, `features.3`), when exactly one is found."""
    calls = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign | ast.AnnAssign)
        and isinstance(node.value, ast.Call)
        and any(_is_self_attribute(target, path[0]) for target in _targets(node))
    ]
    if len(calls) != 1:
        return None
    call: ast.Call = calls[0]
    for index in path[1:]:  # entries of nn.Sequential(...) given as positional arguments
        if not index.isdigit() or _callee(call) != "Sequential" or int(index) >= len(call.args):
            return None
        entry = call.args[int(index)]
        if not isinstance(entry, ast.Call):
            return None
        call = entry
    return call


def _targets(node: ast.Assign | ast.AnnAssign) -> list[ast.expr]:
    return list(node.targets) if isinstance(node, ast.Assign) else [node.target]


def _is_self_attribute(target: ast.expr, name: str) -> bool:
    return (
        isinstance(target, ast.Attribute)
        and target.attr == name
        and isinstance(target.value, ast.Name)
        and target.value.id == "self"
    )


def _callee(call: ast.Call) -> str:
    function = call.func
    return function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")


def _replace(code: str, node: ast.expr, text: str) -> str:
    """`code` with the source of `node` replaced by `text` (AST columns count UTF-8 bytes)."""
    lines = code.splitlines(keepends=True)
    end_line, end_col = node.end_lineno or node.lineno, node.end_col_offset or node.col_offset
    first = lines[node.lineno - 1].encode()
    last = lines[end_line - 1].encode()
    replaced = (first[: node.col_offset] + text.encode() + last[end_col:]).decode()
    return "".join(lines[: node.lineno - 1]) + replaced + "".join(lines[end_line:])


__all__ = ["net_name_fix", "size_fix", "size_fix_repair"]
