"""The NAS-Bench-Macro space (Su et al., 2021): 8 searchable layers, 3 operations each, 6,561 strings.

A point is 8 digits, one per searchable layer, as the benchmark's table keys them: `0` identity,
`1` inverted residual with expansion 3 and a 3x3 depthwise kernel, `2` inverted residual with
expansion 6 and a 5x5 kernel. Example: `21020111`.

The network (`LAYERS` gives each layer's input and output channels and stride): a 3x3 convolution stem
to 32 channels with BN and ReLU; the 8 layers in three stages of 2, 3 and 3 (each stage starts with a
stride-2 layer that doubles the channels: 32 -> 64 -> 128 -> 256); a 1x1 convolution to 1280 channels
with BN and ReLU; global average pooling; a linear classifier. An identity layer that changes the shape
is a strided 1x1 convolution with BN; one that keeps it is nothing at all.

Equivalence: because a shape-keeping identity layer is nothing, only the order of a stage's other
layers matters, not where its identities sit. `canonical` writes each stage's first layer, then its
non-identity layers in order, then its identities (`1 0 2` -> `1 2 0`), which is the representative the
benchmark itself trained: its table copies that network's figures to every equivalent string, so the
6,561 strings hold 3,969 distinct networks.

Cost: the rendered parameter count equals the table's `params` for every key. The table's `flops` equal
`Cost.flops` minus the classifier's biases (`num_classes`): the benchmark counts a linear layer as
`in * out` multiply-accumulates, `Cost` as `in * out + out`.
"""

from __future__ import annotations

import math
import random
import string

from nasloop.registry import spaces
from nasloop.spaces.base import Cost, SearchSpace

OPERATIONS = ("identity", "inverted_residual_e3_k3", "inverted_residual_e6_k5")
# (expansion, kernel size) of the inverted-residual operations, by digit
INVERTED_RESIDUALS = {1: (3, 3), 2: (6, 5)}
# The searchable layers as (input channels, output channels, stride).
LAYERS = (
    (32, 64, 2),
    (64, 64, 1),
    (64, 128, 2),
    (128, 128, 1),
    (128, 128, 1),
    (128, 256, 2),
    (256, 256, 1),
    (256, 256, 1),
)
STAGES = ((0, 1), (2, 3, 4), (5, 6, 7))
"""Layer positions of each stage; each stage's first layer is the strided one."""
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
EXAMPLE = "21020111"

Architecture = tuple[int, ...]
"""A parsed point: the operation digit of each of the 8 layers."""


class ArchitectureFormatError(ValueError):
    """A string that is not a NAS-Bench-Macro point; the message says what to write instead."""


def parse(arch: str) -> Architecture:
    """The 8 operation digits of `arch`; whitespace is ignored. Raises ArchitectureFormatError."""
    text = "".join(arch.split())
    allowed = "0 (identity), 1 (inverted residual e3 k3) or 2 (inverted residual e6 k5)"
    if len(text) != len(LAYERS):
        raise ArchitectureFormatError(
            f"a NAS-Bench-Macro architecture is {len(LAYERS)} digits, one per searchable layer, each {allowed}; "
            f"found {len(text)} character(s) in {text[:40]!r}; example: {EXAMPLE}"
        )
    for position, character in enumerate(text):
        if character not in "012":
            raise ArchitectureFormatError(
                f"layer {position + 1} has {character!r}; each of the {len(LAYERS)} digits is {allowed}"
            )
    return tuple(int(character) for character in text)


def to_string(architecture: Architecture) -> str:
    return "".join(str(digit) for digit in architecture)


def canonical_architecture(arch: str) -> str:
    """`arch` with each stage's non-first identity layers moved to the stage's end (module docstring)."""
    digits = parse(arch)
    result: list[int] = []
    for stage in STAGES:
        first, *rest = (digits[position] for position in stage)
        others = [digit for digit in rest if digit != 0]
        result += [first, *others, *[0] * (len(rest) - len(others))]
    return to_string(tuple(result))


def neighbors(arch: str) -> list[str]:
    """The 16 strings that differ from `arch` in exactly one layer, in layer then digit order."""
    digits = parse(arch)
    return [
        to_string((*digits[:position], other, *digits[position + 1 :]))
        for position, current in enumerate(digits)
        for other in range(len(OPERATIONS))
        if other != current
    ]


# ---------------------------------------------------------------------------------------------------
# Cost model and rendering
# ---------------------------------------------------------------------------------------------------


