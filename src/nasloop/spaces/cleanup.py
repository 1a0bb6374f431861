"""Mechanical clean-ups of an open-code candidate, run before the static check.

Small models often wrap a correct network in a training script: `torch.optim`, `torch.utils.data` and
`torchvision` imports, a `train` function, an optimizer, a loop over epochs, an
`if __name__ == "__main__":` block, "example usage" lines. The static check would reject the whole module
for code the evaluator never runs. `tidy(code)` removes every top-level statement that `class Net` does
not need and says what it removed and why, one note per statement, for the candidate's notes and for the
feedback sent to the LLM.

What `Net` needs is the closure of the names its class statement reads (bases, decorators, class
attributes, default values, annotations and the free names of its methods), resolved to the top-level
statements that bind them, whose own names are resolved in turn. Also kept:

* the module docstring, `from __future__` imports, star imports, and imports of allow-listed modules
  (`torch`, `nn`, `F`, `math`, `typing`, ...) even when unused: they are harmless and models expect them;
* statements that change something kept: `LAYERS.append(64)`, `CONFIG["width"] = 32`, `Net.expansion = 4`,
  or a call `setup()` of a kept function;
* a bare string between statements when the statement after it is kept (strings act as comments).

Removed: imports of training modules (`open_code.TRAINING_MODULES`) and of modules outside the allow-list
that nothing kept uses, every `if __name__ == "__main__":` block (the candidate runs as a module named
`candidate`, so such a block never runs), and every other statement nothing kept uses, even one whose
right-hand side would have side effects (`model = Net(...).to(device)`).

Edits are whole top-level statements: a removed statement goes with the comments attached to it (the
comment lines directly above it, a section banner separated from it by blank lines, indented comments just
after it), the blank lines around a removed region are reduced to what was there on either side, and every
kept line stays byte for byte as it was. Statements that share a line (`a = 1; b = 2`) are kept or removed
together.

One edit inside `Net`: a `forward` that runs its whole body a second time after the output layer (small
models repeat the lines they have just written: flatten, classifier, then conv1 again on the logits, which
always fails) loses the second copy, and what the first copy computed is returned. Only a repeat of the
complete body that crosses a flatten is removed, so a block applied twice on purpose is left alone.

A softmax or log-softmax on what `forward` returns is left in place and named in `warnings`. Code that
does not parse, or defines no top-level `class Net`, is returned unchanged with no notes: the static check
reports it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from nasloop.spaces.open_code import (
    TRAINING_MODULES,
    defines_net,
    is_allowed_module,
    net_forward,
    terminal_name,
)


@dataclass(frozen=True)
class Tidied:
    """The result of `tidy`: the code to check, what was removed (one note per statement) and warnings.

    Each note names the original line(s), what was removed and why, in words fit for the LLM's feedback:
    "line 3: removed `import torch.optim as optim` (only a training script needs it)".
    """

    code: str
    removed: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """Whether `code` differs from the input (exactly when something was removed)."""
        return bool(self.removed)


def tidy(code: str) -> Tidied:
    """`code` without the top-level statements `Net` does not need, with notes and softmax warnings."""
    tree = _parse(code)
    if tree is None or not defines_net(tree):
        return Tidied(code)
    warnings = tuple(_softmax_warnings(tree))
    code, removed = _top_level_tidied(code, tree)
    repeat = _without_repeated_forward(code)
    if repeat is not None:
        code, removed = repeat[0], (*removed, repeat[1])
    return Tidied(code, removed, warnings)


def _top_level_tidied(code: str, tree: ast.Module) -> tuple[str, tuple[str, ...]]:
    """`code` without the top-level statements `Net` does not need, and one note per removed statement."""
    lines = _split_lines(code)
    statements = [_analyse(node, index, lines) for index, node in enumerate(tree.body)]
    kept = _kept(statements)
    if len(kept) == len(statements):
        return code, ()
    dropped = _dropped_lines(statements, kept, lines)
    notes = tuple(_note(statement) for index, statement in enumerate(statements) if index not in kept)
    return _rebuild(lines, dropped, statements), notes


def _parse(code: str) -> ast.Module | None:
    """The syntax tree, or None when the code does not parse (the static check will say why)."""
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):
        return None


# ----------------------------------------------------------------------------------------------------
# A forward that runs its body twice
# ----------------------------------------------------------------------------------------------------

_FLATTENS = frozenset({"flatten", "view", "reshape"})


def _without_repeated_forward(code: str) -> tuple[str, str] | None:
    """`(code, note)` without the second copy of `Net.forward`'s body, when the body is a copy `A` run twice
    through a flatten: `A; A; return x`, or `A[:-1]; x = E; A[:-1]; return E`. None otherwise."""
    tree = _parse(code)
    forward = net_forward(tree) if tree is not None else None
    if forward is None:
        return None
    body = forward.body[1:] if forward.body and _is_string(forward.body[0]) else forward.body
    removed = _repeated_span(body)
    if removed is None:
        return None
    first, last = removed
    lines = _split_lines(code)
    start, end = first.lineno, last.end_lineno or last.lineno
    note = (
        f"lines {start}-{end}: removed a second copy of `forward`'s body after the output layer (it fed the "
        "output back into the first layer)"
    )
    return "".join(lines[: start - 1] + lines[end:]), note


def _repeated_span(body: list[ast.stmt]) -> tuple[ast.stmt, ast.stmt] | None:
    """The first and last statement to remove when `body` runs the same statements twice; None otherwise."""
    dumps = [ast.dump(statement) for statement in body]
    if len(body) < 5 or not isinstance(body[-1], ast.Return):
        return None
    if len(body) % 2 == 1:  # A; A; return
        half = len(body) // 2
        if dumps[:half] == dumps[half:-1] and _flattens(body[:half]):
            return body[half], body[-2]
        return None
    half = len(body) // 2  # A[:-1]; x = E; A[:-1]; return E
    last = body[half - 1]
    returned = body[-1].value
    if (
        dumps[: half - 1] == dumps[half:-1]
        and isinstance(last, ast.Assign)
        and len(last.targets) == 1
        and isinstance(last.targets[0], ast.Name)
        and returned is not None
        and ast.dump(returned) == ast.dump(last.value)
        and _flattens(body[:half])
    ):
        return last, body[-2]
    return None


def _flattens(statements: list[ast.stmt]) -> bool:
    """Whether the statements flatten a tensor (`x.flatten(1)`, `torch.flatten`, `x.view(...)`, `self.flatten`)."""
    return any(
        isinstance(node, ast.Call) and terminal_name(node.func) in _FLATTENS
        for statement in statements
        for node in ast.walk(statement)
    )


# ----------------------------------------------------------------------------------------------------
# Names read and bound by a statement
# ----------------------------------------------------------------------------------------------------


_Comprehension = ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp


class _Names(ast.NodeVisitor):
    """The names one scope reads and binds.

    Nested functions, lambdas and comprehensions add their free names to `reads`. A nested class adds
    every name its body reads, its own attributes included: class scopes have subtle rules, and reading
    too much only keeps too much. `import a.b` binds `a` only weakly (`weak_imports`), since most
    modules also `import a`. Names declared `global` in a nested function count as read and bound.
    """

    def __init__(self) -> None:
        self.reads: set[str] = set()
        self.binds: set[str] = set()
        self.weak_imports: set[str] = set()
        self.declared_global: set[str] = set()
        self.global_names: set[str] = set()  # declared `global` in nested functions
        self.paths: set[str] = set()  # dotted attribute chains read (`torch.optim.SGD`)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.reads.add(node.id)
            return
        self.binds.add(node.id)
        if isinstance(node.ctx, ast.Del):
            self.reads.add(node.id)  # `del x` needs x to be bound

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self.reads.add(node.target.id)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        path = _dotted(node)
        if path is not None:
            self.paths.add(path)
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:
        self.declared_global.update(node.names)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.binds.add(alias.asname)
            elif "." in alias.name:
                self.weak_imports.add(alias.name)
            else:
                self.binds.add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.binds.update(alias.asname or alias.name for alias in node.names if alias.name != "*")

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.binds.add(node.name)
        self.generic_visit(node)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.name:
            self.binds.add(node.name)
        self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self.binds.add(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        if node.rest:
            self.binds.add(node.rest)
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.binds.add(node.name)
        for decorator in node.decorator_list:
            self.visit(decorator)
        self._visit_signature(node.args)
        if node.returns is not None:
            self.visit(node.returns)
        self._nested(node.args, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._visit_signature(node.args)
        self._nested(node.args, [node.body])

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.binds.add(node.name)
        for part in [*node.decorator_list, *node.bases, *node.keywords]:
            self.visit(part)
        inner = _Names()
        for statement in node.body:
            inner.visit(statement)
        self.reads |= inner.reads | inner.declared_global
        self.global_names |= inner.global_names
        self.paths |= inner.paths

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self._comprehension(node, [node.elt])

    def visit_SetComp(self, node: ast.SetComp) -> None:
        self._comprehension(node, [node.elt])

    def visit_GeneratorExp(self, node: ast.GeneratorExp) -> None:
        self._comprehension(node, [node.elt])

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._comprehension(node, [node.key, node.value])

    def _visit_signature(self, arguments: ast.arguments) -> None:
        """Defaults and annotations, which the enclosing scope evaluates."""
        for default in [*arguments.defaults, *arguments.kw_defaults]:
            if default is not None:
                self.visit(default)
        for argument in _arguments(arguments):
            if argument.annotation is not None:
                self.visit(argument.annotation)

    def _nested(self, arguments: ast.arguments, body: list[ast.stmt] | list[ast.expr]) -> None:
        """A function scope: what it reads that it does not bind is read from the enclosing scopes."""
        inner = _Names()
        for node in body:
            inner.visit(node)
        local = inner.binds | {path.split(".")[0] for path in inner.weak_imports}
        local |= {argument.arg for argument in _arguments(arguments)}
        local -= inner.declared_global
        self.reads |= inner.reads - local
        self.global_names |= inner.global_names | inner.declared_global
        self.paths |= inner.paths

    def _comprehension(self, node: _Comprehension, elements: list[ast.expr]) -> None:
        self.visit(node.generators[0].iter)  # the first iterable is evaluated in the enclosing scope
        inner = _Names()
        for position, generator in enumerate(node.generators):
            inner.visit(generator.target)
            if position:
                inner.visit(generator.iter)
            for condition in generator.ifs:
                inner.visit(condition)
        for element in elements:
            inner.visit(element)
        walrus = {n.target.id for n in ast.walk(node) if isinstance(n, ast.NamedExpr)}  # binds outside
        self.reads |= inner.reads - (inner.binds - walrus)
        self.binds |= walrus
        self.global_names |= inner.global_names
        self.paths |= inner.paths


def _arguments(arguments: ast.arguments) -> list[ast.arg]:
    every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
    return every + [argument for argument in (arguments.vararg, arguments.kwarg) if argument is not None]


def _dotted(node: ast.expr) -> str | None:
    """`a.b.c` for an attribute chain on a plain name, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base is not None else None
    return None


