"""Canonical hashing: equal hashes for candidates that are the same network written differently.

The engine deduplicates candidates by these hashes before evaluating them (docs/architecture.md, the flow of one
candidate). For open code, `canonical_hash` ignores what cannot change the network: formatting,
comments, docstrings, type annotations, import spelling, and the names the code chooses for its own
variables, parameters, helper functions, helper classes and attributes. It keeps what can: every
literal (channel counts, kernel sizes, strides), every operation and library call, and the order of
statements. For structured spaces, `arch_hash` hashes the space's canonical string.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from nasloop.registry import spaces

# Names the candidate contract and nn.Module fix: renaming them would change what the code means.
KEPT_NAMES = frozenset({"Net", "forward", "__init__", "self", "extra_repr", "reset_parameters"})

_Function = ast.FunctionDef | ast.AsyncFunctionDef
_NEW_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def canonical_hash(code: str) -> str:
    """SHA-256 hex digest of `canonical_code(code)`."""
    return _digest(canonical_code(code))


def canonical_code(code: str) -> str:
    """The normal form that `canonical_hash` digests.

    Parsable code is unparsed from a normalised syntax tree:
    - docstrings, bare string statements and annotations are dropped;
    - import statements are dropped and each imported name is replaced by its full dotted path, so
      `nn.Conv2d`, `torch.nn.Conv2d` and an imported `Conv2d` read alike;
    - names the code binds itself are renamed to placeholders: a function's parameters by position
      (`_p1_0`, `_p1_1`, ... at nesting depth 1) and its other locals by first appearance (`_l1_0`, ...),
      so each function is numbered on its own; module-level helpers and constants `_n0`, ...; attributes
      the code defines (assigned on an object, methods, class attributes) `_a0`, ...; keyword arguments
      of calls to the code's own functions and classes follow their parameters;
    - `KEPT_NAMES` and dunder names keep their names;
    - a value assigned to a local name and returned by the next statement is returned directly, so
      `x = self.fc(x)` then `return x` reads as `return self.fc(x)` (not for a name declared global or
      nonlocal, or read by a nested function, where the assignment can be seen after the return).
    Code that does not parse is reduced to its whitespace-separated words.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):  # ValueError: source with null bytes
        return "unparsable:" + " ".join(code.split())
    for function in [node for node in ast.walk(tree) if isinstance(node, _Function)]:
        _return_directly(function)
    inventory = _Inventory()
    inventory.visit(tree)
    tree = _Normaliser(inventory).visit(tree)
    return ast.unparse(ast.fix_missing_locations(tree))


def arch_hash(space_name: str, arch: str) -> str:
    """SHA-256 hex digest of a structured-space point: the space's name and its canonical string."""
    space = spaces.get(space_name)()
    return _digest(f"{space_name}:{space.canonical(arch)}")


def _return_directly(function: _Function) -> None:
    """Fold `name = value` followed by `return name` into `return value` in every statement list of
    `function`'s own body (nested functions are folded on their own)."""
    shared = _shared_names(function)
    for node in (function, *_scope_nodes(function.body)):
        if node is not function and isinstance(node, _NEW_SCOPES):
            continue
        for field_name in ("body", "orelse", "finalbody"):
            statements = getattr(node, field_name, None)
            if isinstance(statements, list):  # an IfExp's body and orelse are expressions
                setattr(node, field_name, _folded(statements, shared))


def _folded(statements: list[ast.stmt], shared: set[str]) -> list[ast.stmt]:
    folded: list[ast.stmt] = []
    for statement in statements:
        previous = folded[-1] if folded else None
        if (
            isinstance(statement, ast.Return)
            and isinstance(statement.value, ast.Name)
            and isinstance(previous, ast.Assign)
            and len(previous.targets) == 1
            and isinstance(previous.targets[0], ast.Name)
            and previous.targets[0].id == statement.value.id
            and statement.value.id not in shared
        ):
            folded[-1] = ast.copy_location(ast.Return(value=previous.value), previous)
        else:
            folded.append(statement)
    return folded


def _shared_names(function: _Function) -> set[str]:
    """Names whose assignment can outlive a return: declared global or nonlocal, or read by a nested
    function, lambda or class."""
    shared: set[str] = set()
    for node in _scope_nodes(function.body):
        if isinstance(node, ast.Global | ast.Nonlocal):
            shared.update(node.names)
        elif isinstance(node, _NEW_SCOPES):  # walked once, deeper definitions included
            shared.update(name.id for name in ast.walk(node) if isinstance(name, ast.Name))
    return shared


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_kept(name: str) -> bool:
    return name in KEPT_NAMES or (name.startswith("__") and name.endswith("__"))


