"""One registry per plugin family (strategies, LLM backends, datasets, proxies, spaces, ...).

Config, CLI and docs resolve names through these registries, so a plugin exists once it is registered::

    @strategies.register("feedback-memory")
    class FeedbackMemory(Strategy): ...

Heavy optional dependencies are imported inside the plugin, never at registration time.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from nasloop.errors import NasloopError

T = TypeVar("T")


class UnknownNameError(NasloopError, KeyError):
    """A name that no plugin of the family is registered under."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the message as written
        return str(self.args[0])


class Registry(Generic[T]):
    """A name → plugin mapping for one family. Names are lower-case with dashes."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._items: dict[str, T] = {}
        self._loaders: list[Callable[[], None]] = []

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers a plugin under `name`; a name can be registered once."""

        def decorate(item: T) -> T:
            if name in self._items and self._items[name] is not item:
                raise ValueError(f"{self.family} {name!r} is already registered")
            self._items[name] = item
            return item

        return decorate

    def add_loader(self, loader: Callable[[], None]) -> None:
        """Run `loader` (which imports the modules that register plugins) before the first lookup."""
        self._loaders.append(loader)

    def _load(self) -> None:
        while self._loaders:
            self._loaders.pop(0)()

    def get(self, name: str) -> T:
        """The plugin registered under `name`; the error names the close matches."""
        self._load()
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            known = ", ".join(sorted(self._items)) or "none"
            raise UnknownNameError(f"unknown {self.family} {name!r}.{hint} Known: {known}.") from None

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _importer(module: str) -> Callable[[], None]:
    def load() -> None:
        __import__(module)

    return load


def _family(family: str, module: str) -> Registry[Any]:
    registry: Registry[Any] = Registry(family)
    registry.add_loader(_importer(module))
    return registry


# The families. Each package's __init__ imports the modules that register into its family.
strategies = _family("strategy", "nasloop.strategies")
llm_backends = _family("LLM backend", "nasloop.llm")
datasets = _family("dataset", "nasloop.data")
proxies = _family("zero-cost proxy", "nasloop.evaluate.proxies")
spaces = _family("search space", "nasloop.spaces")
executors = _family("executor", "nasloop.executors")
benchmarks = _family("tabular benchmark", "nasloop.benchmarks")
stages = _family("evaluation stage", "nasloop.evaluate.builtin_stages")


def ordered_stages() -> tuple[str, ...]:
    """The registered evaluation stages in the order they run (each registration declares its place)."""
    return tuple(sorted(stages.names(), key=lambda name: stages.get(name).order))


def known_names(registry: Registry[Any], names: Iterable[str]) -> tuple[str, ...]:
    """`names` if `registry` knows every one; else a ValueError with the registry's message for the first
    unknown one (it names the close matches and the known names)."""
    checked = tuple(names)
    for name in checked:
        try:
            registry.get(name)
        except UnknownNameError as error:
            raise ValueError(str(error)) from None  # a ValueError, so a pydantic validator reports it
    return checked
