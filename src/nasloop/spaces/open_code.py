"""Static checks of an open-code candidate (docs/architecture.md), run before any of its code executes.

`check_code(code)` parses the module and walks its syntax tree. It returns `None` when the module may be
run, or one `Failure` listing every violation found, the first one first, each naming its line, because
that message goes back to the LLM that wrote the code:

    line 3: `import os` is not allowed: candidates may import only torch, torch.nn, ...
    line 12: `open(...)` is not allowed: candidates may not do file I/O

The kind of the failure is the kind of the first violation: `syntax` (it does not parse), `import` (a
module outside the allow-list), `forbidden` (a forbidden construct) or `build` (no `class Net`).

This check is a fast, explainable first line of defence, not the security boundary: the sandbox (its own
process, rlimits, bubblewrap, no labels) holds even when a candidate slips past it, for example through a
computed attribute name.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass

from nasloop.candidate import Failure, FailureKind

# Modules a candidate may import; every submodule of a package in ALLOWED_PACKAGES is allowed too.
ALLOWED_MODULES = frozenset(
    {
        "torch",
        "torch.nn",
        "torch.nn.functional",
        "math",
        "typing",
        "functools",
        "itertools",
        "collections",
        "dataclasses",
        "einops",
        "__future__",
    }
)
ALLOWED_PACKAGES = ("torch.nn", "collections", "einops")
OPTIONAL_MODULES = frozenset({"einops"})  # allowed only where installed
# Imports that mean the LLM wrote a training script around the model; their message says what to drop.
TRAINING_MODULES = ("torch.optim", "torch.utils.data", "torchvision", "torch.utils.tensorboard")

MAX_LISTED_VIOLATIONS = 10

_FILE_IO = "candidates may not do file I/O"
_DYNAMIC_CODE = "candidates may not run generated code or import modules dynamically"
_NAMESPACES = "candidates may not inspect or change interpreter namespaces"
_INTERACTIVE = "candidates cannot be interactive"
_EXIT = "candidates may not end the process"
_DOWNLOAD = "candidates may not download anything or use pretrained weights; the network trains from scratch"
_NATIVE = "candidates may not load native code or custom operators"
_PROCESSES = "candidates may not start processes or use the network"
_SERIALISE = "candidates may not read or write checkpoints (no saved or pretrained weights)"
_COMPILE = "nasloop owns compilation; candidates define the architecture only"
_INTERNALS = "reaches interpreter internals; candidates may use ordinary attributes only"

# Built-in names a candidate may not use, with the reason sent back to the LLM.
FORBIDDEN_BUILTINS: dict[str, str] = {
    "open": _FILE_IO,
    "exec": _DYNAMIC_CODE,
    "eval": _DYNAMIC_CODE,
    "compile": _DYNAMIC_CODE,
    "__import__": _DYNAMIC_CODE,
    "globals": _NAMESPACES,
    "locals": _NAMESPACES,
    "vars": _NAMESPACES,
    "__builtins__": _NAMESPACES,
    "breakpoint": _INTERACTIVE,
    "input": _INTERACTIVE,
    "help": _INTERACTIVE,
    "exit": _EXIT,
    "quit": _EXIT,
    "SystemExit": _EXIT,
}

# Dotted paths (after resolving import aliases) that are forbidden, with everything below them.
FORBIDDEN_PATHS: dict[str, str] = {
    "torch.load": _SERIALISE,
    "torch.save": _SERIALISE,
    "torch.from_file": _FILE_IO,
    "torch.hub": _DOWNLOAD,
    "torch.utils.model_zoo": _DOWNLOAD,
    "torch.utils.cpp_extension": _NATIVE,
    "torch.ops": _NATIVE,
    "torch.library": _NATIVE,
    "torch.classes": _NATIVE,
    "torch._C": _NATIVE,
    "torch.distributed": _PROCESSES,
    "torch.multiprocessing": _PROCESSES,
    "torch.package": _SERIALISE,
    "torch.jit.load": _SERIALISE,
    "torch.jit.save": _SERIALISE,
    "torch.compile": _COMPILE,
    "torch._dynamo": _COMPILE,
    "torch._inductor": _COMPILE,
}
# Names forbidden wherever they appear, whatever object they are reached through.
FORBIDDEN_ANYWHERE: dict[str, str] = {"load_state_dict_from_url": _DOWNLOAD, "download_url_to_file": _DOWNLOAD}

# Standard modules that torch and friends import and so expose as attributes (`torch.os`, `F.sys`).
STDLIB_GATEWAYS = frozenset(
    {
        "os", "sys", "subprocess", "ctypes", "builtins", "importlib", "socket", "shutil", "pathlib", "io",
        "pickle", "inspect", "gc", "signal", "threading", "multiprocessing", "urllib", "tempfile", "glob",
        "platform", "runpy", "pty", "resource", "mmap", "marshal", "zipfile", "tarfile", "http", "requests",
    }
)  # fmt: skip

# Attributes of frames, generators, coroutines and tracebacks lead to globals and builtins.
FRAME_INTERNALS = frozenset(
    {
        "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code", "f_globals", "f_locals",
        "f_builtins", "f_back", "f_code", "tb_frame", "tb_next", "co_code", "func_globals",
    }
)  # fmt: skip

_OPERATORS = (
    "add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs", "invert", "and",
    "or", "xor", "lshift", "rshift", "eq", "ne", "lt", "le", "gt", "ge", "bool", "int", "float", "index",
    "hash", "round", "trunc", "floor", "ceil", "divmod",
)  # fmt: skip
# Dunder attributes with no path to interpreter internals; every other dunder attribute is forbidden.
SAFE_DUNDER_ATTRIBUTES = frozenset(
    {f"__{name}__" for name in _OPERATORS}
    | {f"__r{name}__" for name in _OPERATORS}
    | {f"__i{name}__" for name in _OPERATORS}
    | {
        "__init__", "__name__", "__qualname__", "__doc__", "__call__", "__len__", "__iter__", "__next__",
        "__getitem__", "__setitem__", "__contains__", "__repr__", "__str__", "__enter__", "__exit__",
        "__annotations__", "__version__", "__slots__",
    }
)  # fmt: skip
# Dunder names that may appear as plain names (`if __name__ == "__main__":`).
SAFE_DUNDER_NAMES = frozenset({"__name__", "__doc__", "__all__", "__version__", "__main__", "__slots__"})


@dataclass(frozen=True, order=True)
class Violation:
    """One problem found by the static check, ordered by position in the code."""

    line: int
    column: int
    kind: FailureKind
    message: str

    def render(self) -> str:
        return f"line {self.line}: {self.message}"


def check_code(code: str) -> Failure | None:
    """`None` when `code` may be run as a candidate, else one `Failure` listing every violation.

    The failure's kind is the kind of the first violation (by line); the message lists up to
    `MAX_LISTED_VIOLATIONS` violations, one per line, each starting with `line N:`.
    """
    tree_or_failure = parse_candidate(code)
    if isinstance(tree_or_failure, Failure):
        return tree_or_failure
    violations = find_violations(tree_or_failure)
    if not violations:
        return None
    return failure_from_violations(violations)


def parse_candidate(code: str) -> ast.Module | Failure:
    """The syntax tree of `code`, or a `syntax` failure naming line, column and a likely truncation."""
    try:
        tree = ast.parse(code, filename="candidate.py")
        # compile() finds what the parser lets through (`return` outside a function, bad `nonlocal`).
        compile(tree, "candidate.py", "exec", dont_inherit=True)
    except SyntaxError as error:
        return Failure(FailureKind.SYNTAX, describe_syntax_error(error, code))
    except (ValueError, RecursionError, MemoryError) as error:
        # ValueError: null bytes in the source; RecursionError/MemoryError: absurdly deep nesting.
        return Failure(FailureKind.SYNTAX, f"the code cannot be parsed: {type(error).__name__}: {error}")
    return tree


def describe_syntax_error(error: SyntaxError, code: str) -> str:
    """`line L, column C: <reason>` plus the offending line, and a note when the code looks cut off."""
    line = error.lineno or 0
    where = f"line {line}, column {error.offset}" if error.offset else f"line {line}"
    message = f"{where}: {error.msg}"
    text = (error.text or "").strip()
    if text:
        message += f" (`{text[:100]}`)"
    if looks_truncated(error, code):
        message += (
            "; the code looks truncated (it ends inside an unfinished statement, bracket or string): "
            "send the complete module"
        )
    return message


def looks_truncated(error: SyntaxError, code: str) -> bool:
    """Whether a syntax error is most likely the end of the text being cut off (an LLM hit max tokens)."""
    reason = error.msg.lower()
    if "unexpected eof" in reason or "never closed" in reason or "unterminated triple-quoted" in reason:
        return True
    last_line = len(code.rstrip().splitlines())
    return (error.lineno or 0) >= last_line and "expected an indented block" in reason


def failure_from_violations(violations: list[Violation]) -> Failure:
    """One failure: the first violation's kind, every violation listed (up to a limit), first first."""
    ordered = sorted(set(violations))
    lines = [violation.render() for violation in ordered[:MAX_LISTED_VIOLATIONS]]
    if len(ordered) > MAX_LISTED_VIOLATIONS:
        lines.append(f"... and {len(ordered) - MAX_LISTED_VIOLATIONS} more violations")
    return Failure(ordered[0].kind, "\n".join(lines))