def _root(node: ast.expr) -> str | None:
    """The name an attribute or item chain starts from (`CONFIG["a"].b` → CONFIG)."""
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


# ----------------------------------------------------------------------------------------------------
# Top-level statements and what to keep
# ----------------------------------------------------------------------------------------------------


class _Role(Enum):
    """What a top-level statement is, as far as keeping it goes."""

    ALWAYS = "always"  # the docstring, `__future__`, star and allow-listed imports
    MAIN = "main"  # an `if __name__ == "__main__":` block: never kept
    STRING = "string"  # a bare string after the docstring: kept when the statement after it is
    TRAINING_IMPORT = "training import"
    OTHER_IMPORT = "other import"  # a module outside the allow-list
    CODE = "code"


@dataclass(frozen=True)
class _Statement:
    node: ast.stmt
    role: _Role
    first: int  # first line, decorators included (1-based)
    last: int
    binds: frozenset[str]
    weak_roots: frozenset[str]  # `a` for each `import a.b` without `as`
    weak_imports: frozenset[str]
    reads: frozenset[str]
    paths: frozenset[str]
    changes: frozenset[str]  # names whose attributes or items it sets or deletes, or whose methods it calls
    calls: frozenset[str]  # names it calls as a statement on their own (`setup()`)
    text: str  # its first line of code (a `try:` import block: `try: <first import>`), stripped


