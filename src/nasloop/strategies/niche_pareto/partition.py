"""How `niche-pareto` splits a space into complexity niches: the space's own niches, bins of its analytic
cost, or one niche (the no-partition ablation)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from nasloop.spaces.base import SearchSpace
from nasloop.strategies.base import Task
from nasloop.strategies.niche_pareto.options import SINGLE_NICHE, NicheParetoOptions


@dataclass(frozen=True)
class Partition:
    """How the space splits into niches: their names (simplest first), the niche of an architecture, the
    rule of each niche in words (for prompts) and what places an architecture in its niche."""

    names: tuple[str, ...]
    assign: Callable[[str], str]
    rules: Mapping[str, str]
    explain: Callable[[str], str]

    def niche_of(self, arch: str) -> str:
        """The niche of the legal architecture `arch`."""
        return self.assign(arch)


def make_partition(space: SearchSpace, options: NicheParetoOptions, task: Task) -> Partition:
    """The partition the options ask for (see the module docstring)."""
    if not options.partition:
        rules = {SINGLE_NICHE: "any architecture of the space"}
        return Partition((SINGLE_NICHE,), lambda arch: SINGLE_NICHE, rules, lambda arch: "")
    if options.niche_by == "space":
        return _space_partition(space)
    return _cost_partition(space, options.niche_by, options.niche_bounds, task)


def _space_partition(space: SearchSpace) -> Partition:
    """The space's own niches, with its rules in words (`SearchSpace.niche_rule`, `niche_reason`)."""
    names = space.niches()
    rules = {name: space.niche_rule(name) for name in names}
    return Partition(names, lambda arch: space.niche(space.canonical(arch)), rules, space.niche_reason)


def _cost_partition(space: SearchSpace, metric: str, bounds: Sequence[float], task: Task) -> Partition:
    def value(arch: str) -> int:
        cost = space.cost(space.canonical(arch), task.in_shape, task.num_classes)
        return cost.params if metric == "params" else cost.flops

    edges = [f"{bound:,.0f}" for bound in bounds]
    names = (
        f"{metric}<{edges[0]}",
        *(f"{metric} {low}-{high}" for low, high in itertools.pairwise(edges)),
        f"{metric}>={edges[-1]}",
    )
    where = f"(analytic count on {'x'.join(map(str, task.in_shape))} inputs)"
    rules = {names[0]: f"{metric} below {edges[0]} {where}", names[-1]: f"{metric} of at least {edges[-1]} {where}"}
    for name, low, high in zip(names[1:-1], edges, edges[1:], strict=False):
        rules[name] = f"{metric} from {low} up to (not including) {high} {where}"

    def assign(arch: str) -> str:
        return names[sum(value(arch) >= bound for bound in bounds)]

    return Partition(names, assign, rules, lambda arch: f"{metric} = {value(arch):,}")


__all__ = ["Partition", "make_partition"]
