"""The Channel-Bench-Macro ResNet space (Su et al., 2021): 7 widths of a small ResNet, 4 choices each.

A point is 7 digits `d` in 1..4, as the benchmark's table keys them; width i is `d * BASES[i]` channels,
`BASES` = (64, 64, 64, 128, 128, 128, 128), so widths 0-2 take 64..256 channels and widths 3-6
128..512. Example: `2431342`.

The network, with c0..c6 the seven widths (`BLOCKS` lists each residual block's widths): a 3x3
convolution stem of stride 2 to c0 channels with BN and ReLU; five residual blocks (input, middle,
output, stride) = (c0, c1, c0, 1), (c0, c2, c0, 1), (c0, c3, c4, 2), (c4, c5, c4, 1), (c4, c6, c4, 1),
each a 3x3 convolution (carrying the stride) + BN + ReLU and a 3x3 convolution + BN, followed by ReLU
of input + block when the stride is 1 and by ReLU of the block alone otherwise; global average
pooling; a linear classifier from c4.

The stem's stride 2 is the benchmark's own network (`ResNet` in the repository xiusu/Channel-Bench-Macro,
whose README also lists 16x16 feature maps after the stem). Parameter counts do not depend on it, but
FLOPs do: with it, the table's `flops` equal `Cost.flops` minus the classifier's biases (`num_classes`)
for every key, because the benchmark counts a linear layer as `in * out`, `Cost` as `in * out + out`.

Every digit sets a different width, so the space knows no equivalences beyond whitespace.
"""

from __future__ import annotations

import math
import random
import string

from nasloop.registry import spaces
from nasloop.spaces.base import Cost, SearchSpace

BASES = (64, 64, 64, 128, 128, 128, 128)
CHOICES = (1, 2, 3, 4)
# The residual blocks as (input width, middle width, output width, stride), widths by index into BASES.
BLOCKS = ((0, 1, 0, 1), (0, 2, 0, 1), (0, 3, 4, 2), (4, 5, 4, 1), (4, 6, 4, 1))
STEM_STRIDE = 2
EXAMPLE = "2431342"

Widths = tuple[int, ...]
"""The 7 channel counts of a point."""


class ArchitectureFormatError(ValueError):
    """A string that is not a Channel-Bench-Macro ResNet point; the message says what to write instead."""


def parse(arch: str) -> tuple[int, ...]:
    """The 7 width multipliers (1..4) of `arch`; whitespace is ignored. Raises ArchitectureFormatError."""
    text = "".join(arch.split())
    if len(text) != len(BASES):
        raise ArchitectureFormatError(
            f"a Channel-Bench ResNet architecture is {len(BASES)} digits, one per width, each 1, 2, 3 or 4 "
            f"(channels = digit x {', '.join(map(str, BASES))}); found {len(text)} character(s) in "
            f"{text[:40]!r}; example: {EXAMPLE}"
        )
    for position, character in enumerate(text):
        if character not in "1234":
            raise ArchitectureFormatError(
                f"width {position + 1} has {character!r}; each of the {len(BASES)} digits is 1, 2, 3 or 4 "
                f"(times {BASES[position]} channels for this width)"
            )
    return tuple(int(character) for character in text)


def widths(arch: str) -> Widths:
    """The channel counts c0..c6 of `arch`."""
    return tuple(digit * base for digit, base in zip(parse(arch), BASES, strict=True))


def neighbors(arch: str) -> list[str]:
    """The 21 strings that differ from `arch` in exactly one width, in position then digit order."""
    digits = parse(arch)
    return [
        "".join(map(str, (*digits[:position], other, *digits[position + 1 :])))
        for position, current in enumerate(digits)
        for other in CHOICES
        if other != current
    ]


# ---------------------------------------------------------------------------------------------------
# Cost model and rendering
# ---------------------------------------------------------------------------------------------------


def network_cost(arch: str, in_shape: tuple[int, int, int], num_classes: int) -> Cost:
    """Parameters and FLOPs (base.Cost conventions) of the rendered network, without building it."""
    channels = widths(arch)
    in_channels, height, width = in_shape
    height, width = math.ceil(height / STEM_STRIDE), math.ceil(width / STEM_STRIDE)
    params = 9 * in_channels * channels[0] + 2 * channels[0]
    flops = 9 * in_channels * channels[0] * height * width
    for block_in, block_mid, block_out, stride in BLOCKS:
        height, width = math.ceil(height / stride), math.ceil(width / stride)
        weights = 9 * channels[block_in] * channels[block_mid] + 9 * channels[block_mid] * channels[block_out]
        params += weights + 2 * channels[block_mid] + 2 * channels[block_out]
        flops += weights * height * width  # both convolutions produce the block's output resolution
    last = channels[BLOCKS[-1][2]]
    params += last * num_classes + num_classes
    flops += last * num_classes + num_classes
    return Cost(params=params, flops=flops)


