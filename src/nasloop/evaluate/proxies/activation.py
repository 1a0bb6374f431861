"""Proxies from how the untrained network responds to its inputs: NASWOT, Jacobian covariance, Zen-score."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from nasloop.candidate import FailureKind
from nasloop.evaluate.proxies.base import ProxyError, forward_logits, require_batch, zero_cost_proxy

# Activations whose output is positive exactly when their input is: the "rectifier-like" units whose
# on/off state NASWOT reads. Matched by the torch function's name, so `nn.ReLU`, `F.relu`,
# `torch.relu` and `x.relu_()` are all seen (nn.ReLU6 calls `hardtanh`).
RECTIFIER_FUNCTIONS = frozenset(
    {
        "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "prelu", "rrelu",
        "rrelu_", "elu", "elu_", "selu", "selu_", "celu", "celu_", "gelu", "silu", "mish", "hardswish",
    }
)  # fmt: skip


class _RectifierRecorder(TorchFunctionMode):
    """Records, for every rectifier-like call during a forward pass, which inputs are positive."""

    def __init__(self) -> None:
        super().__init__()
        self.codes: list[torch.Tensor] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in RECTIFIER_FUNCTIONS and args and isinstance(args[0], torch.Tensor):
            # Read the input before the call: an in-place activation overwrites it.
            self.codes.append((args[0].detach() > 0).flatten(1))
        return func(*args, **kwargs)


@zero_cost_proxy("naswot")
def naswot(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int) -> float:
    """log|det K_H|, where K_H[i, j] = N_A − Hamming(c_i, c_j) and c_i is the binary code of input i:
    which of the network's N_A rectified units are active (input > 0).

    Mellor, Turner, Storkey, Crowley, "Neural Architecture Search without Training", ICML 2021.
    A network that separates the inputs into more distinct activation patterns scores higher.
    Higher is better. Needs ReLU-family activations (see `RECTIFIER_FUNCTIONS`); two inputs with the
    same code make K_H singular (log 0), which is a `ProxyError`.
    """
    recorder = _RectifierRecorder()
    with torch.no_grad(), recorder:
        forward_logits(model, inputs, num_classes)
    if not recorder.codes:
        raise ProxyError("no ReLU-family activation in the forward pass; NASWOT reads their on/off codes")
    # With signs s = 2c − 1: s_i·s_j = N_A − 2·Hamming(c_i, c_j), so K_H = (s sᵀ + N_A) / 2. The float32
    # product is exact: its partial sums are integers far below 2^24.
    signs = torch.cat(recorder.codes, dim=1).float() * 2 - 1
    kernel = ((signs @ signs.T + signs.shape[1]) / 2).double()
    sign, log_determinant = torch.linalg.slogdet(kernel)
    if sign <= 0:
        raise ProxyError(
            "the activation-code kernel is singular: some inputs share an activation pattern",
            kind=FailureKind.NAN,
        )
    return float(log_determinant)


JACOBIAN_COVARIANCE_K = 1e-5


@zero_cost_proxy("jacob_cov")
def jacob_cov(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int) -> float:
    """−Σ_i [log(λ_i + k) + 1/(λ_i + k)], λ the eigenvalues of the correlation matrix of the per-input
    Jacobians J_n = ∂(Σ_c f_c(x_n))/∂x_n, k = 1e-5.

    Mellor, Turner, Storkey, Crowley, "Neural Architecture Search without Training", arXiv:2006.04647v1
    (2020; the first version, before the NASWOT kernel). Jacobians that are less correlated across
    inputs score higher. Higher is better.
    """
    require_batch(inputs, 2)
    probe = inputs.clone().requires_grad_(True)
    (jacobians,) = torch.autograd.grad(forward_logits(model, probe, num_classes).sum(), probe)
    flat = jacobians.flatten(1).double()
    if bool((flat.std(dim=1) == 0).any()):
        raise ProxyError("an input's Jacobian is constant, so its correlation is undefined", kind=FailureKind.NAN)
    eigenvalues = torch.linalg.eigvalsh(torch.corrcoef(flat))
    shifted = eigenvalues + JACOBIAN_COVARIANCE_K
    return -float((torch.log(shifted) + 1.0 / shifted).sum())


ZEN_MIXUP_GAMMA = 1e-2


@zero_cost_proxy("zen")
def zen(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int) -> float:
    """Zen-score: log E‖f(x) − f(x + γε)‖_F + Σ_BN log sqrt(mean_channel σ²), x, ε ~ N(0, 1), γ = 1e-2.

    Lin, Wang, Sun, Chen, Sun, Qian, Li, Jin, "Zen-NAS: A Zero-Shot NAS for High-Performance Image
    Recognition", ICCV 2021. As in the paper the network is re-initialised (on the working copy) with
    N(0, 1) Conv/Linear weights, zero biases and BatchNorm γ=1, β=0, and runs in train mode; σ² are the
    batch variances of each BatchNorm layer's input channels on x (the BN-variance correction; no term
    for a network without BN). f is the pre-global-pooling feature map: the output of the last leaf
    module that yields a 4-D tensor with more than one spatial position (else the last 4-D output,
    else the logits for a network without feature maps). `inputs` only give the shape. Higher is better.
    """
    _gaussian_init(model)
    clean = torch.randn_like(inputs)
    mixed = clean + ZEN_MIXUP_GAMMA * torch.randn_like(inputs)
    with torch.no_grad():
        clean_features, variances = _features_and_bn_variances(model, clean, num_classes)
        mixed_features, _ = _features_and_bn_variances(model, mixed, num_classes)
    difference = float((clean_features - mixed_features).flatten(1).norm(dim=1).mean())
    if not difference > 0:  # also catches NaN
        raise ProxyError(f"the feature map does not respond to the input (difference {difference})")
    correction = sum(0.5 * math.log(float(variance.mean())) for variance in variances)
    return math.log(difference) + correction


def _gaussian_init(model: nn.Module) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear | nn.modules.conv._ConvNd):
                nn.init.normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


def _features_and_bn_variances(
    model: nn.Module, inputs: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    feature_maps: list[torch.Tensor] = []
    variances: list[torch.Tensor] = []

    def keep_feature_map(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            feature_maps.append(output)

    def keep_bn_variance(module: nn.Module, args: Any) -> None:
        channels_first = args[0].transpose(0, 1).flatten(1)
        variances.append(channels_first.var(dim=1, correction=0))

    handles = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            handles.append(module.register_forward_pre_hook(keep_bn_variance))
        if not list(module.children()):
            handles.append(module.register_forward_hook(keep_feature_map))
    try:
        logits = forward_logits(model, inputs, num_classes)
    finally:
        for handle in handles:
            handle.remove()
    return _pre_pooling(feature_maps, logits), variances


def _pre_pooling(feature_maps: list[torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
    spatial = [feature for feature in feature_maps if feature.shape[2] * feature.shape[3] > 1]
    if spatial:
        return spatial[-1]
    return feature_maps[-1] if feature_maps else logits
