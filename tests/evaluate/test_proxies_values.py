"""Proxy values against hand-computed cases (one or two linear layers) and properties the papers state."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasloop.candidate import FailureKind
from nasloop.evaluate.proxies import ProxyError
from nasloop.registry import proxies

CLASSES = 3


def score(name: str, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, seed: int = 0) -> float:
    return float(proxies.get(name)(model, inputs, targets, num_classes=CLASSES, seed=seed))


def linear_case(batch: int = 4) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    """Flatten → Linear(4, 3) on (N, 1, 2, 2) images, float64 so hand formulas match closely."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, CLASSES)).double()
    inputs = torch.randn(batch, 1, 2, 2, dtype=torch.float64)
    targets = torch.tensor([0, 2, 1, 2, 0, 1][:batch])
    return model, inputs, targets


def by_hand(model: nn.Sequential, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """For L = mean_n CE(W x_n + b, y_n): logits A, softmax P, ∂L/∂A and ∂L/∂W = (P − Y)ᵀ X / N."""
    weight, bias = model[1].weight.detach(), model[1].bias.detach()
    x = inputs.flatten(1)
    logits = x @ weight.T + bias
    probabilities = logits.softmax(dim=1)
    logit_gradient = (probabilities - F.one_hot(targets, CLASSES)) / len(x)
    return {
        "x": x,
        "W": weight,
        "A": logits,
        "P": probabilities,
        "dA": logit_gradient,
        "dW": logit_gradient.T @ x,
    }


# ---------------------------------------------------------------- hand-computed single-layer cases


def test_gradient_saliencies_of_one_linear_layer() -> None:
    model, inputs, targets = linear_case()
    hand = by_hand(model, inputs, targets)
    assert score("grad_norm", model, inputs, targets) == pytest.approx(float(hand["dW"].norm()))
    assert score("snip", model, inputs, targets) == pytest.approx(float((hand["W"] * hand["dW"]).abs().sum()))
    assert score("plain", model, inputs, targets) == pytest.approx(float((hand["W"] * hand["dW"]).sum()))


def test_fisher_of_one_linear_layer() -> None:
    model, inputs, targets = linear_case()
    hand = by_hand(model, inputs, targets)
    # the reference form: each output channel's saliency counts once per input feature (4 of them)
    expected = 4 * float((hand["A"] * hand["dA"]).pow(2).sum() / (2 * len(inputs)))
    assert score("fisher", model, inputs, targets) == pytest.approx(expected)


def test_grasp_of_one_linear_layer() -> None:
    model, inputs, targets = linear_case()
    hand = by_hand(model, inputs, targets)
    # H g for softmax cross-entropy: (1/N) Σ_n [(diag p_n − p_n p_nᵀ)(G x_n)] x_nᵀ with G = ∂L/∂W.
    hessian_gradient = torch.zeros_like(hand["W"])
    for x, p in zip(hand["x"], hand["P"], strict=True):
        softmax_jacobian = torch.diag(p) - torch.outer(p, p)
        hessian_gradient += torch.outer(softmax_jacobian @ (hand["dW"] @ x), x) / len(inputs)
    expected = float((-hand["W"] * hessian_gradient).sum())
    assert score("grasp", model, inputs, targets) == pytest.approx(expected)


def test_zico_of_one_linear_layer_over_two_single_image_batches() -> None:
    model, inputs, targets = linear_case(batch=2)
    first = by_hand(model, inputs[:1], targets[:1])["dW"]
    second = by_hand(model, inputs[1:], targets[1:])["dW"]
    deviation = (first - second).abs() / 2  # population std of two values
    mean_magnitude = (first.abs() + second.abs()) / 2
    varying = deviation > 0
    expected = math.log(float((mean_magnitude[varying] / deviation[varying]).sum()))
    assert score("zico", model, inputs, targets) == pytest.approx(expected)


def test_data_free_scores_of_one_linear_layer() -> None:
    model, inputs, targets = linear_case()
    weight = model[1].weight.detach()
    # all-ones input, absolute weights: ∂R/∂W_ki = 1, so the flow is Σ|W|
    assert score("synflow", model, inputs, targets) == pytest.approx(float(weight.abs().sum()))
    assert score("l2_norm", model, inputs, targets) == pytest.approx(float(weight.norm()))
    assert score("params", model, inputs, targets) == 4 * 3 + 3
    assert score("flops", model, inputs, targets) == 2 * 4 * 3


def test_jacobian_covariance_of_a_linear_map() -> None:
    # Every input has the same Jacobian 1ᵀW: the correlation matrix is all ones, eigenvalues N, 0, ..., 0.
    model, inputs, targets = linear_case()
    k, n = 1e-5, len(inputs)
    expected = -(math.log(n + k) + 1 / (n + k) + (n - 1) * (math.log(k) + 1 / k))
    assert score("jacob_cov", model, inputs, targets) == pytest.approx(expected, rel=1e-6)


def test_synflow_of_two_linear_layers_conserves_flow_per_layer() -> None:
    # Tanaka et al.: each layer's total synaptic flow equals R = 1ᵀ|W2||W1|1, so the sum is 2R.
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 6, bias=False), nn.Linear(6, CLASSES, bias=False))
    first, second = model[1].weight.detach().double(), model[2].weight.detach().double()
    flow = float(torch.ones(CLASSES, dtype=torch.float64) @ second.abs() @ first.abs() @ torch.ones(4).double())
    inputs, targets = torch.randn(2, 1, 2, 2), torch.tensor([0, 1])
    assert score("synflow", model, inputs, targets) == pytest.approx(2 * flow)


