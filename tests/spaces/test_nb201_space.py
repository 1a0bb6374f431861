"""The NAS-Bench-201 cell space: string format, index order, equivalence, and the benchmark's figures.

Published figures the rendering is checked against (params in M, FLOPs in M, as the benchmark's cost
tables report them for the 200-epoch CIFAR-10 networks, 3x32x32 inputs):

- range over the whole space, CIFAR-10: params 0.073306 .. 1.531546, FLOPs 7.78305 .. 220.11969;
  CIFAR-100: params 0.079156 .. 1.537396, FLOPs max 220.12554; ImageNet16-120 (3x16x16, 120 classes):
  params min 0.080456. The extremes are the all-`none` cell and the all-`nor_conv_3x3` cell; these
  ranges are quoted e.g. in EvoXBench's NAS-Bench-201 wrapper (min/max normalisation constants).
- `|skip_connect~0|+|none~0|nor_conv_3x3~1|+|avg_pool_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|`:
  params 0.802426, FLOPs 113.95137 (NATS-Bench issue #36, `get_cost_info(..., hp="12")`).
- benchmark index 0, `|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|`:
  FLOPs 15.64737 on cifar10-valid (NATS-Bench issue #24).
- cells with two `nor_conv_3x3` edges, such as the ResNet-like cell: about 0.56 M params (AutoDL-Projects
  issue #134 quotes 0.56M for one).
- the benchmark's isomorphism check finds 6,466 distinct cells among the 15,625 (NATS-Bench, Table 1
  and its issue-12 notebook); nasloop's canonical cells, which merge only provably identical
  computations, are a refinement of those classes.

Derivation of the exact counts (C = 16, N = 5 cells per stage, 10 classes, BN has 2 parameters per
channel, convolutions have no bias): stem 3*16*9 + 32 = 464; residual reductions 16->32 and 32->64:
(9*16*32 + 9*32*32 + 16*32 + 4*32) + (9*32*64 + 9*64*64 + 32*64 + 4*64) = 14,464 + 57,600; final
BN 128; classifier 64*10 + 10 = 650: 73,306 parameters outside the cells. A 3x3 edge adds 9C^2 + 2C per
cell and a 1x1 edge C^2 + 2C, so the six-conv cell adds 5*(6*(9*C^2 + 2*C)) summed over C = 16, 32, 64
= 70,080 + 278,400 + 1,109,760, total 1,531,546. FLOPs are convolution multiply-accumulates (C^2 k^2
per output pixel) plus 64*10 + 10 for the classifier: 442,368 (stem) + 3 * 5 * 6 * 2,359,296 (each
cell edge costs 2,359,296 at every stage: 32^2*9*16^2 = 16^2*9*32^2 = 8^2*9*64^2) + 2 * 3,670,016
(reductions) + 650 = 220,119,690.
"""

from __future__ import annotations

import itertools
import random
import re

import pytest
import torch

from nasloop.spaces import nb201
from nasloop.spaces.nb201 import NB201Space

ALL_CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
RESNET = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
THREE_CONV = "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|avg_pool_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
BENCHMARK_INDEX_0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
CIFAR = (3, 32, 32)


def cost(arch: str, in_shape: tuple[int, int, int] = CIFAR, num_classes: int = 10) -> nb201.Cost:
    return nb201.network_cost(arch, in_shape, num_classes)


# -- published figures -----------------------------------------------------------------------------


def test_largest_and_smallest_networks_match_the_benchmark_exactly() -> None:
    assert cost(ALL_CONV3) == nb201.Cost(params=1_531_546, flops=220_119_690)
    assert cost(ALL_NONE) == nb201.Cost(params=73_306, flops=7_783_050)
    # parameter-free cells all cost the same as the empty cell
    assert cost(ALL_SKIP) == cost(ALL_NONE)
    assert cost(ALL_CONV3, num_classes=100).params == 1_537_396
    assert cost(ALL_CONV3, num_classes=100).flops == 220_125_540
    assert cost(ALL_NONE, num_classes=100).params == 79_156
    assert cost(ALL_NONE, (3, 16, 16), 120).params == 80_456


def test_individual_cells_match_published_cost_queries() -> None:
    assert cost(THREE_CONV) == nb201.Cost(params=802_426, flops=113_951_370)
    assert cost(BENCHMARK_INDEX_0).flops == 15_647_370


def test_published_approximate_sizes() -> None:
    assert cost(ALL_CONV3).params / 1e6 == pytest.approx(1.53, abs=0.005)
    for parameter_free in (ALL_NONE, ALL_SKIP):
        assert 0.07e6 <= cost(parameter_free).params <= 0.08e6
    # The ResNet-like cell has two 3x3 convolutions: 73,306 + 5 * sum(18 C^2 + 4 C) = 559,386.
    assert cost(RESNET).params == 559_386
    assert cost(RESNET).params / 1e6 == pytest.approx(0.56, abs=0.005)