def _parameters(arguments: ast.arguments) -> list[str]:
    """Parameter names in declaration order (positional, *args, keyword-only, **kwargs)."""
    names = [argument.arg for argument in (*arguments.posonlyargs, *arguments.args)]
    if arguments.vararg is not None:
        names.append(arguments.vararg.arg)
    names.extend(argument.arg for argument in arguments.kwonlyargs)
    if arguments.kwarg is not None:
        names.append(arguments.kwarg.arg)
    return names


def _scope_nodes(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every node of a scope's body, not descending into nested functions, lambdas or classes."""
    pending: list[ast.AST] = list(body)
    while pending:
        node = pending.pop()
        yield node
        if not isinstance(node, _NEW_SCOPES):
            pending.extend(ast.iter_child_nodes(node))


def _bound_in(body: list[ast.stmt]) -> set[str]:
    """Names a scope binds itself: assignment targets, loop and with targets, nested defs, handlers."""
    bound: set[str] = set()
    declared_elsewhere: set[str] = set()
    for node in _scope_nodes(body):
        if isinstance(node, ast.Global | ast.Nonlocal):
            declared_elsewhere.update(node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            bound.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.ExceptHandler):
            bound.add(node.name or "")  # an `except E:` without `as` binds nothing
    return bound - declared_elsewhere - {""}


class _Inventory(ast.NodeVisitor):
    """What the code defines: imports, module-level names, attributes, and its callables' parameters."""

    def __init__(self) -> None:
        self.imports: dict[str, str] = {}
        self.module_names: set[str] = set()
        self.attributes: set[str] = set()
        # callable name (function, class or method) -> its parameter names; a class maps to __init__'s
        self.signatures: dict[str, list[str]] = {}

    def visit_Module(self, node: ast.Module) -> None:
        self.generic_visit(node)
        self.module_names = {name for name in _bound_in(node.body) if name not in self.imports}

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.imports[alias.asname] = alias.name
            else:  # `import torch.nn` binds `torch`
                top = alias.name.split(".")[0]
                self.imports[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = "." * node.level + (node.module or "")
        for alias in node.names:
            self.imports[alias.asname or alias.name] = f"{module}.{alias.name}" if module else alias.name

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for name in _bound_in(node.body):  # methods and class attributes are read back as attributes
            if not _is_kept(name):
                self.attributes.add(name)
        for statement in node.body:
            if isinstance(statement, ast.FunctionDef) and statement.name == "__init__":
                self.signatures.setdefault(node.name, _parameters(statement.args))
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.signatures.setdefault(node.name, _parameters(node.args))
        self.generic_visit(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self.signatures.setdefault(node.name, _parameters(node.args))
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Store | ast.Del) and not _is_kept(node.attr):
            self.attributes.add(node.attr)
        self.generic_visit(node)


@dataclass
class _Scope:
    """The placeholders of one function (or lambda): parameters by position, locals by appearance."""

    depth: int
    locals: set[str]
    names: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, depth: int, parameters: list[str], body: list[ast.stmt]) -> _Scope:
        scope = cls(depth, _bound_in(body) - set(parameters))
        for index, name in enumerate(parameters):
            if not _is_kept(name):
                scope.names[name] = f"_p{depth}_{index}"
        return scope

    def lookup(self, name: str) -> str | None:
        if name not in self.names and name in self.locals and not _is_kept(name):
            self.names[name] = f"_l{self.depth}_{len(self.names)}"
        return self.names.get(name)


class _Normaliser(ast.NodeTransformer):
    """Rewrites the tree into the canonical form described in `canonical_code`."""

    def __init__(self, inventory: _Inventory) -> None:
        self.inventory = inventory
        self.scopes: list[_Scope] = []
        self.globals: dict[str, str] = {}
        self.attributes: dict[str, str] = {}
        self.in_class_body = False

    # -- placeholders --------------------------------------------------------------------------------

    def _name(self, name: str) -> str:
        for scope in reversed(self.scopes):
            found = scope.lookup(name)
            if found is not None:
                return found
        if name in self.inventory.module_names and not _is_kept(name):
            return self.globals.setdefault(name, f"_n{len(self.globals)}")
        return self.inventory.imports.get(name, name)

    def _attribute(self, name: str) -> str:
        if name not in self.inventory.attributes:
            return name
        return self.attributes.setdefault(name, f"_a{len(self.attributes)}")

    def _definition_name(self, name: str) -> str:
        """A def or class statement's new name: methods and class attributes are attributes."""
        return self._attribute(name) if self.in_class_body else self._name(name)

    # -- statements that disappear -------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        return None

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        return None

    def visit_Expr(self, node: ast.Expr) -> ast.AST | None:
        # A bare string statement (a docstring or a string used as a comment) computes nothing.
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return None
        return self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST | None:
        if node.value is None:  # a bare annotation binds nothing
            return None
        return self.visit(ast.copy_location(ast.Assign(targets=[node.target], value=node.value), node))

    # -- definitions and scopes ----------------------------------------------------------------------

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        node.name = self._definition_name(node.name)
        node.bases = [self.visit(base) for base in node.bases]
        node.keywords = [self.visit(keyword) for keyword in node.keywords]
        node.decorator_list = [self.visit(decorator) for decorator in node.decorator_list]
        outer, self.in_class_body = self.in_class_body, True
        node.body = self._statements(node.body)
        self.in_class_body = outer
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        return self._visit_function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        return self._visit_function(node)

    def _visit_function(self, node: _Function) -> ast.AST:
        node.name = self._definition_name(node.name)
        node.returns = None
        node.decorator_list = [self.visit(decorator) for decorator in node.decorator_list]
        self._visit_defaults(node.args)  # evaluated in the enclosing scope
        scope = _Scope.open(len(self.scopes) + 1, _parameters(node.args), node.body)
        self.scopes.append(scope)
        outer, self.in_class_body = self.in_class_body, False
        self._rename_parameters(node.args, scope)
        node.body = self._statements(node.body)
        self.in_class_body = outer
        self.scopes.pop()
        return node

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        self._visit_defaults(node.args)
        scope = _Scope.open(len(self.scopes) + 1, _parameters(node.args), [])
        self.scopes.append(scope)
        self._rename_parameters(node.args, scope)
        node.body = self.visit(node.body)
        self.scopes.pop()
        return node

    def _visit_defaults(self, arguments: ast.arguments) -> None:
        arguments.defaults = [self.visit(default) for default in arguments.defaults]
        arguments.kw_defaults = [None if value is None else self.visit(value) for value in arguments.kw_defaults]

    def _rename_parameters(self, arguments: ast.arguments, scope: _Scope) -> None:
        variadic = [argument for argument in (arguments.vararg, arguments.kwarg) if argument is not None]
        for argument in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs, *variadic):
            argument.arg = scope.names.get(argument.arg, argument.arg)
            argument.annotation = None

    def _statements(self, body: list[ast.stmt]) -> list[ast.stmt]:
        """Visit a body; a body left empty (it held only a docstring) becomes `pass`."""
        visited = [self.visit(statement) for statement in body]
        kept = [statement for statement in visited if statement is not None]
        return kept or [ast.Pass()]

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        if node.name:
            node.name = self._name(node.name)
        return self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> ast.AST:
        node.names = [self._name(name) for name in node.names]
        return node

    def visit_Nonlocal(self, node: ast.Nonlocal) -> ast.AST:
        node.names = [self._name(name) for name in node.names]
        return node

    # -- references ----------------------------------------------------------------------------------

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if self.in_class_body and node.id in self.inventory.attributes:  # `expansion = 4` in a class body
            node.id = self._attribute(node.id)
        else:
            node.id = self._name(node.id)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        node.attr = self._attribute(node.attr)
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        # Keywords of calls to the code's own functions and classes follow the callee's parameters;
        # library keywords (nn.Conv2d(kernel_size=3)) keep their names.
        callee = node.func
        callee_name = callee.id if isinstance(callee, ast.Name) else getattr(callee, "attr", None)
        own = callee_name in self.inventory.module_names or callee_name in self.inventory.attributes
        parameters = self.inventory.signatures.get(str(callee_name), []) if own else []
        self.generic_visit(node)
        for keyword in node.keywords:
            if keyword.arg in parameters:
                keyword.arg = f"_p1_{parameters.index(keyword.arg)}"
        return node