def _analyse(node: ast.stmt, index: int, lines: list[str]) -> _Statement:
    names = _Names()
    names.visit(node)
    decorators = getattr(node, "decorator_list", [])
    changes, calls = _changes(node)
    return _Statement(
        node=node,
        role=_role(node, index),
        first=min([node.lineno] + [decorator.lineno for decorator in decorators]),
        last=node.end_lineno or node.lineno,
        binds=frozenset(names.binds | names.global_names),
        weak_roots=frozenset(path.split(".")[0] for path in names.weak_imports),
        weak_imports=frozenset(names.weak_imports),
        reads=frozenset(names.reads | names.global_names),
        paths=frozenset(names.paths),
        changes=frozenset(changes),
        calls=frozenset(calls),
        text=_first_line(node, lines),
    )


def _first_line(node: ast.stmt, lines: list[str]) -> str:
    if isinstance(node, ast.Try) and node.body:
        return "try: " + lines[node.body[0].lineno - 1].strip()
    return lines[node.lineno - 1].strip()


def _role(node: ast.stmt, index: int) -> _Role:
    if _is_string(node):
        return _Role.ALWAYS if index == 0 else _Role.STRING
    if _is_main_guard(node):
        return _Role.MAIN
    imports = _imports_in(node)
    if imports is None:
        return _Role.CODE
    if any(alias.name == "*" for statement in imports for alias in statement.names):
        return _Role.ALWAYS
    paths = [path for statement in imports for path in _import_paths(statement)]
    if any(_is_training(path) for path in paths):
        return _Role.TRAINING_IMPORT
    if all(_import_allowed(statement) for statement in imports):
        return _Role.ALWAYS
    return _Role.OTHER_IMPORT