# Layers with weights: one built inside `forward` is new, untrained and thrown away on every call.
WEIGHTED_LAYERS = frozenset(
    f"torch.nn.{name}"
    for name in (
        "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Linear",
        "Bilinear", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm", "InstanceNorm1d",
        "InstanceNorm2d", "InstanceNorm3d", "Embedding", "LSTM", "GRU", "RNN", "MultiheadAttention", "PReLU",
    )
)  # fmt: skip


def layers_built_in_forward(tree: ast.Module, aliases: dict[str, str]) -> list[Violation]:
    """A layer with weights constructed inside a `forward` method (`nn.Conv2d(64, 64, 3)(x)`): its weights
    are created anew on every call and never trained, and they live outside the model's parameters."""
    violations = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef) or function.name != "forward":
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Call) and resolve_path(node.func, aliases) in WEIGHTED_LAYERS:
                shown = _shown(node.func, True)
                message = (
                    f"{shown} is created inside forward, so its weights are new and untrained on every call: "
                    "create the layer once in __init__ (self.layer = ...) and call self.layer(x) in forward"
                )
                violations.append(Violation(node.lineno, node.col_offset, FailureKind.BUILD, message))
    return violations


def find_violations(tree: ast.Module) -> list[Violation]:
    """Every violation of the open-code contract in a parsed module, in no particular order."""
    aliases = collect_aliases(tree)
    checker = _Checker(aliases)
    checker.visit(tree)
    checker.violations.extend(layers_built_in_forward(tree, aliases))
    if not defines_net(tree):
        checker.violations.append(
            Violation(
                1, 0, FailureKind.BUILD,
                "the module does not define `class Net(nn.Module)` at top level; the candidate must define "
                "`class Net(nn.Module)` with `__init__(self, in_shape, num_classes)` and `forward(self, x)`",
            )
        )  # fmt: skip
    return checker.violations


