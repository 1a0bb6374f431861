"""The macro block space: format, construction rules, budgets, equivalence, variation and cost."""

from __future__ import annotations

import random
import re

import pytest
import torch

from nasloop.spaces import macro
from nasloop.spaces.macro import MacroSpace

EXAMPLE = "SuperConvK3BNRELU(3,32,2,1)SuperResK3K3(32,64,2,32,1)SuperResK1K3K1(64,128,2,32,2)"
# Zen-NAS's published CIFAR network of about 1M parameters (ZenNet zennet_cifar_model_size1M_res32).
ZEN_NET_1M = (
    "SuperConvK3BNRELU(3,88,1,1)SuperResK1K7K1(88,120,1,16,1)SuperResK1K7K1(120,192,2,16,3)"
    "SuperResK1K5K1(192,224,1,24,4)SuperResK1K5K1(224,96,2,24,2)SuperResK1K3K1(96,168,2,40,3)"
    "SuperResK1K3K1(168,112,1,48,3)SuperConvK1BNRELU(112,512,1,1)"
)
UNBOUNDED = MacroSpace(max_params=None)


def run(code: str, in_shape: tuple[int, int, int], num_classes: int) -> tuple[torch.nn.Module, torch.Tensor]:
    namespace: dict[str, object] = {}
    exec(code, namespace)
    net = namespace["Net"](in_shape, num_classes)  # type: ignore[operator]
    with torch.no_grad():
        return net, net(torch.randn(2, *in_shape))


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


# -- format and rules -------------------------------------------------------------------------------


def test_parse_reads_every_family_and_prints_it_back() -> None:
    text = (
        "SuperConvK7BNRELU(3,16,2,1)SuperResK3K5(16,32,1,8,2)SuperResK1K7K1(32,32,2,16,1)"
        "SuperResIDWE6K5(32,48,1,16,1)SuperConvK1BNRELU(48,64,1,1)"
    )
    blocks = macro.parse(text)
    assert [block.kind for block in blocks] == ["conv", "residual", "bottleneck", "inverted", "conv"]
    assert blocks[1].kernel_sizes == (3, 5)
    assert (blocks[3].expansion, blocks[3].kernel_sizes, blocks[3].bottleneck_channels) == (6, (5,), 16)
    assert macro.to_string(blocks) == text
    assert macro.to_string(macro.parse(" SuperConvK3BNRELU( 3, 16 ,1,1 )\n SuperConvK1BNRELU(16,32,1,1)")) == (
        "SuperConvK3BNRELU(3,16,1,1)SuperConvK1BNRELU(16,32,1,1)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"empty"),
        ("SuperConvK3BNRELU(3,32,2,1)junk", r"cannot read a block at character 27 \('junk'\)"),
        ("SuperConvK9BNRELU(3,32,2,1)", r"unknown block 'SuperConvK9BNRELU'.*SuperConvK\{1,3,5,7\}BNRELU"),
        ("SuperResK2K3(3,32,2,8,1)", r"unknown block 'SuperResK2K3'"),
        ("SuperResIDWE3K3(3,32,2,8,1)", r"unknown block 'SuperResIDWE3K3'"),
        ("SuperResK3K3(3,32,2,1)", r"block 1 .*takes 5 arguments \(in,out,stride,bottleneck,sub_layers\), got 4"),
        ("SuperConvK3BNRELU(3,32,two,1)", r"whole numbers"),
        ("SuperConvK3BNRELU(16,32,1,1)", r"block 1 .*in_channels is the image's channel count; write 3"),
        (
            "SuperConvK3BNRELU(3,32,1,1)SuperConvK3BNRELU(48,64,1,1)",
            r"block 2 .*must equal the out_channels of block 1 \(32\)",
        ),
        ("SuperConvK3BNRELU(3,30,1,1)", r"block 1 .*out_channels must be a multiple of 8 .*got 30"),
        ("SuperConvK3BNRELU(3,4096,1,1)", r"between 8 and 2048, got 4096"),
        ("SuperConvK3BNRELU(3,32,1,1)SuperResK3K3(32,32,1,12,1)", r"block 2 .*bottleneck must be a multiple of 8"),
        ("SuperConvK3BNRELU(3,32,3,1)", r"stride must be 1 or 2, got 3"),
        ("SuperConvK3BNRELU(3,32,1,0)", r"sub_layers must be at least 1"),
        ("SuperConvK3BNRELU(3,32,1,10)SuperConvK3BNRELU(32,32,1,9)", r"19 layers .*over the budget of 18"),
    ],
)
def test_rule_violations_get_precise_messages(text: str, message: str) -> None:
    error = UNBOUNDED.validate(text)
    assert error is not None and re.search(message, error), error


