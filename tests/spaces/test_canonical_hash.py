"""Canonical hashing of open code and of structured-space points: what counts as the same candidate."""

from __future__ import annotations

import textwrap

import pytest

from nasloop.spaces.canonical import arch_hash, canonical_code, canonical_hash

ORIGINAL = textwrap.dedent(
    '''
    import torch
    import torch.nn as nn
    import torch.nn.functional as F


    class ConvBlock(nn.Module):
        """Conv, batch norm, ReLU."""

        def __init__(self, in_channels, out_channels, stride=1):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(out_channels)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))


    class Net(nn.Module):
        def __init__(self, in_shape, num_classes):
            super().__init__()
            channels = 32
            self.stem = ConvBlock(in_shape[0], channels)
            self.stage = nn.Sequential(ConvBlock(channels, 64, stride=2), ConvBlock(64, 128, stride=2))
            self.head = nn.Linear(128, num_classes)

        def forward(self, x):
            x = self.stem(x)  # (B, 32, H, W)
            x = self.stage(x)  # (B, 128, H/4, W/4)
            x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
            return self.head(x)
    '''
)

# Every name the code chose renamed, reformatted, commented, re-documented, annotated, imports respelled.
RENAMED = textwrap.dedent(
    '''
    """My great model."""
    from torch import nn, flatten as torch_flatten_unused
    import torch
    from torch.nn import functional as F


    class Unit(nn.Module):
        def __init__(self, cin: int, cout: int, s: int = 1) -> None:
            super().__init__()
            # the convolution
            self.c = nn.Conv2d(
                cin,
                cout,
                kernel_size=3,
                stride=s,
                padding=1,
                bias=False,
            )
            self.norm = nn.BatchNorm2d(cout)

        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            "Apply the unit."
            return F.relu(self.norm(self.c(inp)))


    class Net(nn.Module):
        """A small CNN."""

        def __init__(self, in_shape, num_classes):
            super().__init__()
            width: int = 32
            self.first = Unit(in_shape[0], width)
            self.body = nn.Sequential(Unit(width, 64, s=2), Unit(64, 128, s=2))
            self.classifier = nn.Linear(128, num_classes)

        def forward(self, images):
            images = self.first(images)
            images = self.body(images)
            images = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(images, 1), 1)
            return self.classifier(images)
    '''
)


def test_renamed_reformatted_and_commented_copy_has_the_same_hash() -> None:
    assert canonical_code(RENAMED) == canonical_code(ORIGINAL)
    assert canonical_hash(RENAMED) == canonical_hash(ORIGINAL)
    assert len(canonical_hash(ORIGINAL)) == 64


def test_contract_names_and_library_calls_survive_canonicalisation() -> None:
    text = canonical_code(ORIGINAL)
    for kept in ("class Net(", "def forward(self", "def __init__(self", "torch.nn.Conv2d(", "kernel_size=3"):
        assert kept in text
    for renamed in ("ConvBlock", "in_channels", "channels", "self.stem", "self.head"):
        assert renamed not in text
    assert "Conv, batch norm" not in text


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("channels = 32", "channels = 48"),  # a channel count
        ("kernel_size=3, stride=stride, padding=1", "kernel_size=5, stride=stride, padding=2"),  # a kernel
        ("return F.relu(self.bn", "return F.gelu(self.bn"),  # an operation
        ("ConvBlock(64, 128, stride=2))", "ConvBlock(64, 128, stride=1))"),  # a stride
        ("F.adaptive_avg_pool2d(x, 1)", "F.adaptive_max_pool2d(x, 1)"),  # a pooling
        ("bias=False", "bias=True"),  # a flag
        # the same modules built in another order draw other initial weights from the seeded RNG
        (
            "self.stem = ConvBlock(in_shape[0], channels)\n"
            "        self.stage = nn.Sequential(ConvBlock(channels, 64, stride=2), ConvBlock(64, 128, stride=2))",
            "self.stage = nn.Sequential(ConvBlock(channels, 64, stride=2), ConvBlock(64, 128, stride=2))\n"
            "        self.stem = ConvBlock(in_shape[0], channels)",
        ),
    ],
)
def test_any_change_to_the_network_changes_the_hash(old: str, new: str) -> None:
    assert old in ORIGINAL
    assert canonical_hash(ORIGINAL.replace(old, new, 1)) != canonical_hash(ORIGINAL)


def test_statement_order_matters() -> None:
    swapped = ORIGINAL.replace(
        "        x = self.stem(x)  # (B, 32, H, W)\n        x = self.stage(x)  # (B, 128, H/4, W/4)\n",
        "        x = self.stage(x)\n        x = self.stem(x)\n",
    )
    assert swapped != ORIGINAL
    assert canonical_hash(swapped) != canonical_hash(ORIGINAL)


