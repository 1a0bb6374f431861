"""The package's import graph: no cycles (imports inside functions included, which only hide a cycle),
no upward imports between layers, and every module importable on its own."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"

# A layer must not import the layers listed for it (its users).
UPWARD = {
    "nasloop.data": ("nasloop.evaluate", "nasloop.executors", "nasloop.strategies", "nasloop.engine", "nasloop.cli"),
    "nasloop.store": ("nasloop.llm", "nasloop.evaluate", "nasloop.strategies", "nasloop.engine", "nasloop.cli"),
    "nasloop.llm": ("nasloop.evaluate", "nasloop.executors", "nasloop.strategies", "nasloop.engine", "nasloop.cli"),
    "nasloop.spaces": ("nasloop.executors", "nasloop.strategies", "nasloop.engine", "nasloop.cli"),
    "nasloop.objectives": ("nasloop.strategies", "nasloop.engine", "nasloop.cli"),
    "nasloop.hardware": ("nasloop.strategies", "nasloop.engine", "nasloop.cli"),
    "nasloop.evaluate": ("nasloop.executors", "nasloop.strategies", "nasloop.engine", "nasloop.cli"),
    "nasloop.executors": ("nasloop.strategies", "nasloop.engine", "nasloop.cli"),
    "nasloop.strategies": ("nasloop.executors", "nasloop.engine", "nasloop.cli"),
    "nasloop.benchmarks": ("nasloop.cli",),
    "nasloop.engine": ("nasloop.cli",),
    "nasloop.report": ("nasloop.cli",),
    "nasloop.final_training": ("nasloop.cli",),
}


def modules() -> dict[str, Path]:
    found = {}
    for path in (SOURCE / "nasloop").rglob("*.py"):
        parts = path.relative_to(SOURCE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def import_graph() -> dict[str, set[str]]:
    """Module -> the nasloop modules it imports anywhere (functions included, `TYPE_CHECKING` blocks not),
    with the packages whose `__init__` such an import runs."""
    known = modules()

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text())
        skipped = {
            id(node)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
            for node in ast.walk(block)
        }
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("nasloop"):
                assert node.module is not None
                for alias in node.names:
                    qualified = f"{node.module}.{alias.name}"
                    targets.add(resolve(qualified) if qualified in known else resolve(node.module) or "")
            elif isinstance(node, ast.Import):
                targets.update(resolve(alias.name) or "" for alias in node.names if alias.name.startswith("nasloop"))
        packages = {
            ".".join(target.split(".")[:depth]) for target in targets for depth in range(1, target.count(".") + 1)
        }
        graph[module] = {
            name for name in targets | packages if name and name != module and not _within(module, name)
        } & set(known)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_layer_imports_the_layers_that_use_it():
    upward = [
        f"{module} imports {target}"
        for module, targets in sorted(import_graph().items())
        for layer, users in UPWARD.items()
        if _within(module, layer)
        for target in sorted(targets)
        if any(_within(target, user) for user in users)
    ]
    assert upward == []


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    assert "nasloop.engine.search" in graph["nasloop.engine"]
    assert "nasloop.prompts" in graph["nasloop.engine.search"]  # imported inside Search._context


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    names = sorted(name for name in modules() if not name.endswith("__main__"))
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    failures = []
    for name in names:  # a fresh interpreter each, so no module is imported by an earlier one
        done = subprocess.run([sys.executable, "-c", script, name], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            failures.append(f"{name}: {done.stderr.strip().splitlines()[-1]}")
    assert failures == []


def test_importing_the_package_stays_light():
    code = "import sys, nasloop, nasloop.config; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
    assert importlib.import_module("nasloop").NasloopError.__name__ == "NasloopError"
