"""Proxies that need no data: SynFlow, the weight norm, and the honest baselines params and FLOPs.

They use only the shape, device and dtype of the batch. synflow and l2_norm score the weights of every
convolution type and `nn.Linear` (`weight_layers`); the reference code scores `nn.Conv2d` and
`nn.Linear` only, the same layers in a 2-D image CNN. See docs/proxies.md.
"""

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
    """Total synaptic flow Σ |w · ∂R/∂w| over the weights of the Conv/Linear layers, with R the sum of the
    outputs of the network whose parameters are all made absolute, on one all-ones image.

    Tanaka, Kunin, Yamins, Ganguli, "Pruning neural networks without any data by iteratively conserving
    synaptic flow", NeurIPS 2020; a NAS proxy in Abdelfattah et al. 2021, whose code (zero-cost-nas,
    `synflow`) this follows. Data-independent: `inputs` only give the image shape. Higher is better.

    * The absolute value is taken per weight, before summing. A network of linear maps, ReLUs and
      pooling has no negative gradient here, but a normalisation that subtracts a mean (GroupNorm,
      LayerNorm, InstanceNorm) or a subtraction in `forward` has, and the signed sum would let those
      weights cancel the others.
    * BatchNorm layers (every dimension; the reference: 1-D and 2-D) are replaced by the identity, as
      the reference scores the network built without BatchNorm: their γ, β and statistics do not enter,
      so a residual branch whose last BatchNorm has γ = 0 still carries its full flow. (Tanaka et al.'s
      own code instead keeps BatchNorm in eval mode, |γ|·x/√(1+ε) + |β| at initialisation; the two agree
      only up to ε, and only while γ = 1, β = 0.)
    * Eval mode, so dropout is off (the reference runs in train mode, where dropout makes its value
      random). Only parameters are made absolute, not buffers; the reference also takes the absolute
      value of the buffers, which changes nothing for BatchNorm statistics, removed anyway.
    * Float64, so that products of many layers do not overflow (float32 overflows at ~1e38); a
      non-finite result is still a `ProxyError`.
    """
    layers = weight_layers(model)
    _replace_batchnorm_by_identity(model)
    model.eval().double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.abs_()
    ones = torch.ones((1, *inputs.shape[1:]), dtype=torch.float64, device=inputs.device)
    model.zero_grad(set_to_none=True)
    forward_logits(model, ones, num_classes).sum().backward()
    score = sum(float((weight_of(layer).detach() * weight_gradient(layer)).abs().sum()) for layer in layers)
    if score == float("inf"):
        raise ProxyError("the synaptic flow overflows float64", kind=FailureKind.NAN)
    return score


def _replace_batchnorm_by_identity(model: nn.Module) -> None:
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, nn.Identity())


@zero_cost_proxy("l2_norm")
def l2_norm(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int) -> float:
    """Sum over Conv/Linear layers of the Euclidean (Frobenius) norm of the weight at initialisation.

    Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021; the same as their code
    (zero-cost-nas, `l2_norm`). Data-independent; mostly a size measure. Higher is better.
    """
    return sum(float(weight_of(layer).detach().norm()) for layer in weight_layers(model))


@zero_cost_proxy("params")
def params(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int) -> float:
    """Number of parameters: the honest baseline every proxy must beat (bigger nets tend to be better
    after training; Abdelfattah et al. 2021 and Ning et al. 2021 report it as a strong one). Every
    parameter counts, trainable or not (`count_parameters`). Higher is better."""
    return float(count_parameters(model))


@zero_cost_proxy("flops")
def flops(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int) -> float:
    """FLOPs of one image's inference (2 × MACs of convolutions and matmuls, `count_flops`): the other
    honest baseline. Higher is better."""
    return float(count_flops(model, tuple(inputs.shape[1:])))