def test_rendered_network_has_the_counted_parameters() -> None:
    for arch in (ALL_CONV3, ALL_NONE, RESNET):
        namespace: dict[str, object] = {}
        exec(NB201Space().render(arch, CIFAR, 10), namespace)
        net = namespace["Net"](CIFAR, 10)  # type: ignore[operator]
        assert sum(parameter.numel() for parameter in net.parameters()) == cost(arch).params


def test_smaller_skeletons_render_and_count_alike() -> None:
    space = NB201Space(stem_channels=8, cells_per_stage=1)
    for in_shape in ((1, 28, 28), (3, 15, 15), (3, 7, 9)):  # odd sizes: the shortcut pools with ceil_mode
        namespace: dict[str, object] = {}
        exec(space.render(ALL_CONV3, in_shape, 4), namespace)
        net = namespace["Net"](in_shape, 4)  # type: ignore[operator]
        assert sum(parameter.numel() for parameter in net.parameters()) == space.cost(ALL_CONV3, in_shape, 4).params
        with torch.no_grad():
            assert net(torch.randn(2, *in_shape)).shape == (2, 4)


# -- string format ----------------------------------------------------------------------------------


def test_parse_and_format_round_trip_with_whitespace() -> None:
    cell = nb201.parse(" |nor_conv_3x3~0|+\n|none~0| nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2| ")
    assert cell == ("nor_conv_3x3", "none", "nor_conv_3x3", "skip_connect", "none", "skip_connect")
    assert nb201.to_string(cell) == RESNET


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|", r"3 nodes separated by '\+', found 2"),
        ("|nor_conv_3x3~0|+|none~0|+|skip_connect~0|none~1|skip_connect~2|", r"node 2 takes exactly 2"),
        ("|conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", r"unknown operation 'conv_3x3'"),
        ("|nor_conv3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", r"did you mean nor_conv_3x3"),
        ("|none~0|+|none~1|none~0|+|none~0|none~1|none~2|", r"node 2's first edge must come from node 0"),
        ("|none~0|+|none~0|none|+|none~0|none~1|none~2|", r"node 2's second edge must be written 'operation~1'"),
        ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", r"node 1 must be written between '\|'"),
    ],
)
def test_malformed_cells_get_precise_messages(text: str, message: str) -> None:
    error = NB201Space().validate(text)
    assert error is not None and re.search(message, error), error


def test_index_order_is_a_bijection_with_the_documented_order() -> None:
    strings = [nb201.from_index(index) for index in range(nb201.NUM_CELLS)]
    assert len(set(strings)) == nb201.NUM_CELLS == 15_625
    assert all(nb201.index_of(arch) == index for index, arch in enumerate(strings))
    assert strings[0] == ALL_NONE
    assert strings[1] == "|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"  # last edge varies fastest
    assert nb201.index_of(ALL_CONV3) == 3 * (5**6 - 1) // 4  # every base-5 digit is 3
    with pytest.raises(ValueError, match=r"0\.\.15624"):
        nb201.from_index(15_625)


def test_count_ops_and_niches() -> None:
    assert nb201.count_ops(RESNET) == {
        "none": 2,
        "skip_connect": 2,
        "nor_conv_1x1": 0,
        "nor_conv_3x3": 2,
        "avg_pool_3x3": 0,
    }
    space = NB201Space()
    assert space.niche(ALL_NONE) == "conv3x3=0,conv1x1=0"
    assert space.niche(BENCHMARK_INDEX_0) == "conv3x3=0,conv1x1>=1"
    assert space.niche(RESNET) == "conv3x3=2"
    assert space.niche(THREE_CONV) == "conv3x3=3"
    assert space.niche(ALL_CONV3) == "conv3x3>=4"
    sizes = {name: 0 for name in space.niches()}
    for index in range(nb201.NUM_CELLS):
        sizes[space.niche(nb201.from_index(index))] += 1
    # 4^6 cells without any 3x3 conv, 3^6 of them without 1x1 either; C(6,k) 4^(6-k) with k 3x3 convs
    assert list(sizes.values()) == [3**6, 4**6 - 3**6, 6 * 4**5, 15 * 4**4, 20 * 4**3, 15 * 16 + 6 * 4 + 1]


def test_neighbors_differ_in_exactly_one_edge() -> None:
    found = nb201.neighbors(RESNET)
    assert len(set(found)) == 24
    for other in found:
        differing = sum(a != b for a, b in zip(nb201.parse(other), nb201.parse(RESNET), strict=True))
        assert differing == 1