def test_gradient_proxies_of_a_zero_weight_network_are_zero() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, CLASSES))
    for parameter in model.parameters():
        nn.init.zeros_(parameter)
    inputs, targets = torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 2, 0])
    for name in ("grad_norm", "snip", "plain", "fisher"):
        assert score(name, model, inputs, targets) == 0.0, name


# ---------------------------------------------------------------- NASWOT


def identity_relu_net(units: int = 8) -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(units, units), nn.ReLU(), nn.Linear(units, CLASSES))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(units))
        model[1].bias.zero_()
    return model


def two_inputs_differing_in(flipped: int, units: int = 8) -> torch.Tensor:
    second = torch.ones(units)
    second[:flipped] = -1.0
    return torch.stack([torch.ones(units), second]).view(2, units, 1, 1)


@pytest.mark.parametrize("flipped", [1, 3, 8])
def test_naswot_by_hand(flipped: int) -> None:
    # codes differ in `flipped` of 8 units: K = [[8, 8 − d], [8 − d, 8]], det = 64 − (8 − d)².
    inputs = two_inputs_differing_in(flipped)
    expected = math.log(64 - (8 - flipped) ** 2)
    assert score("naswot", identity_relu_net(), inputs, torch.tensor([0, 1])) == pytest.approx(expected)


def test_naswot_grows_with_the_number_of_distinct_activation_patterns() -> None:
    targets = torch.tensor([0, 1])
    values = [score("naswot", identity_relu_net(), two_inputs_differing_in(d), targets) for d in (1, 2, 4, 8)]
    assert values == sorted(values) and len(set(values)) == 4


def test_naswot_sees_functional_relu_calls() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = identity_relu_net()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hidden = F.relu(self.inner[1](self.inner[0](x)))
            return self.inner[3](hidden)

    inputs = two_inputs_differing_in(3)
    assert score("naswot", Functional(), inputs, torch.tensor([0, 1])) == pytest.approx(math.log(64 - 25))


def test_naswot_refuses_identical_activation_patterns() -> None:
    inputs = torch.ones(2, 8, 1, 1)
    with pytest.raises(ProxyError, match="singular") as raised:
        score("naswot", identity_relu_net(), inputs, torch.tensor([0, 1]))
    assert raised.value.kind is FailureKind.NAN


def test_naswot_needs_a_rectifier() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, CLASSES))
    with pytest.raises(ProxyError, match="ReLU"):
        score("naswot", model, torch.randn(4, 8, 1, 1), torch.tensor([0, 1, 2, 0]))


# ---------------------------------------------------------------- SynFlow


def conv_bn_net(track_running_stats: bool = True) -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8, track_running_stats=track_running_stats),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8, track_running_stats=track_running_stats),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, CLASSES),
    )


@pytest.mark.parametrize("track_running_stats", [True, False])
def test_synflow_is_data_independent_and_positive(track_running_stats: bool) -> None:
    model = conv_bn_net(track_running_stats)
    targets = torch.tensor([0, 1, 2, 0])
    values = {
        score("synflow", model, torch.randn(4, 3, 8, 8), targets),
        score("synflow", model, torch.zeros(4, 3, 8, 8), targets),
        score("synflow", model, torch.randn(1, 3, 8, 8), targets[:1]),
    }
    assert len(values) == 1 and values.pop() > 0


def test_synflow_ignores_trained_batchnorm_statistics() -> None:
    model, inputs, targets = conv_bn_net(), torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    before = score("synflow", model, inputs, targets)
    model.train()(torch.randn(16, 3, 8, 8) * 5 + 3)  # moves the running statistics
    assert score("synflow", model, inputs, targets) == pytest.approx(before)


# ---------------------------------------------------------------- Zen-score and the rest


def test_zen_rises_with_width_and_works_without_batchnorm() -> None:
    def net(width: int, batchnorm: bool) -> nn.Module:
        norm = [nn.BatchNorm2d(width)] if batchnorm else []
        return nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), *norm, nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
            *norm, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, CLASSES),
        )  # fmt: skip

    inputs, targets = torch.randn(8, 3, 8, 8), torch.zeros(8, dtype=torch.long)
    assert score("zen", net(32, True), inputs, targets) > score("zen", net(4, True), inputs, targets)
    assert math.isfinite(score("zen", net(8, False), inputs, targets))


def test_zen_is_independent_of_the_weights_it_is_given() -> None:
    # Zen-score re-initialises with N(0, 1) weights, so only the architecture matters.
    first, second = conv_bn_net(), conv_bn_net()
    with torch.no_grad():
        for parameter in second.parameters():
            parameter.mul_(3.0)
    inputs, targets = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    assert score("zen", first, inputs, targets) == score("zen", second, inputs, targets)


def test_weight_scoring_proxies_need_a_conv_or_linear_layer() -> None:
    class NoLayers(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :CLASSES]

    inputs, targets = torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 2, 0])
    for name in ("synflow", "snip", "grasp", "grad_norm", "fisher", "zico", "l2_norm", "plain"):
        with pytest.raises(ProxyError, match="no Conv or Linear layer"):
            score(name, NoLayers(), inputs, targets)


def test_batch_statistics_proxies_need_two_images() -> None:
    model, inputs, targets = linear_case(batch=1)
    for name in ("zico", "jacob_cov"):
        with pytest.raises(ProxyError, match="at least 2"):
            score(name, model, inputs, targets)
