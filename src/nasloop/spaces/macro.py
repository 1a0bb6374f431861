"""The macro block space of Zen-NAS and RZ-NAS: a network is a string of parameterised blocks.

    SuperConvK3BNRELU(3,32,1,1)SuperResK3K3(32,64,2,32,1)SuperResK1K5K1(64,128,2,32,2)SuperConvK1BNRELU(128,256,1,1)

Block families and arguments (Zen-NAS's meaning of the arguments; the exact modules are `MACRO_BLOCKS`):

- `SuperConvK{1,3,5,7}BNRELU(in, out, stride, sub_layers)`: `sub_layers` times a k x k convolution,
  batch norm and ReLU; the first convolution maps `in` to `out` channels and applies the stride.
- `SuperResK{3,5,7}K{3,5,7}(in, out, stride, bottleneck, sub_layers)`: `sub_layers` residual units,
  each a k1 x k1 convolution to `bottleneck` channels, BN, ReLU, a k2 x k2 convolution to `out`, BN,
  plus the shortcut, then ReLU.
- `SuperResK1K{3,5,7}K1(in, out, stride, bottleneck, sub_layers)`: every sub-layer is two bottleneck
  units, each 1x1 to `bottleneck`, k x k, 1x1 to `out` (BN after each convolution, ReLU between),
  plus the shortcut, then ReLU.
- `SuperResIDWE{1,2,4,6}K{3,5,7}(in, out, stride, bottleneck, sub_layers)`: every sub-layer is two
  inverted-residual units with expansion E: 1x1 expansion, depthwise k x k, 1x1 projection (BN after
  each, ReLU after the first two), plus the shortcut, then ReLU. The first unit projects to `bottleneck`
  channels through round8(E * bottleneck) expanded channels, the second to `out` through
  round8(E * out).

In every block only the first unit applies the stride. A shortcut is the identity when the unit keeps
the shape and otherwise a strided 1x1 convolution with BN (Zen-NAS always projects in a block's first
unit, with a biased convolution; nasloop projects only when the shape changes, so that a block split
in two computes exactly what the unsplit block computes, which `canonical` relies on).

Decisions, each documented where it applies:
- The first block's `in` is the image's channel count, written 3 (or 1); rendering substitutes the
  dataset's channel count, and the canonical form writes 3.
- Layers are counted as Zen-NAS counts them: the sum of the blocks' `sub_layers` (default budget 18).
- Rendering adds global average pooling and a linear classifier and nothing else: the final 1x1
  convolution that widens the features is part of the string (Zen-NAS networks end with a
  `SuperConvK1BNRELU`), so the search decides it.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nasloop.registry import spaces
from nasloop.spaces.base import Cost, SearchSpace

CONV, RESIDUAL, BOTTLENECK, INVERTED = "conv", "residual", "bottleneck", "inverted"
KINDS = (CONV, RESIDUAL, BOTTLENECK, INVERTED)
CONV_KERNELS = (1, 3, 5, 7)
RESIDUAL_KERNELS = (3, 5, 7)
EXPANSIONS = (1, 2, 4, 6)
CHANNEL_MULTIPLE = 8
MAX_CHANNELS = 2048
IMAGE_CHANNELS = (1, 3)
FAMILIES = (
    "SuperConvK{1,3,5,7}BNRELU(in,out,stride,sub_layers)",
    "SuperResK{3,5,7}K{3,5,7}(in,out,stride,bottleneck,sub_layers)",
    "SuperResK1K{3,5,7}K1(in,out,stride,bottleneck,sub_layers)",
    "SuperResIDWE{1,2,4,6}K{3,5,7}(in,out,stride,bottleneck,sub_layers)",
)
EXAMPLE = (
    "SuperConvK3BNRELU(3,32,1,1)SuperResK3K3(32,64,2,32,1)SuperResK1K5K1(64,128,2,32,2)SuperConvK1BNRELU(128,256,1,1)"
)


class ArchitectureFormatError(ValueError):
    """A string that is not a well-formed macro architecture; the message says how to fix it."""


def round_channels(value: float) -> int:
    """The nearest multiple of 8, at least 8 (how expanded widths are rounded)."""
    return max(CHANNEL_MULTIPLE, int(value / CHANNEL_MULTIPLE + 0.5) * CHANNEL_MULTIPLE)


@dataclass(frozen=True)
class Block:
    """One block of the string. `kernel_sizes` has two entries for RESIDUAL blocks and one otherwise;
    `bottleneck_channels` is 0 for CONV blocks and `expansion` is 0 except for INVERTED blocks."""

    kind: str
    kernel_sizes: tuple[int, ...]
    in_channels: int
    out_channels: int
    stride: int
    sub_layers: int
    bottleneck_channels: int = 0
    expansion: int = 0

    @property
    def type_name(self) -> str:
        """The block's name in the string, e.g. `SuperResK1K5K1`."""
        if self.kind == CONV:
            return f"SuperConvK{self.kernel_sizes[0]}BNRELU"
        if self.kind == RESIDUAL:
            return f"SuperResK{self.kernel_sizes[0]}K{self.kernel_sizes[1]}"
        if self.kind == BOTTLENECK:
            return f"SuperResK1K{self.kernel_sizes[0]}K1"
        return f"SuperResIDWE{self.expansion}K{self.kernel_sizes[0]}"

    def arguments(self) -> tuple[int, ...]:
        """The numbers between the parentheses, in string order."""
        head = (self.in_channels, self.out_channels, self.stride)
        if self.kind == CONV:
            return (*head, self.sub_layers)
        return (*head, self.bottleneck_channels, self.sub_layers)

    def __str__(self) -> str:
        return f"{self.type_name}({','.join(str(number) for number in self.arguments())})"


