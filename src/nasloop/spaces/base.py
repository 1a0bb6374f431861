"""The structured search space interface shared by every strategy that works on architecture strings.

A *structured space* names each of its points with a string (a NAS-Bench-201 cell such as
`|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|`, or a macro block
string such as `SuperConvK3BNRELU(3,32,2,1)SuperResK3K3(32,64,2,32,1)`). Strategies only ever handle
these strings: LLM mutation (RZ-NAS), niche/Pareto search (LLM-NAS), random search and regularized
evolution all sample, validate, mutate, cross over and describe points through this interface. The engine
renders a point to the open-code candidate contract with `render` and evaluates it like any other code.
"""

from __future__ import annotations

import abc
import random
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Cost:
    """Analytic size of a rendered network.

    `params` counts trainable parameters (what `sum(p.numel() for p in net.parameters())` returns).
    `flops` counts multiply-accumulates of convolutions plus `in*out + out` per linear layer, and
    nothing for batch normalisation, activations, pooling or additions: the convention of the
    NAS-Bench-201 cost tables, so figures are comparable with the benchmark's published ones.
    """

    params: int
    flops: int


class SearchSpace(abc.ABC):
    """A structured search space: architectures are strings, every method is pure and deterministic.

    Contract, for strategies and the engine:

    - `name` is the registry name (`nasloop.registry.spaces`); a space is created with keyword options
      only, every option having a default, so `spaces.get(name)()` is the standard space.
    - `sample(rng)` returns a valid architecture in canonical form, drawing randomness only from `rng`.
    - `validate(arch)` returns None when `arch` is legal (including the space's budgets) and otherwise an
      error message precise enough to send back to an LLM: it says what is wrong and where, and what is
      allowed instead. It never raises for any input string.
    - `canonical(arch)` maps a well-formed architecture to one representative of everything that
      computes the same function (formatting, and whatever equivalences the space knows); equal
      canonical strings mean duplicate candidates. Budgets play no part, so the canonical form does not
      depend on the space's options. A malformed string is returned with its whitespace removed.
    - `mutate(arch, rng)` takes a valid architecture and returns a valid one, a small change away, whose
      canonical form differs; `crossover(a, b, rng)` takes two and returns a valid mix of them.
    - `render(arch, in_shape, num_classes)` returns the Python source of a self-contained module that
      defines `class Net(nn.Module)` with `__init__(self, in_shape, num_classes)` and `forward(x)`,
      importing only torch, torch.nn, torch.nn.functional and math (docs/architecture.md). It raises
      ValueError, with the `validate` message, for a malformed architecture; budgets are not checked,
      so an over-budget point can still be rendered on purpose.
    - `describe()` is a compact text description for LLM prompts: operations, construction rules,
      the string format with an example, and, where the space has blocks, each block's code.
    - `niche(arch)` names the complexity niche a point belongs to (one of `niches()`), for
      niche-partitioned search; `cost(...)` gives its analytic parameter and FLOP counts.
    - `json_schema()` is the JSON schema of an answer `{"architecture": "..."}`, with a regular
      expression for the architecture where the format allows, for grammar-constrained decoding.

    Methods never mutate the space, so one instance may be shared by strategies and threads.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def sample(self, rng: random.Random) -> str:
        """A random valid architecture, in canonical string form."""

    @abc.abstractmethod
    def validate(self, arch: str) -> str | None:
        """None when `arch` is a legal point of the space, else a message that says how to fix it."""

    @abc.abstractmethod
    def canonical(self, arch: str) -> str:
        """The representative string of `arch`'s equivalence class (see the class docstring)."""

    @abc.abstractmethod
    def mutate(self, arch: str, rng: random.Random) -> str:
        """A valid architecture, one small change away from `arch`, with another canonical form."""

    @abc.abstractmethod
    def crossover(self, first: str, second: str, rng: random.Random) -> str:
        """A valid architecture that combines parts of `first` and `second`."""

    @abc.abstractmethod
    def render(self, arch: str, in_shape: tuple[int, int, int], num_classes: int) -> str:
        """Python source of the candidate module for `arch` (see the class docstring)."""

    @abc.abstractmethod
    def cost(self, arch: str, in_shape: tuple[int, int, int], num_classes: int) -> Cost:
        """Parameters and FLOPs of the rendered network, computed without building it."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Text that teaches an LLM the space: operations, rules, format, example, block code."""

    @abc.abstractmethod
    def niches(self) -> tuple[str, ...]:
        """Names of the complexity niches that partition the space, from simplest to most complex."""

    @abc.abstractmethod
    def niche(self, arch: str) -> str:
        """The niche (one of `niches()`) that the valid architecture `arch` belongs to."""

    def niche_rule(self, niche: str) -> str:
        """The rule of `niche` in words, for prompts that ask an LLM to stay inside it."""
        return f"niche {niche} of the space"

    def niche_reason(self, arch: str) -> str:
        """What places the valid `arch` in its niche, in words (empty when the niche's name says it)."""
        return ""

    @abc.abstractmethod
    def architecture_pattern(self) -> str | None:
        """A regular expression matching the space's well-formed strings, or None if none fits.

        It goes into JSON schemas for constrained decoding, so it keeps to the subset every grammar
        converter reads: plain groups `( )`, no `(?:`, lookarounds or backreferences."""

    def json_schema(self) -> dict[str, Any]:
        """JSON schema of the answer `{"architecture": "<string>"}` used for constrained decoding."""
        architecture: dict[str, Any] = {"type": "string"}
        pattern = self.architecture_pattern()
        if pattern is not None:
            architecture["pattern"] = pattern
        return {
            "type": "object",
            "properties": {"architecture": architecture},
            "required": ["architecture"],
            "additionalProperties": False,
        }