def _layer_cost(digit: int, in_channels: int, out_channels: int, stride: int, pixels: tuple[int, int]) -> Cost:
    """Parameters and multiply-accumulates of one layer; `pixels` is (input, output) height * width."""
    in_pixels, out_pixels = pixels
    if digit == 0:
        if stride == 1 and in_channels == out_channels:
            return Cost(params=0, flops=0)
        weights = in_channels * out_channels  # strided 1x1 convolution, then batch norm
        return Cost(params=weights + 2 * out_channels, flops=weights * out_pixels)
    expansion, kernel = INVERTED_RESIDUALS[digit]
    hidden = expansion * in_channels
    expand, depthwise, project = in_channels * hidden, kernel * kernel * hidden, hidden * out_channels
    batch_norms = 2 * hidden + 2 * hidden + 2 * out_channels
    # the expansion runs at the input's resolution, the depthwise convolution carries the stride
    flops = expand * in_pixels + (depthwise + project) * out_pixels
    return Cost(params=expand + depthwise + project + batch_norms, flops=flops)


def network_cost(arch: str, in_shape: tuple[int, int, int], num_classes: int) -> Cost:
    """Parameters and FLOPs (base.Cost conventions) of the rendered network, without building it."""
    digits = parse(arch)
    in_channels, height, width = in_shape
    params = 9 * in_channels * STEM_CHANNELS + 2 * STEM_CHANNELS
    flops = 9 * in_channels * STEM_CHANNELS * height * width
    for digit, (layer_in, layer_out, stride) in zip(digits, LAYERS, strict=True):
        in_pixels = height * width
        height, width = math.ceil(height / stride), math.ceil(width / stride)
        layer = _layer_cost(digit, layer_in, layer_out, stride, (in_pixels, height * width))
        params, flops = params + layer.params, flops + layer.flops
    last = LAYERS[-1][1]
    params += last * HEAD_CHANNELS + 2 * HEAD_CHANNELS + HEAD_CHANNELS * num_classes + num_classes
    flops += last * HEAD_CHANNELS * height * width + HEAD_CHANNELS * num_classes + num_classes
    return Cost(params=params, flops=flops)


NAS_BENCH_MACRO_TEMPLATE = string.Template('''\
"""NAS-Bench-Macro network for the architecture $arch

A 3x3 convolution stem with batch norm and ReLU; 8 searchable layers in three stages of 2, 3 and 3,
each stage opening with a stride-2 layer; a 1x1 convolution to 1280 channels with batch norm and
ReLU; global average pooling; a linear classifier.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

STEM_CHANNELS = $stem_channels
HEAD_CHANNELS = $head_channels
# The searchable layers as (input channels, output channels, stride, operation).
LAYERS = [
$layers
]


class Identity(nn.Module):
    """Nothing when the shape is kept; otherwise a strided 1x1 convolution and batch norm."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x):
        return x if self.downsample is None else self.downsample(x)


class InvertedResidual(nn.Module):
    """1x1 expansion, k x k depthwise convolution (carrying the stride), 1x1 projection; BN after each,
    ReLU after the first two, and the input added back when the shape is kept."""

    def __init__(self, in_channels, out_channels, stride, expansion, kernel_size):
        super().__init__()
        hidden = in_channels * expansion
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(
                hidden, hidden, kernel_size, stride=stride, padding=kernel_size // 2, groups=hidden, bias=False
            ),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x):
        out = self.body(x)
        return out + x if self.residual else out


def make_layer(operation, in_channels, out_channels, stride):
    if operation == "identity":
        return Identity(in_channels, out_channels, stride)
    if operation == "inverted_residual_e3_k3":
        return InvertedResidual(in_channels, out_channels, stride, expansion=3, kernel_size=3)
    if operation == "inverted_residual_e6_k5":
        return InvertedResidual(in_channels, out_channels, stride, expansion=6, kernel_size=5)
    raise ValueError(f"unknown operation {operation!r}")


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_shape[0], STEM_CHANNELS, 3, padding=1, bias=False),
            nn.BatchNorm2d(STEM_CHANNELS),
            nn.ReLU(inplace=True),
        )
        self.layers = nn.Sequential(*[make_layer(operation, i, o, s) for i, o, s, operation in LAYERS])
        last = LAYERS[-1][1]
        self.head = nn.Sequential(
            nn.Conv2d(last, HEAD_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(HEAD_CHANNELS),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x):
        x = self.stem(x)  # (batch, STEM_CHANNELS, height, width)
        x = self.layers(x)  # (batch, 256, height / 8, width / 8)
        x = self.head(x)  # (batch, HEAD_CHANNELS, height / 8, width / 8)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (batch, HEAD_CHANNELS)
        return self.classifier(x)  # (batch, num_classes)
''')


def render_network(arch: str) -> str:
    """Python source of the benchmark network for `arch` (any in_shape and class count at build time)."""
    digits = parse(arch)
    layers = "\n".join(
        f'    ({layer_in}, {layer_out}, {stride}, "{OPERATIONS[digit]}"),'
        for digit, (layer_in, layer_out, stride) in zip(digits, LAYERS, strict=True)
    )
    return NAS_BENCH_MACRO_TEMPLATE.substitute(
        arch=to_string(digits), layers=layers, stem_channels=STEM_CHANNELS, head_channels=HEAD_CHANNELS
    )


