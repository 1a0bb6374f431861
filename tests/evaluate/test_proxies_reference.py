"""Proxies against the reference implementations' definitions where nasloop once differed (issue 20):
synflow's absolute flows and BatchNorm, fisher's per-weight spreading, Zen-score's feature map and the
Zen-NAS authors' form. Each case is small enough to compute by hand."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasloop.registry import proxies

CLASSES = 3


def score(name: str, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, seed: int = 0) -> float:
    return float(proxies.get(name)(model, inputs, targets, num_classes=CLASSES, seed=seed))


# ---------------------------------------------------------------- synflow


def groupnorm_net() -> nn.Sequential:
    torch.manual_seed(4)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, CLASSES),
    )  # fmt: skip


def test_synflow_of_a_groupnorm_network_sums_the_absolute_flow_of_each_weight() -> None:
    model = groupnorm_net()
    # By hand: absolute parameters, float64, one all-ones image, R = Σ outputs, then Σ |w · ∂R/∂w|.
    absolute = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for parameter in absolute.parameters():
            parameter.abs_()
    absolute(torch.ones(1, 3, 8, 8, dtype=torch.float64)).sum().backward()
    layers = [module for module in absolute.modules() if isinstance(module, nn.Conv2d | nn.Linear)]
    flows = [layer.weight.detach() * layer.weight.grad for layer in layers]
    expected = sum(float(flow.abs().sum()) for flow in flows)
    signed = sum(float(flow.sum()) for flow in flows)
    assert abs(signed - expected) > 0.05 * expected  # GroupNorm's mean subtraction makes flows negative
    inputs, targets = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    assert score("synflow", model, inputs, targets) == pytest.approx(expected, rel=1e-9)


class ResidualNet(nn.Module):
    """A conv stem and two residual blocks conv-norm-ReLU-conv-norm; `norm(channels)` builds each norm."""

    def __init__(self, norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.blocks = nn.ModuleList(self.block(norm) for _ in range(2))
        self.head = nn.Linear(8, CLASSES)

    @staticmethod
    def block(norm: Callable[[int], nn.Module]) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1, bias=False), norm(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, bias=False),
            norm(8),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = F.relu(x + block(x))
        return self.head(x.mean(dim=(2, 3)))


def zero_gamma_batchnorm(channels: int) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(channels)
    nn.init.zeros_(norm.weight)  # the "zero-init residual" trick: each block starts as the identity
    return norm


def test_synflow_scores_batchnorm_as_the_identity_even_with_zero_gamma() -> None:
    # As the reference scores the network built without BatchNorm, γ = 0 does not cut the branch off.
    inputs, targets = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    with_batchnorm = score("synflow", ResidualNet(zero_gamma_batchnorm), inputs, targets)
    without = score("synflow", ResidualNet(lambda channels: nn.Identity()), inputs, targets)
    assert with_batchnorm == pytest.approx(without, rel=1e-12)


# ---------------------------------------------------------------- fisher


def test_fisher_of_a_grouped_convolution_and_a_linear_layer_by_hand() -> None:
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(2, 4, 2, groups=2), nn.Flatten(), nn.Linear(16, CLASSES)).double()
    inputs = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    targets = torch.tensor([0, 2, 1, 2])
    # By hand: layer outputs a and loss gradients g of L = mean_n CE; Δ_c = 1/(2N) Σ_n (Σ_spatial a·g)².
    with torch.no_grad():
        conv_output = model[0](inputs)  # (4, 4, 2, 2)
        logits = model[2](conv_output.flatten(1))  # (4, 3)
        logit_gradient = (logits.softmax(dim=1) - F.one_hot(targets, CLASSES)) / len(inputs)
        conv_gradient = (logit_gradient @ model[2].weight).view_as(conv_output)
    conv_saliency = float((conv_output * conv_gradient).sum(dim=(2, 3)).pow(2).sum() / (2 * len(inputs)))
    linear_saliency = float((logits * logit_gradient).pow(2).sum() / (2 * len(inputs)))
    # Each channel counts once per weight that feeds it: 1 input channel per group × 2×2 for the
    # convolution, 16 inputs for the linear layer.
    expected = 4 * conv_saliency + 16 * linear_saliency
    assert score("fisher", model, inputs, targets) == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------- Zen-score


class FunctionalResNet(nn.Module):
    """A residual block with a projection shortcut, written with `F.relu` like many CIFAR ResNets: the
    last leaf module to output a feature map is the shortcut's BatchNorm, not what enters the pooling.
    `final_relu_module` computes the same function with the last ReLU as a registered `nn.ReLU`."""

    def __init__(self, head: str, final_relu_module: bool = False) -> None:
        super().__init__()
        self.head_kind = head
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(16)
        self.shortcut = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
        self.head = nn.Linear(16 if head == "pool" else 16 * 4 * 4, CLASSES)
        self.final_relu = nn.ReLU() if final_relu_module else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))  # (N, 8, 8, 8)
        x = self.norm(self.conv(x)) + self.shortcut(x)  # (N, 16, 4, 4)
        x = self.final_relu(x) if self.final_relu is not None else F.relu(x)
        if self.head_kind == "pool":
            return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))
        return self.head(x.view(x.size(0), -1))


@pytest.mark.parametrize("head", ["pool", "flatten"])
def test_zen_reads_the_feature_map_that_enters_the_pooling_or_flatten(head: str) -> None:
    # With the last ReLU as a module, the old "last leaf module with a feature map" rule read the right
    # map; the functional network must score the same.
    inputs, targets = torch.randn(8, 3, 8, 8), torch.zeros(8, dtype=torch.long)
    functional = score("zen", FunctionalResNet(head), inputs, targets)
    with_module = score("zen", FunctionalResNet(head, final_relu_module=True), inputs, targets)
    assert functional == pytest.approx(with_module, rel=1e-9)


def two_layer_net(track_running_stats: bool = True) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3, track_running_stats=track_running_stats), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, CLASSES),
    )  # fmt: skip


def zen_by_hand(batch: int, seed: int) -> dict[str, float]:
    """Both Zen-scores of `two_layer_net`, drawing what the proxy draws in the same order: the N(0, 1)
    convolution and linear weights (biases zero, BatchNorm γ = 1, β = 0), then x, then ε."""
    torch.manual_seed(seed)
    weight = torch.randn(3, 2, 3, 3)
    torch.randn(CLASSES, 3)  # the linear weight: drawn, but after the pooling, so not part of f
    clean = torch.randn(batch, 2, 4, 4)
    mixed = clean + 1e-2 * torch.randn(batch, 2, 4, 4)

    def features(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = F.conv2d(x, weight, padding=1)  # the BatchNorm's input
        variance = hidden.var(dim=(0, 2, 3), correction=0)
        normalised = (hidden - hidden.mean(dim=(0, 2, 3), keepdim=True)) / (variance.view(1, -1, 1, 1) + 1e-5).sqrt()
        return F.relu(normalised), hidden

    clean_features, clean_hidden = features(clean)
    mixed_features, mixed_hidden = features(mixed)
    difference = (clean_features - mixed_features).flatten(1)
    paper_variance = clean_hidden.var(dim=(0, 2, 3), correction=0).mean()
    # running variance after two updates with momentum 0.1 from 1, with the unbiased batch variances
    running = 0.9 * (0.9 * 1.0 + 0.1 * clean_hidden.var(dim=(0, 2, 3))) + 0.1 * mixed_hidden.var(dim=(0, 2, 3))
    return {
        "zen": math.log(float(difference.norm(dim=1).mean())) + 0.5 * math.log(float(paper_variance)),
        "zen_official": math.log(float(difference.abs().sum(dim=1).mean())) + 0.5 * math.log(float(running.mean())),
    }


@pytest.mark.parametrize("name", ["zen", "zen_official"])
def test_zen_scores_of_a_two_layer_network_by_hand(name: str) -> None:
    inputs, targets = torch.zeros(8, 2, 4, 4), torch.zeros(8, dtype=torch.long)
    expected = zen_by_hand(batch=8, seed=11)[name]
    assert score(name, two_layer_net(), inputs, targets, seed=11) == pytest.approx(expected, rel=1e-5)


def test_zen_official_starts_the_running_statistics_afresh() -> None:
    # It reads what a newly built network's BatchNorm would hold, whatever the model's own statistics.
    fresh, trained, untracked = two_layer_net(), two_layer_net(), two_layer_net(track_running_stats=False)
    trained(torch.randn(16, 2, 4, 4) * 5 + 3)  # moves the running statistics
    inputs, targets = torch.zeros(8, 2, 4, 4), torch.zeros(8, dtype=torch.long)
    values = {score("zen_official", model, inputs, targets) for model in (fresh, trained, untracked)}
    assert len(values) == 1
