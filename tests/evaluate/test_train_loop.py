"""train_and_predict end to end on small real data: outputs, budget, callbacks, determinism, failures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nasloop.data import Splits, load_splits
from nasloop.evaluate.job import DatasetSpec, Recipe
from nasloop.evaluate.train import NonFiniteLoss, accuracy, train_and_predict

CPU = torch.device("cpu")


def recipe(**fields: object) -> Recipe:
    """One thread: tiny models train faster without OpenMP synchronisation on a shared machine."""
    return Recipe(**{"threads": 1, **fields})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Splits:
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NASLOOP_CACHE_DIR", str(cache))
        return load_splits(DatasetSpec(name="digits"))


class SmallNet(nn.Module):
    def __init__(self, in_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_shape[0], 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),  # (16, 8, 8)
            nn.MaxPool2d(2), nn.Flatten(),  # (256,)
        )  # fmt: skip
        self.head = nn.Linear(16 * (in_shape[1] // 2) * (in_shape[2] // 2), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def small_net(splits: Splits, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SmallNet(splits.in_shape, splits.num_classes)


@pytest.mark.parametrize("name", ["paper", "fast"])
def test_outputs_follow_the_contract(digits: Splits, name: str) -> None:
    calls: list[tuple[int, float]] = []
    output = train_and_predict(
        small_net(digits), digits.for_sandbox(), recipe(name=name), seed=0, device=CPU,
        on_step=lambda step, loss: calls.append((step, loss)),
    )  # fmt: skip
    batch = 128 if name == "paper" else output.settings["batch_size"]
    assert output.steps == math.ceil(len(digits.train_x) / batch)
    assert output.val_pred.dtype == np.int64 and output.val_pred.shape == (len(digits.val_x),)
    assert output.test_pred.dtype == np.int64 and output.test_pred.shape == (len(digits.test_x),)
    assert 0 <= output.train_acc <= 1 and math.isfinite(output.train_loss)
    assert output.train_s > 0 and 0 <= output.data_s < output.train_s and output.samples_per_s > 0
    assert calls[-1][0] == output.steps and all(math.isfinite(loss) for _, loss in calls)
    assert [step for step, _ in calls[:-1]] == list(range(10, output.steps, 10))
    assert output.settings["name"] == name


def test_fractional_epochs_set_the_data_budget(digits: Splits) -> None:
    output = train_and_predict(
        small_net(digits), digits.for_sandbox(), recipe(name="paper", epochs=2.5), seed=0, device=CPU
    )
    assert output.steps == math.ceil(2.5 * len(digits.train_x) / 128)


def test_same_seed_same_result_other_seed_other_result(digits: Splits) -> None:
    def run(seed: int) -> tuple[np.ndarray, float]:
        output = train_and_predict(small_net(digits), digits.for_sandbox(), recipe(name="fast"), seed=seed, device=CPU)
        return output.val_pred, output.train_loss

    first, again, other = run(1), run(1), run(2)
    assert np.array_equal(first[0], again[0]) and first[1] == again[1]
    assert first[1] != other[1]


def test_both_recipes_learn(digits: Splits) -> None:
    for name in ("paper", "fast"):
        output = train_and_predict(
            small_net(digits), digits.for_sandbox(), recipe(name=name, epochs=4), seed=0, device=CPU
        )
        assert accuracy(output.val_pred, digits.val_y) > 0.8, name  # chance is 0.1


class ExplodingNet(SmallNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * float("inf")


def test_non_finite_loss_raises_with_the_step(digits: Splits) -> None:
    model = ExplodingNet(digits.in_shape, digits.num_classes)
    with pytest.raises(NonFiniteLoss, match="at step 1") as error:
        train_and_predict(model, digits.for_sandbox(), recipe(name="paper"), seed=0, device=CPU)
    assert isinstance(error.value, RuntimeError) and error.value.step == 1


class Pruned(Exception):
    pass


def test_an_exception_from_on_step_stops_training(digits: Splits) -> None:
    def prune(step: int, loss: float) -> None:
        if step >= 10:
            raise Pruned(step)

    with pytest.raises(Pruned):
        train_and_predict(
            small_net(digits), digits.for_sandbox(), recipe(name="paper", epochs=3), seed=0, device=CPU, on_step=prune
        )


def test_threads_are_restored(digits: Splits) -> None:
    torch.set_num_threads(2)
    train_and_predict(small_net(digits), digits.for_sandbox(), Recipe(name="fast", threads=1), seed=0, device=CPU)
    assert torch.get_num_threads() == 2


def test_trains_from_sandbox_data_on_disk(digits: Splits, tmp_path: Path) -> None:
    from nasloop.data import load_sandbox_data, save_sandbox_data

    data = load_sandbox_data(save_sandbox_data(digits.for_sandbox(), tmp_path / "data"))
    from_disk = train_and_predict(small_net(digits), data, recipe(name="fast"), seed=0, device=CPU)
    in_memory = train_and_predict(small_net(digits), digits.for_sandbox(), recipe(name="fast"), seed=0, device=CPU)
    assert np.array_equal(from_disk.val_pred, in_memory.val_pred)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fast_recipe_on_gpu_uses_bf16_and_channels_last(digits: Splits) -> None:
    device = torch.device("cuda")
    output = train_and_predict(
        small_net(digits), digits.for_sandbox(), recipe(name="fast", epochs=3), seed=0, device=device
    )
    assert output.settings["bf16_autocast"] and output.settings["channels_last"]
    assert accuracy(output.val_pred, digits.val_y) > 0.6


class ViewFlattenNet(SmallNet):
    """Flattens a feature map with `.view`, as LLM-written code often does; impossible in channels_last."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features[:4](x)  # (16, 4, 4)
        return self.head(x.view(x.size(0), -1))


def test_fast_recipe_uses_channels_last_only_where_the_model_accepts_it(digits: Splits) -> None:
    plain = train_and_predict(small_net(digits), digits.for_sandbox(), recipe(name="fast"), seed=0, device=CPU)
    torch.manual_seed(0)
    viewing = ViewFlattenNet(digits.in_shape, digits.num_classes)
    fallback = train_and_predict(viewing, digits.for_sandbox(), recipe(name="fast"), seed=0, device=CPU)
    assert plain.settings["channels_last"] and not fallback.settings["channels_last"]
    # the layout changes the arithmetic order only: the same network learns the same way
    assert np.mean(plain.val_pred == fallback.val_pred) > 0.9
