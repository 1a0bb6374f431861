"""The built-in seed network is valid for every dataset shape nasloop knows; user seeds are checked."""

import pytest
import torch

from nasloop.config import ConfigError
from nasloop.spaces.open_code import check_code
from nasloop.spaces.seed import BUILTIN_SEED, load_seed

# fashion-mnist/mnist, cifar/svhn, imagenette, imagenet16-120, digits
SHAPES = [(1, 28, 28), (3, 32, 32), (3, 160, 160), (3, 16, 16), (1, 8, 8)]


@pytest.mark.parametrize("in_shape", SHAPES)
def test_the_builtin_seed_builds_and_runs_for_every_dataset_shape(in_shape):
    assert check_code(BUILTIN_SEED) is None
    namespace: dict = {}
    exec(compile(BUILTIN_SEED, "<seed>", "exec"), namespace)
    net = namespace["Net"](in_shape, 7)
    assert net(torch.randn(4, *in_shape)).shape == (4, 7)


def test_seed_model_values(tmp_path):
    assert load_seed(None).code == BUILTIN_SEED and load_seed(None).builtin
    assert load_seed("none") is None and load_seed("None") is None
    mine = tmp_path / "mine.py"
    mine.write_text(BUILTIN_SEED.replace("32", "16"))
    assert load_seed(str(mine)).source == str(mine) and not load_seed(str(mine)).builtin
    with pytest.raises(ConfigError, match="no such file"):
        load_seed(str(tmp_path / "absent.py"))
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n" + BUILTIN_SEED)
    with pytest.raises(ConfigError, match=r"bad\.py cannot be a candidate \(import\)"):
        load_seed(str(bad))
