"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020): 15,625 cells of 4 nodes and 6 edges.

A cell is a DAG with nodes 0 (input) .. 3 (output); node i is the sum of the edges j -> i for every
j < i, and each of the 6 edges applies one of 5 operations. The standard string lists, for nodes 1, 2 and
3, the incoming edges as `operation~source`, nodes separated by `+`:

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|

Index order (`index_of` / `from_index`): the six operations, in string order, are the digits of a
base-5 number whose first edge (1 <- 0) is the most significant digit, with the operations numbered
in `OPERATIONS` order (none=0 ... avg_pool_3x3=4). Index 0 is the all-`none` cell, 15,624 the
all-`avg_pool_3x3` cell. This is the enumeration order of the benchmark's own generator, not the
arbitrary order of the benchmark's result files, whose indices differ.

The rendered network follows the benchmark's skeleton (see `NB201_TEMPLATE`), so its parameter and
FLOP counts equal the benchmark's published ones for 3x32x32 inputs (tested in
tests/spaces/test_nb201_space.py).
"""

from __future__ import annotations

import difflib
import itertools
import math
import random
import string

from nasloop.registry import spaces
from nasloop.spaces.base import Cost, SearchSpace

OPERATIONS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# The six edges as (target node, source node), in the order the string writes them.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NUM_CELLS = len(OPERATIONS) ** len(EDGES)
_ORDINALS = ("first", "second", "third")
_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"

Cell = tuple[str, ...]
"""A parsed cell: the six operations in `EDGES` order."""


class CellFormatError(ValueError):
    """A string that is not a NAS-Bench-201 cell; the message says what to write instead."""


def parse(arch: str) -> Cell:
    """The six operations of `arch`, in `EDGES` order. Whitespace is ignored.

    Raises CellFormatError with a message that names the offending node and edge.
    """
    text = "".join(arch.split())
    groups = text.split("+")
    if len(groups) != 3:
        raise CellFormatError(
            f"a cell has 3 nodes separated by '+', found {len(groups)} part(s) in {text!r}; example: {_EXAMPLE}"
        )
    operations: list[str] = []
    for node, group in enumerate(groups, start=1):
        operations.extend(_parse_node(node, group))
    return tuple(operations)


def _parse_node(node: int, group: str) -> list[str]:
    if not (group.startswith("|") and group.endswith("|") and len(group) > 1):
        raise CellFormatError(f"node {node} must be written between '|' characters, found {group!r}")
    entries = group[1:-1].split("|")
    if len(entries) != node:
        raise CellFormatError(
            f"node {node} takes exactly {node} incoming edge(s) (from nodes 0..{node - 1}), "
            f"found {len(entries)} in {group!r}"
        )
    return [_parse_edge(node, source, entry) for source, entry in enumerate(entries)]


def _parse_edge(node: int, source: int, entry: str) -> str:
    where = f"node {node}'s {_ORDINALS[source]} edge"
    operation, separator, written_source = entry.partition("~")
    if not separator:
        raise CellFormatError(f"{where} must be written 'operation~{source}', found {entry!r}")
    if operation not in OPERATIONS:
        close = difflib.get_close_matches(operation, OPERATIONS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise CellFormatError(f"{where} has unknown operation {operation!r}{hint}; allowed: {', '.join(OPERATIONS)}")
    if written_source != str(source):
        raise CellFormatError(f"{where} must come from node {source}, written '{operation}~{source}', found {entry!r}")
    return operation


def to_string(cell: Cell) -> str:
    """The standard string of a parsed cell."""
    nodes: list[str] = []
    for node in (1, 2, 3):
        entries = [f"{cell[i]}~{source}" for i, (target, source) in enumerate(EDGES) if target == node]
        nodes.append("|" + "|".join(entries) + "|")
    return "+".join(nodes)


def index_of(arch: str) -> int:
    """The position of `arch` in the base-5 enumeration described in the module docstring."""
    index = 0
    for operation in parse(arch):
        index = index * len(OPERATIONS) + OPERATIONS.index(operation)
    return index


def from_index(index: int) -> str:
    """The cell at `index` (0 <= index < 15,625) of the base-5 enumeration."""
    if not 0 <= index < NUM_CELLS:
        raise ValueError(f"a NAS-Bench-201 index lies in 0..{NUM_CELLS - 1}, got {index}")
    digits: list[str] = []
    for _ in EDGES:
        index, digit = divmod(index, len(OPERATIONS))
        digits.append(OPERATIONS[digit])
    return to_string(tuple(reversed(digits)))


def count_ops(arch: str) -> dict[str, int]:
    """How many edges of `arch` use each operation (every operation is a key, zero included)."""
    cell = parse(arch)
    return {operation: cell.count(operation) for operation in OPERATIONS}


def neighbors(arch: str) -> list[str]:
    """The 24 cells that differ from `arch` in exactly one edge, in edge then operation order."""
    cell = parse(arch)
    found: list[str] = []
    for position, current in enumerate(cell):
        for operation in OPERATIONS:
            if operation != current:
                found.append(to_string((*cell[:position], operation, *cell[position + 1 :])))
    return found


# ---------------------------------------------------------------------------------------------------
# Equivalence: cells that compute the same function
# ---------------------------------------------------------------------------------------------------


def live_cell(cell: Cell) -> Cell:
    """`cell` with every edge that cannot influence the output replaced by `none`.

    An edge j -> i matters only if node j is connected to the input and node i to the output through
    edges other than `none`. The others compute nothing the output sees: a node cut off from the input
    is zero, and a node cut off from the output is unused. (A `nor_conv` applied to a zero node yields
    its batch-norm shift, a learned constant that is zero at initialisation; like the benchmark's own
    isomorphism check, nasloop treats it as nothing.)
    """
    from_input = [True, False, False, False]
    for (target, source), operation in zip(EDGES, cell, strict=True):  # EDGES is in topological order
        from_input[target] |= operation != "none" and from_input[source]
    to_output = [False, False, False, True]
    for (target, source), operation in reversed(list(zip(EDGES, cell, strict=True))):
        to_output[source] |= operation != "none" and to_output[target]
    return tuple(
        operation if from_input[source] and to_output[target] else "none"
        for (target, source), operation in zip(EDGES, cell, strict=True)
    )


def canonical_cell(arch: str) -> str:
    """The string of `live_cell(parse(arch))`: cells that differ only in dead edges share it.

    It is the lowest-index cell of its class, because `none` is operation 0. Rendered, it has no modules
    for dead edges, so it can have fewer parameters than `arch` while computing the same function.

    Deliberately not merged: cells that route the same operations through different nodes. The
    benchmark's isomorphism check (6,466 classes) merges, for example, two convolutions applied to the
    input with one convolution read twice, which are different networks (different weights, different
    training); nasloop merges only what is provably the same computation.
    """
    return to_string(live_cell(parse(arch)))


def num_unique_cells() -> int:
    """How many distinct canonical cells the 15,625 cells reduce to."""
    return len({live_cell(cell) for cell in itertools.product(OPERATIONS, repeat=len(EDGES))})


# ---------------------------------------------------------------------------------------------------
# Cost model and rendering
# ---------------------------------------------------------------------------------------------------


def _edge_params(operation: str, channels: int) -> int:
    """Parameters of one cell edge: ReLU-Conv-BN has k*k*C*C conv weights and 2*C batch-norm ones."""
    kernel = {"nor_conv_3x3": 3, "nor_conv_1x1": 1}.get(operation)
    return 0 if kernel is None else kernel * kernel * channels * channels + 2 * channels


def _edge_flops(operation: str, channels: int, pixels: int) -> int:
    kernel = {"nor_conv_3x3": 3, "nor_conv_1x1": 1}.get(operation)
    return 0 if kernel is None else kernel * kernel * channels * channels * pixels


def network_cost(
    arch: str, in_shape: tuple[int, int, int], num_classes: int, stem_channels: int = 16, cells_per_stage: int = 5
) -> Cost:
    """Parameters and FLOPs (base.Cost conventions) of the rendered network, without building it."""
    cell = parse(arch)
    in_channels, height, width = in_shape
    widths = (stem_channels, 2 * stem_channels, 4 * stem_channels)
    params = 9 * in_channels * stem_channels + 2 * stem_channels
    flops = 9 * in_channels * stem_channels * height * width
    for stage, channels in enumerate(widths):
        if stage > 0:  # residual reduction: conv_a (stride 2), conv_b, and the 1x1 shortcut convolution
            previous = widths[stage - 1]
            height, width = math.ceil(height / 2), math.ceil(width / 2)
            weights = 9 * previous * channels + 9 * channels * channels + previous * channels
            params += weights + 4 * channels
            flops += weights * height * width
        params += cells_per_stage * sum(_edge_params(operation, channels) for operation in cell)
        flops += cells_per_stage * sum(_edge_flops(operation, channels, height * width) for operation in cell)
    last = widths[-1]
    params += 2 * last + last * num_classes + num_classes  # final batch norm and linear classifier
    flops += last * num_classes + num_classes
    return Cost(params=params, flops=flops)


NB201_TEMPLATE = string.Template('''\
"""NAS-Bench-201 network for the cell $arch

