"""Mechanical clean-ups before the static check: training-script code goes, nothing `Net` uses does."""

from __future__ import annotations

import ast
import random
import textwrap

import pytest
import torch
import torch.nn.functional as F

from nasloop.spaces.cleanup import Tidied, tidy
from nasloop.spaces.open_code import check_code

NET = """\
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(in_shape[0], 16, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * (in_shape[1] // 2) * (in_shape[2] // 2), num_classes)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        return self.fc(torch.flatten(x, 1))
"""

# What small models write when asked for a network: a whole training script around it.
TRAINING_SCRIPT = f"""\
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.utils.data import DataLoader
import torchvision
import torchvision.transforms as transforms

# Hyperparameters
batch_size = 64
learning_rate = 0.001
num_epochs = 10


# Define the CNN
{NET}

# Load the data
transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
train_set = torchvision.datasets.MNIST(root="./data", train=True, download=True, transform=transform)
train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True)

model = Net((1, 28, 28), 10)
criterion = nn.CrossEntropyLoss()
optimizer = optim.Adam(model.parameters(), lr=learning_rate)


def train(model, loader):
    model.train()
    for images, labels in loader:
        optimizer.zero_grad()
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()


# Training loop
if __name__ == "__main__":
    for epoch in range(num_epochs):
        train(model, train_loader)
        print(f"Epoch {{epoch + 1}} done")
    # Save the model
    torch.save(model.state_dict(), "model.pth")
"""

TRAINING_SCRIPT_TIDIED = f"""\
import torch
import torch.nn as nn
import torch.nn.functional as F


# Define the CNN
{NET}"""


def tidied(code: str) -> Tidied:
    result = tidy(code)
    ast.parse(result.code)
    return result


def build(code: str, seed: int = 0) -> tuple[int, torch.Tensor]:
    """Exec the module, build `Net((1, 28, 28), 10)` and run a forward pass: (parameters, logits)."""
    namespace: dict[str, object] = {"__name__": "candidate"}
    exec(compile(code, "candidate.py", "exec"), namespace)
    torch.manual_seed(seed)
    model = namespace["Net"]((1, 28, 28), 10)  # type: ignore[operator]
    logits = model(torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1)))
    assert logits.shape == (2, 10)
    return sum(p.numel() for p in model.parameters()), logits.detach()


# ----------------------------------------------------------------------------------------------------
# A whole training script
# ----------------------------------------------------------------------------------------------------


def test_training_script_is_reduced_to_the_network() -> None:
    assert check_code(TRAINING_SCRIPT) is not None
    result = tidied(TRAINING_SCRIPT)
    assert result.code == TRAINING_SCRIPT_TIDIED
    assert result.changed
    assert check_code(result.code) is None
    build(result.code)


def test_training_script_notes_name_each_removal_with_its_lines() -> None:
    notes = tidied(TRAINING_SCRIPT).removed
    assert notes[0] == "line 4: removed `import torch.optim as optim` (only a training script needs it)"
    assert "line 6: removed `import torchvision` (only a training script needs it)" in notes
    assert "line 10: removed `batch_size = 64`, which `Net` does not use" in notes
    assert "line 33: removed `model = Net((1, 28, 28), 10)`, which `Net` does not use" in notes
    assert "lines 38-44: removed the function `train`, which `Net` does not use" in notes
    assert notes[-1] == (
        'lines 48-53: removed the `if __name__ == "__main__":` block (candidates run no code of their own)'
    )
    assert len(notes) == 15  # 4 imports, 3 settings, 6 data and optimizer lines, train, the main block


def test_training_script_has_no_warnings_when_forward_returns_logits() -> None:
    assert tidied(TRAINING_SCRIPT).warnings == ()


# ----------------------------------------------------------------------------------------------------
# Nothing `Net` uses is removed
# ----------------------------------------------------------------------------------------------------

HEADER = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"