CHANNEL_BENCH_TEMPLATE = string.Template('''\
"""Channel-Bench-Macro ResNet network for the widths $arch

A stride-2 3x3 convolution stem with batch norm and ReLU, five residual blocks of two 3x3
convolutions (the third of stride 2, without a shortcut), global average pooling, a linear classifier.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

WIDTHS = [$widths]
STEM_STRIDE = $stem_stride
# The residual blocks as (input width, middle width, output width, stride), widths by index into WIDTHS.
BLOCKS = [$blocks]


class ResidualBlock(nn.Module):
    """3x3 conv (carrying the stride) + BN + ReLU, 3x3 conv + BN; then ReLU of input + block at stride 1,
    of the block alone when strided."""

    def __init__(self, in_channels, mid_channels, out_channels, stride):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.residual = stride == 1

    def forward(self, x):
        out = self.body(x)
        return F.relu(x + out) if self.residual else F.relu(out)


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_shape[0], WIDTHS[0], 3, stride=STEM_STRIDE, padding=1, bias=False),
            nn.BatchNorm2d(WIDTHS[0]),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(
            *[ResidualBlock(WIDTHS[i], WIDTHS[m], WIDTHS[o], stride) for i, m, o, stride in BLOCKS]
        )
        self.classifier = nn.Linear(WIDTHS[BLOCKS[-1][2]], num_classes)

    def forward(self, x):
        x = self.stem(x)  # (batch, WIDTHS[0], height / 2, width / 2)
        x = self.blocks(x)  # (batch, WIDTHS[4], height / 4, width / 4)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (batch, WIDTHS[4])
        return self.classifier(x)  # (batch, num_classes)
''')


def render_network(arch: str) -> str:
    """Python source of the benchmark network for `arch` (any in_shape and class count at build time)."""
    channels = widths(arch)
    return CHANNEL_BENCH_TEMPLATE.substitute(
        arch="".join(map(str, parse(arch))),
        widths=", ".join(map(str, channels)),
        stem_stride=STEM_STRIDE,
        blocks=", ".join(str(block) for block in BLOCKS),
    )


# ---------------------------------------------------------------------------------------------------
# The space
# ---------------------------------------------------------------------------------------------------

# Niches by total width c0 + ... + c6 (704 to 2,816 channels); the bins hold 3,466, 4,726, 4,726 and
# 3,466 of the 16,384 points.
NICHES = ("channels<=1472", "channels=1536-1728", "channels=1792-1984", "channels>=2048")
_NICHE_UPPER_BOUNDS = (1472, 1728, 1984)


@spaces.register("channel-bench-resnet")
class ChannelBenchResNetSpace(SearchSpace):
    """Channel-Bench-Macro's ResNet with 7 searchable widths. The space has no options."""

    name = "channel-bench-resnet"

    def sample(self, rng: random.Random) -> str:
        return "".join(str(rng.choice(CHOICES)) for _ in BASES)

    def validate(self, arch: str) -> str | None:
        try:
            parse(arch)
        except ArchitectureFormatError as error:
            return str(error)
        return None

    def canonical(self, arch: str) -> str:
        return "".join(arch.split())

    def mutate(self, arch: str, rng: random.Random) -> str:
        """One width changed to another of its 4 choices, uniformly."""
        return rng.choice(neighbors(arch))

    def crossover(self, first: str, second: str, rng: random.Random) -> str:
        """Each width taken from either parent with probability 1/2."""
        pairs = zip(parse(first), parse(second), strict=True)
        return "".join(str(rng.choice(pair)) for pair in pairs)

    def render(self, arch: str, in_shape: tuple[int, int, int], num_classes: int) -> str:
        return render_network(arch)

    def cost(self, arch: str, in_shape: tuple[int, int, int], num_classes: int) -> Cost:
        return network_cost(arch, in_shape, num_classes)

    def niches(self) -> tuple[str, ...]:
        return NICHES

    def niche_rule(self, niche: str) -> str:
        low, middle, high = _NICHE_UPPER_BOUNDS
        step = 64  # every width is a multiple of 64, so is their total
        rules = dict(zip(NICHES, (
            f"the 7 widths add up to at most {low} channels",
            f"the 7 widths add up to {low + step} to {middle} channels",
            f"the 7 widths add up to {middle + step} to {high} channels",
            f"the 7 widths add up to at least {high + step} channels",
        ), strict=True))  # fmt: skip
        return rules.get(niche, super().niche_rule(niche))

    def niche_reason(self, arch: str) -> str:
        return f"widths add up to {sum(widths(arch))} channels"

    def niche(self, arch: str) -> str:
        total = sum(widths(arch))
        return NICHES[sum(1 for bound in _NICHE_UPPER_BOUNDS if total > bound)]

    def architecture_pattern(self) -> str:
        return f"^[1-4]{{{len(BASES)}}}$"

    def describe(self) -> str:
        ranges = ", ".join(f"c{index}: {base}-{4 * base}" for index, base in enumerate(BASES))
        blocks = ", ".join(f"(c{i}, c{m}, c{o}, stride {s})" for i, m, o, s in BLOCKS)
        return (
            "Channel-Bench-Macro ResNet space (16,384 width settings of one small ResNet).\n"
            "Network: 3x3 conv of stride 2 from the image to c0 channels + BN + ReLU; five residual blocks "
            f"(input, middle, output channels, stride): {blocks}; global average pooling; linear "
            "classifier from c4.\n"
            "Block: 3x3 conv input->middle (carrying the stride) + BN + ReLU, 3x3 conv middle->output + BN; "
            "the output is ReLU(input + block) at stride 1 and ReLU(block) for the strided block, which has "
            "no shortcut.\n"
            f"Widths: digit d in 1..4 gives d x base channels, bases {', '.join(map(str, BASES))} ({ranges}).\n"
            "Format: the 7 digits for c0..c6 in order, nothing else.\n"
            f"Example: {EXAMPLE}\n"
            "Rules: every digit is 1, 2, 3 or 4; c0 is also the width of the first two blocks' outputs and "
            "c4 of the last three, so these two widths enter the most convolutions."
        )