def defines_net(tree: ast.Module) -> bool:
    """Whether the module defines a top-level `class Net`."""
    return any(isinstance(node, ast.ClassDef) and node.name == "Net" for node in tree.body)


def net_forward(tree: ast.Module) -> ast.FunctionDef | None:
    """The `forward` method of the module's (last) top-level `class Net`, None without one."""
    net = next((n for n in reversed(tree.body) if isinstance(n, ast.ClassDef) and n.name == "Net"), None)
    if net is None:
        return None
    return next((n for n in net.body if isinstance(n, ast.FunctionDef) and n.name == "forward"), None)


def terminal_name(node: ast.expr) -> str:
    """The last name of a called or referenced thing: `nn.Conv2d` → `Conv2d`, `relu` → `relu`, else ""."""
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def is_allowed_module(module: str) -> bool:
    """Whether `module` is on the import allow-list (optional modules only when installed)."""
    allowed = module in ALLOWED_MODULES or any(module.startswith(package + ".") for package in ALLOWED_PACKAGES)
    return allowed and not (module.split(".")[0] in OPTIONAL_MODULES and not _installed(module.split(".")[0]))


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def is_internal_attribute(name: str) -> bool:
    """Whether an attribute name leads to interpreter internals (unsafe dunders, frame attributes)."""
    return (_is_dunder(name) and name not in SAFE_DUNDER_ATTRIBUTES) or name in FRAME_INTERNALS