def _is_string(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _is_main_guard(node: ast.stmt) -> bool:
    """`if __name__ == "__main__":` (either way round) with no `else`, which would run on import."""
    if not isinstance(node, ast.If) or node.orelse or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    named = any(isinstance(side, ast.Name) and side.id == "__name__" for side in sides)
    return named and any(isinstance(side, ast.Constant) and side.value == "__main__" for side in sides)


def _imports_in(node: ast.stmt) -> list[ast.Import | ast.ImportFrom] | None:
    """The imports of an import statement, or of a `try:` whose body only imports; None otherwise."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        return [node]
    if isinstance(node, ast.Try) and all(isinstance(item, ast.Import | ast.ImportFrom) for item in node.body):
        return [item for item in node.body if isinstance(item, ast.Import | ast.ImportFrom)]
    return None


def _import_paths(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    module = node.module or ""
    return [module] + [f"{module}.{alias.name}" for alias in node.names]


def _is_training(path: str) -> bool:
    return any(path == module or path.startswith(module + ".") for module in TRAINING_MODULES)


def _import_allowed(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.Import):
        return all(is_allowed_module(alias.name) for alias in node.names)
    return not node.level and node.module is not None and is_allowed_module(node.module)


def _changes(statement: ast.stmt) -> tuple[set[str], set[str]]:
    """Roots of what the statement changes (`X.a = ...`, `X[k] = ...`, `del X.a`, `X.append(...)`), and
    the names it calls as statements (`setup()`), outside the functions and classes it defines."""
    changes: set[str] = set()
    calls: set[str] = set()
    for node in _module_scope(statement):
        if isinstance(node, ast.Attribute | ast.Subscript) and not isinstance(node.ctx, ast.Load):
            changes.add(_root(node) or "")
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            function = node.value.func
            if isinstance(function, ast.Name):
                calls.add(function.id)
            elif isinstance(function, ast.Attribute):
                changes.add(_root(function) or "")
    return changes - {""}, calls


def _module_scope(statement: ast.stmt) -> Iterator[ast.AST]:
    """The nodes of a top-level statement, not descending into functions, lambdas or classes."""
    stack: list[ast.AST] = [statement]
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            stack.extend(ast.iter_child_nodes(node))


def _kept(statements: list[_Statement]) -> set[int]:
    """Indices of the statements to keep: what `Net` needs, grown until nothing more is needed."""
    kept = {
        index
        for index, statement in enumerate(statements)
        if statement.role is _Role.ALWAYS or (statement.role is not _Role.MAIN and "Net" in statement.binds)
    }
    while True:
        grown = kept | _binders(statements, kept) | _changers(statements, kept)
        grown |= _sharing_a_line(statements, grown)
        if grown == kept:
            return kept | _strings_to_keep(statements, kept)
        kept = grown


def _binders(statements: list[_Statement], kept: set[int]) -> set[int]:
    """Statements binding a name the kept ones read (all of them, wherever they are)."""
    reads = set().union(*(statements[index].reads for index in kept))
    paths = set().union(*(statements[index].paths for index in kept))
    candidates = [
        index
        for index, statement in enumerate(statements)
        if index not in kept and statement.role not in (_Role.MAIN, _Role.STRING)
    ]
    found = {
        index
        for index in candidates
        if statements[index].binds & reads
        or any(_path_used(module, paths) for module in statements[index].weak_imports)
    }
    # A name that only `import a.b` lines bind must stay bound, even when no `a.b...` path is read.
    strongly_bound = set().union(*(s.binds for s in statements if s.role is not _Role.MAIN))
    for name in reads - strongly_bound:
        weak = {index for index in candidates if name in statements[index].weak_roots}
        if not any(name in statements[index].weak_roots for index in kept | found):
            found |= weak
    return found


def _path_used(module: str, paths: set[str]) -> bool:
    return any(path == module or path.startswith(module + ".") for path in paths)


def _changers(statements: list[_Statement], kept: set[int]) -> set[int]:
    """Statements that change something kept and defined here, or call a kept function on their own."""
    defined = set().union(*(statements[i].binds for i in kept if statements[i].role is _Role.CODE))
    kept_nodes = [statements[i].node for i in kept]
    functions = {node.name for node in kept_nodes if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
    return {
        index
        for index, statement in enumerate(statements)
        if index not in kept
        and statement.role is _Role.CODE
        and (statement.changes & defined or statement.calls & functions)
    }


def _sharing_a_line(statements: list[_Statement], kept: set[int]) -> set[int]:
    """Statements on a line with a kept one (`a = 1; b = 2`): lines are kept or removed whole."""
    found: set[int] = set()
    for index in range(1, len(statements)):
        if statements[index].first == statements[index - 1].last and ({index, index - 1} & kept):
            found |= {index, index - 1}
    return found


def _strings_to_keep(statements: list[_Statement], kept: set[int]) -> set[int]:
    """Bare strings kept with the statement after them (or, at the end, the one before them)."""
    found: set[int] = set()
    for index, statement in enumerate(statements):
        if statement.role is not _Role.STRING:
            continue
        after = [i for i in range(index + 1, len(statements)) if statements[i].role is not _Role.STRING]
        before = [i for i in range(index) if statements[i].role is not _Role.STRING]
        neighbour = after[0] if after else (before[-1] if before else None)
        if neighbour is not None and neighbour in kept:
            found.add(index)
    return found


# ----------------------------------------------------------------------------------------------------
# Lines: what to drop, and the code that is left
# ----------------------------------------------------------------------------------------------------


def _split_lines(code: str) -> list[str]:
    """Lines with their endings, split where the parser splits them (\\n, \\r\\n, a lone \\r)."""
    return [line for line in re.split(r"(?<=\n)|(?<=\r)(?!\n)", code) if line]


def _is_blank(line: str) -> bool:
    return not line.strip()


def _dropped_lines(statements: list[_Statement], kept: set[int], lines: list[str]) -> set[int]:
    """Line numbers (1-based) of the removed statements and of the comments that go with them."""
    dropped = {n for i, s in enumerate(statements) if i not in kept for n in range(s.first, s.last + 1)}
    for gap in range(len(statements) + 1):
        before = statements[gap - 1] if gap else None
        after = statements[gap] if gap < len(statements) else None
        start = before.last + 1 if before else 1
        end = after.first - 1 if after else len(lines)
        before_removed = before is not None and gap - 1 not in kept
        after_removed = after is not None and gap not in kept
        dropped |= _dropped_comments(lines, range(start, end + 1), before, before_removed, after_removed)
    return dropped


def _dropped_comments(
    lines: list[str], gap: range, before: _Statement | None, before_removed: bool, after_removed: bool
) -> set[int]:
    """The comment lines of a gap between statements that belong to a removed one.

    Comments right below a statement (no blank line) belong to it; so do indented ones when the gap has no
    blank line. Comments right above a statement belong to it, and so does a paragraph between blank lines
    (a section banner) unless it opens the file. At the end of the file, after a removed statement,
    everything goes.
    """
    comments = [n for n in gap if not _is_blank(lines[n - 1])]
    blanks = [n for n in gap if _is_blank(lines[n - 1])]
    if not comments:
        return set()
    at_end = gap.stop > len(lines) and before_removed
    if not blanks:
        indented = {n for n in comments if lines[n - 1][:1].isspace()}
        dropped = indented if before_removed else set()
        return dropped | (set(comments) - indented if after_removed or at_end else set())
    head = {n for n in comments if n < blanks[0]}
    tail = {n for n in comments if n > blanks[-1]}
    middle = set(comments) - head - tail
    dropped = head if before_removed else set()
    if after_removed or at_end:
        dropped |= tail | (middle if before is not None else set())
    return dropped


def _rebuild(lines: list[str], dropped: set[int], statements: list[_Statement]) -> str:
    """The kept lines, with each run of removed and blank lines reduced to the blank lines on its wider side."""
    inside = {n for s in statements for n in range(s.first, s.last + 1)}

    def droppable(number: int) -> bool:
        return number in dropped or (number not in inside and _is_blank(lines[number - 1]))

    kept: list[str] = []
    number = 1
    while number <= len(lines):
        if not droppable(number):
            kept.append(lines[number - 1])
            number += 1
            continue
        end = number
        while end <= len(lines) and droppable(end):
            end += 1
        kept += _blank_lines_kept(lines, range(number, end), dropped)
        number = end
    return "".join(kept)


def _blank_lines_kept(lines: list[str], run: range, dropped: set[int]) -> list[str]:
    removed = [n for n in run if n in dropped]
    blanks = [n for n in run if n not in dropped]
    if not removed:
        return [lines[n - 1] for n in blanks]
    if run.start == 1 or run.stop > len(lines):
        return []  # nothing kept before (or after) the run: no blank lines to separate
    before = sum(1 for n in blanks if n < removed[0])
    after = sum(1 for n in blanks if n > removed[-1])
    return [lines[n - 1] for n in blanks[: max(before, after)]]


# ----------------------------------------------------------------------------------------------------
# Notes
# ----------------------------------------------------------------------------------------------------

_NOT_USED = "which `Net` does not use"
_NO_OWN_CODE = "candidates run no code of their own"


def _note(statement: _Statement) -> str:
    first, last = statement.first, statement.last
    where = f"line {first}" if first == last else f"lines {first}-{last}"
    return f"{where}: removed {_what(statement)}"


def _what(statement: _Statement) -> str:
    node, shown = statement.node, _shown(statement)
    if statement.role is _Role.MAIN:
        return f"the {_shown(statement, block=False)} block ({_NO_OWN_CODE})"
    if statement.role is _Role.TRAINING_IMPORT:
        return f"{shown} (only a training script needs it)"
    if statement.role is _Role.OTHER_IMPORT:
        return f"{shown}, {_NOT_USED}"
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return f"the function `{node.name}`, {_NOT_USED}"
    if isinstance(node, ast.ClassDef):
        return f"the class `{node.name}`, {_NOT_USED}"
    if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign | ast.Delete):
        return f"{shown}, {_NOT_USED}"
    if statement.role is _Role.STRING:
        return f"the string {shown} that went with removed code"
    return f"{shown} (module-level code: {_NO_OWN_CODE})"


def _shown(statement: _Statement, *, block: bool = True, limit: int = 70) -> str:
    """The statement's first line in backticks, with `...` when the statement goes on."""
    text = statement.text
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    elif block and statement.last > statement.first:
        text += " ..."
    return f"`{text}`"


# ----------------------------------------------------------------------------------------------------
# Softmax on the logits
# ----------------------------------------------------------------------------------------------------

_SOFTMAX_FUNCTIONS = {"softmax": "softmax", "log_softmax": "log-softmax"}
_SOFTMAX_LAYERS = {"Softmax": "softmax", "LogSoftmax": "log-softmax"}
_SOFTMAX_WHY = {
    "softmax": "nasloop trains with cross-entropy on logits, so a softmax on the output likely costs accuracy",
    # log_softmax(log_softmax(z)) == log_softmax(z): the loss and its gradients are those of the raw logits.
    "log-softmax": "nasloop's cross-entropy applies log-softmax itself, so one on the output is redundant work",
}


@dataclass(frozen=True)
class _Softmax:
    shown: str  # how the returned expression reads, in backticks
    kind: str  # "softmax" or "log-softmax"
    line: int


def _softmax_warnings(tree: ast.Module) -> list[str]:
    """A warning for each `return` of `Net.forward` that gives a softmax or log-softmax of the logits."""
    forward = net_forward(tree)
    if forward is None:
        return []
    net = next(n for n in reversed(tree.body) if isinstance(n, ast.ClassDef) and n.name == "Net")
    layers = _self_assignments(net)
    warnings = []
    for node in _module_scope_returns(forward):
        found = _returned_softmax(node.value, node.lineno, forward, layers)
        if found is not None:
            warnings.append(
                f"`forward` returns {found.shown} (line {found.line}): {_SOFTMAX_WHY[found.kind]}; "
                "return the raw logits"
            )
    return warnings


def _module_scope_returns(function: ast.FunctionDef) -> Iterator[ast.Return]:
    stack: list[ast.AST] = list(function.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Return):
            yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            stack.extend(ast.iter_child_nodes(node))


def _self_assignments(net: ast.ClassDef) -> dict[str, ast.expr]:
    """`self.name = value` anywhere in the class, the last one for each name."""
    assigned: dict[str, ast.expr] = {}
    for node in ast.walk(net):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                name = _self_attribute(target)
                if name is not None:
                    assigned[name] = node.value
    return assigned


def _returned_softmax(
    value: ast.expr | None, line: int, forward: ast.FunctionDef, layers: dict[str, ast.expr], depth: int = 0
) -> _Softmax | None:
    """The softmax `value` is, following `x = ...; return x` back a few assignments."""
    if isinstance(value, ast.Name) and depth < 5:
        assignment = _last_assignment(forward, value.id, line)
        if assignment is None:
            return None
        return _returned_softmax(assignment.value, assignment.lineno, forward, layers, depth + 1)
    if not isinstance(value, ast.Call):
        return None
    function = value.func
    called = f"`{_short(function)}(...)`"
    if isinstance(function, ast.Call) or _self_attribute(function) in layers:
        layer = function if isinstance(function, ast.Call) else layers[_self_attribute(function) or ""]
        found = _softmax_layer(layer)
        if found is None:
            return None
        kind, shown, last_of_sequential = found
        relation = "whose last layer is" if last_of_sequential else "which is"
        return _Softmax(f"{called}, {relation} `{shown}`", kind, value.lineno)
    name = terminal_name(function)
    return _Softmax(called, _SOFTMAX_FUNCTIONS[name], value.lineno) if name in _SOFTMAX_FUNCTIONS else None


def _last_assignment(forward: ast.FunctionDef, name: str, before: int) -> ast.Assign | None:
    assignments = [
        node
        for node in ast.walk(forward)
        if isinstance(node, ast.Assign)
        and node.lineno < before
        and any(isinstance(target, ast.Name) and target.id == name for target in node.targets)
    ]
    return max(assignments, key=lambda node: node.lineno, default=None)


def _softmax_layer(layer: ast.expr) -> tuple[str, str, bool] | None:
    """(kind, the layer's source, whether it ends an `nn.Sequential`) for a softmax layer."""
    if not isinstance(layer, ast.Call):
        return None
    name = terminal_name(layer.func)
    if name in _SOFTMAX_LAYERS:
        return _SOFTMAX_LAYERS[name], _short(layer), False
    if name == "Sequential" and layer.args:
        found = _softmax_layer(layer.args[-1])
        return (found[0], found[1], True) if found is not None else None
    return None


def _self_attribute(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr
    return None


def _short(node: ast.expr, limit: int = 60) -> str:
    text = ast.unparse(node)
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["Tidied", "tidy"]