# Modules whose Net depends on other top-level code in every way we know of. Each is complete and
# exec-able as it stands; nothing in it may be removed.
NEEDED = {
    "constants": """
WIDTH = 16
KERNEL = 3


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[0], WIDTH, KERNEL, padding=KERNEL // 2)
        self.head = nn.Linear(WIDTH, num_classes)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1).flatten(1))
""",
    "helper function and default argument": """
HIDDEN = 32


def conv_bn(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class Net(nn.Module):
    def __init__(self, in_shape, num_classes, hidden=HIDDEN):
        super().__init__()
        self.body = conv_bn(in_shape[0], hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))
""",
    "base class and helper class": """
class Residual(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


class Backbone(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.block = Residual(channels)


class Net(Backbone):
    def __init__(self, in_shape, num_classes):
        super().__init__(8)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean((2, 3)))
""",
    "decorator and class attribute": """
REGISTRY = {}
EXPANSION = 2


def register(cls):
    REGISTRY[cls.__name__] = cls
    return cls


@register
class Net(nn.Module):
    expansion = EXPANSION

    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.fc = nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], 8 * self.expansion)
        self.head = nn.Linear(8 * self.expansion, num_classes)

    def forward(self, x):
        return self.head(F.relu(self.fc(x.flatten(1))))
""",
    "module-level Sequential factory and lambda": """
make_features = lambda channels: nn.Sequential(
    nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
)
ACTIVATION = nn.GELU


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.features = make_features(in_shape[0])
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8, 8), ACTIVATION(), nn.Linear(8, num_classes))

    def forward(self, x):
        return self.head(self.features(x))
""",
    "mutated list and dictionary": """
WIDTHS = [8]
WIDTHS.append(16)
CONFIG = {"width": 4}
CONFIG["width"] = WIDTHS[-1]
for extra in (24,):
    WIDTHS.append(extra)


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[0], CONFIG["width"], 3, padding=1)
        self.head = nn.Linear(CONFIG["width"], len(WIDTHS) * 0 + num_classes)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))
""",
    "class attribute set after the class": """
class Net(nn.Module):
    width = 4

    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[0], self.width, 3, padding=1)
        self.head = nn.Linear(self.width, num_classes)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


Net.width = 12
""",
    "alias of the real network": """
class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.head = nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes)

    def forward(self, x):
        return self.head(x.flatten(1))


class BetterNet(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[0], 6, 3, padding=1)
        self.head = nn.Linear(6, num_classes)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


Net = BetterNet
""",
    "global state set up by a kept function": """
LAYERS = []


def build_plan(depth):
    global PLAN
    PLAN = [8] * depth
    LAYERS.extend(PLAN)


build_plan(2)


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        blocks, channels = [], in_shape[0]
        for width in PLAN + LAYERS:
            blocks += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
            channels = width
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))
""",
    "del, comprehension, partial and optional import": """
import functools

try:
    from einops import rearrange
except ImportError:
    rearrange = None

_base = 4
WIDTHS = [_base * 2**i for i in range(2)]
del _base
Conv3 = functools.partial(nn.Conv2d, kernel_size=3, padding=1)


def flatten(x):
    return x.flatten(1) if rearrange is None else rearrange(x, "b c h w -> b (c h w)")


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.convs = nn.ModuleList(Conv3(a, b) for a, b in zip([in_shape[0], *WIDTHS], WIDTHS))
        self.head = nn.LazyLinear(num_classes)

    def forward(self, x):
        for conv in self.convs:
            x = F.max_pool2d(F.relu(conv(x)), 2)
        return self.head(flatten(x))
""",
    "semicolons and a star import": """
from math import *

WIDTH = 8; EPOCHS = 3


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[0], WIDTH, 3, padding=1)
        self.head = nn.Linear(WIDTH, num_classes)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3))) * sqrt(1.0)
""",
    "the network reads a global that shadows nothing": """
device = torch.device("cpu")


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.head = nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes)

    def forward(self, x):
        return self.head(x.flatten(1).to(device))
""",
}

# Top-level code a training script adds, in the order it usually comes; each piece executes without
# error wherever it is put (nothing here runs Net at import time), so the original module still runs.
NOISE = [
    "import torch.optim as optim",
    "from torch.utils.data import DataLoader, TensorDataset",
    "import torch.optim",
    "import numpy as np",
    "EPOCHS_TO_RUN = 5\nLEARNING_RATE = 0.01",
    "num_classes = 100\nin_shape = (3, 32, 32)\nx = torch.randn(4, 3, 32, 32)\nwidth = 1024",
    "torch.manual_seed(0)",
    "# Training utilities\ndef train_one_epoch(model, loader, optimizer):\n"
    "    for inputs, labels in loader:\n"
    "        optimizer.zero_grad()\n"
    "        F.cross_entropy(model(inputs), labels).backward()\n"
    "        optimizer.step()",
    "def evaluate(model, loader):\n    return sum((model(x).argmax(1) == y).sum() for x, y in loader)",
    "class Trainer:\n    def __init__(self, model):\n        self.model = model",
    "for warmup_step in range(2):\n    pass",
    'print("Defining the model")',
    'if __name__ == "__main__":\n    model = Net((1, 28, 28), 10)\n    print(model(torch.randn(1, 1, 28, 28)).shape)',
]
NOISE_NAMES = {"optim", "DataLoader", "TensorDataset", "np", "EPOCHS_TO_RUN", "train_one_epoch", "Trainer"}