# -- equivalence ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        # nodes 1 and 2 never reach the output: their edges do nothing
        (
            "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|none~1|none~2|",
            "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
        ),
        # the input never reaches the output: the cell outputs zeros whatever the other edges are
        ("|none~0|+|none~0|nor_conv_3x3~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|", ALL_NONE),
        # node 1 is cut off from the input, so only node 1's outgoing edges die
        (
            "|none~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|",
            "|none~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|skip_connect~2|",
        ),
        (RESNET, RESNET),
        (ALL_CONV3, ALL_CONV3),
    ],
)
def test_canonical_cell_removes_dead_edges(arch: str, expected: str) -> None:
    assert nb201.canonical_cell(arch) == expected
    assert nb201.index_of(expected) <= nb201.index_of(arch)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (RESNET, "|nor_conv_1x1~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"),
        # two parallel convolutions have two sets of weights: not one convolution
        (
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|skip_connect~1|skip_connect~2|",
            "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|",
        ),
        # a pool and a conv reading one convolution, or reading two: the benchmark's check merges these
        (
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_3x3~2|",
            "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_3x3~2|",
        ),
    ],
)
def test_different_networks_keep_different_canonical_forms(first: str, second: str) -> None:
    assert nb201.canonical_cell(first) != nb201.canonical_cell(second)


def _benchmark_isomorphism_key(cell: tuple[str, ...], zero_nodes_are_zero: bool = False) -> str:
    """The benchmark's published rule (NAS-Bench-201 code, `to_unique_str(consider_zero=True)`).

    As published, a node whose every input is zero is written `#+#`, not `#`, so operations applied
    to it are not recognised as zero; `zero_nodes_are_zero` corrects that.
    """
    nodes = ["0"]
    edges = iter(cell)
    for node in (1, 2, 3):
        terms = []
        for source in range(node):
            operation = next(edges)
            if operation == "none" or nodes[source] == "#":
                terms.append("#")
            elif operation == "skip_connect":
                terms.append(nodes[source])
            else:
                terms.append(f"({nodes[source]})@{operation}")
        all_zero = zero_nodes_are_zero and set(terms) == {"#"}
        nodes.append("#" if all_zero else "+".join(sorted(terms)))
    return nodes[3]


def test_canonical_classes_lie_within_the_benchmark_isomorphism_classes() -> None:
    cells = list(itertools.product(nb201.OPERATIONS, repeat=6))
    assert len({_benchmark_isomorphism_key(cell) for cell in cells}) == 6_466  # the published count
    benchmark_keys: dict[tuple[str, ...], set[str]] = {}
    for cell in cells:
        benchmark_keys.setdefault(nb201.live_cell(cell), set()).add(_benchmark_isomorphism_key(cell, True))
    assert all(len(keys) == 1 for keys in benchmark_keys.values())
    assert nb201.num_unique_cells() == len(benchmark_keys) == 9_445


def _copy_live_weights(source: torch.nn.Module, target: torch.nn.Module, arch: str) -> None:
    """Load `source` (rendered from `arch`) into `target` (rendered from its canonical cell)."""
    cell = nb201.parse(arch)
    live = nb201.live_cell(cell)
    present = [index for index, operation in enumerate(cell) if operation != "none"]
    kept = [present.index(index) for index, operation in enumerate(live) if operation != "none"]
    for source_module, target_module in zip(source.features, target.features, strict=True):
        if type(source_module).__name__ == "Cell":
            for target_index, source_index in enumerate(kept):
                target_module.operations[target_index].load_state_dict(
                    source_module.operations[source_index].state_dict()
                )
        else:
            target_module.load_state_dict(source_module.state_dict())
    target.classifier.load_state_dict(source.classifier.state_dict())


def test_canonical_cell_computes_the_same_function() -> None:
    space = NB201Space(stem_channels=4, cells_per_stage=1)
    rng = random.Random(5)
    inputs = torch.randn(2, 3, 16, 16)
    spelled_with_dead_edges = [
        arch
        for arch in (nb201.from_index(rng.randrange(nb201.NUM_CELLS)) for _ in range(100))
        if nb201.canonical_cell(arch) != arch
    ]
    for arch in spelled_with_dead_edges[:8]:
        networks = []
        for cell in (arch, nb201.canonical_cell(arch)):
            namespace: dict[str, object] = {}
            exec(space.render(cell, (3, 16, 16), 5), namespace)
            networks.append(namespace["Net"]((3, 16, 16), 5))  # type: ignore[operator]
        original, canonical = networks
        _copy_live_weights(original, canonical, arch)
        with torch.no_grad():
            torch.testing.assert_close(original.eval()(inputs), canonical.eval()(inputs))


def test_samples_are_uniform_over_canonical_cells() -> None:
    space = NB201Space()
    rng = random.Random(0)
    samples = [space.sample(rng) for _ in range(2000)]
    assert all(nb201.canonical_cell(arch) == arch for arch in samples)
    # canonical cells have 0.73 `none` edges on average (6,874 over 9,445 cells); all strings have 1.2
    mean_none = sum(nb201.count_ops(arch)["none"] for arch in samples) / len(samples)
    assert mean_none == pytest.approx(6_874 / 9_445, abs=0.05)
