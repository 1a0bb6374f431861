"""An AutoFormer-style vision transformer space (Chen et al., ICCV 2021), scaled down for small images.

A point is a global embedding dimension and a stack of pre-norm transformer blocks, each block with its
own MLP ratio and number of attention heads (AutoFormer's per-block choices), written

    E128|M4H4|M3H2|M4H6|M2H4

`E<embedding dimension>` comes first, then one `|M<MLP ratio>H<heads>` per block, in order; the depth
is the number of blocks (no separate depth field, so the two cannot disagree). Whitespace is ignored.
The MLP ratio may be fractional (`M3.5`); the canonical form writes it without trailing zeros (`M4`,
not `M4.0`). Different strings are different networks, so `canonical` only normalises formatting.

The default grid (`ViTSpace` options) is a CPU-scale version of AutoFormer-Tiny, whose grid (embedding
dimension 192/216/240, depth 12-14, MLP ratio 3.5/4, 3 or 4 heads of 64 dimensions) is far too large for
28x28 and 32x32 images on a CPU: embedding dimension 64, 96, 128 or 192; depth 2 to 7; per block an MLP
ratio of 2, 3 or 4 and 2, 4 or 6 heads. As in AutoFormer, each head has its own fixed Q-K-V width
(`head_dim`, 32 by default) instead of embed_dim / heads, so every head count fits every embedding
dimension: attention computes queries, keys and values heads * head_dim wide and projects them back.

Decisions, each documented where it applies:
- Patches: the patch size is ceil(min(H, W) / patches_per_side) pixels (patches_per_side is 8 by
  default: patch 4 on 28x28 and 32x32 images, 2 on 16x16, 1 on 8x8), so the shorter side has at most
  8 patches whatever the resolution. A side that is not a multiple of the patch size is zero-padded at
  the bottom or right. Any input of at least 1x1 pixel works.
- Readout: a learnable class token (as ViT, DeiT and AutoFormer), not global average pooling; the
  position embedding is learnable and has one entry per patch plus one for the class token.
- The niches are the grid of (embedding-dimension band x depth band), AutoFormer's two global
  dimensions as LLM-NAS partitions its space: the embedding dimensions split into 2 bands and the
  depths into 3, from the narrow and shallow networks to the wide and deep ones.
"""

from __future__ import annotations

import math
import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from nasloop.registry import spaces
from nasloop.spaces.base import Cost, SearchSpace

EXAMPLE = "E128|M4H4|M3H2|M4H6|M2H4"
EMBED_BANDS = 2
DEPTH_BANDS = 3


class ArchitectureFormatError(ValueError):
    """A string that is not a well-formed ViT architecture; the message says how to fix it."""


@dataclass(frozen=True)
class Block:
    """One transformer block: its MLP hidden width is int(mlp_ratio * embed_dim), its attention has
    `heads` heads of the space's `head_dim` each."""

    mlp_ratio: float
    heads: int

    def __str__(self) -> str:
        return f"M{format_ratio(self.mlp_ratio)}H{self.heads}"


@dataclass(frozen=True)
class Transformer:
    """A parsed architecture: the embedding dimension and the blocks in order."""

    embed_dim: int
    blocks: tuple[Block, ...]

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def mlp_hidden(self, block: Block) -> int:
        """The hidden width of `block`'s MLP (AutoFormer's int(mlp_ratio * embed_dim))."""
        return int(block.mlp_ratio * self.embed_dim)

    def __str__(self) -> str:
        return "|".join([f"E{self.embed_dim}", *(str(block) for block in self.blocks)])


def format_ratio(ratio: float) -> str:
    """An MLP ratio as the canonical form writes it: plain decimals, no trailing zeros (4, 3.5)."""
    return f"{ratio:.6f}".rstrip("0").rstrip(".")


# ---------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------

_EMBED_TEXT = re.compile(r"E(\d+)")
_BLOCK_TEXT = re.compile(r"M(\d+(?:\.\d+)?)H(\d+)")