def with_noise(module: str, rng: random.Random) -> str:
    """`module` with noise statements put at random top-level gaps (after the header imports)."""
    body = ast.parse(module).body
    lines = module.splitlines(keepends=True)
    cuts = sorted({0, *(node.end_lineno or 0 for node in body)})
    pieces = ["".join(lines[start:end]) for start, end in zip(cuts, [*cuts[1:], len(lines)], strict=True)]
    for noise in rng.sample(NOISE, k=rng.randint(3, len(NOISE))):
        pieces.insert(rng.randint(1, len(pieces)), "\n\n" + noise + "\n")
    return HEADER + "".join(pieces)


@pytest.mark.parametrize("name", sorted(NEEDED))
def test_clean_module_is_left_byte_identical(name: str) -> None:
    code = HEADER + NEEDED[name]
    result = tidied(code)
    assert result.code == code
    assert not result.changed
    assert result.removed == ()


@pytest.mark.parametrize("name", sorted(NEEDED))
def test_nothing_net_uses_is_removed_from_noisy_modules(name: str) -> None:
    rng = random.Random(name)
    for _ in range(4):
        noisy = with_noise(NEEDED[name], rng)
        result = tidied(noisy)
        assert result.changed, noisy
        assert build(result.code)[0] == build(noisy)[0], (noisy, result.code)
        assert torch.equal(build(result.code)[1], build(noisy)[1]), (noisy, result.code)
        # As good as the module itself (a guarded einops import fails where einops is not installed).
        assert (check_code(result.code) is None) == (check_code(HEADER + NEEDED[name]) is None), result.code
        assert tidy(result.code).code == result.code  # tidying twice changes nothing more
        names = {n.id for n in ast.walk(ast.parse(result.code)) if isinstance(n, ast.Name)}
        defined = {n.name for n in ast.walk(ast.parse(result.code)) if isinstance(n, ast.ClassDef)}
        assert not (names | defined) & NOISE_NAMES, result.code


@pytest.mark.parametrize("name", sorted(NEEDED))
def test_every_kept_line_is_byte_identical(name: str) -> None:
    noisy = with_noise(NEEDED[name], random.Random(f"lines {name}"))
    kept = tidied(noisy).code.splitlines(keepends=True)
    original = noisy.splitlines(keepends=True)
    position = 0
    for line in kept:  # the kept lines are a subsequence of the original lines
        position = original.index(line, position) + 1
    for line in (HEADER + NEEDED[name]).splitlines(keepends=True):
        assert line in kept


# ----------------------------------------------------------------------------------------------------
# Rules one by one
# ----------------------------------------------------------------------------------------------------


def test_imports_of_training_modules_are_kept_when_net_uses_them() -> None:
    code = (
        HEADER
        + "import torchvision.models as models\n\n\n"
        + NET.replace(
            "self.pool = nn.MaxPool2d(2)", "self.pool = nn.MaxPool2d(2)\n        self.backbone = models.resnet18()"
        )
    )
    result = tidied(code)
    assert result.code == code
    assert check_code(result.code) is not None  # the static check still explains why that is not allowed


def test_dotted_import_of_a_training_module_goes_but_torch_stays() -> None:
    code = "import torch.optim\n" + HEADER + "\n" + NET
    result = tidied(code)
    assert result.code == HEADER + "\n" + NET
    assert result.removed == ("line 1: removed `import torch.optim` (only a training script needs it)",)
    # With no other import binding `torch`, `import torch.optim` is what makes Net's `torch` work: it stays.
    alone = "import torch.optim\nimport torch.nn as nn\nimport torch.nn.functional as F\n\n" + NET
    alone = alone.replace("import torch.nn as nn", "from torch import nn")
    assert tidied(alone).code == alone


def test_a_line_importing_a_needed_and_a_training_name_is_kept_whole() -> None:
    # Kept lines stay byte-identical, so `optim` cannot be cut out of the line: the static check names it.
    code = "import torch\nfrom torch import nn, optim\nimport torch.nn.functional as F\n\n" + NET
    assert tidied(code).code == code


