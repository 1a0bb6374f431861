"""Proxies from the gradient of the training loss at initialisation (one batch, cross-entropy).

All of them score the weights of the Conv and Linear layers and sum over layers. Gradients are those of
the batch-mean loss, in train mode (BatchNorm uses batch statistics), as Abdelfattah et al. (2021) compute
them. grad_norm, snip, plain and fisher come from one shared backward pass (`loss_gradient_pass`).
Every proxy here is "higher is better".

Protocol, and how it differs from the reference code (zero-cost-nas for snip, grasp, grad_norm, fisher,
plain; the ZiCo authors' code for zico): the batch is what the caller passes; the zero-cost stage passes
the first `proxy_batch_size` (64) training images, normalised but not augmented or shuffled, where the
references draw one shuffled, augmented batch from their training loader. Every convolution type
(1-, 2-, 3-D and transposed) and `nn.Linear` is scored; the references score `nn.Conv2d` and `nn.Linear`
only, which are the same layers in a 2-D image CNN. On identical models, batches and seeds the values
agree with the references to float precision. See docs/proxies.md.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nasloop.evaluate.proxies.base import (
    ProxyError,
    backward_loss,
    cross_entropy,
    require_batch,
    shared_pass,
    weight_gradient,
    weight_layers,
    weight_of,
    zero_cost_proxy,
)


def loss_gradient_pass(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int
) -> dict[str, float]:
    """One forward/backward of the batch-mean loss, giving grad_norm, snip, plain and fisher together."""
    layers = weight_layers(model)
    activations: list[tuple[int, list[torch.Tensor]]] = []  # (weights per output channel, [output, gradient])

    def keep_activation(module: nn.Module, args: object, output: torch.Tensor) -> None:
        # A copy of the output before any in-place activation rewrites it; the tensor hook receives the
        # gradient with respect to that same, pre-in-place value.
        record = [output.detach().clone()]

        def keep_gradient(gradient: torch.Tensor) -> None:
            record.append(gradient.detach())

        output.register_hook(keep_gradient)
        activations.append((_weights_per_output_channel(module), record))

    handles = [layer.register_forward_hook(keep_activation) for layer in layers]
    try:
        backward_loss(model, inputs, targets, num_classes)
    finally:
        for handle in handles:
            handle.remove()
    products = [weight_of(layer).detach() * weight_gradient(layer) for layer in layers]
    return {
        "grad_norm": sum(float(weight_gradient(layer).norm()) for layer in layers),
        "snip": sum(float(product.abs().sum()) for product in products),
        "plain": sum(float(product.sum()) for product in products),
        "fisher": sum(fan_in * _channel_fisher(record) for fan_in, record in activations if len(record) == 2),
    }


def _channel_fisher(record: list[torch.Tensor]) -> float:
    """Σ over the output channels c of Δ_c = 1/(2N) Σ_n (Σ_spatial a·g)²."""
    activation, gradient = record
    per_channel = (activation * gradient).flatten(2).sum(2) if activation.dim() > 2 else activation * gradient
    return float(per_channel.pow(2).sum() / (2 * activation.shape[0]))


def _weights_per_output_channel(layer: nn.Module) -> int:
    """The fan-in: in/groups × kernel size for a convolution (transposed too), in_features for a Linear."""
    weight = weight_of(layer)
    if isinstance(layer, nn.modules.conv._ConvNd):
        return weight.numel() // layer.out_channels
    return weight.numel() // weight.shape[0]  # nn.Linear: (out_features, in_features)


@zero_cost_proxy("grad_norm")
def grad_norm(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int) -> float:
    """Sum over layers of the Euclidean norm of the loss gradient of the layer's weight.

    Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021; the same as their code
    (zero-cost-nas, `grad_norm`). Higher is better.
    """
    return shared_pass(loss_gradient_pass, model, inputs, targets, num_classes)["grad_norm"]


@zero_cost_proxy("snip")
def snip(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int) -> float:
    """Sum of the connection sensitivities |∂L/∂w · w| over all weights.

    Lee, Ajanthan, Torr, "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019
    (the saliency of a weight is the loss change when its connection mask is removed, to first order);
    summed over the network as a NAS proxy by Abdelfattah et al. 2021. The same as their code
    (zero-cost-nas, `snip`), which takes the gradient with respect to a weight mask c = 1 on each
    weight, ∂L/∂c = w · ∂L/∂w. Higher is better.
    """
    return shared_pass(loss_gradient_pass, model, inputs, targets, num_classes)["snip"]


@zero_cost_proxy("plain")
def plain(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int) -> float:
    """Sum of ∂L/∂w · w over all weights (SNIP without the absolute value); may be negative.

    Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021 (their `plain` baseline);
    the same as their code. Higher is better.
    """
    return shared_pass(loss_gradient_pass, model, inputs, targets, num_classes)["plain"]


@zero_cost_proxy("fisher")
def fisher(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int) -> float:
    """Σ over the Conv/Linear layers and their output channels c of fan_in · Δ_c, the Fisher pruning
    saliency Δ_c of the channel counted once per weight that feeds it.

    Theis et al., "Faster gaze prediction with dense networks and Fisher pruning", 2018; Turner et al.,
    "BlockSwap: Fisher-guided Block Substitution for Network Compression on a Budget", ICLR 2020; as a
    NAS proxy in Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021, whose code
    (zero-cost-nas, `fisher`) this matches. For channel c with layer output a and loss gradient g,
    Δ_c = 1/(2N) Σ_n (Σ_spatial a·g)². The reference spreads each channel's saliency over every weight
    of that channel before summing, so a channel counts fan_in times (in/groups × kernel size for a
    convolution, in_features for a Linear). On NAS-Bench-201 cells that is 25–200× the plain channel
    sum Σ_c Δ_c (BlockSwap's "Fisher potential", which nasloop's `fisher` used to return), and it ranks
    networks differently, since wide-input layers weigh more. Activations are the layer outputs before any
    in-place activation rewrites them (the reference reads them after; for a ReLU the product a·g is
    the same, as g = 0 wherever the ReLU rewrites a). Higher is better.
    """
    return shared_pass(loss_gradient_pass, model, inputs, targets, num_classes)["fisher"]


@zero_cost_proxy("grasp")
def grasp(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int) -> float:
    """Sum of the GraSP scores −w · (H g) over all weights, with g = ∂L/∂w and H the Hessian of L.

    Wang, Zhang, Grosse, "Picking Winning Tickets Before Training by Preserving Gradient Flow", ICLR 2020.
    The Hessian-gradient product comes from double back-propagation on one forward pass, with softmax
    temperature 1 (the paper's pruning code uses a higher temperature; the NAS proxy of Abdelfattah et
    al. 2021 uses 1). As a pruning score, GraSP removes the weights with the largest scores; summed over
    the network as a NAS proxy it is used with "higher is better", as here. Abdelfattah et al.'s code
    (zero-cost-nas, `grasp`) computes g and H g in two forward passes; they agree with this one pass
    unless the network has dropout, whose masks differ between their passes.
    """
    weights = [weight_of(layer) for layer in weight_layers(model)]
    loss = cross_entropy(model, inputs, targets, num_classes)
    gradients = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
    used = [(weight, gradient) for weight, gradient in zip(weights, gradients, strict=True) if gradient is not None]
    # gᵀ·stop_gradient(g): its gradient with respect to w is H g.
    gradient_dot = sum((gradient * gradient.detach()).sum() for _, gradient in used)
    if not isinstance(gradient_dot, torch.Tensor) or not gradient_dot.requires_grad:
        return 0.0  # the loss is linear in every weight: H g = 0
    hessian_gradients = torch.autograd.grad(gradient_dot, [weight for weight, _ in used], allow_unused=True)
    return sum(
        float((-weight.detach() * product).sum())
        for (weight, _), product in zip(used, hessian_gradients, strict=True)
        if product is not None
    )


@zero_cost_proxy("zico")
def zico(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int) -> float:
    """Σ over layers of log(Σ over the layer's weights of mean|g| / std(g)), statistics across batches.

    Li, Ma, Zhou, Wang, Jin, "ZiCo: Zero-shot NAS via Inverse Coefficient of Variation on Gradients",
    ICLR 2023. The batch is split into two halves (the paper and the authors' code use two batches
    from the training loader); g is the gradient of each half's mean loss and std the population
    standard deviation over the halves. Weights whose gradient does not vary are left out, as are
    layers with no such weight, as in the authors' code. Higher is better.
    """
    require_batch(inputs, 2)
    layers = weight_layers(model)
    per_batch: list[list[torch.Tensor]] = []
    for batch_inputs, batch_targets in zip(inputs.chunk(2), targets.chunk(2), strict=True):
        backward_loss(model, batch_inputs, batch_targets, num_classes)
        per_batch.append([weight_gradient(layer).detach().flatten().clone() for layer in layers])
    layer_terms = [_inverse_variation(torch.stack(gradients)) for gradients in zip(*per_batch, strict=True)]
    usable = [term for term in layer_terms if term > 0]
    if not usable:
        raise ProxyError("no weight gradient varies across batches")
    return sum(math.log(term) for term in usable)


def _inverse_variation(gradients: torch.Tensor) -> float:
    """Σ over weights of mean|g| / std(g) across the rows of `gradients` (batches × weights)."""
    deviation = gradients.std(dim=0, correction=0)
    varying = deviation > 0
    return float((gradients.abs().mean(dim=0)[varying] / deviation[varying]).sum())
