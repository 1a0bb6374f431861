"""The network an open-code search starts from: the user's (`seed_model: FILE`) or the built-in one.

A search that starts from a working model shows the LLM a network that trains and its score in the very
first prompt, so a small model edits something that works instead of inventing a module from nothing.
The built-in seed is a small, plain convolutional network that derives every size from `in_shape` (the
classifier's input is computed from the image size after two 2x2 poolings), so it is valid for every
registered dataset's shape, down to 8x8 images, and it shows the LLM how to size a layer from
`in_shape`. Its layers are written out one by one, what a small model edits best: an edit that changes
the poolings but not that size fails with a message naming the size to use, which nasloop then sets in
code (`strategies.size_fix`). (Two other seeds were tried with the 1.5B model: one `nn.Sequential` of
all layers, and a `features` method whose output sizes the classifier; both drew edits that broke in
ways no mechanical repair can mend.) It flattens instead of pooling globally because nasloop's proxy
training is short: on a 6,000-image Fashion-MNIST subset (the `fast` recipe, one epoch) it reaches a
validation accuracy of 0.75-0.77, the same network with global average pooling 0.45-0.49.
`seed_model: none` gives the cold start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nasloop.config import ConfigError
from nasloop.spaces.open_code import check_code

NO_SEED = "none"

BUILTIN_SEED = """import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        channels, height, width = in_shape
        self.conv1 = nn.Conv2d(channels, 32, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(64 * (height // 4) * (width // 4), num_classes)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))  # (B, 32, H/2, W/2)
        x = self.pool(F.relu(self.bn2(self.conv2(x))))  # (B, 64, H/4, W/4)
        x = x.flatten(1)  # (B, 64 * H/4 * W/4)
        return self.fc(x)  # (B, num_classes)
"""


class SeedModelError(ConfigError):
    """A seed model file that cannot be used; the message names the file."""


@dataclass(frozen=True)
class SeedModel:
    """The code of the seed network and where it came from (a file path, or "the built-in seed")."""

    code: str
    source: str

    @property
    def builtin(self) -> bool:
        return self.source == BUILTIN_SOURCE


BUILTIN_SOURCE = "the built-in seed"


def load_seed(seed_model: str | None) -> SeedModel | None:
    """The seed a run's `seed_model` names: None (unset) is the built-in seed, "none" no seed at all, and
    anything else a Python file defining `Net`, which must pass the static check (`SeedModelError`)."""
    if seed_model is None:
        return SeedModel(BUILTIN_SEED, BUILTIN_SOURCE)
    if seed_model.strip().lower() == NO_SEED:
        return None
    path = Path(seed_model).expanduser()
    if not path.is_file():
        raise SeedModelError(f"seed_model {seed_model}: no such file (give a .py file defining Net, or 'none')")
    try:
        code = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise SeedModelError(f"seed_model {path}: cannot be read: {error}") from None
    failure = check_code(code)
    if failure is not None:
        first = failure.message.splitlines()[0]
        raise SeedModelError(f"seed_model {path} cannot be a candidate ({failure.kind.value}): {first}")
    return SeedModel(code, str(path))


__all__ = ["BUILTIN_SEED", "BUILTIN_SOURCE", "NO_SEED", "SeedModel", "SeedModelError", "load_seed"]
