"""The `Proxy` contract, checked for every registered zero-cost proxy (a new proxy is tested by being
registered): a finite float, deterministic for a seed, the caller's model and RNG left untouched, and
`ProxyError` (never NaN) when the value cannot be computed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nasloop.candidate import FailureKind
from nasloop.evaluate.proxies import ALL_PROXIES, ProxyError, compute_proxies
from nasloop.registry import UnknownNameError, proxies

NUM_CLASSES = 5
# Proxies that never run the model forward, so a broken forward pass cannot affect them.
NO_CHECKED_FORWARD = {"l2_norm", "params", "flops"}


class ResidualNet(nn.Module):
    """Conv-BN-ReLU stem, a residual block with an in-place ReLU, dropout, global pooling, linear head."""

    def __init__(self, in_shape: tuple[int, int, int] = (3, 8, 8), num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_shape[0], 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (N, 8, 8, 8)
        x = torch.relu_(x + self.block(x))
        x = self.dropout(x.mean(dim=(2, 3)))  # (N, 8)
        return self.head(x)


def batch(size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(123)
    inputs = torch.randn(size, 3, 8, 8, generator=generator)
    return inputs, torch.randint(0, NUM_CLASSES, (size,), generator=generator)


def test_all_proxies_are_registered() -> None:
    assert set(ALL_PROXIES) == set(proxies.names())
    assert len(ALL_PROXIES) == len(set(ALL_PROXIES)) == 14


@pytest.mark.parametrize("name", ALL_PROXIES)
def test_value_is_finite_and_deterministic_for_a_seed(name: str) -> None:
    torch.manual_seed(0)
    model, (inputs, targets) = ResidualNet(), batch()
    proxy = proxies.get(name)
    first = proxy(model, inputs, targets, num_classes=NUM_CLASSES, seed=7)
    second = proxy(model, inputs, targets, num_classes=NUM_CLASSES, seed=7)
    assert isinstance(first, float)
    assert first == second


@pytest.mark.parametrize("name", ALL_PROXIES)
def test_caller_model_and_rng_are_left_untouched(name: str) -> None:
    torch.manual_seed(0)
    model, (inputs, targets) = ResidualNet(), batch()
    model.head.weight.grad = torch.ones_like(model.head.weight)
    model.stem.requires_grad_(False)
    model.block.eval()
    state = {key: value.clone() for key, value in model.state_dict().items()}
    flags = {module: module.training for module in model.modules()}
    rng = torch.get_rng_state()
    proxies.get(name)(model, inputs, targets, num_classes=NUM_CLASSES, seed=3)
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())
    assert all(module.training == flags[module] for module in model.modules())
    assert torch.equal(model.head.weight.grad, torch.ones_like(model.head.weight))
    assert model.head.bias.grad is None
    assert not any(parameter.requires_grad for parameter in model.stem.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


class Poisoned(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float("nan")


@pytest.mark.parametrize("name", sorted(set(ALL_PROXIES) - NO_CHECKED_FORWARD))
def test_a_non_finite_forward_is_a_proxy_error_not_a_nan(name: str) -> None:
    model = nn.Sequential(ResidualNet(), Poisoned())
    inputs, targets = batch()
    with pytest.raises(ProxyError) as raised:
        proxies.get(name)(model, inputs, targets, num_classes=NUM_CLASSES, seed=0)
    assert raised.value.kind is FailureKind.NAN
    assert raised.value.proxy == name and str(raised.value).startswith(f"{name}: ")


@pytest.mark.parametrize("name", sorted(set(ALL_PROXIES) - NO_CHECKED_FORWARD))
def test_wrong_logits_shape_is_a_shape_error(name: str) -> None:
    inputs, targets = batch()
    with pytest.raises(ProxyError) as raised:
        proxies.get(name)(ResidualNet(num_classes=3), inputs, targets, num_classes=NUM_CLASSES, seed=0)
    assert raised.value.kind is FailureKind.SHAPE
    assert "expected logits of shape" in str(raised.value) and ", 5)" in str(raised.value)


def test_compute_proxies_returns_the_named_values_in_order() -> None:
    torch.manual_seed(0)
    model, (inputs, targets) = ResidualNet(), batch()
    scores = compute_proxies(model, inputs, targets, ["params", "synflow"], num_classes=NUM_CLASSES, seed=1)
    assert list(scores) == ["params", "synflow"]
    assert scores["synflow"] == proxies.get("synflow")(model, inputs, targets, num_classes=NUM_CLASSES, seed=1)


def test_compute_proxies_rejects_an_unknown_name_before_computing() -> None:
    inputs, targets = batch()
    with pytest.raises(UnknownNameError, match="synflow"):
        compute_proxies(ResidualNet(), inputs, targets, ["params", "synflw"], num_classes=NUM_CLASSES, seed=0)


def test_proxies_sharing_a_pass_run_it_once_and_agree_with_separate_calls() -> None:
    torch.manual_seed(0)
    model, (inputs, targets) = ResidualNet(), batch()
    forwards: list[int] = []
    model.register_forward_hook(lambda module, args, output: forwards.append(1))  # copied with the model
    names = ["snip", "grad_norm", "plain", "fisher"]
    together = compute_proxies(model, inputs, targets, names, num_classes=NUM_CLASSES, seed=4)
    assert len(forwards) == 1
    separate = {name: proxies.get(name)(model, inputs, targets, num_classes=NUM_CLASSES, seed=4) for name in names}
    assert len(forwards) == 1 + len(names)
    assert together == separate


def test_compute_proxies_can_collect_errors_and_keep_going() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, NUM_CLASSES))  # no ReLU: naswot fails
    inputs, targets = batch()
    errors: dict[str, ProxyError] = {}
    scores = compute_proxies(
        model, inputs, targets, ["naswot", "params"], num_classes=NUM_CLASSES, seed=0, errors=errors
    )
    assert scores == {"params": 3 * 8 * 8 * NUM_CLASSES + NUM_CLASSES}
    assert list(errors) == ["naswot"] and "ReLU" in str(errors["naswot"])
    with pytest.raises(ProxyError, match="naswot"):
        compute_proxies(model, inputs, targets, ["naswot"], num_classes=NUM_CLASSES, seed=0)


@pytest.mark.gpu
def test_every_proxy_runs_on_cuda_and_leaves_the_model_there() -> None:
    torch.manual_seed(0)
    model = ResidualNet().cuda()
    inputs, targets = (tensor.cuda() for tensor in batch())
    scores = compute_proxies(model, inputs, targets, ALL_PROXIES, num_classes=NUM_CLASSES, seed=0)
    assert set(scores) == set(ALL_PROXIES)
    assert next(model.parameters()).is_cuda