def forbidden_path(path: str) -> tuple[str, str] | None:
    """The forbidden dotted prefix of `path` and the reason, if any (`torch.hub.load` → `torch.hub`)."""
    for prefix, reason in FORBIDDEN_PATHS.items():
        if path == prefix or path.startswith(prefix + "."):
            return prefix, reason
    return None


def collect_aliases(tree: ast.Module) -> dict[str, str]:
    """Local name → the dotted path it stands for, from imports and plain aliasing assignments.

    `import torch.nn as nn` gives `nn → torch.nn`; `from torch import Tensor` gives `Tensor →
    torch.Tensor`; `T = torch.Tensor` gives `T → torch.Tensor`. Scopes are ignored on purpose: a name
    that ever stands for a module path is treated as that path everywhere.
    """
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    aliases[root] = root
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                if alias.name != "*":
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    _collect_assignment_aliases(tree, aliases)
    return aliases


def _collect_assignment_aliases(tree: ast.Module, aliases: dict[str, str]) -> None:
    # Two rounds so `a = torch.nn; b = a.functional` resolves b whatever the order of the walk.
    for _ in range(2):
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                path = resolve_path(node.value, aliases)
                if path is not None:
                    aliases[node.targets[0].id] = path


def resolve_path(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """The dotted path an expression stands for (`nn.functional.relu` → `torch.nn.functional.relu`)."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        base = resolve_path(node.value, aliases)
        return f"{base}.{node.attr}" if base is not None else None
    return None


def _shown(node: ast.AST, called: bool, limit: int = 60) -> str:
    text = ast.unparse(node)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"`{text}(...)`" if called else f"`{text}`"


class _Checker(ast.NodeVisitor):
    """Walks a module and records every violation; keeps a stack of scopes to know parameter names."""

    def __init__(self, aliases: dict[str, str]) -> None:
        self.aliases = aliases
        self.violations: list[Violation] = []
        self.called: set[int] = set()  # ids of nodes that are the function of a call
        self.parameter_scopes: list[set[str]] = []  # parameters (minus `global` names) of enclosing functions
        self.inside_internal_chain = False

    def add(self, node: ast.AST, kind: FailureKind, message: str) -> None:
        line, column = getattr(node, "lineno", 1), getattr(node, "col_offset", 0)
        self.violations.append(Violation(line, column, kind, message))

    def forbid(self, node: ast.AST, reason: str) -> None:
        self.add(node, FailureKind.FORBIDDEN, f"{_shown(node, id(node) in self.called)} is not allowed: {reason}")

    # --- imports -------------------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.check_module(node, alias.name, f"import {alias.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = "." * node.level + (node.module or "")
        names = (alias.name + (f" as {alias.asname}" if alias.asname else "") for alias in node.names)
        shown = f"from {module} import {', '.join(names)}"
        if node.level or not node.module:
            self.add(node, FailureKind.IMPORT, f"`{shown}` is not allowed: the candidate is a single module")
            return
        if not self.check_module(node, node.module, shown):
            return
        for alias in node.names:
            self.check_imported_name(node, node.module, alias.name, shown)

    def check_module(self, node: ast.AST, module: str, shown: str) -> bool:
        found = forbidden_path(module)
        if found is not None:
            self.add(node, FailureKind.FORBIDDEN, f"`{shown}` is not allowed: {found[1]}")
            return False
        if is_allowed_module(module):
            return True
        root = module.split(".")[0]
        if root in OPTIONAL_MODULES:
            reason = f"{root} is not installed in this environment"
        elif module.startswith(TRAINING_MODULES):
            reason = (
                "nasloop trains and feeds the model itself; remove the optimizer, data loading and training code "
                "and keep only the model (class Net and its helpers)"
            )
        else:
            reason = f"candidates may import only {', '.join(sorted(ALLOWED_MODULES - {'__future__'}))}"
        self.add(node, FailureKind.IMPORT, f"`{shown}` is not allowed: {reason}")
        return False

    def check_imported_name(self, node: ast.AST, module: str, name: str, shown: str) -> None:
        if name == "*" and module == "torch":
            self.add(node, FailureKind.FORBIDDEN, f"`{shown}` is not allowed: import the names you use explicitly")
            return
        found = forbidden_path(f"{module}.{name}")
        reason = found[1] if found else FORBIDDEN_ANYWHERE.get(name)
        if reason is not None:
            self.add(node, FailureKind.FORBIDDEN, f"`{shown}` is not allowed: {reason}")

    # --- scopes and names ------------------------------------------------------------------------

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        arguments = node.args
        every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
        every += [argument for argument in (arguments.vararg, arguments.kwarg) if argument is not None]
        names = {argument.arg for argument in every}
        if not isinstance(node, ast.Lambda):
            names -= _global_names(node)
        self.parameter_scopes.append(names)
        self.generic_visit(node)
        self.parameter_scopes.pop()

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def is_parameter(self, name: str) -> bool:
        return any(name in scope for scope in self.parameter_scopes)

    def visit_Name(self, node: ast.Name) -> None:
        name = node.id
        if name in FORBIDDEN_BUILTINS and not self.is_parameter(name):
            self.forbid(node, FORBIDDEN_BUILTINS[name])
        elif name in FORBIDDEN_ANYWHERE:
            self.forbid(node, FORBIDDEN_ANYWHERE[name])
        elif _is_dunder(name) and name not in SAFE_DUNDER_NAMES:
            self.forbid(node, f"`{node.id}` {_INTERNALS}")

    def visit_Global(self, node: ast.Global) -> None:
        for name in node.names:
            if name in FORBIDDEN_BUILTINS:
                self.add(node, FailureKind.FORBIDDEN, f"`global {name}` is not allowed: {FORBIDDEN_BUILTINS[name]}")

    # --- attributes, calls, constants ------------------------------------------------------------

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if not isinstance(node.ctx, ast.Load) and self.check_monkeypatch(node):
            return
        if is_internal_attribute(node.attr):
            if not self.inside_internal_chain:
                self.forbid(node, f"`{node.attr}` {_INTERNALS}")
            # One report per chain: `().__class__.__bases__` is one problem, not two.
            outer, self.inside_internal_chain = self.inside_internal_chain, True
            self.visit(node.value)
            self.inside_internal_chain = outer
            return
        if node.attr in FORBIDDEN_ANYWHERE:
            self.forbid(node, FORBIDDEN_ANYWHERE[node.attr])
        elif self.check_path(node, resolve_path(node, self.aliases)):
            return  # the inner part of the chain would report the same problem again
        self.generic_visit(node)

    def check_path(self, node: ast.AST, path: str | None) -> bool:
        """Report a forbidden module path (`torch.hub`, `torch.os`); True when reported."""
        if path is None:
            return False
        found = forbidden_path(path)
        if found is not None:
            self.add(node, FailureKind.FORBIDDEN, f"`{found[0]}` is not allowed: {found[1]}")
            return True
        parts = path.split(".")
        gateway = next((part for part in parts[1:] if part in STDLIB_GATEWAYS), None)
        if gateway is not None:
            shown = ".".join(parts[: parts.index(gateway, 1) + 1])
            self.add(node, FailureKind.FORBIDDEN, f"`{shown}` is not allowed: candidates may not reach the "
                     f"`{gateway}` module (only the allowed imports)")  # fmt: skip
            return True
        return False

    def check_monkeypatch(self, node: ast.Attribute) -> bool:
        """Report an assignment to an attribute of an imported module or class; True when reported."""
        path = resolve_path(node, self.aliases)
        if path is None:
            return False
        self.add(
            node, FailureKind.FORBIDDEN,
            f"assigning to `{path}` is not allowed: it would change {path.split('.')[0]} for the trainer too "
            "(monkeypatching); define your own function or module instead",
        )  # fmt: skip
        return True

    def visit_Call(self, node: ast.Call) -> None:
        self.called.add(id(node.func))
        if isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr", "delattr", "hasattr"):
            self.check_attribute_function(node, node.func.id)
        for keyword in node.keywords:
            if keyword.arg == "pretrained" and not _is_false_or_none(keyword.value):
                self.add(keyword.value, FailureKind.FORBIDDEN, f"`pretrained={ast.unparse(keyword.value)}`"
                         f" is not allowed: {_DOWNLOAD}")  # fmt: skip
        self.generic_visit(node)

    def check_attribute_function(self, node: ast.Call, function: str) -> None:
        if len(node.args) < 2:
            return
        target, name = node.args[0], node.args[1]
        target_path = resolve_path(target, self.aliases)
        if function in ("setattr", "delattr") and target_path is not None:
            self.add(node, FailureKind.FORBIDDEN, f"`{function}({target_path}, ...)` is not allowed: it would "
                     "change an imported module or class for the trainer too (monkeypatching)")  # fmt: skip
            return
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            return
        attribute = name.value
        if is_internal_attribute(attribute):
            self.add(node, FailureKind.FORBIDDEN, f"`{function}(..., {attribute!r})` is not allowed: it {_INTERNALS}")
        elif self.check_path(node, f"{target_path}.{attribute}" if target_path else None):
            return
        elif attribute in FORBIDDEN_ANYWHERE:
            self.add(node, FailureKind.FORBIDDEN, f"`{attribute}` is not allowed: {FORBIDDEN_ANYWHERE[attribute]}")

    def visit_Expr(self, node: ast.Expr) -> None:
        # A bare string statement (a docstring) does nothing, so a URL cited there is harmless.
        if not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if not isinstance(node.value, str):
            return
        lowered = node.value.lower()
        if "http://" in lowered or "https://" in lowered or "ftp://" in lowered:
            self.add(node, FailureKind.FORBIDDEN, f"the URL string {_quoted(node.value)} is not allowed: {_DOWNLOAD}")
        elif _is_dunder(node.value) and node.value not in SAFE_DUNDER_ATTRIBUTES | SAFE_DUNDER_NAMES:
            self.add(node, FailureKind.FORBIDDEN, f"the string {_quoted(node.value)} is not allowed: it {_INTERNALS}")


def _global_names(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    names: set[str] = set()
    for node in _walk_same_scope(function):
        if isinstance(node, ast.Global | ast.Nonlocal):
            names.update(node.names)
    return names


def _walk_same_scope(function: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a function body, not descending into nested functions, lambdas or classes."""
    stack = list(ast.iter_child_nodes(function))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            stack.extend(ast.iter_child_nodes(node))


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _is_false_or_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and (node.value is False or node.value is None)


def _quoted(text: str, limit: int = 60) -> str:
    shown = text if len(text) <= limit else text[: limit - 3] + "..."
    return repr(shown)
