"""Parameter and FLOP counts against hand counts."""

from __future__ import annotations

import torch
from torch import nn

from nasloop.hardware import count_flops, count_parameters


def small_cnn() -> nn.Module:
    # conv: 1→2 channels, 3×3, padding 1 on 4×4; linear: 32→3
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))


def test_parameters_equal_a_hand_count() -> None:
    assert count_parameters(small_cnn()) == (2 * 1 * 9 + 2) + (32 * 3 + 3)


def test_shared_parameters_count_once() -> None:
    layer = nn.Linear(4, 4)
    assert count_parameters(nn.Sequential(layer, layer)) == 20


def test_flops_are_twice_the_hand_counted_macs() -> None:
    conv_macs = 2 * 4 * 4 * (1 * 3 * 3)  # output elements × multiply-adds per output
    linear_macs = 32 * 3
    assert count_flops(small_cnn(), (1, 4, 4)) == 2 * (conv_macs + linear_macs)


def test_flops_scale_with_batch_and_leave_the_mode_unchanged() -> None:
    model = small_cnn().train()
    assert count_flops(model, (1, 4, 4), batch_size=5) == 5 * count_flops(model, (1, 4, 4))
    assert model.training


def test_flops_follow_the_model_dtype() -> None:
    assert count_flops(small_cnn().double(), (1, 4, 4)) > 0


def test_a_model_without_dense_layers_has_zero_flops() -> None:
    assert count_flops(nn.Sequential(nn.ReLU(), nn.Flatten()), (1, 4, 4)) == 0
    assert torch.get_default_dtype() == torch.float32
