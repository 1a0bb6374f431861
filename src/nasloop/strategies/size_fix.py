"""Mechanical repair of the most common failure of small models: a layer declared for the wrong input size.

When a forward pass fails inside a `Linear`, a convolution or a batch norm whose declared input size does
not match what it received, the evaluator's message names the layer and the size to use (`It failed in
layer `fc1` = Linear(...) ... set in_features=3136`). `size_fix` applies exactly that change to the code:
it finds the layer's constructor call (`self.fc1 = nn.Linear(...)`, or an entry of an `nn.Sequential`
such as `features.3`) and replaces its input-size argument with the number, leaving every other character
of the code as it was. When the layer cannot be found unambiguously it returns None, and the strategy asks
the LLM as usual. A layer called at two places of `forward` with inputs of different sizes (small models
copy a line and forget to declare a new layer) gets a second layer for the call that failed: the
declaration copied under a new name with the input size that call received, and that call made to the new
layer. A layer name assigned twice in `__init__` (`self.bn1 = nn.BatchNorm2d(32)`, later `self.bn1 =
nn.BatchNorm1d(128)` for the classifier) and called as many times in `forward` is split: the k-th call gets
the k-th layer, under a new name. A `Linear` fed an unflattened feature map gets its input flattened at the
failing call (`self.fc(x)` becomes `self.fc(x.flatten(1))`) and the flattened size. A `forward` with no
`return` that ends by assigning the logits (`x = self.fc(x)`, so it returns None) gets `return x`. A
network over the parameter limit (`limits.max_params`) gets its written-out layer widths halved, all of
them, so that layers that agreed still agree (a width computed in other ways is then set by the fixes above).
`size_fix_repair` wraps a fix as a repair proposal; fixes may chain (the fixed model can fail at the next
wrong size) up to a limit.
`net_name_fix` is the other mechanical repair: the one network class of an answer renamed to `Net` when the
model called it something else.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Collection
from typing import TYPE_CHECKING

from nasloop.candidate import Failure, FailureKind, Proposal, Purpose
from nasloop.spaces.open_code import defines_net, net_forward, terminal_name

if TYPE_CHECKING:
    from nasloop.strategies.code_writer import EvaluatedCodes

SIZE_MESSAGE = re.compile(
    r"It failed in layer `(?P<layer>[\w.]+)` = \w+\(.*?set (?P<field>in_features|in_channels|num_features)="
    r"(?P<value>\d+)",
    re.DOTALL,
)

REUSE_MESSAGE = re.compile(
    r"\(candidate\.py line (?P<line>\d+), in forward\)\. It failed in layer `(?P<layer>\w+)` = (?P<type>\w+)\("
    r".*?which received an input of shape \((?P<received>[\d, ]+)\): `(?P=layer)` is called more than once in "
    r"forward, and an earlier call received \((?P<first>[\d, ]+)\)",
    re.DOTALL,
)
NOT_FLATTENED = re.compile(
    r"\(candidate\.py line (?P<line>\d+), in forward\)\. It failed in layer `(?P<layer>\w+)` = Linear\(.*?"
    r"the input was not flattened.*?in_features must be (?P<features>\d+)",
    re.DOTALL,
)
NO_RETURN = "it returned NoneType"
TOO_MANY_PARAMETERS = re.compile(r"the network has (?P<count>[\d,]+) parameters; the limit is (?P<limit>[\d,]+)")
# The width arguments of the layers whose widths are halved for the parameter limit, by position and keyword.
WIDTHS: dict[str, tuple[tuple[int, str], ...]] = {
    **{f"Conv{d}d": ((0, "in_channels"), (1, "out_channels")) for d in (1, 2, 3)},
    **{f"BatchNorm{d}d": ((0, "num_features"),) for d in (1, 2, 3)},
    "Linear": ((0, "in_features"), (1, "out_features")),
}
RESHAPES = frozenset({"view", "reshape"})
NARROWEST = 16  # widths below this are left alone (kernel sizes, small classifiers)
FAILED_LAYER = re.compile(r"It failed in layer `(?P<layer>\w+)` = ")
# The input-size argument of the layers a second layer can be made for, and the input dimension it sizes.
INPUT_SIZE: dict[str, tuple[str, int]] = {
    **{f"Conv{d}d": ("in_channels", 1) for d in (1, 2, 3)},
    **{f"BatchNorm{d}d": ("num_features", 1) for d in (1, 2, 3)},
    "Linear": ("in_features", -1),
}


def size_fix(code: str, failure: Failure) -> tuple[str, str] | None:
    """`(fixed code, what changed)` for a network over the parameter limit, a `forward` that returns None,
    a failure in a layer whose name is assigned twice, a `Linear` fed an unflattened map, a wrong layer
    size the message names ("layer.field=value"), or a layer called at two places with different input
    sizes (the cases of the module docstring); None otherwise."""
    if failure.kind not in (FailureKind.SHAPE, FailureKind.BUDGET):
        return None
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    if failure.kind is FailureKind.BUDGET:
        over = TOO_MANY_PARAMETERS.search(failure.message)
        return _halved_widths(code, tree, over) if over is not None else None
    if NO_RETURN in failure.message:
        return _returned(code, tree)
    failed_in = FAILED_LAYER.search(failure.message)
    split = _split_reassigned(code, tree, failed_in["layer"]) if failed_in is not None else None
    if split is not None:
        return split
    unflattened = NOT_FLATTENED.search(failure.message)
    if unflattened is not None:
        return _flattened(code, tree, unflattened)
    match = SIZE_MESSAGE.search(failure.message)
    if match is None:
        reuse = REUSE_MESSAGE.search(failure.message)
        return _second_layer(code, tree, reuse) if reuse is not None else None
    call = _layer_call(tree, match["layer"].split("."))
    if call is None:
        return None
    field, value = match["field"], match["value"]
    argument = next((keyword.value for keyword in call.keywords if keyword.arg == field), None)
    if argument is None and call.args and not isinstance(call.args[0], ast.Starred):
        argument = call.args[0]
    if argument is None:
        return None
    fixed = _edited(code, [(argument, value)])
    return (fixed, f"{match['layer']}.{field}={value}") if fixed is not None else None


def _flattened(code: str, tree: ast.Module, match: re.Match[str]) -> tuple[str, str] | None:
    """The code with the input of the failing call of Linear `match["layer"]` flattened, and its in_features
    set to the flattened size when it differs."""
    layer, line, features = match["layer"], int(match["line"]), match["features"]
    declared = _declaration(tree, layer)
    failing = [
        node
        for node in _calls_in_forward(tree, layer)
        if node.lineno <= line <= (node.end_lineno or node.lineno) and len(node.args) == 1 and not node.keywords
    ]
    if declared is None or len(failing) != 1 or isinstance(failing[0].args[0], ast.Starred):
        return None
    call = declared[1]
    size = next((k.value for k in call.keywords if k.arg == "in_features"), call.args[0] if call.args else None)
    if size is None or isinstance(size, ast.Starred):
        return None
    given = failing[0].args[0]
    shown = ast.get_source_segment(code, given) or ast.unparse(given)
    plain = isinstance(given, ast.Name | ast.Attribute | ast.Call | ast.Subscript) and "\n" not in shown
    edits = [(given, f"{shown if plain else f'({shown})'}.flatten(1)")]
    if not (isinstance(size, ast.Constant) and str(size.value) == features):
        edits.append((size, features))
    fixed = _edited(code, edits)
    return (fixed, f"{layer} input flattened on line {line}, in_features={features}") if fixed is not None else None


def _returned(code: str, tree: ast.Module) -> tuple[str, str] | None:
    """The code with `return x` after the last statement of a `forward` that has no `return` and ends by
    assigning `x` (`x = self.fc(x)`: the logits computed, then dropped)."""
    forward = net_forward(tree)
    if forward is None or any(isinstance(node, ast.Return) for node in ast.walk(forward)):
        return None
    last = forward.body[-1]
    targets = _targets(last) if isinstance(last, ast.Assign | ast.AnnAssign) else []
    if isinstance(last, ast.AugAssign):
        targets = [last.target]
    if len(targets) != 1 or not isinstance(targets[0], ast.Name):
        return None
    name = targets[0].id
    lines = code.splitlines(keepends=True)
    end = last.end_lineno or last.lineno
    newline = "\r\n" if lines[end - 1].endswith("\r\n") else "\n"
    ending = "" if lines[end - 1].endswith(("\n", "\r")) else newline
    statement = f"{ending}{lines[last.lineno - 1][: last.col_offset]}return {name}{newline}"
    fixed = "".join(lines[:end]) + statement + "".join(lines[end:])
    return (fixed, f"`return {name}` added at the end of forward (line {end + 1})") if _parses(fixed) else None


def _halved_widths(code: str, tree: ast.Module, over: re.Match[str]) -> tuple[str, str] | None:
    """The code with every written-out layer width halved, for a network over the parameter limit: each
    even number >= 16 given as a convolution's channels, a batch norm's features, a `Linear`'s features or
    the last size of a `view`/`reshape` (the first such factor of a product: `512 * 7 * 7` becomes
    `256 * 7 * 7`), so that layers that agreed still agree and the parameters drop to about a quarter.
    Widths from names (`channels`, `num_classes`) stay. None when no width can be halved."""
    arguments: list[ast.expr] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if terminal_name(node.func) in RESHAPES and len(node.args) >= 2:  # x.view(-1, 512 * 7 * 7)
            arguments.append(node.args[-1])
        for position, keyword in WIDTHS.get(terminal_name(node.func), ()):
            argument = next((k.value for k in node.keywords if k.arg == keyword), None)
            if argument is None and len(node.args) > position and not isinstance(node.args[position], ast.Starred):
                argument = node.args[position]
            if argument is not None:
                arguments.append(argument)
    widths = [width for width in map(_width_literal, arguments) if width is not None]
    edits: list[tuple[ast.expr, str]] = [(node, str(value // 2)) for node, value in widths]
    if not edits:
        return None
    fixed = _edited(code, edits)
    if fixed is None:
        return None
    return fixed, f"layer widths halved ({over['count']} parameters, the limit is {over['limit']})"


def _width_literal(node: ast.expr) -> tuple[ast.Constant, int] | None:
    """The number to halve in a width argument (its node and value): the argument itself, or the first
    factor of a product."""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, int) and not isinstance(value, bool) and value >= NARROWEST and value % 2 == 0:
            return node, value
        return None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        return _width_literal(node.left) or _width_literal(node.right)
    return None


def _second_layer(code: str, tree: ast.Module, match: re.Match[str]) -> tuple[str, str] | None:
    """The code with a second layer for the call of layer `match["layer"]` on the failing line of forward."""
    layer, line = match["layer"], int(match["line"])
    received = [int(size) for size in match["received"].split(",")]
    first = [int(size) for size in match["first"].split(",")]
    declared = _declaration(tree, layer)
    if declared is None or match["type"] not in INPUT_SIZE or len(received) != len(first):
        return None
    field, dimension = INPUT_SIZE[match["type"]]
    statement, call = declared
    argument = next((keyword for keyword in call.keywords if keyword.arg == field), None)
    if argument is None and not (call.args and not isinstance(call.args[0], ast.Starred)):
        return None
    calls = _calls_in_forward(tree, layer)
    failing = [node for node in calls if node.lineno <= line <= (node.end_lineno or node.lineno)]
    if len(failing) != 1 or failing[0] is calls[0]:
        return None
    name = _unused_name(tree, layer)
    value = received[dimension]
    new_call = ast.Call(call.func, list(call.args), [ast.keyword(k.arg, k.value) for k in call.keywords])
    if argument is not None:
        new_call.keywords = [
            ast.keyword(field, ast.Constant(value)) if k.arg == field else k for k in new_call.keywords
        ]
    else:
        new_call.args[0] = ast.Constant(value)
    fixed = _replace(code, failing[0].func, f"self.{name}")
    lines = fixed.splitlines(keepends=True)
    indent = lines[statement.lineno - 1][: statement.col_offset]
    end = statement.end_lineno or statement.lineno
    newline = "\r\n" if lines[end - 1].endswith("\r\n") else "\n"
    declaration = f"{indent}self.{name} = {ast.unparse(new_call)}{newline}"
    fixed = "".join(lines[:end]) + declaration + "".join(lines[end:])
    return (fixed, f"{name}.{field}={value}, a second {layer} for line {line}") if _parses(fixed) else None


def _split_reassigned(code: str, tree: ast.Module, layer: str) -> tuple[str, str] | None:
    """The code with the k-th of n different assignments `self.layer = ...` and the k-th of n calls
    `self.layer(...)` in forward renamed `layer_k` (k >= 2); None unless both counts are n >= 2."""
    assignments = _assignments(tree, layer)
    calls = _calls_in_forward(tree, layer)
    if len(assignments) < 2 or len(assignments) != len(calls):
        return None
    if len({ast.dump(node.value) for node in assignments if node.value is not None}) < 2:
        return None
    names = [layer]
    for _ in assignments[1:]:
        names.append(_unused_name(tree, layer, taken=names))
    edits: list[tuple[ast.expr, str]] = []
    for assignment, call, name in zip(assignments[1:], calls[1:], names[1:], strict=True):
        target = next(target for target in _targets(assignment) if _is_self_attribute(target, layer))
        edits += [(target, f"self.{name}"), (call.func, f"self.{name}")]
    fixed = _edited(code, edits)
    if fixed is None:
        return None
    lines = ", ".join(str(call.lineno) for call in calls[1:])
    return (
        fixed,
        f"{', '.join(names[1:])}: `self.{layer}` was assigned {len(assignments)} times (calls on line {lines})",
    )


def _assignments(tree: ast.Module, layer: str) -> list[ast.Assign | ast.AnnAssign]:
    """The statements `self.layer = Layer(...)`, in source order."""
    found = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign | ast.AnnAssign)
        and isinstance(node.value, ast.Call)
        and any(_is_self_attribute(target, layer) for target in _targets(node))
    ]
    return sorted(found, key=lambda node: (node.lineno, node.col_offset))


def _declaration(tree: ast.Module, layer: str) -> tuple[ast.Assign | ast.AnnAssign, ast.Call] | None:
    """The one statement `self.layer = Layer(...)` and its call."""
    found = _assignments(tree, layer)
    if len(found) != 1 or not isinstance(found[0].value, ast.Call):
        return None
    return found[0], found[0].value


def _calls_in_forward(tree: ast.Module, layer: str) -> list[ast.Call]:
    """The calls `self.layer(...)` in `Net.forward`, in source order."""
    forward = net_forward(tree)
    if forward is None:
        return []
    calls = [node for node in ast.walk(forward) if isinstance(node, ast.Call) and _is_self_attribute(node.func, layer)]
    return sorted(calls, key=lambda node: (node.lineno, node.col_offset))


def _unused_name(tree: ast.Module, layer: str, taken: Collection[str] = ()) -> str:
    """`layer_2` (or `layer_3`, ...): a name no attribute or variable of the code has, nor `taken`."""
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)} | set(taken)
    used |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    number = 2
    while f"{layer}_{number}" in used:
        number += 1
    return f"{layer}_{number}"


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
    declared = _declaration(tree, path[0])
    if declared is None:
        return None
    call = declared[1]
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


def _edited(code: str, edits: list[tuple[ast.expr, str]]) -> str | None:
    """`code` with the source of each node replaced by its text (nodes of `code`'s own tree, not
    overlapping), or None when the result does not parse."""
    for node, text in sorted(edits, key=lambda edit: (edit[0].lineno, edit[0].col_offset), reverse=True):
        code = _replace(code, node, text)  # from the end, so the earlier positions stay valid
    return code if _parses(code) else None


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return True


def _replace(code: str, node: ast.expr, text: str) -> str:
    """`code` with the source of `node` replaced by `text` (AST columns count UTF-8 bytes)."""
    lines = code.splitlines(keepends=True)
    end_line, end_col = node.end_lineno or node.lineno, node.end_col_offset or node.col_offset
    first = lines[node.lineno - 1].encode()
    last = lines[end_line - 1].encode()
    replaced = (first[: node.col_offset] + text.encode() + last[end_col:]).decode()
    return "".join(lines[: node.lineno - 1]) + replaced + "".join(lines[end_line:])


__all__ = ["net_name_fix", "size_fix", "size_fix_repair"]
