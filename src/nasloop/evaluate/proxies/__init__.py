"""Zero-cost proxies: training-free scores of an untrained network, registered in
`nasloop.registry.proxies` by name (see `Proxy` for the contract; higher is better for all).

    scores = compute_proxies(model, inputs, targets, ["synflow", "naswot"], num_classes=10, seed=0)

Protocol, where it differs from the reference implementations (docs/proxies.md has the full list):

* The batch. The zero-cost stage (`nasloop.evaluate.measure_stages`) passes the first
  `proxy_batch_size` (64) training images, normalised with the dataset's mean and std, neither
  shuffled nor augmented, so every candidate of a run sees the same images. The references draw one
  shuffled batch from an augmenting training loader (random crop and flip).
* The layers. The weight-scoring proxies score every convolution type (1-, 2-, 3-D and transposed)
  and `nn.Linear` (`weight_layers`); the references score `nn.Conv2d` and `nn.Linear` only, which are
  the same layers in a 2-D image CNN.
* The forms. Each proxy's docstring names its reference and any deliberate difference: synflow and
  fisher follow Abdelfattah et al.'s code; zen is the Zen-NAS paper's formula and zen_official the
  authors' code; naswot reads every rectifier call once.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from nasloop.evaluate.proxies import activation, data_free, gradient
from nasloop.evaluate.proxies.base import Proxy, ProxyError, sharing_passes, zero_cost_proxy
from nasloop.registry import proxies

# Every registered proxy (the modules above register them), by name: the registry is the one list.
ALL_PROXIES: tuple[str, ...] = tuple(proxies.names())


def compute_proxies(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    names: Iterable[str],
    *,
    num_classes: int,
    seed: int,
    errors: dict[str, ProxyError] | None = None,
) -> dict[str, float]:
    """The named proxies of `model` on one batch, each with the same `seed`, in the order given.

    Proxies that share a forward/backward pass compute it once; the values equal separate calls.
    Raises `UnknownNameError` for an unknown name before any work. A proxy that cannot be computed
    raises its `ProxyError`, unless `errors` is given: then the error is stored there under the
    proxy's name, the proxy is left out of the result and the others are still computed.
    """
    resolved = [(name, proxies.get(name)) for name in names]
    values: dict[str, float] = {}
    with sharing_passes():
        for name, proxy in resolved:
            try:
                values[name] = proxy(model, inputs, targets, num_classes=num_classes, seed=seed)
            except ProxyError as error:
                if errors is None:
                    raise
                errors[name] = error
    return values


__all__ = ["ALL_PROXIES", "Proxy", "ProxyError", "activation", "compute_proxies", "data_free", "gradient",
           "zero_cost_proxy"]  # fmt: skip
