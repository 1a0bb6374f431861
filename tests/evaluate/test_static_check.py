"""The static check of open-code candidates: what it accepts, what it rejects, and what it tells the LLM."""

from __future__ import annotations

import re
import textwrap

import pytest

from nasloop.candidate import FailureKind
from nasloop.spaces.open_code import check_code, is_allowed_module

HEADER = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"
NET = textwrap.dedent(
    """
    class Net(nn.Module):
        def __init__(self, in_shape, num_classes):
            super().__init__()
            self.fc = nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes)

        def forward(self, x):
            return self.fc(x.flatten(1))
    """
)


def candidate(body: str) -> str:
    """A valid module plus `body` at top level (after the header, before the Net)."""
    return HEADER + textwrap.dedent(body) + NET


GOOD = textwrap.dedent(
    '''
    """A residual CNN in the spirit of https://arxiv.org/abs/1512.03385 (a URL in a docstring is harmless)."""
    from __future__ import annotations

    import math
    from collections import OrderedDict
    from dataclasses import dataclass
    from functools import partial
    from itertools import chain
    from typing import Optional

    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from torch import Tensor
    from torch.nn import init
    from torch.nn.modules.utils import _pair


    @dataclass
    class Widths:
        stem: int = 16


    class Block(nn.Module):
        def __init__(self, channels: int) -> None:
            super(Block, self).__init__()
            self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.norm = nn.BatchNorm2d(channels)

        def forward(self, input: Tensor) -> Tensor:  # `input` as a parameter name is fine
            return F.relu(input + self.norm(self.conv(input)))


    class Net(nn.Module):
        def __init__(self, in_shape: tuple[int, int, int], num_classes: int) -> None:
            super().__init__()
            widths = Widths()
            activation = getattr(nn, "ReLU")
            self.stem = nn.Sequential(OrderedDict(conv=nn.Conv2d(in_shape[0], widths.stem, 3), act=activation()))
            self.blocks = nn.Sequential(*chain([Block(widths.stem)], [Block(widths.stem)]))
            self.head = nn.Linear(widths.stem, num_classes)
            init.kaiming_normal_(self.stem.conv.weight, a=math.sqrt(5))
            self.pool = partial(F.adaptive_avg_pool2d, output_size=1)
            self.kernel = _pair(3)
            self.extra: Optional[nn.Module] = None
            self.name = self.__class__ if False else type(self).__name__
            self.pretrained_like = nn.Identity()

        def forward(self, x: Tensor) -> Tensor:
            x = self.blocks(self.stem(x))  # (B, 16, H-2, W-2)
            return self.head(self.pool(x).flatten(1))  # (B, num_classes)


    if __name__ == "__main__":
        print(Net((3, 32, 32), 10))
    '''
)


def test_a_typical_candidate_passes() -> None:
    # `self.__class__` in GOOD is the one violation; without it the module passes.
    assert check_code(GOOD.replace("self.__class__ if False else ", "")) is None


def test_self_class_is_reported_even_in_good_code() -> None:
    failure = check_code(GOOD)
    assert failure is not None and failure.kind is FailureKind.FORBIDDEN
    assert "`__class__`" in failure.message


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("import torch\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        return (x,\n", "truncated"),
        ('import torch\nclass Net(torch.nn.Module):\n    """A docstring cut off', "truncated"),
        ("import torch\nclass Net(torch.nn.Module):\n    def forward(self, x):\n", "truncated"),
        ("import torch\nclass Net(torch.nn.Module)\n    pass\n", "line 2"),
        ("class Net:\n    pass\nreturn 1\n", "'return' outside function"),
        ("class Net:\n    pass\nx = 1\x00\n", "null bytes"),
    ],
)
def test_syntax_errors_name_the_line_and_truncation(code: str, fragment: str) -> None:
    failure = check_code(code)
    assert failure is not None and failure.kind is FailureKind.SYNTAX
    assert fragment in failure.message


def test_a_syntax_error_in_the_middle_is_not_called_truncated() -> None:
    code = HEADER + "x = = 1\n" + NET
    failure = check_code(code)
    assert failure is not None and failure.kind is FailureKind.SYNTAX
    assert failure.message.startswith("line 4, column")
    assert "truncated" not in failure.message


def test_missing_net_is_a_build_failure() -> None:
    failure = check_code(HEADER + "class Model(nn.Module):\n    pass\n")
    assert failure is not None and failure.kind is FailureKind.BUILD
    assert "class Net" in failure.message


def test_net_nested_in_a_function_does_not_count() -> None:
    failure = check_code(HEADER + "def make():\n    class Net(nn.Module):\n        pass\n    return Net\n")
    assert failure is not None and failure.kind is FailureKind.BUILD


