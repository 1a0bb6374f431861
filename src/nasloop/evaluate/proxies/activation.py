"""Proxies from how the untrained network responds to its inputs: NASWOT, Jacobian covariance, Zen-score.

Protocol: NASWOT and jacob_cov read the batch the caller passes (the zero-cost stage passes the first
`proxy_batch_size` (64) training images, normalised, neither augmented nor shuffled; the references
draw a shuffled, augmented batch). Zen-score uses only the batch's shape and draws Gaussian inputs.
Each proxy's docstring says how it differs from its reference code; see also docs/proxies.md.
"""

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

    Deliberately unlike the reference code, which hooks the modules whose class name contains "ReLU":
    every rectifier call is read once, whatever its form. The reference misses functional `F.relu`
    calls and counts a container such as NAS-Bench-201's `ReLUConvBN` as a second ReLU (its input is
    the inner ReLU's input), so those units count twice; the paper's N_A counts each unit once. The
    sign-preserving activations in `RECTIFIER_FUNCTIONS` beyond the ReLU family (ELU, GELU, SiLU, ...)
    are read too, where the reference ignores them.
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
    inputs score higher. The same as Abdelfattah et al.'s code (zero-cost-nas, `jacob_cov`), which
    takes the general eigenvalues of the same symmetric matrix. Higher is better.
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
# Functions that turn a feature map into one vector per image: global pooling, a spatial mean, flattening.
# Zen-score's f is the map that enters the last such call, what Zen-NAS's `forward_pre_GAP` returns.
MAP_TO_VECTOR_FUNCTIONS = frozenset(
    {"adaptive_avg_pool2d", "adaptive_max_pool2d", "avg_pool2d", "max_pool2d", "mean", "flatten", "view", "reshape"}
)


@zero_cost_proxy("zen")
def zen(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int) -> float:
    """Zen-score as the paper defines it: log E‖f(x) − f(x + γε)‖_F + Σ_BN log √(mean_channel σ²), with
    x, ε ~ N(0, 1), γ = 1e-2 and σ² the batch variance of each BatchNorm layer's input channels on x.

    Lin, Wang, Sun, Chen, Sun, Qian, Li, Jin, "Zen-NAS: A Zero-Shot NAS for High-Performance Image
    Recognition", ICCV 2021. As in the paper the network is re-initialised (on the working copy) with
    N(0, 1) Conv/Linear weights, zero biases and BatchNorm/GroupNorm γ=1, β=0, and runs in train mode;
    the correction has no term for a network without BatchNorm. f is the pre-global-pooling feature map:
    the tensor that enters the last global pooling, spatial mean or flatten of the forward pass (see
    `MAP_TO_VECTOR_FUNCTIONS`), so a residual sum and a functional `F.relu` before the pooling count. A
    network without such a call falls back to the output of the last leaf module that yields a 4-D
    tensor with more than one spatial position (else the last 4-D output, else the logits). `inputs`
    only give the shape: the batch size is the caller's (64 in the zero-cost stage, 16 in Zen-NAS), and
    one draw is scored where Zen-NAS averages repeated draws. Higher is better.

    This is nasloop's default Zen-score because it is the published definition. The authors' code, which
    RZ-NAS also runs, computes a different quantity (an L1 norm, BatchNorm's running variance); it is
    `zen_official`. The two rank networks differently, since their offsets depend on the feature size and
    the depth.
    """
    clean, mixed, variances = _zen_passes(model, inputs, num_classes)
    difference = float((clean - mixed).flatten(1).norm(dim=1).mean())
    return _zen_score(difference, [float(variance.mean()) for variance in variances])


@zero_cost_proxy("zen_official")
def zen_official(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int) -> float:
    """Zen-score as the Zen-NAS authors' code computes it (`compute_zen_score.py`, which RZ-NAS runs):
    log E Σ|f(x) − f(x + γε)| + Σ_BN log √(mean_channel running variance).

    The same set-up as `zen` (re-initialisation, x, ε, γ, train mode, f), but an L1 norm of the feature
    difference, summed over each image's map and averaged over the batch, and for each BatchNorm layer
    its running variance after the two passes, starting from a freshly built layer's (mean 0, variance
    1): with momentum m, (1 − m)² + (1 − m)·m·v_x + m·v_mixed, v the unbiased batch variances. The
    reference counts `nn.BatchNorm2d` and initialises `nn.Conv2d`/`nn.Linear` only (every BatchNorm and
    convolution type here, the same layers in a 2-D image CNN) and averages 32 draws over a batch of 16;
    this is one draw over the caller's batch. Higher is better.
    """
    running_variances = _restart_running_statistics(model, inputs)
    clean, mixed, _ = _zen_passes(model, inputs, num_classes)
    difference = float((clean - mixed).flatten(1).abs().sum(dim=1).mean())
    return _zen_score(difference, [float(variance.mean()) for variance in running_variances])