def test_other_unused_imports_go_and_used_ones_stay() -> None:
    unused = "import numpy as np\nimport os, time\n" + HEADER + "\n\n" + NET
    result = tidied(unused)
    assert result.code == HEADER + "\n\n" + NET
    assert result.removed[0] == "line 1: removed `import numpy as np`, which `Net` does not use"
    used = HEADER + "import numpy as np\n\n\n" + NET.replace("16 * (", "int(np.prod([16])) * (")
    assert tidied(used).code == used


def test_allowed_imports_stay_even_when_unused() -> None:
    code = HEADER + "import math\nfrom typing import Optional\nimport torch.nn.init as init\n\n\n" + NET
    assert tidied(code).code == code


def test_guarded_imports_follow_their_module() -> None:
    allowed = "try:\n    from torch.nn import RMSNorm\nexcept ImportError:\n    RMSNorm = None\n"
    training = "try:\n    import torchvision\nexcept ImportError:\n    torchvision = None\n"
    result = tidied(HEADER + allowed + training + "\n\n" + NET)
    assert result.code == HEADER + allowed + "\n\n" + NET
    assert result.removed == ("lines 8-11: removed `try: import torchvision ...` (only a training script needs it)",)


def line_of(code: str, text: str) -> int:
    return next(number for number, line in enumerate(code.splitlines(), start=1) if line.startswith(text))


def test_main_guard_goes_in_every_spelling() -> None:
    for guard in ("if __name__ == '__main__':", 'if "__main__" == __name__:'):
        code = HEADER + "\n\n" + NET + f"\n\n{guard}\n    print(Net((1, 28, 28), 10))\n"
        result = tidied(code)
        assert result.code == HEADER + "\n\n" + NET
        start = line_of(code, guard)
        assert result.removed == (
            f"lines {start}-{start + 1}: removed the `{guard}` block (candidates run no code of their own)",
        )


def test_globals_named_like_parameters_and_locals_are_removed() -> None:
    code = HEADER + "\n\n" + NET + "\n\nx = torch.randn(1, 1, 28, 28)\nnum_classes = 10\nin_shape = (1, 28, 28)\n"
    result = tidied(code)
    assert result.code == HEADER + "\n\n" + NET
    assert (
        result.removed[0]
        == f"line {line_of(code, 'x =')}: removed `x = torch.randn(1, 1, 28, 28)`, which `Net` does not use"
    )


def test_example_usage_with_side_effects_is_removed() -> None:
    usage = (
        "\n\n# Example usage\nmodel = Net((1, 28, 28), 10).to('cpu')\nmodel.eval()\n"
        "print(model(torch.randn(1, 1, 28, 28)).shape)\ndel model\n"
    )
    code = HEADER + "\n\n" + NET + usage
    result = tidied(code)
    assert result.code == HEADER + "\n\n" + NET
    eval_line, del_line = line_of(code, "model.eval()"), line_of(code, "del model")
    own_code = "(module-level code: candidates run no code of their own)"
    assert result.removed[1] == f"line {eval_line}: removed `model.eval()` {own_code}"
    assert result.removed[3] == f"line {del_line}: removed `del model`, which `Net` does not use"


def test_comments_go_with_removed_code_and_stay_with_kept_code() -> None:
    code = (
        "# model.py: a small CNN\n"  # file header, kept
        "\n"
        "# Imports\n"  # attached to `import torch`, kept
        "import torch\n"
        "# for the optimizer\n"  # attached to the optim import, removed
        "import torch.optim as optim\n"
        "import torch.nn as nn\n"
        "import torch.nn.functional as F\n"
        "\n"
        "# ---- training ----\n"  # a banner before removed code, removed
        "\n"
        "def train():\n"
        "    pass\n"
        "    # TODO: write it\n"  # indented, after the end of `train`: removed with it
        "\n"
        "\n"
        f"{NET}"
        "# end of the model\n"  # right below Net: kept
    )
    expected = (
        "# model.py: a small CNN\n\n# Imports\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"
        f"\n\n{NET}# end of the model\n"
    )
    assert tidied(code).code == expected