def parse(arch: str) -> Transformer:
    """The architecture `arch` describes, whatever the grid; whitespace is ignored.

    Raises ArchitectureFormatError with a message that names the offending part."""
    text = "".join(arch.split())
    if not text:
        raise ArchitectureFormatError(
            f"the architecture is empty; write E<embedding dim> then one |M<mlp ratio>H<heads> per block, "
            f"e.g. {EXAMPLE}"
        )
    head, *parts = text.split("|")
    embed = _EMBED_TEXT.fullmatch(head)
    if embed is None:
        raise ArchitectureFormatError(
            f"the architecture starts with the embedding dimension written E<number> (e.g. E128), "
            f"found {head[:40]!r}; example: {EXAMPLE}"
        )
    if not parts:
        raise ArchitectureFormatError(
            f"{head} has no blocks: append one |M<mlp ratio>H<heads> per transformer block, e.g. {EXAMPLE}"
        )
    return Transformer(int(embed.group(1)), tuple(_parse_block(number, part) for number, part in enumerate(parts, 1)))


def _parse_block(number: int, part: str) -> Block:
    if not part:
        raise ArchitectureFormatError(f"block {number} is empty: remove the extra '|' (blocks are separated by one)")
    match = _BLOCK_TEXT.fullmatch(part)
    if match is None:
        raise ArchitectureFormatError(
            f"block {number} {part[:40]!r} must be written M<mlp ratio>H<heads>, e.g. M4H4 or M3.5H2, "
            "with blocks separated by '|'"
        )
    return Block(float(match.group(1)), int(match.group(2)))


def to_string(transformer: Transformer) -> str:
    """The canonical string of a parsed architecture."""
    return str(transformer)


# ---------------------------------------------------------------------------------------------------
# Cost
# ---------------------------------------------------------------------------------------------------


def patch_grid(height: int, width: int, patches_per_side: int) -> tuple[int, int, int]:
    """(patch size, rows, columns) of the patch embedding, as the rendered `Net` computes them."""
    patch = math.ceil(min(height, width) / patches_per_side)
    return patch, math.ceil(height / patch), math.ceil(width / patch)


def network_cost(
    transformer: Transformer, head_dim: int, patches_per_side: int, in_shape: tuple[int, int, int], num_classes: int
) -> Cost:
    """Parameters and FLOPs of the rendered network, without building it.

    FLOPs follow `base.Cost`: the patch convolution's multiply-accumulates (weights times output
    positions, bias not counted), `in*out + out` per linear layer and per token it is applied to, and
    the two attention matrix products, Q K^T and attention-weights V (tokens^2 * heads * head_dim
    each). Layer norms, softmax, GELU, the position embedding and residual additions count nothing.
    """
    channels, height, width = in_shape
    embed = transformer.embed_dim
    patch, rows, columns = patch_grid(height, width, patches_per_side)
    tokens = rows * columns + 1  # the patches and the class token
    patch_weights = channels * patch * patch * embed
    params = patch_weights + embed + embed + tokens * embed  # patch conv and bias, class token, positions
    flops = patch_weights * rows * columns
    for block in transformer.blocks:
        attention = block.heads * head_dim
        hidden = transformer.mlp_hidden(block)
        linears = ((embed, 3 * attention), (attention, embed), (embed, hidden), (hidden, embed))
        params += 4 * embed + sum(inputs * outputs + outputs for inputs, outputs in linears)  # + 2 layer norms
        flops += tokens * sum(inputs * outputs + outputs for inputs, outputs in linears)
        flops += 2 * tokens * tokens * attention
    classifier = embed * num_classes + num_classes
    params += 2 * embed + classifier  # final layer norm and classifier
    return Cost(params=params, flops=flops + classifier)


# ---------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------