def test_grayscale_input_channels_are_accepted_and_canonicalised() -> None:
    grayscale = "SuperConvK3BNRELU(1,16,1,1)SuperConvK1BNRELU(16,32,1,1)"
    assert UNBOUNDED.validate(grayscale) is None
    assert UNBOUNDED.canonical(grayscale) == "SuperConvK3BNRELU(3,16,1,1)SuperConvK1BNRELU(16,32,1,1)"


def test_zen_nas_published_network_is_in_the_space() -> None:
    blocks = macro.parse(ZEN_NET_1M)
    assert macro.count_layers(blocks) == 18  # exactly Zen-NAS's CIFAR layer budget
    assert UNBOUNDED.validate(ZEN_NET_1M) is None
    # Zen-NAS counts ~1.0M for it (BN counted once per channel, biased projections in every block's first
    # unit); nasloop's blocks project only on shape changes and BN has 2 parameters per channel.
    cost = UNBOUNDED.cost(ZEN_NET_1M, (3, 32, 32), 100)
    assert cost.params == 1_039_932
    assert 0.9e6 < cost.params < 1.1e6
    # its FLOPs are published as about 160M (Zen-NAS paper, as quoted in idstcv/ZenNAS issue #13)
    assert cost.flops == pytest.approx(160e6, rel=0.02)


def test_budgets_on_parameters_and_flops() -> None:
    wide = "SuperConvK3BNRELU(3,64,1,1)SuperResK3K3(64,256,1,256,2)SuperConvK1BNRELU(256,512,1,1)"
    params = UNBOUNDED.cost(wide, (3, 32, 32), 10).params
    assert params > 1_000_000
    error = MacroSpace().validate(wide)
    assert error is not None and f"{params:,} parameters, over the budget of 1,000,000" in error
    flops = UNBOUNDED.cost(EXAMPLE, (3, 32, 32), 10).flops
    assert MacroSpace(max_flops=flops).validate(EXAMPLE) is None
    error = MacroSpace(max_flops=flops - 1).validate(EXAMPLE)
    assert error is not None and "FLOPs, over the budget" in error
    assert MacroSpace(max_layers=3).validate(EXAMPLE) is not None


# -- equivalence ------------------------------------------------------------------------------------


def test_continuation_blocks_merge_into_one() -> None:
    split = "SuperConvK3BNRELU(3,32,1,1)SuperResK3K3(32,64,2,16,1)SuperResK3K3(64,64,1,16,2)"
    assert UNBOUNDED.canonical(split) == "SuperConvK3BNRELU(3,32,1,1)SuperResK3K3(32,64,2,16,3)"
    # a stride, another bottleneck or another kernel is not a continuation
    for different in (
        "SuperConvK3BNRELU(3,32,1,1)SuperResK3K3(32,64,2,16,1)SuperResK3K3(64,64,2,16,2)",
        "SuperConvK3BNRELU(3,32,1,1)SuperResK3K3(32,64,2,16,1)SuperResK3K3(64,64,1,24,2)",
        "SuperConvK3BNRELU(3,32,1,1)SuperResK3K3(32,64,2,16,1)SuperResK5K5(64,64,1,16,2)",
    ):
        assert UNBOUNDED.canonical(different) == different


@pytest.mark.parametrize(
    ("split", "merged"),
    [
        ("SuperConvK5BNRELU(3,16,2,1)SuperConvK5BNRELU(16,16,1,2)", "SuperConvK5BNRELU(3,16,2,3)"),
        (
            "SuperConvK3BNRELU(3,16,1,1)SuperResK1K3K1(16,32,2,8,1)SuperResK1K3K1(32,32,1,8,1)",
            "SuperConvK3BNRELU(3,16,1,1)SuperResK1K3K1(16,32,2,8,2)",
        ),
        (
            "SuperConvK3BNRELU(3,16,1,1)SuperResIDWE2K3(16,32,2,8,1)SuperResIDWE2K3(32,32,1,8,1)",
            "SuperConvK3BNRELU(3,16,1,1)SuperResIDWE2K3(16,32,2,8,2)",
        ),
    ],
)
def test_merged_blocks_compute_the_same_network(split: str, merged: str) -> None:
    assert UNBOUNDED.canonical(split) == merged
    in_shape = (3, 16, 16)
    torch.manual_seed(0)
    split_net, _ = run(UNBOUNDED.render(split, in_shape, 5), in_shape, 5)
    merged_net, _ = run(UNBOUNDED.render(merged, in_shape, 5), in_shape, 5)
    # same modules in the same order: the split network's weights load into the merged one
    split_tensors = list(split_net.state_dict().values())
    merged_state = merged_net.state_dict()
    assert [tensor.shape for tensor in split_tensors] == [tensor.shape for tensor in merged_state.values()]
    merged_net.load_state_dict(dict(zip(merged_state, split_tensors, strict=True)))
    inputs = torch.randn(2, *in_shape)
    with torch.no_grad():
        torch.testing.assert_close(split_net.eval()(inputs), merged_net.eval()(inputs))