def test_blank_lines_are_normalised_around_removed_regions() -> None:
    net = NET.replace("super().__init__()", "super().__init__()\n        self.extra = Head()")
    head = "class Head(nn.Module):\n    pass\n"
    between = HEADER + "\n\n" + net + "\n\ndef train():\n    pass\n\n\n" + head
    assert tidied(between).code == HEADER + "\n\n" + net + "\n\n" + head  # two blank lines, not four
    at_start = "import torch.optim as optim\n\n" + HEADER + "\n\n" + NET
    assert tidied(at_start).code == HEADER + "\n\n" + NET


def test_crlf_line_endings_are_kept() -> None:
    code = (HEADER + "import torch.optim as optim\n\n\n" + NET + "\n\nmodel = Net((1, 28, 28), 10)\n").replace(
        "\n", "\r\n"
    )
    assert tidied(code).code == (HEADER + "\n\n" + NET).replace("\n", "\r\n")


def test_unparsable_code_and_code_without_net_are_unchanged() -> None:
    for code in (
        "import torch.optim as optim\nclass Net(nn.Module:\n    pass\n",
        "import torch.optim as optim\nclass Model(nn.Module):\n    pass\n\nmodel = Model()\n",
        "",
    ):
        result = tidy(code)
        assert result == Tidied(code)
        assert not result.changed


# ----------------------------------------------------------------------------------------------------
# Softmax on the logits
# ----------------------------------------------------------------------------------------------------


def net_returning(init_line: str, forward_body: str) -> str:
    body = textwrap.indent(textwrap.dedent(forward_body).strip("\n"), " " * 8)
    return (
        HEADER + "\n\nclass Net(nn.Module):\n    def __init__(self, in_shape, num_classes):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes)\n"
        f"        {init_line}\n\n    def forward(self, x):\n        x = x.flatten(1)\n{body}\n"
    )


SOFTMAX_FORMS = [
    ("pass", "return F.softmax(self.fc(x), dim=1)", "`F.softmax(...)`", "softmax"),
    ("pass", "return torch.softmax(self.fc(x), 1)", "`torch.softmax(...)`", "softmax"),
    ("pass", "return self.fc(x).softmax(dim=-1)", "`self.fc(x).softmax(...)`", "softmax"),
    ("pass", "x = self.fc(x)\nx = F.softmax(x, dim=1)\nreturn x", "`F.softmax(...)`", "softmax"),
    ("pass", "return F.log_softmax(self.fc(x), dim=1)", "`F.log_softmax(...)`", "log-softmax"),
    ("pass", "return torch.log_softmax(self.fc(x), 1)", "`torch.log_softmax(...)`", "log-softmax"),
    ("pass", "return self.fc(x).log_softmax(1)", "`self.fc(x).log_softmax(...)`", "log-softmax"),
    ("pass", "return nn.Softmax(dim=1)(self.fc(x))", "which is `nn.Softmax(dim=1)`", "softmax"),
    (
        "self.softmax = nn.Softmax(dim=1)",
        "return self.softmax(self.fc(x))",
        "`self.softmax(...)`, which is `nn.Softmax(dim=1)`",
        "softmax",
    ),
    (
        "self.out = nn.LogSoftmax(dim=1)",
        "x = self.out(self.fc(x))\nreturn x",
        "which is `nn.LogSoftmax(dim=1)`",
        "log-softmax",
    ),
    (
        "self.classifier = nn.Sequential(nn.ReLU(), nn.Linear(num_classes, num_classes), nn.Softmax(dim=1))",
        "return self.classifier(self.fc(x))",
        "`self.classifier(...)`, whose last layer is `nn.Softmax(dim=1)`",
        "softmax",
    ),
]


@pytest.mark.parametrize(("init_line", "forward", "shown", "kind"), SOFTMAX_FORMS)
def test_softmax_on_the_output_is_kept_and_warned_about(init_line: str, forward: str, shown: str, kind: str) -> None:
    code = net_returning(init_line, forward)
    build(code)
    result = tidied(code)
    assert result.code == code
    assert not result.changed
    assert len(result.warnings) == 1
    warning = result.warnings[0]
    assert warning.startswith("`forward` returns ") and shown in warning and "return the raw logits" in warning
    assert ("likely costs accuracy" in warning) == (kind == "softmax")
    assert ("redundant" in warning) == (kind == "log-softmax")


def test_softmax_warning_names_the_line() -> None:
    code = net_returning("pass", "return F.softmax(self.fc(x), dim=1)")
    line = code.splitlines().index("        return F.softmax(self.fc(x), dim=1)") + 1
    assert f"(line {line})" in tidied(code).warnings[0]


