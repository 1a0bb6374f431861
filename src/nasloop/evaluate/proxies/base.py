"""The zero-cost proxy contract, its error type and the helpers every proxy shares.

A zero-cost proxy scores an *untrained* network from one batch (or from no data at all) in about the
time of a few forward/backward passes, as a cheap stand-in for its accuracy after training.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from nasloop.candidate import FailureKind
from nasloop.registry import proxies


class Proxy(Protocol):
    """A registered zero-cost proxy (`nasloop.registry.proxies`).

    `proxy(model, inputs, targets, *, num_classes, seed) -> float`

    * `model` is a freshly built network (at initialisation) returning logits of shape
      `(N, num_classes)`; `inputs` is one batch `(N, C, H, W)` on the model's device and `targets` its
      class indices `(N,)`. Data-independent proxies use only the shape, device and dtype of `inputs`.
    * The caller's model is left exactly as it was: the proxy works on a deep copy, so weights, buffers
      (BatchNorm statistics), `.grad` and train/eval flags are untouched.
    * The value is deterministic for a given `seed` (random draws and dropout use a private RNG state;
      the caller's RNG state is restored).
    * Higher is better for every proxy: a larger value predicts a higher accuracy after training.
    * A proxy that cannot be computed for this model (no ReLU where one is needed, no Conv/Linear layer,
      a non-finite value, wrong logits shape) raises `ProxyError`; it never returns NaN or inf.
    """

    def __call__(
        self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int, seed: int
    ) -> float: ...


class ProxyError(Exception):
    """A proxy could not be computed for this model. `kind` is the failure kind to record."""

    def __init__(self, message: str, *, proxy: str = "", kind: FailureKind = FailureKind.CRASH) -> None:
        super().__init__(f"{proxy}: {message}" if proxy else message)
        self.message = message
        self.proxy = proxy
        self.kind = kind


ProxyFunction = Callable[..., float]


def zero_cost_proxy(name: str) -> Callable[[ProxyFunction], Proxy]:
    """Register `function(model, inputs, targets, *, num_classes) -> float` as the proxy `name`.

    The registered proxy enforces the `Proxy` contract around it: `function` receives a deep copy of the
    model in train mode with gradients enabled for every floating-point parameter, runs under a private
    RNG seeded with `seed`, and its value is checked to be finite.
    """

    def decorate(function: ProxyFunction) -> Proxy:
        @functools.wraps(function)
        def proxy(
            model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, num_classes: int, seed: int
        ) -> float:
            working = _working_copy(model)
            key = _call_key.set((id(model), id(inputs), id(targets), num_classes, seed))
            try:
                with _private_rng(seed, inputs.device), torch.enable_grad():
                    value = float(function(working, inputs.detach(), targets, num_classes=num_classes))
            except ProxyError as error:  # add the proxy's name to errors raised by shared helpers
                raise ProxyError(error.message, proxy=name, kind=error.kind) from error
            finally:
                _call_key.reset(key)
            if not math.isfinite(value):
                raise ProxyError(f"the value is not finite ({value})", proxy=name, kind=FailureKind.NAN)
            return value

        proxies.register(name)(proxy)
        return proxy

    return decorate


# Several proxies can come from one forward/backward pass (e.g. snip, grad_norm, plain and fisher all
# need the same loss gradient). Inside `sharing_passes()` such a pass runs once per (model, batch, seed)
# and its result is reused; outside it, every proxy call computes its own pass. Either way the values
# are identical, because each proxy call starts from the same copy and the same seeded RNG state.
_shared_results: ContextVar[dict[tuple[Any, ...], dict[str, float]] | None] = ContextVar("shared_results", default=None)
_call_key: ContextVar[tuple[Any, ...]] = ContextVar("call_key", default=())
SharedPass = Callable[..., dict[str, float]]


@contextmanager
def sharing_passes() -> Iterator[None]:
    """Within the block, proxies that declare a common pass (see `shared_pass`) compute it once."""
    token = _shared_results.set({})
    try:
        yield
    finally:
        _shared_results.reset(token)


def shared_pass(
    function: SharedPass, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, num_classes: int
) -> dict[str, float]:
    """`function(model, inputs, targets, num_classes=...)`, a pass that yields several proxies' values,
    reused for the same caller's model, batch and seed inside `sharing_passes()`."""
    cache = _shared_results.get()
    if cache is None:
        return function(model, inputs, targets, num_classes=num_classes)
    key = (function, *_call_key.get())
    if key not in cache:
        cache[key] = function(model, inputs, targets, num_classes=num_classes)
    return cache[key]


def _working_copy(model: nn.Module) -> nn.Module:
    working = copy.deepcopy(model).train()
    for parameter in working.parameters():
        parameter.grad = None  # deepcopy copies .grad too
        if parameter.is_floating_point():
            parameter.requires_grad_(True)
    return working


@contextmanager
def _private_rng(seed: int, device: torch.device) -> Iterator[None]:
    cuda_devices = [_cuda_index(device)] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.default_generator.manual_seed(seed)
        if cuda_devices:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


# ----------------------------------------------------------------------------- shared helpers


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The convolution (any dimension, transposed too) and linear layers, whose weights the saliency
    proxies score. The reference implementations score `nn.Conv2d` and `nn.Linear` only."""
    layers: list[nn.Module] = [
        module
        for module in model.modules()
        if isinstance(module, nn.Linear | nn.modules.conv._ConvNd)
        and isinstance(getattr(module, "weight", None), torch.Tensor)
    ]
    if not layers:
        raise ProxyError("the model has no Conv or Linear layer to score")
    return layers


def weight_of(layer: nn.Module) -> torch.Tensor:
    weight = layer.weight
    assert isinstance(weight, torch.Tensor)
    return weight


def weight_gradient(layer: nn.Module) -> torch.Tensor:
    """The gradient of the layer's weight; zeros for a layer the forward pass did not use."""
    weight = weight_of(layer)
    return weight.grad if weight.grad is not None else torch.zeros_like(weight)


def forward_logits(model: nn.Module, inputs: torch.Tensor, num_classes: int) -> torch.Tensor:
    """`model(inputs)`, checked to be finite logits of shape `(N, num_classes)`."""
    logits = model(inputs)
    expected = (inputs.shape[0], num_classes)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ProxyError(f"the model returned {got}, expected logits of shape {expected}", kind=FailureKind.SHAPE)
    if not bool(torch.isfinite(logits).all()):
        raise ProxyError("the logits are not finite at initialisation", kind=FailureKind.NAN)
    return logits


def cross_entropy(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The batch-mean cross-entropy loss of the model on the batch (with its autograd graph)."""
    return F.cross_entropy(forward_logits(model, inputs, num_classes), targets)


def backward_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, num_classes: int) -> None:
    """Fill `.grad` of every parameter with the gradient of the batch-mean cross-entropy."""
    model.zero_grad(set_to_none=True)
    cross_entropy(model, inputs, targets, num_classes).backward()


def require_batch(inputs: torch.Tensor, minimum: int) -> None:
    if inputs.shape[0] < minimum:
        raise ProxyError(f"needs a batch of at least {minimum} images, got {inputs.shape[0]}")
