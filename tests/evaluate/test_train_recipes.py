"""The recipes' settings, schedules and batched augmentation, checked against plain per-sample code."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nasloop.data import SandboxData
from nasloop.evaluate.job import Recipe
from nasloop.evaluate.train import (
    BatchMaker,
    accuracy,
    batch_bounds,
    crop_padding,
    learning_rate,
    resolve_recipe,
)

CPU = torch.device("cpu")


def make_data(count: int = 64, shape: tuple[int, int, int] = (3, 12, 10), flip: bool = True) -> SandboxData:
    generator = torch.Generator().manual_seed(0)
    return SandboxData(
        name="synthetic",
        train_x=torch.randint(0, 256, (count, *shape), dtype=torch.uint8, generator=generator),
        train_y=torch.arange(count) % 4,
        val_x=torch.randint(0, 256, (10, *shape), dtype=torch.uint8, generator=generator),
        test_x=torch.randint(0, 256, (7, *shape), dtype=torch.uint8, generator=generator),
        num_classes=4,
        in_shape=shape,
        mean=(0.5,) * shape[0],
        std=(0.25,) * shape[0],
        horizontal_flip=flip,
    )


def test_accuracy() -> None:
    assert accuracy(np.array([1, 2, 3, 4]), torch.tensor([1, 2, 0, 4])) == 0.75
    assert accuracy(np.array([0]), np.array([0])) == 1.0
    with pytest.raises(ValueError, match="labels"):
        accuracy(np.array([1, 2]), np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="empty"):
        accuracy(np.array([], dtype=np.int64), np.array([], dtype=np.int64))


def test_paper_recipe_is_the_published_protocol() -> None:
    settings = resolve_recipe(Recipe(name="paper"), make_data(), CPU)
    assert (settings.batch_size, settings.lr, settings.momentum, settings.weight_decay) == (128, 0.01, 0.9, 5e-4)
    assert not settings.nesterov and settings.label_smoothing == 0.0
    assert not settings.bf16_autocast and not settings.channels_last


def test_fast_recipe_scales_the_learning_rate_with_the_batch() -> None:
    base = resolve_recipe(Recipe(name="fast"), make_data(), CPU)
    doubled = resolve_recipe(Recipe(name="fast", batch_size=2 * base.batch_size), make_data(), CPU)
    assert doubled.lr == pytest.approx(2 * base.lr) and base.nesterov
    gpu = resolve_recipe(Recipe(name="fast"), make_data(), torch.device("cuda"))
    assert gpu.bf16_autocast and gpu.channels_last and not base.bf16_autocast


def test_recipe_fields_override_the_defaults() -> None:
    settings = resolve_recipe(
        Recipe(name="paper", batch_size=32, lr=0.5, momentum=0.0, weight_decay=0.0, augment=False), make_data(), CPU
    )
    assert (settings.batch_size, settings.lr, settings.momentum, settings.weight_decay) == (32, 0.5, 0.0, 0.0)
    assert not settings.augment


def test_crop_padding_by_image_size() -> None:
    assert [crop_padding(size) for size in (8, 28, 32, 160)] == [1, 2, 4, 4]


def test_paper_learning_rate_is_constant_within_an_epoch() -> None:
    settings = resolve_recipe(Recipe(name="paper", epochs=2), make_data(), CPU)
    rates = [learning_rate(settings, step, 20, steps_per_epoch=10) for step in range(20)]
    assert rates[:10] == [0.01] * 10
    assert rates[10:] == [pytest.approx(0.005)] * 10  # cosine over 2 epochs, stepped after the first


def test_fast_learning_rate_warms_up_then_decays_to_zero() -> None:
    settings = resolve_recipe(Recipe(name="fast"), make_data(), CPU)
    rates = [learning_rate(settings, step, 100, steps_per_epoch=100) for step in range(100)]
    peak = int(np.argmax(rates))
    assert 0 < peak < 10 and rates[peak] == pytest.approx(settings.lr)
    assert all(a <= b for a, b in itertools.pairwise(rates[: peak + 1]))
    assert all(a >= b for a, b in itertools.pairwise(rates[peak:]))
    assert rates[-1] < 0.02 * settings.lr


def test_batch_bounds_cover_the_budget_and_never_end_with_one_sample() -> None:
    assert batch_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(9, 4) == [(0, 4), (4, 8)]
    assert batch_bounds(3, 8) == [(0, 3)]


def reference_crop_and_flip(image: torch.Tensor, pad: int, dy: int, dx: int, flip: bool) -> torch.Tensor:
    """The textbook per-sample version: flip, zero-pad, cut the window."""
    if flip:
        image = image.flip(2)
    padded = F.pad(image, (pad, pad, pad, pad))
    return padded[:, dy : dy + image.shape[1], dx : dx + image.shape[2]]


@pytest.mark.parametrize("flip", [True, False])
def test_batched_crop_and_flip_match_the_per_sample_version(flip: bool) -> None:
    data = make_data(flip=flip)
    settings = resolve_recipe(Recipe(name="fast"), data, CPU)
    maker = BatchMaker(data, settings, CPU, seed=3)
    order, offsets, flips = maker.sample_plan(40)
    images = data.train_x[order].float()
    batched = maker.crop_and_flip(images, offsets, flips)
    for row in range(40):
        dy, dx = (int(v) for v in offsets[row])
        # flipping before or after the crop gives the same distribution; the batched code mirrors the
        # padded window, which equals flipping the image and cropping at the mirrored column offset
        mirrored_dx = 2 * settings.crop_padding - dx if flip and flips[row] else dx
        expected = reference_crop_and_flip(
            images[row], settings.crop_padding, dy, mirrored_dx, flip and bool(flips[row])
        )
        assert torch.equal(batched[row], expected), row
    assert bool(flips.any()) and not torch.equal(batched, images)


def test_training_batches_are_normalised_and_follow_the_plan() -> None:
    data = make_data(count=50)
    settings = resolve_recipe(Recipe(name="paper", augment=False, batch_size=16), data, CPU)
    maker = BatchMaker(data, settings, CPU, seed=0)
    bounds = batch_bounds(75, 16)  # one and a half epochs
    batches = list(maker.train_batches(bounds))
    assert [len(labels) for _, labels in batches] == [16, 16, 16, 16, 11]
    order = BatchMaker(data, settings, CPU, seed=0).sample_plan(75)[0]
    assert sorted(order[:50].tolist()) == list(range(50))  # the first epoch is a permutation
    images = torch.cat([images for images, _ in batches])
    expected = (data.train_x[order].float() / 255 - 0.5) / 0.25
    assert torch.allclose(images, expected, atol=1e-5)
    assert torch.equal(torch.cat([labels for _, labels in batches]), data.train_y[order])
