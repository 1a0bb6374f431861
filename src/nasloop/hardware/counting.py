"""Parameter and FLOP counts: exact, device-independent, cheap.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode`, which counts the arithmetic of matrix
multiplications and convolutions (and attention) as FLOPs = 2 × multiply-accumulates (MACs), and counts
nothing for element-wise operations, normalisation, activations and pooling. So `flops` here is the
common "2 × MACs of the dense layers" figure and `macs = flops / 2`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nasloop.hardware.measurement import eval_mode


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of `model` (trainable or not); a shared parameter counts once."""
    return sum(parameter.numel() for parameter in model.parameters())


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer; CPU for a model with neither."""
    for tensor in [*model.parameters(), *model.buffers()]:
        return tensor.device
    return torch.device("cpu")


def example_input(model: nn.Module, shape: tuple[int, ...], *, fill: str = "zeros") -> torch.Tensor:
    """A tensor of `shape` on the model's device, in the dtype of its first floating-point parameter.

    `fill` is "zeros" (data-independent counting) or "normal" (timing, so that no kernel takes a
    shortcut on zeros).
    """
    floating = [t for t in model.parameters() if t.is_floating_point()]
    dtype = floating[0].dtype if floating else torch.get_default_dtype()
    make = torch.zeros if fill == "zeros" else torch.randn
    return make(shape, device=model_device(model), dtype=dtype)


def count_flops(model: nn.Module, in_shape: tuple[int, ...], *, batch_size: int = 1) -> int:
    """FLOPs (2 × MACs of matmuls and convolutions) of one inference forward pass on `batch_size` images.

    The model runs in eval mode without autograd on a zero input of shape `(batch_size, *in_shape)`
    on the model's own device; its train/eval flags are restored afterwards.
    """
    example = example_input(model, (batch_size, *in_shape))
    counter = FlopCounterMode(display=False)
    with eval_mode(model), torch.no_grad(), counter:
        model(example)
    return int(counter.get_total_flops())