@pytest.mark.parametrize(
    "statement",
    [
        "import os",
        "import sys",
        "import subprocess",
        "import socket",
        "import ctypes",
        "import builtins",
        "import importlib",
        "import numpy as np",
        "import torchvision",
        "import torch.utils.data",
        "import torch.optim",
        "from os import path",
        "from pathlib import Path",
        "from torch.utils.data import DataLoader",
        "from . import sibling",
        "import math, os",
    ],
)
def test_imports_outside_the_allow_list(statement: str) -> None:
    failure = check_code(candidate(statement))
    assert failure is not None and failure.kind is FailureKind.IMPORT
    assert failure.message.startswith("line 4: `")
    assert "is not allowed" in failure.message


@pytest.mark.parametrize(
    "module",
    ["torch", "torch.nn", "torch.nn.functional", "torch.nn.init", "torch.nn.modules.utils", "math", "typing",
     "functools", "itertools", "collections", "collections.abc", "dataclasses", "__future__"],
)  # fmt: skip
def test_allowed_modules(module: str) -> None:
    assert is_allowed_module(module)


def test_einops_follows_installation() -> None:
    import importlib.util

    installed = importlib.util.find_spec("einops") is not None
    failure = check_code(candidate("import einops\nfrom einops.layers.torch import Rearrange"))
    if installed:
        assert failure is None
    else:
        assert failure is not None and failure.kind is FailureKind.IMPORT
        assert "not installed" in failure.message


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ("data = open('/etc/passwd').read()", "`open(...)`"),
        ("reader = open", "`open`"),
        ("eval('1 + 1')", "`eval(...)`"),
        ("exec('x = 1')", "`exec(...)`"),
        ("code = compile('1', 'f', 'eval')", "`compile(...)`"),
        ("os = __import__('os')", "`__import__(...)`"),
        ("namespace = globals()", "`globals(...)`"),
        ("namespace = locals()", "`locals(...)`"),
        ("namespace = vars(torch)", "`vars(...)`"),
        ("breakpoint()", "`breakpoint(...)`"),
        ("answer = input()", "`input(...)`"),
        ("exit(0)", "`exit(...)`"),
        ("raise SystemExit(3)", "`SystemExit(...)`"),
        ("builtins = __builtins__", "`__builtins__`"),
        ("load = torch.load", "`torch.load`"),
        ("torch.save({}, 'x.pt')", "`torch.save`"),
        ("model = torch.hub.load('pytorch/vision', 'resnet18')", "`torch.hub`"),
        ("storage = torch.from_file('x.bin')", "`torch.from_file`"),
        ("operator = torch.ops.aten.add", "`torch.ops`"),
        ("net = torch.jit.load('x.pt')", "`torch.jit.load`"),
        ("fast = torch.compile", "`torch.compile`"),
        ("from torch import load", "`from torch import load`"),
        ("from torch import hub as h", "`from torch import hub as h`"),
        ("from torch import *", "`from torch import *`"),
        ("from torch.hub import load_state_dict_from_url", "`from torch.hub import load_state_dict_from_url`"),
        ("import torch.utils.cpp_extension", "`import torch.utils.cpp_extension`"),
        ("import torch.hub", "`import torch.hub`"),
        ("weights = torch.utils.model_zoo.load_url('u')", "`torch.utils.model_zoo`"),
        ("state = nn.Module.load_state_dict_from_url", "`nn.Module.load_state_dict_from_url`"),
        ("T = torch\nT.hub.list('x')", "`torch.hub`"),
        ("f = getattr(torch, 'load')", "`torch.load`"),
        ("f = getattr(torch.nn, '__dict__')", "'__dict__'"),
        ("setattr(object, '__getattr__', None)", "'__getattr__'"),
        ("classes = ().__class__.__bases__[0].__subclasses__()", "`__subclasses__`"),
        ("g = (lambda: 0).__globals__", "`__globals__`"),
        ("c = (lambda: 0).__code__", "`__code__`"),
        ("mro = int.__mro__", "`__mro__`"),
        ("table = nn.Module.__dict__", "`__dict__`"),
        ("frame = (x for x in ()).gi_frame.f_globals", "`f_globals`"),
        ("key = {}['__builtins__']", "'__builtins__'"),
        ("system = torch.os.system", "`torch.os`"),
        ("path = F.sys.path", "`torch.nn.functional.sys`"),
        ("url = 'https://example.com/weights.pt'", "'https://example.com/weights.pt'"),
        ("url = f'http://{1}.example.com'", "'http://'"),
        ("layer = nn.Linear(2, 2, pretrained=True)", "`pretrained=True`"),
        ("torch.nn.functional.relu = lambda x: x", "`torch.nn.functional.relu`"),
        ("F.cross_entropy = lambda *a, **k: 0.0", "`torch.nn.functional.cross_entropy`"),
        ("torch.Tensor.item = lambda self: 1.0", "`torch.Tensor.item`"),
        ("nn.Module.__call__ = None", "`torch.nn.Module.__call__`"),
        ("torch.manual_seed.x = 1", "`torch.manual_seed.x`"),
        ("del torch.load", "`torch.load`"),
        ("torch.float32 += 1", "`torch.float32`"),
        ("setattr(torch, 'argmax', None)", "`setattr(torch, ...)`"),
        ("setattr(F, 'relu', None)", "`setattr(torch.nn.functional, ...)`"),
        ("Tensor = torch.Tensor\nTensor.argmax = None", "`torch.Tensor.argmax`"),
        ("def f(eval=None):\n    pass\neval('1')", "`eval(...)`"),
        ("def f(open):\n    def g():\n        global open\n        return open('x')\n    return g", "global open"),
    ],
)
def test_forbidden_constructs(body: str, shown: str) -> None:
    failure = check_code(candidate(body))
    assert failure is not None, body
    assert failure.kind is FailureKind.FORBIDDEN, failure.message
    assert re.match(r"line \d+: ", failure.message), failure.message
    assert shown in failure.message, failure.message