def test_softmax_inside_the_network_is_not_warned_about() -> None:
    for forward in (
        "return self.fc(x)",
        "weights = x.softmax(dim=1)\nreturn self.fc(x * weights)",
        "x = F.softmax(x, dim=1)\nx = self.fc(x)\nreturn x",
    ):
        assert tidied(net_returning("self.softmax = nn.Softmax(dim=1)", forward)).warnings == ()


def test_log_softmax_output_gives_the_loss_of_the_logits() -> None:
    """Why the log-softmax warning says "redundant" rather than "costs accuracy"."""
    logits = torch.randn(8, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(8)
    for smoothing in (0.0, 0.1):
        plain = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        assert torch.allclose(F.cross_entropy(logits.log_softmax(1), labels, label_smoothing=smoothing), plain)
        assert not torch.allclose(F.cross_entropy(logits.softmax(1), labels, label_smoothing=smoothing), plain)


def test_warnings_come_with_removals() -> None:
    logits = "self.fc(torch.flatten(x, 1))"
    code = TRAINING_SCRIPT.replace(f"return {logits}", f"return F.softmax({logits}, dim=1)")
    result = tidied(code)
    assert result.changed and len(result.warnings) == 1


# ----------------------------------------------------------------------------------------------------
# A forward that runs its body twice
# ----------------------------------------------------------------------------------------------------

REPEATING = """\
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(in_shape[0], 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(32 * (in_shape[1] // 4) * (in_shape[2] // 4), num_classes)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))  # (B, 16, H/2, W/2)
        x = self.pool(F.relu(self.conv2(x)))  # (B, 32, H/4, W/4)
        x = x.flatten(1)
        x = self.fc(x)  # (B, num_classes)
        x = self.pool(F.relu(self.conv1(x)))  # (B, 16, H/2, W/2)
        x = self.pool(F.relu(self.conv2(x)))  # (B, 32, H/4, W/4)
        x = x.flatten(1)
        return self.fc(x)  # (B, num_classes)
"""

ONCE = """\
    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))  # (B, 16, H/2, W/2)
        x = self.pool(F.relu(self.conv2(x)))  # (B, 32, H/4, W/4)
        x = x.flatten(1)
        return self.fc(x)  # (B, num_classes)
"""


def test_a_forward_that_runs_its_body_again_after_the_output_layer_loses_the_copy() -> None:
    with pytest.raises(RuntimeError):  # the copy feeds the logits into conv1
        build(REPEATING)
    result = tidied(REPEATING)
    assert result.code == REPEATING.split("    def forward")[0] + ONCE
    assert result.removed == (
        "lines 17-20: removed a second copy of `forward`'s body after the output layer (it fed the output back "
        "into the first layer)",
    )
    build(result.code)


def test_a_body_repeated_before_a_return_of_x_loses_the_copy() -> None:
    forward_once = ONCE.replace("return self.fc(x)", "x = self.fc(x)")
    body = forward_once.split("\n", 1)[1]
    code = REPEATING.split("    def forward")[0] + forward_once + body + "        return x\n"
    result = tidied(code)
    assert result.code == REPEATING.split("    def forward")[0] + forward_once + "        return x\n"
    build(result.code)


@pytest.mark.parametrize(
    "forward",
    [
        # a block applied twice on purpose: no flatten in between
        "x = F.relu(self.conv(x))\n        x = self.bn(x)\n        x = F.relu(self.conv(x))\n"
        "        x = self.bn(x)\n        x = x.mean((2, 3))\n        return self.fc(x)\n",
        # only part of the body comes again
        "x = F.relu(self.conv(x))\n        x = x.flatten(1)\n        x = self.fc(x)\n        x = x.flatten(1)\n"
        "        x = self.fc2(x)\n        return x\n",
    ],
)
def test_a_forward_that_only_looks_repetitive_is_left_alone(forward: str) -> None:
    code = (
        "import torch.nn as nn\nimport torch.nn.functional as F\n\n\nclass Net(nn.Module):\n"
        "    def __init__(self, in_shape, num_classes):\n        super().__init__()\n"
        "        self.conv = nn.Conv2d(in_shape[0], in_shape[0], 3, padding=1)\n"
        "        self.bn = nn.BatchNorm2d(in_shape[0])\n        self.fc = nn.Linear(in_shape[0], num_classes)\n\n"
        "    def forward(self, x):\n        " + forward
    )
    assert tidied(code) == Tidied(code)