def _zen_passes(
    model: nn.Module, inputs: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Zen-NAS's two passes on the re-initialised model: f(x), f(x + γε) with x, ε ~ N(0, 1) shaped like
    `inputs`, and per BatchNorm layer the population variance of its input channels on x."""
    _gaussian_init(model)
    clean = torch.randn_like(inputs)
    mixed = clean + ZEN_MIXUP_GAMMA * torch.randn_like(inputs)
    with torch.no_grad():
        clean_features, variances = _features_and_bn_variances(model, clean, num_classes)
        mixed_features, _ = _features_and_bn_variances(model, mixed, num_classes)
    return clean_features, mixed_features, variances


def _zen_score(difference: float, mean_variances: list[float]) -> float:
    if not difference > 0:  # also catches NaN
        raise ProxyError(f"the feature map does not respond to the input (difference {difference})")
    if not all(variance > 0 for variance in mean_variances):
        raise ProxyError(
            "a BatchNorm layer's input does not vary, so its log-variance is undefined", kind=FailureKind.NAN
        )
    return math.log(difference) + sum(0.5 * math.log(variance) for variance in mean_variances)


def _gaussian_init(model: nn.Module) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear | nn.modules.conv._ConvNd):
                nn.init.normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm | nn.GroupNorm) and module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


def _restart_running_statistics(model: nn.Module, inputs: torch.Tensor) -> list[torch.Tensor]:
    """Make every BatchNorm layer track running statistics from a new layer's (mean 0, variance 1), with
    or without running statistics before; returns the running variances, which later passes update."""
    running_variances: list[torch.Tensor] = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            running_variance = torch.ones(module.num_features, dtype=inputs.dtype, device=inputs.device)
            module.track_running_stats = True
            module.running_mean = torch.zeros_like(running_variance)
            module.running_var = running_variance
            module.num_batches_tracked = torch.zeros((), dtype=torch.long, device=inputs.device)
            running_variances.append(running_variance)
    return running_variances


class _PoolingInputRecorder(TorchFunctionMode):
    """Keeps the feature map that enters the last map-to-vector call (`MAP_TO_VECTOR_FUNCTIONS`): a 4-D
    map with more than one spatial position, reduced to (N, C) or (N, C, 1, 1), or flattened to (N, C·H·W)."""

    def __init__(self) -> None:
        super().__init__()
        self.feature_map: torch.Tensor | None = None

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        output = func(*args, **(kwargs or {}))
        if getattr(func, "__name__", "") in MAP_TO_VECTOR_FUNCTIONS and args and _is_map_to_vector(args[0], output):
            self.feature_map = args[0].detach().clone()  # a copy: a later in-place op could rewrite the map
        return output


def _is_map_to_vector(feature_map: Any, output: Any) -> bool:
    if not (isinstance(feature_map, torch.Tensor) and isinstance(output, torch.Tensor) and feature_map.dim() == 4):
        return False
    batch, channels, height, width = feature_map.shape
    pooled = (batch, channels), (batch, channels, 1, 1)
    return height * width > 1 and tuple(output.shape) in (*pooled, (batch, channels * height * width))


def _features_and_bn_variances(
    model: nn.Module, inputs: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaf_feature_maps: list[torch.Tensor] = []
    variances: list[torch.Tensor] = []

    def keep_feature_map(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            leaf_feature_maps.append(output)

    def keep_bn_variance(module: nn.Module, args: Any) -> None:
        # `var` over every dimension but the channels': no flatten or view the recorder would take for pooling
        other_dimensions = [dimension for dimension in range(args[0].dim()) if dimension != 1]
        variances.append(args[0].var(dim=other_dimensions, correction=0))

    handles = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            handles.append(module.register_forward_pre_hook(keep_bn_variance))
        if not list(module.children()):
            handles.append(module.register_forward_hook(keep_feature_map))
    recorder = _PoolingInputRecorder()
    try:
        with recorder:
            logits = forward_logits(model, inputs, num_classes)
    finally:
        for handle in handles:
            handle.remove()
    if recorder.feature_map is not None:
        return recorder.feature_map, variances
    return _last_leaf_feature_map(leaf_feature_maps, logits), variances


def _last_leaf_feature_map(feature_maps: list[torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
    spatial = [feature for feature in feature_maps if feature.shape[2] * feature.shape[3] > 1]
    if spatial:
        return spatial[-1]
    return feature_maps[-1] if feature_maps else logits