def to_string(blocks: Sequence[Block]) -> str:
    """The architecture string of a block list."""
    return "".join(str(block) for block in blocks)


# ---------------------------------------------------------------------------------------------------
# Parsing and rules
# ---------------------------------------------------------------------------------------------------

_BLOCK_TEXT = re.compile(r"([A-Za-z][A-Za-z0-9]*)\(([^()]*)\)")
_TYPE_PATTERNS = (
    (CONV, re.compile(r"SuperConvK(\d+)BNRELU")),
    (BOTTLENECK, re.compile(r"SuperResK1K(\d+)K1")),
    (RESIDUAL, re.compile(r"SuperResK(\d+)K(\d+)")),
    (INVERTED, re.compile(r"SuperResIDWE(\d+)K(\d+)")),
)


def parse(arch: str) -> list[Block]:
    """The blocks of `arch`; whitespace is ignored. Raises ArchitectureFormatError."""
    text = "".join(arch.split())
    if not text:
        raise ArchitectureFormatError(f"the architecture is empty; example: {EXAMPLE}")
    blocks: list[Block] = []
    position = 0
    while position < len(text):
        match = _BLOCK_TEXT.match(text, position)
        if match is None:
            raise ArchitectureFormatError(
                f"cannot read a block at character {position} ({text[position : position + 40]!r}); "
                f"write blocks as Name(number,...) one after the other, e.g. {EXAMPLE}"
            )
        blocks.append(_parse_block(len(blocks) + 1, match.group(0), match.group(1), match.group(2)))
        position = match.end()
    return blocks


def _parse_block(number: int, text: str, type_name: str, argument_text: str) -> Block:
    where = f"block {number} {text!r}"
    kind, kernel_sizes, expansion = _parse_type(where, type_name)
    fields = argument_text.split(",")
    if not all(field.isdigit() for field in fields):
        raise ArchitectureFormatError(f"{where}: the arguments must be whole numbers separated by commas")
    numbers = [int(field) for field in fields]
    expected = 4 if kind == CONV else 5
    if len(numbers) != expected:
        names = "in,out,stride,sub_layers" if kind == CONV else "in,out,stride,bottleneck,sub_layers"
        raise ArchitectureFormatError(f"{where}: {type_name} takes {expected} arguments ({names}), got {len(numbers)}")
    if kind == CONV:
        in_channels, out_channels, stride, sub_layers = numbers
        return Block(kind, kernel_sizes, in_channels, out_channels, stride, sub_layers)
    in_channels, out_channels, stride, bottleneck, sub_layers = numbers
    return Block(kind, kernel_sizes, in_channels, out_channels, stride, sub_layers, bottleneck, expansion)


def _parse_type(where: str, type_name: str) -> tuple[str, tuple[int, ...], int]:
    """(kind, kernel sizes, expansion) of a block name."""
    for kind, pattern in _TYPE_PATTERNS:
        match = pattern.fullmatch(type_name)
        if match is None:
            continue
        values = tuple(int(group) for group in match.groups())
        if kind == CONV and values[0] in CONV_KERNELS:
            return kind, values, 0
        if kind in (RESIDUAL, BOTTLENECK) and all(value in RESIDUAL_KERNELS for value in values):
            return kind, values, 0
        if kind == INVERTED and values[0] in EXPANSIONS and values[1] in RESIDUAL_KERNELS:
            return kind, values[1:], values[0]
        break
    raise ArchitectureFormatError(f"{where}: unknown block {type_name!r}; the families are {'; '.join(FAMILIES)}")


