"""Peak memory of one inference forward pass.

What is measured, per device:

* CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`, i.e. the peak of bytes held
  by live tensors on that device during the forward pass (weights, input and activations; the caching
  allocator's reserved-but-free blocks are not counted).
* CPU: the same quantity, tracked exactly instead of sampled. A `TorchDispatchMode` sees every tensor that
  an operator returns during the forward pass, adds the size of its storage when the storage first
  appears and subtracts it when the last tensor viewing it is freed; the peak of that running sum plus
  the bytes of the parameters, buffers and input is reported. The process RSS is deliberately not used:
  the C allocator keeps freed pages, so RSS deltas after a warm-up are close to zero and noisy. Memory
  that a kernel allocates internally (e.g. an oneDNN workspace) is not visible and not counted.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from nasloop.hardware.measurement import eval_mode

MEBIBYTE = 1024 * 1024


def peak_memory_bytes(model: nn.Module, example: torch.Tensor) -> int:
    """Peak bytes of live tensors during one inference forward of `model` on `example` (see module doc)."""
    with eval_mode(model), torch.inference_mode():
        if example.device.type == "cuda":
            return _cuda_peak(model, example)
        return _tracked_peak(model, example)


def _cuda_peak(model: nn.Module, example: torch.Tensor) -> int:
    torch.cuda.synchronize(example.device)
    torch.cuda.reset_peak_memory_stats(example.device)
    model(example)
    torch.cuda.synchronize(example.device)
    return int(torch.cuda.max_memory_allocated(example.device))


def _tracked_peak(model: nn.Module, example: torch.Tensor) -> int:
    resident = [*model.parameters(), *model.buffers(), example]
    storages = {tensor.untyped_storage().data_ptr(): tensor.untyped_storage().nbytes() for tensor in resident}
    tracker = _LiveTensorTracker(set(storages))
    with tracker:
        model(example)
    return sum(storages.values()) + tracker.peak_bytes


class _LiveTensorTracker(TorchDispatchMode):
    """Running total of the storages created by operators, freed when their last tensor dies."""

    def __init__(self, preexisting: set[int]) -> None:
        super().__init__()
        self.preexisting = preexisting
        self.references: dict[int, int] = {}  # storage address -> live tensors viewing it
        self.sizes: dict[int, int] = {}
        self.current_bytes = 0
        self.peak_bytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        output = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(output):
            if isinstance(tensor, torch.Tensor):
                self._track(tensor)
        return output

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        address = storage.data_ptr()
        if address in self.preexisting or storage.nbytes() == 0:
            return
        if address not in self.references:
            self.references[address] = 0
            self.sizes[address] = storage.nbytes()
            self.current_bytes += storage.nbytes()
            self.peak_bytes = max(self.peak_bytes, self.current_bytes)
        self.references[address] += 1
        weakref.finalize(tensor, self._release, address)

    def _release(self, address: int) -> None:
        self.references[address] -= 1
        if self.references[address] == 0:
            del self.references[address]
            self.current_bytes -= self.sizes.pop(address)