VIT_TEMPLATE = string.Template('''\
"""AutoFormer-style vision transformer $arch

A strided-convolution patch embedding, a learnable class token and position embedding, $depth pre-norm
transformer blocks, a layer norm on the class token and a linear classifier.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

EMBED_DIM = $embed_dim
HEAD_DIM = $head_dim  # the query, key and value width of each head (AutoFormer's Q-K-V dimension)
PATCHES_PER_SIDE = $patches_per_side  # the shorter image side is cut into at most this many patches
# One (heads, MLP hidden width) pair per block; the hidden width is int(mlp_ratio * EMBED_DIM).
BLOCKS = [
$blocks
]


def patch_grid(height, width):
    """(patch size, rows, columns): square patches of ceil(min(height, width) / PATCHES_PER_SIDE)
    pixels; a side that is not a multiple of the patch size is zero-padded at the bottom or right."""
    patch = math.ceil(min(height, width) / PATCHES_PER_SIDE)
    return patch, math.ceil(height / patch), math.ceil(width / patch)


class Attention(nn.Module):
    """Multi-head self-attention; queries, keys and values are heads * head_dim wide."""

    def __init__(self, embed_dim, heads, head_dim):
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        self.qkv = nn.Linear(embed_dim, 3 * heads * head_dim)
        self.projection = nn.Linear(heads * head_dim, embed_dim)

    def forward(self, x):
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (batch, heads, tokens, head_dim)
        scores = query @ key.transpose(-2, -1) / math.sqrt(self.head_dim)  # (batch, heads, tokens, tokens)
        x = scores.softmax(dim=-1) @ value  # (batch, heads, tokens, head_dim)
        x = x.transpose(1, 2).reshape(batch, tokens, self.heads * self.head_dim)
        return self.projection(x)  # (batch, tokens, embed_dim)


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + mlp(norm(x)), the MLP with GELU."""

    def __init__(self, embed_dim, heads, head_dim, hidden):
        super().__init__()
        self.attention_norm = nn.LayerNorm(embed_dim)
        self.attention = Attention(embed_dim, heads, head_dim)
        self.mlp_norm = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, hidden), nn.GELU(), nn.Linear(hidden, embed_dim))

    def forward(self, x):
        x = x + self.attention(self.attention_norm(x))  # (batch, tokens, embed_dim)
        return x + self.mlp(self.mlp_norm(x))  # (batch, tokens, embed_dim)


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        channels, height, width = in_shape
        patch, rows, columns = patch_grid(height, width)
        self.padding = (0, columns * patch - width, 0, rows * patch - height)  # left, right, top, bottom
        self.patch_embedding = nn.Conv2d(channels, EMBED_DIM, patch, stride=patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, EMBED_DIM))
        self.position_embedding = nn.Parameter(torch.zeros(1, rows * columns + 1, EMBED_DIM))
        nn.init.trunc_normal_(self.class_token, std=0.02)
        nn.init.trunc_normal_(self.position_embedding, std=0.02)
        self.blocks = nn.Sequential(*(Block(EMBED_DIM, heads, HEAD_DIM, hidden) for heads, hidden in BLOCKS))
        self.norm = nn.LayerNorm(EMBED_DIM)
        self.classifier = nn.Linear(EMBED_DIM, num_classes)

    def forward(self, x):
        x = F.pad(x, self.padding)  # (batch, channels, rows * patch, columns * patch)
        x = self.patch_embedding(x)  # (batch, EMBED_DIM, rows, columns)
        x = x.flatten(2).transpose(1, 2)  # (batch, rows * columns, EMBED_DIM)
        x = torch.cat([self.class_token.expand(len(x), -1, -1), x], dim=1)  # (batch, tokens, EMBED_DIM)
        x = self.blocks(x + self.position_embedding)  # (batch, tokens, EMBED_DIM)
        x = self.norm(x[:, 0])  # (batch, EMBED_DIM): the class token
        return self.classifier(x)  # (batch, num_classes)
''')


def render_network(transformer: Transformer, head_dim: int, patches_per_side: int) -> str:
    """Python source of the network (the patch grid is computed from `in_shape` when it is built)."""
    blocks = "\n".join(
        f"    ({block.heads}, {transformer.mlp_hidden(block)}),  # {block}" for block in transformer.blocks
    )
    return VIT_TEMPLATE.substitute(
        arch=to_string(transformer),
        depth=transformer.depth,
        embed_dim=transformer.embed_dim,
        head_dim=head_dim,
        patches_per_side=patches_per_side,
        blocks=blocks,
    )


# ---------------------------------------------------------------------------------------------------
# The space
# ---------------------------------------------------------------------------------------------------