def structure_error(blocks: Sequence[Block], max_layers: int | None) -> str | None:
    """The first broken construction rule (channels, strides, depth, layer budget), or None."""
    first = blocks[0]
    if first.in_channels not in IMAGE_CHANNELS:
        return (
            f"block 1 {first}: its in_channels is the image's channel count; write 3 (or 1 for "
            "grayscale), nasloop connects it to the dataset's channels"
        )
    for number, block in enumerate(blocks, start=1):
        error = _block_error(block)
        if error is not None:
            return f"block {number} {block}: {error}"
        if number > 1 and block.in_channels != blocks[number - 2].out_channels:
            return (
                f"block {number} {block}: its in_channels ({block.in_channels}) must equal the out_channels "
                f"of block {number - 1} ({blocks[number - 2].out_channels})"
            )
    layers = count_layers(blocks)
    if max_layers is not None and layers > max_layers:
        return f"the network has {layers} layers (the sum of sub_layers), over the budget of {max_layers}"
    return None


def _block_error(block: Block) -> str | None:
    if block.stride not in (1, 2):
        return f"stride must be 1 or 2, got {block.stride}"
    if block.sub_layers < 1:
        return "sub_layers must be at least 1"
    widths = [("out_channels", block.out_channels)]
    if block.kind != CONV:
        widths.append(("bottleneck", block.bottleneck_channels))
    for label, channels in widths:
        if channels % CHANNEL_MULTIPLE or not CHANNEL_MULTIPLE <= channels <= MAX_CHANNELS:
            return f"{label} must be a multiple of {CHANNEL_MULTIPLE} between 8 and {MAX_CHANNELS}, got {channels}"
    return None


def count_layers(blocks: Sequence[Block]) -> int:
    """Layers as Zen-NAS counts them: the sum of the blocks' sub_layers."""
    return sum(block.sub_layers for block in blocks)


# ---------------------------------------------------------------------------------------------------
# Equivalence and cost
# ---------------------------------------------------------------------------------------------------


def merge_repeats(blocks: Sequence[Block]) -> list[Block]:
    """Merge a block into its predecessor when it just continues it (same type and bottleneck, stride 1,
    shape kept): `SuperResK3K3(32,64,2,16,1)SuperResK3K3(64,64,1,16,2)` is `SuperResK3K3(32,64,2,16,3)`,
    because every unit after a block's first is exactly such a continuation."""
    merged: list[Block] = [blocks[0]]
    for block in blocks[1:]:
        previous = merged[-1]
        continues = (
            block.type_name == previous.type_name
            and block.stride == 1
            and block.in_channels == block.out_channels == previous.out_channels
            and block.bottleneck_channels == previous.bottleneck_channels
        )
        if continues:
            merged[-1] = dataclasses.replace(previous, sub_layers=previous.sub_layers + block.sub_layers)
        else:
            merged.append(block)
    return merged


@dataclass(frozen=True)
class _Conv:
    """One convolution (no bias) followed by batch norm, as the rendered blocks build them."""

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    groups: int = 1


_Unit = tuple[list[_Conv], _Conv | None]
"""A unit's body convolutions in order and its shortcut convolution (None: identity, or no shortcut)."""


def _units(block: Block) -> list[_Unit]:
    """The convolutions of a block, unit by unit, mirroring the functions of `MACRO_BLOCKS`."""
    units: list[_Unit] = []
    unit_in = block.in_channels
    for index in range(block.sub_layers):
        stride = block.stride if index == 0 else 1
        if block.kind == CONV:
            units.append(([_Conv(unit_in, block.out_channels, block.kernel_sizes[0], stride)], None))
        else:
            units.extend(_residual_unit(body) for body in _sub_layer_bodies(block, unit_in, stride))
        unit_in = block.out_channels
    return units


def _residual_unit(body: list[_Conv]) -> _Unit:
    """A residual body with its shortcut: none when the body keeps the shape, else a strided 1x1 conv."""
    source, target = body[0].in_channels, body[-1].out_channels
    stride = max(conv.stride for conv in body)
    return body, None if stride == 1 and source == target else _Conv(source, target, 1, stride)


