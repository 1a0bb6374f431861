"""The AutoFormer-style ViT space: format, grid rules, rendering on several input shapes, cost, niches
and variation. (The contract every space meets is tested in test_spaces_contract.py.)"""

from __future__ import annotations

import itertools
import random
import re

import pytest
import torch

from nasloop.registry import spaces
from nasloop.spaces import vit
from nasloop.spaces.open_code import check_code
from nasloop.spaces.vit import ViTSpace

SPACE = ViTSpace()
AUTOFORMER_TINY = ViTSpace(
    embed_dims=(192, 216, 240), depths=(12, 13, 14), mlp_ratios=(3.5, 4), head_counts=(3, 4), head_dim=64
)
# Every input shape below works: the patch is ceil(min(H, W) / 8) pixels and ragged sides are padded.
SHAPES = [(1, 28, 28), (3, 32, 32), (3, 16, 16), (1, 8, 8), (3, 30, 20), (1, 5, 7), (1, 1, 1)]


def build(arch: str, in_shape: tuple[int, int, int], num_classes: int, space: ViTSpace = SPACE) -> torch.nn.Module:
    code = space.render(arch, in_shape, num_classes)
    assert check_code(code) is None, check_code(code)
    namespace: dict[str, object] = {}
    exec(code, namespace)
    net = namespace["Net"](in_shape, num_classes)  # type: ignore[operator]
    assert isinstance(net, torch.nn.Module)
    return net


def parameter_count(net: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in net.parameters())


def hooked_flops(net: torch.nn.Module, in_shape: tuple[int, int, int]) -> int:
    """The base.Cost count on a real forward pass of one image: convolution multiply-accumulates,
    `in*out + out` per linear layer and token, and 2 * tokens^2 * heads * head_dim per attention."""
    total = 0

    def count(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            total += output.shape[2] * output.shape[3] * module.weight.numel()
        elif isinstance(module, torch.nn.Linear):
            tokens = output.numel() // module.out_features
            total += tokens * (module.weight.numel() + module.out_features)
        elif type(module).__name__ == "Attention":
            tokens = inputs[0].shape[1]
            total += 2 * tokens * tokens * module.heads * module.head_dim

    handles = [module.register_forward_hook(count) for module in net.modules()]
    with torch.no_grad():
        net(torch.randn(1, *in_shape))
    for handle in handles:
        handle.remove()
    return total


# -- format and rules -------------------------------------------------------------------------------


def test_vit_is_registered_with_its_default_grid() -> None:
    space = spaces.get("vit")()
    assert isinstance(space, ViTSpace)
    assert (space.embed_dims, space.depths) == ((64, 96, 128, 192), (2, 3, 4, 5, 6, 7))
    assert (space.mlp_ratios, space.head_counts, space.head_dim) == ((2.0, 3.0, 4.0), (2, 4, 6), 32)


def test_parse_reads_the_string_and_prints_it_back() -> None:
    transformer = vit.parse("E96|M4H2|M3H6|M2H4")
    assert transformer.embed_dim == 96 and transformer.depth == 3
    assert transformer.blocks == (vit.Block(4.0, 2), vit.Block(3.0, 6), vit.Block(2.0, 4))
    assert [transformer.mlp_hidden(block) for block in transformer.blocks] == [384, 288, 192]
    assert vit.to_string(transformer) == "E96|M4H2|M3H6|M2H4"
    assert SPACE.canonical(" E96 |\nM4.0H2| M3H6|M2.00H4 ") == "E96|M4H2|M3H6|M2H4"
    assert vit.to_string(vit.parse("E192|M3.5H3|M4H4")) == "E192|M3.5H3|M4H4"
    rng = random.Random(0)
    for _ in range(30):
        arch = SPACE.sample(rng)
        assert vit.to_string(vit.parse(arch)) == arch


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"empty; write E<embedding dim> then one \|M<mlp ratio>H<heads> per block"),
        ("M4H4|M4H4", r"starts with the embedding dimension written E<number> .*found 'M4H4'"),
        ("E12x|M4H4|M4H4", r"found 'E12x'"),
        ("E128", r"E128 has no blocks"),
        ("E128|M4H4||M4H4", r"block 2 is empty: remove the extra '\|'"),
        ("E128|M4H4|", r"block 2 is empty"),
        ("E128|M4H4|M4", r"block 2 'M4' must be written M<mlp ratio>H<heads>"),
        ("E128|M4H4M4H4", r"block 1 'M4H4M4H4' must be written"),
        ("E128|H4M4|M4H4", r"block 1 'H4M4'"),
        ("E100|M4H4|M4H4", r"embedding dimension E100 is not offered; choose one of E64, E96, E128, E192"),
        ("E128|M4H4", r"the network has 1 block, but the depth must be 2 to 7"),
        ("E64" + "|M2H2" * 8, r"the network has 8 blocks, but the depth must be 2 to 7"),
        ("E128|M4H4|M5H4", r"block 2 M5H4: MLP ratio 5 is not offered; choose one of M2, M3, M4"),
        ("E128|M4H4|M3.5H4", r"block 2 M3.5H4: MLP ratio 3.5 is not offered"),
        ("E128|M4H4|M4H4|M4H3", r"block 3 M4H3: 3 heads are not offered; choose one of H2, H4, H6"),
    ],
)
def test_rule_violations_get_precise_messages(text: str, message: str) -> None:
    error = SPACE.validate(text)
    assert error is not None and re.search(message, error), error