def bands(values: Sequence[int], count: int) -> list[tuple[int, ...]]:
    """`values` (sorted) cut into min(count, len(values)) contiguous bands whose sizes differ by at most
    one, the larger bands first: (2, 3, 4, 5, 6, 7) in 3 is (2, 3), (4, 5), (6, 7)."""
    count = min(count, len(values))
    size, larger = divmod(len(values), count)
    result: list[tuple[int, ...]] = []
    start = 0
    for index in range(count):
        end = start + size + (index < larger)
        result.append(tuple(values[start:end]))
        start = end
    return result


def _band_index(band_list: Sequence[tuple[int, ...]], value: int) -> int:
    """The band that holds `value`, or the band whose range it falls into (the last one above all)."""
    for index, band in enumerate(band_list):
        if value <= band[-1]:
            return index
    return len(band_list) - 1


def _band_name(label: str, band: tuple[int, ...]) -> str:
    return f"{label} {band[0]}" if len(band) == 1 else f"{label} {band[0]}-{band[-1]}"


def _choices(prefix: str, values: Sequence[float]) -> str:
    return ", ".join(f"{prefix}{format_ratio(value)}" for value in values)


def _depth_choices(depths: Sequence[int]) -> str:
    contiguous = len(depths) > 2 and list(depths) == list(range(depths[0], depths[-1] + 1))
    return f"{depths[0]} to {depths[-1]}" if contiguous else ", ".join(str(depth) for depth in depths)


def _sorted_options(name: str, values: Sequence[float]) -> tuple[float, ...]:
    if not values or any(value <= 0 for value in values):
        raise ValueError(f"{name} must be a non-empty list of positive numbers, got {list(values)}")
    return tuple(sorted(set(values)))


def _sorted_integers(name: str, values: Sequence[int]) -> tuple[int, ...]:
    if any(int(value) != value for value in values):
        raise ValueError(f"{name} must be whole numbers, got {list(values)}")
    return tuple(int(value) for value in _sorted_options(name, values))


def _other(rng: random.Random, options: Sequence[float], current: float) -> float | None:
    """A random option other than `current`, or None when there is none."""
    others = [option for option in options if option != current]
    return rng.choice(others) if others else None


def _replace_block(transformer: Transformer, index: int, block: Block) -> Transformer:
    return Transformer(transformer.embed_dim, (*transformer.blocks[:index], block, *transformer.blocks[index + 1 :]))