The benchmark's skeleton: a 3x3 convolution stem with batch normalisation; three stages of
$cells_per_stage cells with $stem_channels, $mid_channels and $last_channels channels; a ResNet basic block of stride 2
between stages; batch normalisation and ReLU; global average pooling; a linear classifier.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

STEM_CHANNELS = $stem_channels
CELLS_PER_STAGE = $cells_per_stage
# The cell's six edges as (target node, source node, operation); node 0 is the input, node 3 the output.
CELL_EDGES = [
$edges
]


class ReLUConvBN(nn.Sequential):
    """ReLU, a convolution without bias, batch normalisation: the benchmark's nor_conv operation."""

    def __init__(self, in_channels, out_channels, kernel_size, stride):
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
            ),
            nn.BatchNorm2d(out_channels),
        )


def make_operation(name, channels):
    """The module of one edge; none edges have no module and add nothing to their node."""
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1)
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity()
    raise ValueError(f"unknown operation {name!r}")


class Cell(nn.Module):
    """Each node is the sum of its incoming edges' outputs; the cell returns node 3."""

    def __init__(self, channels):
        super().__init__()
        self.edges = [(target, source) for target, source, name in CELL_EDGES if name != "none"]
        self.operations = nn.ModuleList(
            make_operation(name, channels) for _, _, name in CELL_EDGES if name != "none"
        )

    def forward(self, x):
        nodes = [x]
        for node in (1, 2, 3):
            total = torch.zeros_like(x)  # a node without incoming operations is zero
            for (target, source), operation in zip(self.edges, self.operations):
                if target == node:
                    total = total + operation(nodes[source])
            nodes.append(total)
        return nodes[3]


