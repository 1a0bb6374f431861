"""The NAS-Bench-Macro and Channel-Bench-Macro ResNet spaces: rendering against the tables' figures,
the cost model, equivalence, variation, niches and messages.

The tables' `params` are the benchmark networks' parameter counts for 3x32x32 inputs and 10 classes;
the README's anchors are `00000000` 387,882 and `22222222` 2,932,586 (macro), `1111111` 963,658 and
`4444444` 15,356,170 (channel). Their `flops` count a linear layer as in * out, one less bias per
class than `Cost.flops`.
"""

from __future__ import annotations

import collections
import random
import re

import pytest
import torch
from test_spaces_contract import build

from nasloop.registry import benchmarks
from nasloop.spaces import channel_bench, nas_bench_macro
from nasloop.spaces.base import SearchSpace
from nasloop.spaces.channel_bench import ChannelBenchResNetSpace
from nasloop.spaces.nas_bench_macro import NASBenchMacroSpace

CIFAR = (3, 32, 32)
ANCHORS = {"nas-bench-macro": ("00000000", "22222222"), "channel-bench-resnet": ("1111111", "4444444")}
README_PARAMS = {"00000000": 387_882, "22222222": 2_932_586, "1111111": 963_658, "4444444": 15_356_170}
SPACES = {"nas-bench-macro": NASBenchMacroSpace(), "channel-bench-resnet": ChannelBenchResNetSpace()}


def table_rows(name: str) -> dict[str, dict[str, float]]:
    return dict(benchmarks.get(name)().load("cifar10").rows())


def parameters(net: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in net.parameters())