def _sub_layer_bodies(block: Block, unit_in: int, stride: int) -> list[list[_Conv]]:
    """The residual bodies of one sub-layer of a RESIDUAL, BOTTLENECK or INVERTED block."""
    out, bottleneck, kernel = block.out_channels, block.bottleneck_channels, block.kernel_sizes[0]
    if block.kind == RESIDUAL:
        return [[_Conv(unit_in, bottleneck, kernel, stride), _Conv(bottleneck, out, block.kernel_sizes[1])]]
    if block.kind == BOTTLENECK:
        return [
            [
                _Conv(source, bottleneck, 1),
                _Conv(bottleneck, bottleneck, kernel, unit_stride),
                _Conv(bottleneck, out, 1),
            ]
            for source, unit_stride in ((unit_in, stride), (out, 1))
        ]
    bodies: list[list[_Conv]] = []
    for source, target, unit_stride in ((unit_in, bottleneck, stride), (bottleneck, out, 1)):
        expanded = round_channels(block.expansion * target)
        depthwise = _Conv(expanded, expanded, kernel, unit_stride, groups=expanded)
        bodies.append([_Conv(source, expanded, 1), depthwise, _Conv(expanded, target, 1)])
    return bodies


def _conv_cost(conv: _Conv, pixels: int) -> tuple[int, int]:
    """(parameters, FLOPs) of a convolution and its batch norm at `pixels` output positions."""
    weights = conv.kernel_size**2 * (conv.in_channels // conv.groups) * conv.out_channels
    return weights + 2 * conv.out_channels, weights * pixels


def network_cost(blocks: Sequence[Block], in_shape: tuple[int, int, int], num_classes: int) -> Cost:
    """Parameters and FLOPs (base.Cost conventions) of the rendered network, without building it."""
    in_channels, height, width = in_shape
    blocks = [dataclasses.replace(blocks[0], in_channels=in_channels), *blocks[1:]]
    params = flops = 0
    for block in blocks:
        for body, shortcut in _units(block):
            for conv in body:
                height, width = math.ceil(height / conv.stride), math.ceil(width / conv.stride)
                conv_params, conv_flops = _conv_cost(conv, height * width)
                params, flops = params + conv_params, flops + conv_flops
            if shortcut is not None:  # strided like the body, so it ends at the body's output size
                conv_params, conv_flops = _conv_cost(shortcut, height * width)
                params, flops = params + conv_params, flops + conv_flops
    last = blocks[-1].out_channels
    classifier = last * num_classes + num_classes
    return Cost(params=params + classifier, flops=flops + classifier)


# ---------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------

MACRO_BLOCKS = '''\
def conv_bn(in_channels, out_channels, kernel_size, stride=1, groups=1):
    """A k x k convolution with 'same' padding and no bias, then batch normalisation."""
    return nn.Sequential(
        nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
            groups=groups, bias=False,
        ),
        nn.BatchNorm2d(out_channels),
    )


class ResidualUnit(nn.Module):
    """relu(body(x) + shortcut(x)); the shortcut is the identity when the unit keeps the shape, else a
    strided 1x1 convolution with batch normalisation."""

    def __init__(self, body, in_channels, out_channels, stride):
        super().__init__()
        self.body = body
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = conv_bn(in_channels, out_channels, 1, stride)

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


def super_conv(in_channels, out_channels, stride, sub_layers, kernel_size):
    """SuperConvK{k}BNRELU: sub_layers x (k x k conv, BN, ReLU); the first maps in to out with the stride."""
    layers = []
    for index in range(sub_layers):
        source = in_channels if index == 0 else out_channels
        layers += [conv_bn(source, out_channels, kernel_size, stride if index == 0 else 1), nn.ReLU()]
    return nn.Sequential(*layers)


def super_res(in_channels, out_channels, stride, bottleneck, sub_layers, kernel_sizes):
    """SuperResK{a}K{b}: sub_layers residual units of (a x a conv to bottleneck, BN, ReLU,
    b x b conv to out, BN); the first unit applies the stride."""
    units = []
    for index in range(sub_layers):
        source = in_channels if index == 0 else out_channels
        unit_stride = stride if index == 0 else 1
        body = nn.Sequential(
            conv_bn(source, bottleneck, kernel_sizes[0], unit_stride),
            nn.ReLU(),
            conv_bn(bottleneck, out_channels, kernel_sizes[1]),
        )
        units.append(ResidualUnit(body, source, out_channels, unit_stride))
    return nn.Sequential(*units)


def super_res_bottleneck(in_channels, out_channels, stride, bottleneck, sub_layers, kernel_size):
    """SuperResK1K{k}K1: each sub-layer is two units of (1x1 conv to bottleneck, BN, ReLU, k x k conv,
    BN, ReLU, 1x1 conv to out, BN); only the block's first unit applies the stride."""
    units = []
    for index in range(2 * sub_layers):
        source = in_channels if index == 0 else out_channels
        unit_stride = stride if index == 0 else 1
        body = nn.Sequential(
            conv_bn(source, bottleneck, 1),
            nn.ReLU(),
            conv_bn(bottleneck, bottleneck, kernel_size, unit_stride),
            nn.ReLU(),
            conv_bn(bottleneck, out_channels, 1),
        )
        units.append(ResidualUnit(body, source, out_channels, unit_stride))
    return nn.Sequential(*units)


def round_channels(value):
    """The nearest multiple of 8, at least 8."""
    return max(8, int(value / 8 + 0.5) * 8)


def inverted_unit(in_channels, out_channels, expansion, kernel_size, stride):
    """1x1 expansion to round8(expansion * out), BN, ReLU, depthwise k x k, BN, ReLU, 1x1 to out, BN."""
    expanded = round_channels(expansion * out_channels)
    body = nn.Sequential(
        conv_bn(in_channels, expanded, 1),
        nn.ReLU(),
        conv_bn(expanded, expanded, kernel_size, stride, groups=expanded),
        nn.ReLU(),
        conv_bn(expanded, out_channels, 1),
    )
    return ResidualUnit(body, in_channels, out_channels, stride)


def super_res_inverted(in_channels, out_channels, stride, bottleneck, sub_layers, kernel_size, expansion):
    """SuperResIDWE{e}K{k}: each sub-layer is an inverted-residual unit to bottleneck channels, then
    one back to out channels; only the block's first unit applies the stride."""
    units = []
    source = in_channels
    for index in range(sub_layers):
        units.append(inverted_unit(source, bottleneck, expansion, kernel_size, stride if index == 0 else 1))
        units.append(inverted_unit(bottleneck, out_channels, expansion, kernel_size, 1))
        source = out_channels
    return nn.Sequential(*units)
'''

MACRO_TEMPLATE = string.Template('''\
"""Macro block network for $arch

Blocks as listed, then global average pooling and a linear classifier.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


$blocks

class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.blocks = nn.Sequential(
$calls
        )
        self.classifier = nn.Linear($last_channels, num_classes)

    def forward(self, x):
        x = self.blocks(x)  # (batch, $last_channels, height / $reduction, width / $reduction), sizes rounded up
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (batch, $last_channels)
        return self.classifier(x)  # (batch, num_classes)
''')


def _block_call(block: Block, in_channels: str) -> str:
    """The constructor call of one block in the rendered module."""
    head = f"{in_channels}, {block.out_channels}, {block.stride}"
    kernel = block.kernel_sizes[0]
    if block.kind == CONV:
        return f"super_conv({head}, {block.sub_layers}, kernel_size={kernel})"
    tail = f"{block.bottleneck_channels}, {block.sub_layers}"
    if block.kind == RESIDUAL:
        return f"super_res({head}, {tail}, kernel_sizes=({kernel}, {block.kernel_sizes[1]}))"
    if block.kind == BOTTLENECK:
        return f"super_res_bottleneck({head}, {tail}, kernel_size={kernel})"
    return f"super_res_inverted({head}, {tail}, kernel_size={kernel}, expansion={block.expansion})"


def render_network(blocks: Sequence[Block]) -> str:
    """Python source of the network; the first block reads the image channels from `in_shape`."""
    calls = "\n".join(
        f"            {_block_call(block, 'in_shape[0]' if index == 0 else str(block.in_channels))},  # {block}"
        for index, block in enumerate(blocks)
    )
    return MACRO_TEMPLATE.substitute(
        arch=to_string(blocks),
        blocks=MACRO_BLOCKS,
        calls=calls,
        last_channels=blocks[-1].out_channels,
        reduction=math.prod(block.stride for block in blocks),
    )


# ---------------------------------------------------------------------------------------------------
# Random generation and variation
# ---------------------------------------------------------------------------------------------------

_SAMPLE_STEM_WIDTHS = (16, 24, 32, 48, 64)
_SAMPLE_HEAD_WIDTHS = (128, 256, 512)
_SAMPLE_MAX_WIDTH = 256
_WIDTH_FACTORS = (0.5, 0.75, 1.25, 1.5, 2.0)


def reconnect(blocks: Sequence[Block]) -> list[Block]:
    """Set every block's in_channels to its predecessor's out_channels (the first block keeps its own)."""
    connected = [blocks[0]]
    for block in blocks[1:]:
        connected.append(dataclasses.replace(block, in_channels=connected[-1].out_channels))
    return connected


def random_block(rng: random.Random, in_channels: int, out_channels: int, stride: int, sub_layers: int) -> Block:
    """A block of a random family and kernel with the given shape."""
    kind = rng.choice(KINDS)
    if kind == CONV:
        return Block(CONV, (rng.choice(CONV_KERNELS),), in_channels, out_channels, stride, sub_layers)
    if kind == RESIDUAL:
        kernels: tuple[int, ...] = (rng.choice(RESIDUAL_KERNELS), rng.choice(RESIDUAL_KERNELS))
    else:
        kernels = (rng.choice(RESIDUAL_KERNELS),)
    bottleneck = round_channels(out_channels / rng.choice((1, 2, 4)))
    expansion = rng.choice(EXPANSIONS) if kind == INVERTED else 0
    return Block(kind, kernels, in_channels, out_channels, stride, sub_layers, bottleneck, expansion)


def draw_blocks(rng: random.Random, max_layers: int) -> list[Block]:
    """A random network: a 3x3 stem, 1 to 5 blocks that keep or widen the channels, a 1x1 head."""
    channels = rng.choice(_SAMPLE_STEM_WIDTHS)
    blocks = [Block(CONV, (3,), 3, channels, rng.choice((1, 2)), 1)]
    body_count = rng.randint(1, min(5, max_layers - 2))
    layers_left = max_layers - 2
    for index in range(body_count):
        sub_layers = rng.randint(1, max(1, min(3, layers_left - (body_count - index - 1))))
        layers_left -= sub_layers
        out_channels = min(_SAMPLE_MAX_WIDTH, round_channels(channels * rng.choice((1.0, 1.5, 2.0))))
        stride = rng.choice((1, 2))
        blocks.append(random_block(rng, channels, out_channels, stride, sub_layers))
        channels = out_channels
    blocks.append(Block(CONV, (1,), channels, rng.choice(_SAMPLE_HEAD_WIDTHS), 1, 1))
    return blocks


def shrink(blocks: Sequence[Block]) -> list[Block]:
    """A smaller network: every width scaled by 3/4 (rounded down to a multiple of 8, at least 8), or,
    once every width is 8, every block's sub_layers halved. Returns `blocks` unchanged at the minimum."""

    def narrower(channels: int) -> int:
        return max(CHANNEL_MULTIPLE, int(channels * 0.75) // CHANNEL_MULTIPLE * CHANNEL_MULTIPLE)

    narrowed = reconnect(
        [
            dataclasses.replace(
                block,
                out_channels=narrower(block.out_channels),
                bottleneck_channels=narrower(block.bottleneck_channels) if block.kind != CONV else 0,
            )
            for block in blocks
        ]
    )
    if narrowed != list(blocks):
        return narrowed
    return [dataclasses.replace(block, sub_layers=max(1, block.sub_layers // 2)) for block in blocks]


def _scaled_width(rng: random.Random, channels: int) -> int:
    return min(MAX_CHANNELS, round_channels(channels * rng.choice(_WIDTH_FACTORS)))


def _replace_at(blocks: Sequence[Block], index: int, block: Block) -> list[Block]:
    return reconnect([*blocks[:index], block, *blocks[index + 1 :]])


def mutate_kernel(blocks: Sequence[Block], rng: random.Random) -> list[Block] | None:
    """Change the kernel size(s) of one block."""
    index = rng.randrange(len(blocks))
    block = blocks[index]
    options = CONV_KERNELS if block.kind == CONV else RESIDUAL_KERNELS
    kernels = tuple(rng.choice(options) for _ in block.kernel_sizes)
    return _replace_at(blocks, index, dataclasses.replace(block, kernel_sizes=kernels))


def mutate_width(blocks: Sequence[Block], rng: random.Random) -> list[Block] | None:
    """Scale one block's out_channels; the next block's in_channels follows."""
    index = rng.randrange(len(blocks))
    block = blocks[index]
    return _replace_at(blocks, index, dataclasses.replace(block, out_channels=_scaled_width(rng, block.out_channels)))


def mutate_bottleneck(blocks: Sequence[Block], rng: random.Random) -> list[Block] | None:
    """Scale one residual block's bottleneck width."""
    residual = [index for index, block in enumerate(blocks) if block.kind != CONV]
    if not residual:
        return None
    index = rng.choice(residual)
    block = blocks[index]
    bottleneck = _scaled_width(rng, block.bottleneck_channels)
    return _replace_at(blocks, index, dataclasses.replace(block, bottleneck_channels=bottleneck))


def mutate_depth(blocks: Sequence[Block], rng: random.Random) -> list[Block] | None:
    """Add or remove one sub-layer of one block."""
    index = rng.randrange(len(blocks))
    block = blocks[index]
    sub_layers = max(1, block.sub_layers + rng.choice((-1, 1)))
    return _replace_at(blocks, index, dataclasses.replace(block, sub_layers=sub_layers))


def mutate_type(blocks: Sequence[Block], rng: random.Random) -> list[Block] | None:
    """Replace one block by a block of another family with the same shape and depth."""
    index = rng.randrange(len(blocks))
    block = blocks[index]
    replacement = random_block(rng, block.in_channels, block.out_channels, block.stride, block.sub_layers)
    return _replace_at(blocks, index, replacement)


def mutate_stride(blocks: Sequence[Block], rng: random.Random) -> list[Block] | None:
    """Toggle one block's stride between 1 and 2."""
    index = rng.randrange(len(blocks))
    block = blocks[index]
    return _replace_at(blocks, index, dataclasses.replace(block, stride=3 - block.stride))


def insert_block(blocks: Sequence[Block], rng: random.Random) -> list[Block] | None:
    """Insert a random shape-keeping block (stride 1, one sub-layer) after a random block."""
    index = rng.randrange(len(blocks))
    channels = blocks[index].out_channels
    new = random_block(rng, channels, channels, 1, 1)
    return reconnect([*blocks[: index + 1], new, *blocks[index + 1 :]])


def remove_block(blocks: Sequence[Block], rng: random.Random) -> list[Block] | None:
    """Remove one block other than the first; the following block takes over its input."""
    if len(blocks) < 3:
        return None
    index = rng.randrange(1, len(blocks))
    return reconnect([*blocks[:index], *blocks[index + 1 :]])


MUTATIONS: tuple[Callable[[Sequence[Block], random.Random], list[Block] | None], ...] = (
    mutate_kernel,
    mutate_width,
    mutate_bottleneck,
    mutate_depth,
    mutate_type,
    mutate_stride,
    insert_block,
    remove_block,
)
_MAX_TRIES = 64


# ---------------------------------------------------------------------------------------------------
# The space
# ---------------------------------------------------------------------------------------------------


def _millions(count: int) -> str:
    return f"{count / 1e6:g}M"


@spaces.register("macro")
class MacroSpace(SearchSpace):
    """Zen-NAS / RZ-NAS macro block space.

    Options: `max_layers` (sum of sub_layers, Zen-NAS's count; 18 as in the CIFAR experiments),
    `max_params` (1M, the RZ-NAS / Zen-NAS CIFAR budget; None for no budget) and `max_flops` (None),
    both evaluated analytically on `in_shape` and `num_classes` (the reference input, 3x32x32 and 10
    classes unless the run's dataset is given). The niches partition the parameter count into
    quarters of the budget (or of 1M without one).
    """

    name = "macro"

    def __init__(
        self,
        max_layers: int = 18,
        max_params: int | None = 1_000_000,
        max_flops: int | None = None,
        in_shape: tuple[int, int, int] = (3, 32, 32),
        num_classes: int = 10,
    ) -> None:
        if max_layers < 3:
            raise ValueError("max_layers must be at least 3 (a stem, one block and a head)")
        self.max_layers = max_layers
        self.max_params = max_params
        self.max_flops = max_flops
        self.in_shape = (int(in_shape[0]), int(in_shape[1]), int(in_shape[2]))
        self.num_classes = num_classes
        scale = max_params or 1_000_000
        self._niche_bounds = (scale // 4, scale // 2, 3 * scale // 4)

    # -- validity ------------------------------------------------------------------------------------

    def _well_formed(self, arch: str) -> list[Block]:
        """Parsed blocks that follow the construction rules; raises ArchitectureFormatError."""
        blocks = parse(arch)
        error = structure_error(blocks, self.max_layers)
        if error is not None:
            raise ArchitectureFormatError(error)
        return blocks

    def validate(self, arch: str) -> str | None:
        try:
            blocks = self._well_formed(arch)
        except ArchitectureFormatError as error:
            return str(error)
        return self._budget_error(blocks)

    def _budget_error(self, blocks: Sequence[Block]) -> str | None:
        if self.max_params is None and self.max_flops is None:
            return None
        cost = network_cost(blocks, self.in_shape, self.num_classes)
        shape = "x".join(str(size) for size in self.in_shape)
        if self.max_params is not None and cost.params > self.max_params:
            return (
                f"the network has {cost.params:,} parameters, over the budget of {self.max_params:,} "
                f"(on {shape} inputs, {self.num_classes} classes); use fewer channels or sub_layers"
            )
        if self.max_flops is not None and cost.flops > self.max_flops:
            return (
                f"the network needs {cost.flops:,} FLOPs, over the budget of {self.max_flops:,} "
                f"(on {shape} inputs); use fewer channels, smaller kernels or earlier strides"
            )
        return None

    def canonical(self, arch: str) -> str:
        """Whitespace removed, the first block's in_channels written 3, continuation blocks merged."""
        try:
            blocks = parse(arch)
        except ArchitectureFormatError:
            return "".join(arch.split())
        if structure_error(blocks, max_layers=None) is not None:
            return "".join(arch.split())
        blocks[0] = dataclasses.replace(blocks[0], in_channels=3)
        return to_string(merge_repeats(blocks))

    # -- generation ----------------------------------------------------------------------------------

    def sample(self, rng: random.Random) -> str:
        """A random network (stem, 1-5 blocks, 1x1 head), shrunk until it fits the budgets; another
        draw when even its smallest version does not fit."""
        error = None
        for _ in range(_MAX_TRIES):
            blocks = draw_blocks(rng, self.max_layers)
            while (error := self._budget_error(blocks)) is not None:
                smaller = shrink(blocks)
                if smaller == blocks:
                    break
                blocks = smaller
            if error is None:
                return self.canonical(to_string(blocks))
        raise ValueError(f"no sampled network fits the budgets; the last one: {error}")

    def mutate(self, arch: str, rng: random.Random) -> str:
        """One random change (kernel, width, bottleneck, depth, family, stride, insert or remove a block)
        that yields a different valid architecture; a fresh sample if 64 tries find none."""
        blocks = self._well_formed(arch)
        original = self.canonical(arch)
        for _ in range(_MAX_TRIES):
            changed = rng.choice(MUTATIONS)(blocks, rng)
            if changed is None:
                continue
            candidate = self.canonical(to_string(changed))
            if candidate != original and self.validate(candidate) is None:
                return candidate
        return self.sample(rng)

    def crossover(self, first: str, second: str, rng: random.Random) -> str:
        """One-point crossover: a prefix of `first` followed by a suffix of `second`, channels reconnected
        at the junction; a mutation of `first` if 64 tries find no valid child."""
        head_blocks, tail_blocks = self._well_formed(first), self._well_formed(second)
        for _ in range(_MAX_TRIES):
            cut_first = rng.randint(1, max(1, len(head_blocks) - 1))
            cut_second = rng.randrange(len(tail_blocks))
            child = reconnect([*head_blocks[:cut_first], *tail_blocks[cut_second:]])
            candidate = self.canonical(to_string(child))
            if self.validate(candidate) is None:
                return candidate
        return self.mutate(first, rng)

    # -- rendering and description -------------------------------------------------------------------

    def render(self, arch: str, in_shape: tuple[int, int, int], num_classes: int) -> str:
        return render_network(self._well_formed(arch))

    def cost(self, arch: str, in_shape: tuple[int, int, int], num_classes: int) -> Cost:
        return network_cost(self._well_formed(arch), in_shape, num_classes)

    def niches(self) -> tuple[str, ...]:
        low, middle, high = (_millions(bound) for bound in self._niche_bounds)
        return (f"params<{low}", f"params {low}-{middle}", f"params {middle}-{high}", f"params>={high}")

    def niche(self, arch: str) -> str:
        params = network_cost(self._well_formed(arch), self.in_shape, self.num_classes).params
        position = sum(params >= bound for bound in self._niche_bounds)
        return self.niches()[position]

    def architecture_pattern(self) -> str:
        number = "[1-9][0-9]{0,3}"
        conv = rf"SuperConvK[1357]BNRELU\({number},{number},[12],{number}\)"
        residual = rf"SuperRes(K[357]K[357]|K1K[357]K1|IDWE[1246]K[357])\({number},{number},[12],{number},{number}\)"
        return f"^({conv}|{residual})+$"

    def describe(self) -> str:
        budgets = [f"at most {self.max_layers} layers (the sum of all sub_layers)"]
        if self.max_params is not None:
            budgets.append(f"at most {self.max_params:,} parameters")
        if self.max_flops is not None:
            budgets.append(f"at most {self.max_flops:,} FLOPs")
        families = "\n".join(f"- {family}" for family in FAMILIES)
        return (
            "Macro block space (Zen-NAS style). A network is a string of blocks written one after the "
            "other, then global average pooling and a linear classifier.\n"
            f"Block families:\n{families}\n"
            "in/out are channels, stride is 1 or 2 (only a block's first unit is strided), bottleneck is "
            "the inner width of residual blocks, sub_layers the repetitions. SuperResK1KxK1 and "
            "SuperResIDWE blocks build two residual units per sub-layer.\n"
            "Rules: the first block's in is the image channels, written 3; every other block's in equals "
            "the previous block's out; out and bottleneck are multiples of 8 between 8 and 2048; "
            f"{'; '.join(budgets)}. End with a SuperConvK1BNRELU that widens the features if you want a "
            "final 1x1 convolution: nothing is added after the last block but pooling and the classifier.\n"
            f"Example: {EXAMPLE}\n"
            "The blocks' code (torch, nn and F are imported):\n"
            f"{MACRO_BLOCKS}"
        )