def test_off_grid_points_keep_their_canonical_form_and_still_render() -> None:
    off_grid = "E100|M5H3"
    assert SPACE.validate(off_grid) is not None
    assert SPACE.canonical(off_grid) == off_grid  # the canonical form does not depend on the grid
    net = build(off_grid, (3, 32, 32), 10)
    assert parameter_count(net) == SPACE.cost(off_grid, (3, 32, 32), 10).params


def test_autoformer_tiny_grid_is_an_option() -> None:
    arch = "E192" + "|M3.5H3" * 6 + "|M4H4" * 6
    assert AUTOFORMER_TINY.validate(arch) is None
    assert AUTOFORMER_TINY.validate(arch.replace("E192", "E128")) is not None
    pattern = AUTOFORMER_TINY.architecture_pattern()
    assert r"M(3\.5|4)H(3|4)" in pattern and pattern.endswith("{12,14}$")
    assert re.fullmatch(pattern, arch)
    assert AUTOFORMER_TINY.niches() == (
        "embed 192-216, depth 12",
        "embed 192-216, depth 13",
        "embed 192-216, depth 14",
        "embed 240, depth 12",
        "embed 240, depth 13",
        "embed 240, depth 14",
    )
    example = next(line for line in AUTOFORMER_TINY.describe().splitlines() if line.startswith("Example"))
    assert AUTOFORMER_TINY.validate(example.split(":", 1)[1].strip()) is None


# -- rendering and cost -----------------------------------------------------------------------------


def test_params_match_a_hand_count() -> None:
    # E64 with two blocks on 1x28x28 images, 10 classes: patch ceil(28 / 8) = 4, 7 x 7 = 49 patches,
    # 50 tokens with the class token; head_dim 32, so H2 attends 64 wide and H4 128 wide.
    embedding = (1 * 4 * 4 * 64 + 64) + 64 + 50 * 64  # patch conv weight and bias, class token, positions
    first = (  # M2H2: MLP hidden 128, attention width 64
        2 * 64  # layer norm before attention
        + (64 * 3 * 64 + 3 * 64)  # qkv
        + (64 * 64 + 64)  # projection
        + 2 * 64  # layer norm before the MLP
        + (64 * 128 + 128)  # MLP in
        + (128 * 64 + 64)  # MLP out
    )
    second = 2 * 64 + (64 * 3 * 128 + 3 * 128) + (128 * 64 + 64) + 2 * 64 + (64 * 192 + 192) + (192 * 64 + 64)
    head = 2 * 64 + (64 * 10 + 10)  # final layer norm and classifier
    expected = embedding + first + second + head
    assert expected == 4352 + 33472 + 58304 + 778
    arch = "E64|M2H2|M3H4"
    assert SPACE.cost(arch, (1, 28, 28), 10).params == expected
    assert parameter_count(build(arch, (1, 28, 28), 10)) == expected


def test_cost_matches_the_rendered_networks() -> None:
    rng = random.Random(5)
    for index in range(20):
        arch = SPACE.sample(rng)
        in_shape = SHAPES[index % len(SHAPES)]
        num_classes = 3 + index
        net = build(arch, in_shape, num_classes)
        cost = SPACE.cost(arch, in_shape, num_classes)
        assert parameter_count(net) == cost.params, (arch, in_shape)
        assert hooked_flops(net, in_shape) == cost.flops, (arch, in_shape)


@pytest.mark.parametrize("in_shape", SHAPES, ids=lambda shape: "x".join(map(str, shape)))
def test_renders_and_runs_on_many_input_shapes(in_shape: tuple[int, int, int]) -> None:
    arch = "E64|M2H2|M4H4|M3H6"
    net = build(arch, in_shape, 7)
    patch, rows, columns = vit.patch_grid(in_shape[1], in_shape[2], 8)
    assert net.patch_embedding.kernel_size == (patch, patch)
    assert net.position_embedding.shape == (1, rows * columns + 1, 64)
    assert rows <= 8 or columns <= 8
    with torch.no_grad():
        logits = net(torch.randn(3, *in_shape))
    assert logits.shape == (3, 7) and torch.isfinite(logits).all()


