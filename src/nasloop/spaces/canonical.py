"""Canonical hashing: equal hashes for candidates that are the same network written differently.

The engine deduplicates candidates by these hashes before evaluating them (DESIGN.md, the flow of one
candidate). For open code, `canonical_hash` ignores what cannot change the network: formatting,
comments, docstrings, type annotations, import spelling, and the names the code chooses for its own
variables, arguments, helper functions, helper classes and attributes. It keeps what can: every
literal (channel counts, kernel sizes, strides), every operation and library call, and the order of
statements. For structured spaces, `arch_hash` hashes the space's canonical string.
"""

from __future__ import annotations

import ast
import hashlib

from nasloop.registry import spaces

# Names the candidate contract and nn.Module fix: renaming them would change what the code means.
KEPT_NAMES = frozenset({"Net", "forward", "__init__", "self", "extra_repr", "reset_parameters"})


def canonical_hash(code: str) -> str:
    """SHA-256 hex digest of `canonical_code(code)`."""
    return _digest(canonical_code(code))


def canonical_code(code: str) -> str:
    """The normal form that `canonical_hash` digests.

    Parsable code is unparsed from a normalised syntax tree: docstrings and annotations dropped, import
    statements dropped and each imported name replaced by its full dotted path (`nn.Conv2d` and
    `torch.nn.Conv2d` read alike), and every name the code binds itself, except those in `KEPT_NAMES`
    and dunder names, renamed to a placeholder numbered by first appearance (`_n0`, `_n1`, ...;
    attributes `_a0`, ...). Code that does not parse is reduced to its whitespace-separated words.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):  # ValueError: source with null bytes
        return "unparsable:" + " ".join(code.split())
    imports = _ImportResolver()
    imports.visit(tree)
    binder = _BoundNames(imports.paths)
    binder.visit(tree)
    tree = _Normaliser(imports.paths, binder.names, binder.attributes).visit(tree)
    return ast.unparse(ast.fix_missing_locations(tree))


def arch_hash(space_name: str, arch: str) -> str:
    """SHA-256 hex digest of a structured-space point: the space's name and its canonical string."""
    space = spaces.get(space_name)()
    return _digest(f"{space_name}:{space.canonical(arch)}")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_kept(name: str) -> bool:
    return name in KEPT_NAMES or (name.startswith("__") and name.endswith("__"))


class _ImportResolver(ast.NodeVisitor):
    """Maps each name an import binds to the dotted path it stands for."""

    def __init__(self) -> None:
        self.paths: dict[str, str] = {}

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.paths[alias.asname] = alias.name
            else:  # `import torch.nn` binds `torch`
                top = alias.name.split(".")[0]
                self.paths[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = "." * node.level + (node.module or "")
        for alias in node.names:
            self.paths[alias.asname or alias.name] = f"{module}.{alias.name}" if module else alias.name


class _BoundNames(ast.NodeVisitor):
    """Collects the names and attribute names the code binds itself (the ones safe to rename)."""

    def __init__(self, imported: dict[str, str]) -> None:
        self.imported = imported
        self.names: set[str] = set()
        self.attributes: set[str] = set()

    def _bind(self, name: str) -> None:
        if name not in self.imported and not _is_kept(name):
            self.names.add(name)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._visit_function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._visit_function(node)

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._bind(node.name)
        if not _is_kept(node.name):  # methods are reached as attributes: self.make_layer(...)
            self.attributes.add(node.name)
        self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> None:  # parameters of functions, methods and lambdas
        self._bind(node.arg)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._bind(node.name)
        for statement in node.body:  # class-level names are read back as attributes: self.expansion
            targets = statement.targets if isinstance(statement, ast.Assign) else []
            for target in targets:
                if isinstance(target, ast.Name) and not _is_kept(target.id):
                    self.attributes.add(target.id)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store | ast.Del):
            self._bind(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Store) and not _is_kept(node.attr):
            self.attributes.add(node.attr)
        self.generic_visit(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self._bind(node.name)
        self.generic_visit(node)


class _Normaliser(ast.NodeTransformer):
    """Rewrites the tree into the canonical form described in `canonical_code`."""

    def __init__(self, imported: dict[str, str], names: set[str], attributes: set[str]) -> None:
        self.imported = imported
        self.names = names
        self.attributes = attributes
        self.placeholders: dict[tuple[str, str], str] = {}
        self.issued: set[str] = set()

    def _placeholder(self, kind: str, name: str) -> str:
        key = (kind, name)
        if key not in self.placeholders:
            count = sum(1 for existing_kind, _ in self.placeholders if existing_kind == kind)
            self.placeholders[key] = f"_{kind}{count}"
            self.issued.add(self.placeholders[key])
        return self.placeholders[key]

    def _name(self, name: str) -> str:
        return self._placeholder("n", name) if name in self.names else name

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
        assign = ast.Assign(targets=[node.target], value=node.value)
        return self.visit(ast.copy_location(assign, node))

    # -- definitions ---------------------------------------------------------------------------------

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        return self._visit_function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        return self._visit_function(node)

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        node.name = self._name(node.name)
        node.returns = None
        self.generic_visit(node)
        if not node.body:  # its only statement was a docstring
            node.body = [ast.Pass()]
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        node.name = self._name(node.name)
        self.generic_visit(node)
        if not node.body:
            node.body = [ast.Pass()]
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = self._name(node.arg)
        node.annotation = None
        return node

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        if node.name:
            node.name = self._name(node.name)
        return self.generic_visit(node)

    # -- references ----------------------------------------------------------------------------------

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.imported:
            node.id = self.imported[node.id]
        else:
            node.id = self._name(node.id)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        if node.attr in self.attributes:
            node.attr = self._placeholder("a", node.attr)
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        # Keyword names follow the renamed parameters only when the callee is the code's own function
        # or class; library keywords (nn.Conv2d(kernel_size=3)) keep their names.
        callee = node.func
        own = (isinstance(callee, ast.Name) and callee.id in self.issued) or (
            isinstance(callee, ast.Attribute) and callee.attr in self.issued
        )
        if own:
            for keyword in node.keywords:
                if keyword.arg is not None and keyword.arg in self.names:
                    keyword.arg = self._placeholder("n", keyword.arg)
        return node

    def visit_Global(self, node: ast.Global) -> ast.AST:
        node.names = [self._name(name) for name in node.names]
        return node

    def visit_Nonlocal(self, node: ast.Nonlocal) -> ast.AST:
        node.names = [self._name(name) for name in node.names]
        return node