@pytest.mark.parametrize(
    "body",
    [
        "def f(input):\n    return input * 2",
        "g = lambda input: input + 1",
        "def f(x):\n    def g():\n        return input_ + x\n    input_ = 1\n    return g",
        "layer = nn.Linear(2, 2)\nlayer.weight.data.zero_()",
        "layer = nn.Linear(2, 2, bias=False)\nlayer.bias = None",
        "config = {'pretrained': True}",
        "def make(pretrained=False):\n    return nn.Linear(2, 2)\nm = make(pretrained=False)",
        "name = getattr(nn, 'GELU')()",
        "x = torch.zeros(2).__len__()",
        "y = torch.ones(2).__add__(1)",
        "activation = getattr(F, 'relu')",
        "size = torch.Size([1, 2])",
        "version = torch.__version__",
        "modules = {'load': 1}",
        "'''http://docs in a bare string'''",
        "def g(x):\n    '''See https://example.com.'''\n    return x",
    ],
)
def test_allowed_lookalikes(body: str) -> None:
    assert check_code(candidate(body)) is None


def test_every_violation_is_listed_first_one_first() -> None:
    body = "import os\nx = open('f')\ny = eval('1')\nimport sys"
    failure = check_code(candidate(body))
    assert failure is not None
    assert failure.kind is FailureKind.IMPORT  # the kind of the first violation
    lines = failure.message.splitlines()
    assert [line.split(":")[0] for line in lines] == ["line 4", "line 5", "line 6", "line 7"]
    assert "`open(...)` is not allowed: candidates may not do file I/O" in lines[1]


def test_a_dunder_chain_is_reported_once() -> None:
    failure = check_code(candidate("classes = ().__class__.__bases__[0].__subclasses__()"))
    assert failure is not None
    assert len(failure.message.splitlines()) == 1


def test_the_list_of_violations_is_capped() -> None:
    body = "\n".join(f"x{i} = eval('{i}')" for i in range(25))
    failure = check_code(candidate(body))
    assert failure is not None
    lines = failure.message.splitlines()
    assert len(lines) == 11 and lines[-1] == "... and 15 more violations"


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        # The sandbox's bad inputs, each rejected by the static check alone.
        ("import os\nos.fork()", FailureKind.IMPORT),
        ("handle = open('big.bin', 'wb')", FailureKind.FORBIDDEN),
        ("import sys\nsys.exit(0)", FailureKind.IMPORT),
        ("import ctypes\nctypes.string_at(0)", FailureKind.IMPORT),
        ("import socket\nsocket.create_connection(('1.1.1.1', 80))", FailureKind.IMPORT),
        ("secret = open('/root/.ssh/id_rsa').read()", FailureKind.FORBIDDEN),
        ("import os\nkey = os.environ['OPENAI_API_KEY']", FailureKind.IMPORT),
        ("torch.Tensor.argmax = lambda self, dim=None: self", FailureKind.FORBIDDEN),
    ],
)
def test_bad_inputs_are_rejected_statically(body: str, kind: FailureKind) -> None:
    failure = check_code(candidate(body))
    assert failure is not None and failure.kind is kind


def test_training_imports_get_an_actionable_message() -> None:
    failure = check_code("import torch.nn as nn\nfrom torch.optim import Adam\n\nclass Net(nn.Module):\n    pass\n")
    assert failure is not None and failure.kind.value == "import"
    assert "line 2" in failure.message and "keep only the model" in failure.message


def test_a_layer_with_weights_built_inside_forward_is_a_build_failure():
    code = """
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.head = nn.Linear(in_shape[0], num_classes)

    def forward(self, x):
        x = nn.ReLU()(x)  # no weights: fine
        x = nn.Conv2d(1, 1, 3, padding=1)(x)
        return self.head(x.mean((2, 3)))
"""
    failure = check_code(code)
    assert failure is not None and failure.kind is FailureKind.BUILD
    assert failure.message.startswith("line 12: `nn.Conv2d(...)` is created inside forward")
    assert "ReLU" not in failure.message