# ---------------------------------------------------------------------------------------------------
# The space
# ---------------------------------------------------------------------------------------------------

# Niches by how many layers compute something (are not identities); the bins hold 577, 1,120, 1,792,
# 1,792 and 1,280 of the 6,561 strings.
NICHES = ("layers<=3", "layers=4", "layers=5", "layers=6", "layers>=7")

_OPERATION_NOTES = (
    "identity: nothing, or a strided 1x1 convolution + BN where the layer changes stride or channels",
    "inverted residual, expansion 3, kernel 3: 1x1 conv to 3x the input channels + BN + ReLU, 3x3 "
    "depthwise conv (the layer's stride) + BN + ReLU, 1x1 conv to the output channels + BN; the input is "
    "added back when the layer keeps the shape",
    "inverted residual, expansion 6, kernel 5: the same with 6x expansion and a 5x5 depthwise conv",
)


@spaces.register("nas-bench-macro")
class NASBenchMacroSpace(SearchSpace):
    """NAS-Bench-Macro's 8-layer network, each layer one of 3 operations. The space has no options."""

    name = "nas-bench-macro"

    def sample(self, rng: random.Random) -> str:
        """A uniformly random canonical point: uniform over the 3,969 distinct networks."""
        while True:
            arch = to_string(tuple(rng.randrange(len(OPERATIONS)) for _ in LAYERS))
            if canonical_architecture(arch) == arch:  # accepted with probability 3,969 / 6,561
                return arch

    def validate(self, arch: str) -> str | None:
        try:
            parse(arch)
        except ArchitectureFormatError as error:
            return str(error)
        return None

    def canonical(self, arch: str) -> str:
        if self.validate(arch) is not None:
            return "".join(arch.split())
        return canonical_architecture(arch)

    def mutate(self, arch: str, rng: random.Random) -> str:
        """One layer changed to another operation, uniform over the changes that give another network
        (moving an identity within its stage would re-evaluate the same one)."""
        current = canonical_architecture(arch)
        return rng.choice([other for other in neighbors(arch) if canonical_architecture(other) != current])

    def crossover(self, first: str, second: str, rng: random.Random) -> str:
        """Each layer's operation taken from either parent with probability 1/2."""
        pairs = zip(parse(first), parse(second), strict=True)
        return to_string(tuple(rng.choice(pair) for pair in pairs))

    def render(self, arch: str, in_shape: tuple[int, int, int], num_classes: int) -> str:
        return render_network(arch)

    def cost(self, arch: str, in_shape: tuple[int, int, int], num_classes: int) -> Cost:
        return network_cost(arch, in_shape, num_classes)

    def niches(self) -> tuple[str, ...]:
        return NICHES

    def niche_rule(self, niche: str) -> str:
        rules = {
            NICHES[0]: "at most 3 of the 8 digits non-zero (at most 3 layers that are not identities)",
            NICHES[-1]: "at least 7 of the 8 digits non-zero (at least 7 layers that are not identities)",
        }
        count = niche.removeprefix("layers=")
        return rules.get(niche, f"exactly {count} of the 8 digits non-zero ({count} layers that are not identities)")

    def niche_reason(self, arch: str) -> str:
        return f"{sum(1 for digit in parse(arch) if digit != 0)} non-identity layers"

    def niche(self, arch: str) -> str:
        working = sum(1 for digit in parse(arch) if digit != 0)
        return NICHES[min(max(working, 3), 7) - 3]

    def architecture_pattern(self) -> str:
        return f"^[012]{{{len(LAYERS)}}}$"

    def describe(self) -> str:
        operations = "\n".join(f"- {digit}: {note}" for digit, note in enumerate(_OPERATION_NOTES))
        layers = ", ".join(f"{layer_in}->{layer_out}/s{stride}" for layer_in, layer_out, stride in LAYERS)
        return (
            "NAS-Bench-Macro space (6,561 strings, 3,969 distinct networks).\n"
            "Network: 3x3 conv stem to 32 channels + BN + ReLU; 8 searchable layers; 1x1 conv to 1280 "
            "channels + BN + ReLU; global average pooling; linear classifier.\n"
            f"The 8 layers as input->output channels/stride: {layers}. They form three stages (layers 1-2, "
            "3-5, 6-8), each opening with the stride-2 layer.\n"
            f"Each layer applies one operation, written as a digit:\n{operations}\n"
            "Format: the 8 digits in layer order, nothing else.\n"
            f"Example: {EXAMPLE}\n"
            "Rules: an identity that keeps the shape does nothing, so within a stage only the order of the "
            "non-identity layers matters: 10102111 and 10120111 are the same network (in layers 3-5, 102 "
            "and 120 differ only in where the identity sits)."
        )