@spaces.register("vit")
class ViTSpace(SearchSpace):
    """AutoFormer-style ViT space (see the module docstring for the format and the decisions).

    Options, the grid: `embed_dims`, `depths` (allowed numbers of blocks), `mlp_ratios` and
    `head_counts` (each block's choices), `head_dim` (the Q-K-V width of one head) and
    `patches_per_side` (patch size = ceil(min(H, W) / patches_per_side)). AutoFormer-Tiny's own grid is
    `ViTSpace(embed_dims=(192, 216, 240), depths=(12, 13, 14), mlp_ratios=(3.5, 4), head_counts=(3, 4),
    head_dim=64)`. There is no accuracy table for this space: accuracy comes from training or a proxy.
    """

    name = "vit"

    def __init__(
        self,
        embed_dims: Sequence[int] = (64, 96, 128, 192),
        depths: Sequence[int] = (2, 3, 4, 5, 6, 7),
        mlp_ratios: Sequence[float] = (2, 3, 4),
        head_counts: Sequence[int] = (2, 4, 6),
        head_dim: int = 32,
        patches_per_side: int = 8,
    ) -> None:
        if head_dim < 1 or patches_per_side < 1:
            raise ValueError("head_dim and patches_per_side must be positive")
        self.embed_dims = _sorted_integers("embed_dims", embed_dims)
        self.depths = _sorted_integers("depths", depths)
        self.mlp_ratios = _sorted_options("mlp_ratios", [float(ratio) for ratio in mlp_ratios])
        self.head_counts = _sorted_integers("head_counts", head_counts)
        self.head_dim = head_dim
        self.patches_per_side = patches_per_side
        self._embed_bands = bands(self.embed_dims, EMBED_BANDS)
        self._depth_bands = bands(self.depths, DEPTH_BANDS)

    # -- validity ------------------------------------------------------------------------------------

    def _grid_error(self, transformer: Transformer) -> str | None:
        """The first choice of `transformer` that is not on the grid, or None."""
        if transformer.embed_dim not in self.embed_dims:
            return (
                f"embedding dimension E{transformer.embed_dim} is not offered; "
                f"choose one of {_choices('E', self.embed_dims)}"
            )
        if transformer.depth not in self.depths:
            return (
                f"the network has {transformer.depth} block{'s' * (transformer.depth != 1)}, but the depth "
                f"must be {_depth_choices(self.depths)} (write one |M<mlp ratio>H<heads> per block)"
            )
        for number, block in enumerate(transformer.blocks, start=1):
            if block.mlp_ratio not in self.mlp_ratios:
                return (
                    f"block {number} {block}: MLP ratio {format_ratio(block.mlp_ratio)} is not offered; "
                    f"choose one of {_choices('M', self.mlp_ratios)}"
                )
            if block.heads not in self.head_counts:
                return (
                    f"block {number} {block}: {block.heads} heads are not offered; "
                    f"choose one of {_choices('H', self.head_counts)}"
                )
        return None

    def _well_formed(self, arch: str) -> Transformer:
        """The parsed architecture, on the grid; raises ArchitectureFormatError."""
        transformer = parse(arch)
        error = self._grid_error(transformer)
        if error is not None:
            raise ArchitectureFormatError(error)
        return transformer

    def validate(self, arch: str) -> str | None:
        try:
            self._well_formed(arch)
        except ArchitectureFormatError as error:
            return str(error)
        return None

    def canonical(self, arch: str) -> str:
        """Formatting only: whitespace removed, numbers written plainly (`M4.0` is `M4`)."""
        try:
            return to_string(parse(arch))
        except ArchitectureFormatError:
            return "".join(arch.split())

    # -- generation ----------------------------------------------------------------------------------

    def _random_block(self, rng: random.Random) -> Block:
        return Block(rng.choice(self.mlp_ratios), rng.choice(self.head_counts))

    def sample(self, rng: random.Random) -> str:
        """Uniform over the grid's choices: embedding dimension, depth, then each block's ratio and heads."""
        embed = rng.choice(self.embed_dims)
        depth = rng.choice(self.depths)
        return to_string(Transformer(embed, tuple(self._random_block(rng) for _ in range(depth))))

    def _mutate_embed(self, transformer: Transformer, rng: random.Random) -> Transformer | None:
        """Another embedding dimension."""
        embed = _other(rng, self.embed_dims, transformer.embed_dim)
        return None if embed is None else Transformer(int(embed), transformer.blocks)

    def _mutate_depth(self, transformer: Transformer, rng: random.Random) -> Transformer | None:
        """The next smaller or larger allowed depth: random blocks inserted, or random blocks removed."""
        position = self.depths.index(transformer.depth)
        neighbours = [self.depths[index] for index in (position - 1, position + 1) if 0 <= index < len(self.depths)]
        if not neighbours:
            return None
        target = rng.choice(neighbours)
        blocks = list(transformer.blocks)
        while len(blocks) < target:
            blocks.insert(rng.randint(0, len(blocks)), self._random_block(rng))
        while len(blocks) > target:
            blocks.pop(rng.randrange(len(blocks)))
        return Transformer(transformer.embed_dim, tuple(blocks))

    def _mutate_ratio(self, transformer: Transformer, rng: random.Random) -> Transformer | None:
        """Another MLP ratio for one block."""
        index = rng.randrange(transformer.depth)
        block = transformer.blocks[index]
        ratio = _other(rng, self.mlp_ratios, block.mlp_ratio)
        return None if ratio is None else _replace_block(transformer, index, Block(ratio, block.heads))

    def _mutate_heads(self, transformer: Transformer, rng: random.Random) -> Transformer | None:
        """Another head count for one block."""
        index = rng.randrange(transformer.depth)
        block = transformer.blocks[index]
        heads = _other(rng, self.head_counts, block.heads)
        return None if heads is None else _replace_block(transformer, index, Block(block.mlp_ratio, int(heads)))

    def mutate(self, arch: str, rng: random.Random) -> str:
        """One choice changed, the kind drawn uniformly among those the grid allows: the embedding
        dimension, the depth (a block added or removed), or one block's MLP ratio or head count."""
        transformer = self._well_formed(arch)
        mutations = [self._mutate_embed, self._mutate_depth, self._mutate_ratio, self._mutate_heads]
        rng.shuffle(mutations)
        for mutation in mutations:
            changed = mutation(transformer, rng)
            if changed is not None:
                return to_string(changed)
        raise ValueError("the grid holds a single architecture: there is nothing to mutate")

    def crossover(self, first: str, second: str, rng: random.Random) -> str:
        """The embedding dimension and the depth each from either parent; block i from either parent
        that has one (uniformly), so the child is on the grid whenever its parents are."""
        parents = (self._well_formed(first), self._well_formed(second))
        embed = rng.choice(parents).embed_dim
        depth = rng.choice(parents).depth
        blocks = tuple(
            rng.choice([parent.blocks[index] for parent in parents if index < parent.depth]) for index in range(depth)
        )
        return to_string(Transformer(embed, blocks))

    # -- rendering, cost and description -------------------------------------------------------------

    # Render and cost take off-grid points too (like an over-budget point, on purpose); a malformed
    # string raises ArchitectureFormatError, a ValueError whose message is the `validate` message.

    def render(self, arch: str, in_shape: tuple[int, int, int], num_classes: int) -> str:
        return render_network(parse(arch), self.head_dim, self.patches_per_side)

    def cost(self, arch: str, in_shape: tuple[int, int, int], num_classes: int) -> Cost:
        return network_cost(parse(arch), self.head_dim, self.patches_per_side, in_shape, num_classes)

    def niches(self) -> tuple[str, ...]:
        return tuple(
            f"{_band_name('embed', embed_band)}, {_band_name('depth', depth_band)}"
            for embed_band in self._embed_bands
            for depth_band in self._depth_bands
        )

    def niche(self, arch: str) -> str:
        transformer = parse(arch)
        embed_index = _band_index(self._embed_bands, transformer.embed_dim)
        depth_index = _band_index(self._depth_bands, transformer.depth)
        return self.niches()[embed_index * len(self._depth_bands) + depth_index]

    def architecture_pattern(self) -> str:
        def alternatives(values: Sequence[float]) -> str:
            return "(" + "|".join(re.escape(format_ratio(value)) for value in values) + ")"

        block = rf"\|M{alternatives(self.mlp_ratios)}H{alternatives(self.head_counts)}"
        return f"^E{alternatives(self.embed_dims)}({block}){{{self.depths[0]},{self.depths[-1]}}}$"

    def example(self) -> str:
        """A fixed architecture of this grid: the middle embedding dimension and depth, blocks cycling
        through the MLP ratios (largest first) and head counts (smallest first)."""
        ratios, heads = self.mlp_ratios[::-1], self.head_counts
        blocks = tuple(
            Block(ratios[index % len(ratios)], heads[index % len(heads)])
            for index in range(self.depths[len(self.depths) // 2])
        )
        return to_string(Transformer(self.embed_dims[len(self.embed_dims) // 2], blocks))

    def describe(self) -> str:
        attention = f"H heads of {self.head_dim} dimensions each"
        return (
            "Vision transformer space (AutoFormer style). The image is cut into square patches "
            f"(ceil(min(H, W) / {self.patches_per_side}) pixels a side, zero padding at the bottom/right), a "
            "strided convolution embeds each patch into E channels, a learnable class token and a learnable "
            "position embedding are added, the transformer blocks run in order, and the class token goes "
            "through a layer norm and a linear classifier.\n"
            "Every block is pre-norm: x + Attention(LayerNorm(x)), then x + MLP(LayerNorm(x)). Attention has "
            f"{attention} (queries, keys and values are H*{self.head_dim} wide, projected back to E); the "
            "MLP is Linear(E, int(M*E)), GELU, Linear(int(M*E), E).\n"
            "Format: E<embedding dim>, then one |M<mlp ratio>H<heads> per block; the number of blocks is "
            "the depth, and every block chooses its own M and H.\n"
            f"Example: {self.example()}\n"
            f"Rules: E is one of {_choices('', self.embed_dims)}; the depth is {_depth_choices(self.depths)}; "
            f"M is one of {_choices('', self.mlp_ratios)}; H is one of {_choices('', self.head_counts)}. "
            "Wider E, more blocks, larger M and more heads all add parameters and compute."
        )