def test_renaming_is_consistent_not_collapsing() -> None:
    one_name = "def f(a, b):\n    return a + a\n"
    two_names = "def f(a, b):\n    return a + b\n"
    assert canonical_hash(one_name) != canonical_hash(two_names)
    assert canonical_hash(one_name) == canonical_hash("def g(p, q):\n    return p + p\n")


def test_keywords_follow_renamed_parameters_of_own_functions_only() -> None:
    first = "def block(width):\n    return width\n\nx = block(width=3)\ny = torch.zeros(size=3)\n"
    second = "def layer(channels):\n    return channels\n\nx = layer(channels=3)\ny = torch.zeros(size=3)\n"
    assert canonical_hash(first) == canonical_hash(second)
    assert "size=3" in canonical_code(first)


def test_unparsable_code_hashes_its_whitespace_normalised_text() -> None:
    broken = "class Net(nn.Module)\n    def forward(self, x):\n        return x"
    assert canonical_code(broken).startswith("unparsable:")
    assert canonical_hash(broken) == canonical_hash("class   Net(nn.Module)\n\n  def forward(self,   x):\n return x")
    assert canonical_hash(broken) != canonical_hash(broken.replace("return x", "return -x"))


def test_architecture_hashes_use_the_spaces_canonical_forms() -> None:
    cell = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    same_cell = "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    other_cell = "|nor_conv_1x1~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
    assert arch_hash("nb201", cell) == arch_hash("nb201", " " + same_cell)
    assert arch_hash("nb201", cell) != arch_hash("nb201", other_cell)
    blocks = "SuperConvK3BNRELU(1,16,1,1)SuperConvK3BNRELU(16,16,1,2)"
    assert arch_hash("macro", blocks) == arch_hash("macro", "SuperConvK3BNRELU(3,16,1,3)")
    assert arch_hash("macro", blocks) != arch_hash("nb201", blocks)


def test_scopes_classes_and_closures_are_renamed_consistently() -> None:
    first = textwrap.dedent(
        """
        import torch.nn as nn

        WIDTH = 16

        class Bottleneck(nn.Module):
            expansion = 4

            def __init__(self, planes):
                super().__init__()
                self.out = planes * self.expansion
                scale = lambda value: value * 2
                def widen(extra):
                    return scale(planes) + extra
                self.width = widen(WIDTH)
        """
    )
    second = (
        first.replace("Bottleneck", "Block")
        .replace("expansion", "factor")
        .replace("planes", "p")
        .replace("scale", "double")
        .replace("value", "v")
        .replace("widen", "grow")
        .replace("extra", "more")
        .replace("WIDTH", "BASE")
        .replace("self.width", "self.w")
        .replace("self.out", "self.channels")
    )
    assert canonical_code(first) == canonical_code(second)
    assert canonical_hash(first) != canonical_hash(first.replace("expansion = 4", "expansion = 2"))
    assert canonical_hash(first) != canonical_hash(first.replace("value * 2", "value * 3"))


def test_a_value_returned_through_a_local_name_reads_as_returned_directly() -> None:
    # The engine's missing-return repair appends `return x` after `x = self.head(x)`: that network is the
    # one whose forward ends in `return self.head(x)`.
    through_a_name = ORIGINAL.replace("        return self.head(x)", "        x = self.head(x)\n        return x")
    assert through_a_name != ORIGINAL
    assert canonical_hash(through_a_name) == canonical_hash(ORIGINAL)
    in_a_branch = "def f(a):\n    if a:\n        b = a + 1\n        return b\n    return a\n"
    assert canonical_hash(in_a_branch) == canonical_hash("def f(a):\n    if a:\n        return a + 1\n    return a\n")


@pytest.mark.parametrize(
    "code",
    [
        "def f(a):\n    b = a + 1\n    c = b\n    return b\n",  # the assignment before the return is another name's
        "def f(a):\n    global b\n    b = a + 1\n    return b\n",  # the assignment outlives the return
        "def f(a):\n    g = lambda: b\n    b = a + 1\n    return b\n",  # a closure reads the name
        "def f(a):\n    b = c = a + 1\n    return b\n",  # two targets
        "def f(a):\n    a.b = a + 1\n    return a.b\n",  # an attribute, not a local
    ],
)
def test_assignments_that_can_be_seen_after_the_return_are_kept(code: str) -> None:
    assert canonical_code(code).count("return") == 1
    assert " = " in canonical_code(code).split("return")[0]