def hooked_flops(net: torch.nn.Module, in_shape: tuple[int, int, int]) -> int:
    """Convolution multiply-accumulates and linear in*out + out, counted on a real forward pass."""
    total = 0

    def count(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            total += output.shape[2] * output.shape[3] * module.weight.numel()
        elif isinstance(module, torch.nn.Linear):
            total += module.weight.numel() + module.out_features

    handles = [module.register_forward_hook(count) for module in net.modules()]
    with torch.no_grad():
        net(torch.randn(1, *in_shape))
    for handle in handles:
        handle.remove()
    return total


# -- the tables' figures ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", SPACES)
def test_rendered_networks_have_the_tables_parameter_counts(name: str) -> None:
    space, rows = SPACES[name], table_rows(name)
    sample = random.Random(0).sample(sorted(rows), 30) + list(ANCHORS[name])
    for arch in sample:
        net = build(space.render(arch, CIFAR, 10), CIFAR, 10)
        assert parameters(net) == rows[arch]["params"], arch
    for arch in ANCHORS[name]:
        assert rows[arch]["params"] == README_PARAMS[arch]


@pytest.mark.parametrize("name", SPACES)
def test_cost_matches_the_table_for_every_key(name: str) -> None:
    """params equal; the table's flops omit the classifier's 10 biases that Cost counts."""
    space = SPACES[name]
    for arch, metrics in table_rows(name).items():
        cost = space.cost(arch, CIFAR, 10)
        assert (cost.params, cost.flops - 10) == (metrics["params"], metrics["flops"]), arch


@pytest.mark.parametrize("name", SPACES)
@pytest.mark.parametrize(("in_shape", "num_classes"), [(CIFAR, 10), ((1, 28, 28), 7), ((3, 17, 21), 100)])
def test_cost_equals_the_rendered_network(name: str, in_shape: tuple[int, int, int], num_classes: int) -> None:
    space, rng = SPACES[name], random.Random(5)
    for arch in [space.sample(rng) for _ in range(3)] + list(ANCHORS[name][:1]):
        net = build(space.render(arch, in_shape, num_classes), in_shape, num_classes)
        cost = space.cost(arch, in_shape, num_classes)
        assert (cost.params, cost.flops) == (parameters(net), hooked_flops(net, in_shape)), arch


def test_channel_bench_renders_the_stride_2_stem_of_the_benchmark() -> None:
    net = build(channel_bench.render_network("1111111"), CIFAR, 10)
    stem = net.stem[0]
    assert isinstance(stem, torch.nn.Conv2d) and stem.stride == (2, 2) and stem.out_channels == 64
    assert channel_bench.widths("2431342") == (128, 256, 192, 128, 384, 512, 256)


# -- NAS-Bench-Macro equivalence ---------------------------------------------------------------------


def test_macro_canonical_form_moves_a_stages_identities_to_its_end() -> None:
    assert nas_bench_macro.canonical_architecture("10102111") == "10120111"
    assert nas_bench_macro.canonical_architecture("01001002") == "01010020"
    # the first layer of a stage is strided: its identity is a convolution, never moved
    assert nas_bench_macro.canonical_architecture("00000000") == "00000000"
    assert NASBenchMacroSpace().canonical(" 1010 2111 ") == "10120111"


def test_macro_equivalent_strings_share_the_tables_figures() -> None:
    """The benchmark trained 3,969 networks and copied their figures to the equivalent strings."""
    rows = table_rows("nas-bench-macro")
    classes = collections.defaultdict(list)
    for arch in rows:
        classes[nas_bench_macro.canonical_architecture(arch)].append(arch)
    assert len(rows) == 6_561 and len(classes) == 3_969
    for canonical, members in classes.items():
        assert all(rows[member] == rows[canonical] for member in members), canonical


@pytest.mark.parametrize("name", SPACES)
def test_mutation_changes_one_position(name: str) -> None:
    space, rng = SPACES[name], random.Random(7)
    for _ in range(200):
        arch = space.sample(rng)
        child = space.mutate(arch, rng)
        assert sum(a != b for a, b in zip(arch, child, strict=True)) == 1
        assert space.canonical(child) != space.canonical(arch)


@pytest.mark.parametrize("name", SPACES)
def test_crossover_takes_every_position_from_a_parent(name: str) -> None:
    space, rng = SPACES[name], random.Random(8)
    for _ in range(100):
        first, second = space.sample(rng), space.sample(rng)
        child = space.crossover(first, second, rng)
        assert all(c in (a, b) for a, b, c in zip(first, second, child, strict=True))


def test_macro_samples_are_uniform_over_distinct_networks() -> None:
    space, rng = NASBenchMacroSpace(), random.Random(9)
    samples = [space.sample(rng) for _ in range(3000)]
    assert all(nas_bench_macro.canonical_architecture(arch) == arch for arch in samples)
    assert len(set(samples)) > 1800


# -- niches, messages, description ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "sizes"),
    [("nas-bench-macro", [577, 1_120, 1_792, 1_792, 1_280]), ("channel-bench-resnet", [3_466, 4_726, 4_726, 3_466])],
)
def test_niches_partition_the_space_by_complexity(name: str, sizes: list[int]) -> None:
    space = SPACES[name]
    counts = collections.Counter(space.niche(arch) for arch in table_rows(name))
    assert [counts[niche] for niche in space.niches()] == sizes
    rows = table_rows(name)
    mean_params = [
        sum(rows[arch]["params"] for arch in rows if space.niche(arch) == niche) / counts[niche]
        for niche in space.niches()
    ]
    assert mean_params == sorted(mean_params), "niches go from simplest to most complex"


@pytest.mark.parametrize(
    ("space", "arch", "message"),
    [
        (NASBenchMacroSpace(), "0120120", r"8 digits.*0 \(identity\), 1 .*2 \(inverted residual.*found 7 character"),
        (NASBenchMacroSpace(), "01201203", r"layer 8 has '3'; each of the 8 digits is 0 \(identity\)"),
        (ChannelBenchResNetSpace(), "1111110", r"width 7 has '0'; each of the 7 digits is 1, 2, 3 or 4 \(times 128"),
        (ChannelBenchResNetSpace(), "[64, 128]", r"7 digits.*channels = digit x 64, 64, 64, 128"),
    ],
)
def test_validate_says_what_is_wrong_and_what_is_allowed(space: SearchSpace, arch: str, message: str) -> None:
    problem = space.validate(arch)
    assert problem is not None
    assert re.search(message, problem), problem
    with pytest.raises(ValueError, match=message):
        space.render(arch, CIFAR, 10)


@pytest.mark.parametrize("name", SPACES)
def test_describe_names_the_operations_and_the_skeleton(name: str) -> None:
    text = SPACES[name].describe()
    words = ("identity", "inverted residual", "1280") if name == "nas-bench-macro" else ("stride 2", "c4", "ReLU")
    assert all(word in text for word in words)
    assert SPACES[name].architecture_pattern() in ("^[012]{8}$", "^[1-4]{7}$")