class ResidualReduction(nn.Module):
    """ResNet basic block of stride 2: two nor_conv 3x3 plus an average-pool and 1x1 conv shortcut."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv_a = ReLUConvBN(in_channels, out_channels, 3, 2)
        self.conv_b = ReLUConvBN(out_channels, out_channels, 3, 1)
        # ceil_mode keeps the shortcut the size of the strided convolution's output on odd inputs
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2, stride=2, ceil_mode=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
        )

    def forward(self, x):
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        widths = [STEM_CHANNELS, 2 * STEM_CHANNELS, 4 * STEM_CHANNELS]
        layers = [
            nn.Conv2d(in_shape[0], widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
        ]
        for stage, width in enumerate(widths):
            if stage > 0:
                layers.append(ResidualReduction(widths[stage - 1], width))
            layers.extend(Cell(width) for _ in range(CELLS_PER_STAGE))
        layers += [nn.BatchNorm2d(widths[-1]), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        x = self.features(x)  # (batch, 4 * STEM_CHANNELS, height / 4, width / 4)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (batch, 4 * STEM_CHANNELS)
        return self.classifier(x)  # (batch, num_classes)
''')


def render_network(arch: str, stem_channels: int = 16, cells_per_stage: int = 5) -> str:
    """Python source of the benchmark network for `arch` (any in_shape and class count at build time)."""
    cell = parse(arch)
    edges = "\n".join(
        f'    ({target}, {source}, "{operation}"),' for (target, source), operation in zip(EDGES, cell, strict=True)
    )
    return NB201_TEMPLATE.substitute(
        arch=to_string(cell),
        edges=edges,
        stem_channels=stem_channels,
        mid_channels=2 * stem_channels,
        last_channels=4 * stem_channels,
        cells_per_stage=cells_per_stage,
    )


# ---------------------------------------------------------------------------------------------------
# The space
# ---------------------------------------------------------------------------------------------------

# LLM-NAS partitions the space by how many edges are 3x3 convolutions (METHODS.md, C).
NICHES = ("conv3x3=0,conv1x1=0", "conv3x3=0,conv1x1>=1", "conv3x3=1", "conv3x3=2", "conv3x3=3", "conv3x3>=4")
_LIVE = " (count only edges on a path from the input to the output)"
NICHE_RULES = dict(zip(NICHES, (
    "no nor_conv_3x3 edge and no nor_conv_1x1 edge" + _LIVE,
    "no nor_conv_3x3 edge and at least one nor_conv_1x1 edge" + _LIVE,
    "exactly 1 nor_conv_3x3 edge" + _LIVE,
    "exactly 2 nor_conv_3x3 edges" + _LIVE,
    "exactly 3 nor_conv_3x3 edges" + _LIVE,
    "at least 4 nor_conv_3x3 edges" + _LIVE,
), strict=True))  # fmt: skip

_OPERATION_NOTES = {
    "none": "the zero operation: the edge is absent and contributes nothing",
    "skip_connect": "identity",
    "nor_conv_1x1": "ReLU, 1x1 convolution (no bias), batch norm",
    "nor_conv_3x3": "ReLU, 3x3 convolution (no bias, padding 1), batch norm",
    "avg_pool_3x3": "3x3 average pooling, stride 1, padding 1 (padding excluded from the average)",
}


@spaces.register("nb201")
class NB201Space(SearchSpace):
    """NAS-Bench-201 cells rendered with the benchmark's macro skeleton.

    Options: `stem_channels` (16 in the benchmark; the stages use 1x, 2x and 4x) and `cells_per_stage`
    (5 in the benchmark), to render cheaper networks for quick experiments.
    """

    name = "nb201"

    def __init__(self, stem_channels: int = 16, cells_per_stage: int = 5) -> None:
        if stem_channels < 1 or cells_per_stage < 1:
            raise ValueError("stem_channels and cells_per_stage must be positive")
        self.stem_channels = stem_channels
        self.cells_per_stage = cells_per_stage

    def sample(self, rng: random.Random) -> str:
        """A uniformly random canonical cell: uniform over the 9,445 distinct networks rather than the
        15,625 strings, which would draw the networks with many dead-edge spellings more often."""
        while True:
            cell = tuple(rng.choice(OPERATIONS) for _ in EDGES)
            if live_cell(cell) == cell:  # accepted with probability 9,445 / 15,625
                return to_string(cell)

    def validate(self, arch: str) -> str | None:
        try:
            parse(arch)
        except CellFormatError as error:
            return str(error)
        return None

    def canonical(self, arch: str) -> str:
        if self.validate(arch) is not None:
            return "".join(arch.split())
        return canonical_cell(arch)

    def mutate(self, arch: str, rng: random.Random) -> str:
        """One edge changed to another operation: uniform over the neighbours that compute a different
        function (changing an edge whose output is unused would re-evaluate the same network)."""
        current = canonical_cell(arch)
        return rng.choice([other for other in neighbors(arch) if canonical_cell(other) != current])

    def crossover(self, first: str, second: str, rng: random.Random) -> str:
        """Each edge's operation taken from either parent with probability 1/2."""
        pairs = zip(parse(first), parse(second), strict=True)
        return to_string(tuple(rng.choice(pair) for pair in pairs))

    def render(self, arch: str, in_shape: tuple[int, int, int], num_classes: int) -> str:
        return render_network(arch, self.stem_channels, self.cells_per_stage)

    def cost(self, arch: str, in_shape: tuple[int, int, int], num_classes: int) -> Cost:
        return network_cost(arch, in_shape, num_classes, self.stem_channels, self.cells_per_stage)

    def niches(self) -> tuple[str, ...]:
        return NICHES

    def niche_rule(self, niche: str) -> str:
        return NICHE_RULES.get(niche, super().niche_rule(niche))

    def niche_reason(self, arch: str) -> str:
        counts = count_ops(self.canonical(arch))
        return f"{counts['nor_conv_3x3']} nor_conv_3x3 and {counts['nor_conv_1x1']} nor_conv_1x1 live edges"

    def niche(self, arch: str) -> str:
        counts = count_ops(arch)
        convolutions = counts["nor_conv_3x3"]
        if convolutions == 0:
            return NICHES[1] if counts["nor_conv_1x1"] else NICHES[0]
        return NICHES[min(convolutions, 4) + 1]

    def architecture_pattern(self) -> str:
        operation = "(" + "|".join(OPERATIONS) + ")"
        nodes = ["\\|" + "\\|".join(f"{operation}~{source}" for source in range(node)) + "\\|" for node in (1, 2, 3)]
        return "^" + "\\+".join(nodes) + "$"

    def describe(self) -> str:
        operations = "\n".join(f"- {name}: {note}" for name, note in _OPERATION_NOTES.items())
        widths = f"{self.stem_channels}, {2 * self.stem_channels} and {4 * self.stem_channels}"
        return (
            "NAS-Bench-201 cell space (15,625 cells).\n"
            "A cell is a DAG of 4 nodes: node 0 is the cell input, node 3 its output, and every node i is "
            "the sum of the outputs of its incoming edges j -> i (j < i). Each of the 6 edges applies one "
            "operation:\n"
            f"{operations}\n"
            "Format: for nodes 1, 2 and 3 in turn, list the incoming edges from node 0 upwards as "
            "operation~source between '|' characters; join the three nodes with '+'. Example:\n"
            f"{_EXAMPLE}\n"
            "Rules: node 1 has 1 edge (~0), node 2 has 2 (~0, ~1), node 3 has 3 (~0, ~1, ~2); an edge "
            "whose source is cut off from the input, or whose target never reaches the output, does "
            "nothing.\n"
            f"Network: 3x3 conv stem + batch norm; three stages of {self.cells_per_stage} identical cells "
            f"with {widths} channels; a stride-2 ResNet basic block between stages; batch norm, ReLU, "
            "global average pooling and a linear classifier."
        )
