"""Proxies that need no data: SynFlow, the weight norm, and the honest baselines params and FLOPs."""

from __future__ import annotations

import torch
from torch import nn

from nasloop.candidate import FailureKind
from nasloop.evaluate.proxies.base import (
    ProxyError,
    forward_logits,
    weight_gradient,
    weight_layers,
    weight_of,
    zero_cost_proxy,
)
from nasloop.hardware import count_flops, count_parameters


@zero_cost_proxy("synflow")
def synflow(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int) -> float:
    """Total synaptic flow Σ w · ∂R/∂w, with R = 1ᵀ(Π_l |W_l|)1 the output sum of the network with
    absolute weights on an all-ones input.

    Tanaka, Kunin, Yamins, Ganguli, "Pruning neural networks without any data by iteratively conserving
    synaptic flow", NeurIPS 2020; a NAS proxy in Abdelfattah et al. 2021. Data-independent: `inputs`
    only give the image shape (one all-ones image is used). Positive for a network of ReLU/BN/linear
    layers: with absolute weights every activation is non-negative, so ReLU passes everything.
    Higher is better.

    Computed in float64 so that products of many layers do not overflow (float32 overflows at ~1e38; a
    non-finite result is still a `ProxyError`). BatchNorm is turned into the fixed per-channel affine map
    it is at initialisation, x·|γ| + |β| (eval mode with running mean 0 and variance 1): in train mode
    a single constant image has zero batch variance and BN would erase the signal, which is why
    Abdelfattah et al. score SynFlow on the network built without BN; at initialisation (γ=1, β=0) this
    map is the identity, so both agree, and Tanaka et al.'s own scoring also runs in eval mode. Dropout
    is off (eval mode). Per-sample normalisations (LayerNorm, GroupNorm, InstanceNorm) map a constant
    image to zero, as the method defines; only biases then carry flow past them.
    """
    layers = weight_layers(model)
    model.eval().double()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                _as_fixed_affine(module)
        for parameter in model.parameters():
            parameter.abs_()
    ones = torch.ones((1, *inputs.shape[1:]), dtype=torch.float64, device=inputs.device)
    model.zero_grad(set_to_none=True)
    forward_logits(model, ones, num_classes).sum().backward()
    score = sum(float((weight_of(layer).detach() * weight_gradient(layer)).sum()) for layer in layers)
    if score == float("inf"):
        raise ProxyError("the synaptic flow overflows float64", kind=FailureKind.NAN)
    return score


def _as_fixed_affine(norm: nn.modules.batchnorm._BatchNorm) -> None:
    """Make an eval-mode BatchNorm compute x·γ + β (up to its epsilon), with or without running stats."""
    norm.track_running_stats = True
    norm.running_mean = torch.zeros(norm.num_features, dtype=torch.float64, device=_device_of(norm))
    norm.running_var = torch.ones(norm.num_features, dtype=torch.float64, device=_device_of(norm))


def _device_of(module: nn.Module) -> torch.device:
    tensors = [*module.parameters(), *module.buffers()]
    return tensors[0].device if tensors else torch.device("cpu")


@zero_cost_proxy("l2_norm")
def l2_norm(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int) -> float:
    """Sum over Conv/Linear layers of the Euclidean (Frobenius) norm of the weight at initialisation.

    Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021. Data-independent; mostly a
    size measure. Higher is better.
    """
    return sum(float(weight_of(layer).detach().norm()) for layer in weight_layers(model))


@zero_cost_proxy("params")
def params(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int) -> float:
    """Number of parameters: the honest baseline every proxy must beat (bigger nets tend to be better
    after training; Abdelfattah et al. 2021 and Ning et al. 2021 report it as a strong one). Higher is
    better."""
    return float(count_parameters(model))


@zero_cost_proxy("flops")
def flops(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int) -> float:
    """FLOPs of one image's inference (2 × MACs of convolutions and matmuls, `count_flops`): the other
    honest baseline. Higher is better."""
    return float(count_flops(model, tuple(inputs.shape[1:])))