# -- variation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mutation", macro.MUTATIONS, ids=lambda mutation: mutation.__name__)
def test_each_mutation_keeps_channels_consistent(mutation: object) -> None:
    rng = random.Random(7)
    changed_any = False
    for _ in range(40):
        blocks = macro.parse(UNBOUNDED.sample(rng))
        changed = mutation(blocks, rng)  # type: ignore[operator]
        if changed is None:
            continue
        assert macro.structure_error(changed, max_layers=None) is None, macro.to_string(changed)
        changed_any |= changed != blocks
    assert changed_any


def test_mutation_respects_budgets() -> None:
    space = MacroSpace(max_params=200_000, max_layers=10)
    rng = random.Random(8)
    arch = space.sample(rng)
    for _ in range(100):
        arch = space.mutate(arch, rng)
        assert space.validate(arch) is None, arch
        assert space.cost(arch, (3, 32, 32), 10).params <= 200_000


def test_crossover_joins_a_prefix_and_a_suffix() -> None:
    first = "SuperConvK3BNRELU(3,16,1,1)SuperResK3K3(16,32,2,16,1)SuperConvK1BNRELU(32,128,1,1)"
    second = "SuperConvK5BNRELU(3,24,2,1)SuperResK1K5K1(24,48,2,16,2)SuperConvK1BNRELU(48,256,1,1)"
    rng = random.Random(9)
    children = {UNBOUNDED.crossover(first, second, rng) for _ in range(40)}
    assert "SuperConvK3BNRELU(3,16,1,1)SuperResK1K5K1(16,48,2,16,2)SuperConvK1BNRELU(48,256,1,1)" in children
    for child in children:
        assert UNBOUNDED.validate(child) is None
        assert child.startswith("SuperConvK3BNRELU(3,16,1,1)")


def test_sampling_shrinks_to_fit_a_tight_budget() -> None:
    space = MacroSpace(max_params=30_000)
    rng = random.Random(10)
    for _ in range(20):
        arch = space.sample(rng)
        assert space.validate(arch) is None
        assert space.cost(arch, (3, 32, 32), 10).params <= 30_000
    with pytest.raises(ValueError, match="no sampled network fits the budgets"):
        MacroSpace(max_params=100).sample(rng)


# -- cost and rendering -----------------------------------------------------------------------------


def test_analytic_cost_matches_the_rendered_network() -> None:
    rng = random.Random(11)
    in_shape = (3, 20, 20)  # small, and not a power of two: strided sizes round up
    for _ in range(8):
        arch = UNBOUNDED.sample(rng)
        net, logits = run(UNBOUNDED.render(arch, in_shape, 7), in_shape, 7)
        cost = UNBOUNDED.cost(arch, in_shape, 7)
        assert cost.params == sum(parameter.numel() for parameter in net.parameters()), arch
        assert cost.flops == hooked_flops(net, in_shape), arch
        assert logits.shape == (2, 7)


def test_niches_partition_by_parameter_count() -> None:
    space = MacroSpace()
    assert space.niches() == ("params<0.25M", "params 0.25M-0.5M", "params 0.5M-0.75M", "params>=0.75M")
    small = "SuperConvK3BNRELU(3,16,1,1)SuperConvK1BNRELU(16,32,1,1)"
    assert space.niche(small) == "params<0.25M"
    assert space.niche(ZEN_NET_1M) == "params>=0.75M"


def test_description_contains_the_block_code_that_rendering_uses() -> None:
    text = MacroSpace().describe()
    assert macro.MACRO_BLOCKS in text
    assert MacroSpace().render(EXAMPLE, (3, 32, 32), 10).count(macro.MACRO_BLOCKS) == 1
    for family in macro.FAMILIES:
        assert family in text
    assert "at most 18 layers" in text and "at most 1,000,000 parameters" in text