def test_patch_sizes_follow_the_input() -> None:
    assert vit.patch_grid(28, 28, 8) == (4, 7, 7)
    assert vit.patch_grid(32, 32, 8) == (4, 8, 8)
    assert vit.patch_grid(16, 16, 8) == (2, 8, 8)
    assert vit.patch_grid(8, 8, 8) == (1, 8, 8)
    assert vit.patch_grid(30, 20, 8) == (3, 10, 7)  # 30 and 20 padded to 30 and 21
    assert vit.patch_grid(1, 1, 8) == (1, 1, 1)
    assert vit.patch_grid(32, 32, 4) == (8, 4, 4)


# -- niches -----------------------------------------------------------------------------------------


def test_niches_partition_the_grid_by_embedding_dimension_and_depth() -> None:
    assert SPACE.niches() == (
        "embed 64-96, depth 2-3",
        "embed 64-96, depth 4-5",
        "embed 64-96, depth 6-7",
        "embed 128-192, depth 2-3",
        "embed 128-192, depth 4-5",
        "embed 128-192, depth 6-7",
    )
    members: dict[str, set[tuple[int, int]]] = {name: set() for name in SPACE.niches()}
    for embed, depth in itertools.product(SPACE.embed_dims, SPACE.depths):
        arch = f"E{embed}" + "|M4H4" * depth
        members[SPACE.niche(arch)].add((embed, depth))
    assert all(len(found) == 4 for found in members.values())  # 2 embedding dimensions x 2 depths each
    assert members["embed 64-96, depth 2-3"] == {(64, 2), (64, 3), (96, 2), (96, 3)}
    assert members["embed 128-192, depth 6-7"] == {(128, 6), (128, 7), (192, 6), (192, 7)}
    # the block choices play no part
    assert SPACE.niche("E96|M2H2|M2H2|M2H2|M2H2") == SPACE.niche("E96|M4H6|M4H6|M4H6|M4H6")


def test_bands_split_evenly_larger_first() -> None:
    assert vit.bands((2, 3, 4, 5, 6, 7), 3) == [(2, 3), (4, 5), (6, 7)]
    assert vit.bands((1, 2, 3, 4), 3) == [(1, 2), (3,), (4,)]
    assert vit.bands((64,), 2) == [(64,)]


# -- variation --------------------------------------------------------------------------------------


def test_mutation_changes_exactly_one_choice() -> None:
    rng = random.Random(7)
    kinds: set[str] = set()
    for _ in range(200):
        parent = vit.parse(SPACE.sample(rng))
        child = vit.parse(SPACE.mutate(vit.to_string(parent), rng))
        if child.embed_dim != parent.embed_dim:
            kinds.add("embed")
            assert child.blocks == parent.blocks
        elif child.depth != parent.depth:
            kinds.add("depth")
            assert abs(child.depth - parent.depth) == 1
            shorter, longer = sorted((parent.blocks, child.blocks), key=len)
            assert any(longer[:index] + longer[index + 1 :] == shorter for index in range(len(longer)))
        else:
            changed = [index for index in range(parent.depth) if parent.blocks[index] != child.blocks[index]]
            assert len(changed) == 1
            old, new = parent.blocks[changed[0]], child.blocks[changed[0]]
            assert (old.mlp_ratio != new.mlp_ratio) != (old.heads != new.heads)
            kinds.add("ratio" if old.mlp_ratio != new.mlp_ratio else "heads")
    assert kinds == {"embed", "depth", "ratio", "heads"}


def test_mutation_skips_choices_the_grid_does_not_offer() -> None:
    narrow = ViTSpace(embed_dims=(64,), depths=(3,), head_counts=(4,))
    rng = random.Random(8)
    arch = narrow.sample(rng)
    for _ in range(20):
        child = narrow.mutate(arch, rng)
        assert narrow.validate(child) is None and child != arch
        arch = child
    single = ViTSpace(embed_dims=(64,), depths=(2,), mlp_ratios=(4,), head_counts=(4,))
    with pytest.raises(ValueError, match="single architecture"):
        single.mutate("E64|M4H4|M4H4", rng)


def test_crossover_takes_every_choice_from_a_parent() -> None:
    rng = random.Random(9)
    first, second = "E64|M2H2|M2H2", "E192|M4H6|M4H6|M4H6|M4H6|M4H6|M4H6|M4H6"
    children = {SPACE.crossover(first, second, rng) for _ in range(50)}
    assert len(children) > 10
    for child in children:
        transformer = vit.parse(child)
        assert SPACE.validate(child) is None
        assert transformer.embed_dim in (64, 192) and transformer.depth in (2, 7)
        assert all(block in (vit.Block(2.0, 2), vit.Block(4.0, 6)) for block in transformer.blocks)
        assert all(block == vit.Block(4.0, 6) for block in transformer.blocks[2:])
