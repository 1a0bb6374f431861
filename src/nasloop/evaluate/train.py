"""The proxy trainer: nasloop's own training recipe, so candidates differ only in architecture.

Two named recipes (docs/architecture.md; METHODS.md section A):

* `paper`: the published feedback-memory protocol. One pass over the training split, SGD lr 0.01,
  momentum 0.9, weight decay 5e-4, batch 128, cross-entropy, fp32. Their cosine scheduler is stepped
  once per epoch, so within the first epoch the learning rate is constant; with several epochs the
  rate follows the same per-epoch cosine. Augmentation: random crop (zero padding 4 for images of
  32 px and more, 2 for 28x28 MNIST-like images, 1 for tiny ones) plus a horizontal flip where the
  dataset allows it (photos yes, digits no), then per-channel normalisation.
* `fast`: the same data budget (the same number of samples seen), tuned for wall-clock and ranking
  signal: a larger batch with a linearly scaled learning rate, Nesterov momentum, a short linear
  warm-up then linear decay to zero within the budget, gradient-norm clipping, channels_last memory
  format (measured 1.15-1.75x less CPU time per sample on convolutional nets on CPU, and the fast path
  on GPU; skipped for a model whose forward pass cannot take it, e.g. one that calls `.view` on a
  feature map) and, on GPU, bf16 autocast.

Both run the same loop on tensor-resident data: the whole training split stays one uint8 tensor (on
the training device), and each batch is gathered, cropped (per-sample offsets by index arithmetic),
flipped (`torch.where`) and normalised as batched tensor ops; no DataLoader, no per-sample Python.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nasloop.data.splits import SandboxData
from nasloop.evaluate.job import Recipe

StepCallback = Callable[[int, float], None]


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite; the message names the step and the value."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"non-finite training loss {loss} at step {step}")
        self.step = step
        self.loss = loss


@dataclass
class TrainOutput:
    """What one proxy training returns.

    `train_loss` and `train_acc` are measured on the (augmented) training batches of the last ~10%
    of steps, in training mode. `val_pred` / `test_pred` are predicted class indices for every
    validation / test image, in order. `train_s` is the wall time of the training loop,
    `samples_per_s` the training samples it processed per second, `data_s` the part of `train_s`
    spent outside forward, backward and optimizer step (batch assembly, augmentation, callbacks).
    `predict_s` is the wall time of both predictions; `train_cpu_s` the CPU time of this process
    during the training loop (on a shared machine, a load-independent companion of `train_s`);
    `settings` the resolved recipe.
    """

    train_loss: float
    train_acc: float
    val_pred: np.ndarray
    test_pred: np.ndarray
    train_s: float
    samples_per_s: float
    steps: int
    data_s: float
    predict_s: float = 0.0
    train_cpu_s: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)


def accuracy(pred: np.ndarray, labels: np.ndarray | torch.Tensor) -> float:
    """Fraction (0..1) of predictions equal to the labels. Raises `ValueError` on a length mismatch or no labels."""
    expected = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    predicted = np.asarray(pred)
    if predicted.shape != expected.shape:
        raise ValueError(f"{predicted.shape[0] if predicted.ndim else 0} predictions for {expected.shape} labels")
    if expected.size == 0:
        raise ValueError("accuracy of an empty split is undefined")
    return float((predicted == expected).mean())


def resolve_device(name: str) -> torch.device:
    """`Recipe.device` as a torch device: "auto" is the first CUDA device if there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ----------------------------------------------------------------------------------- recipe settings


@dataclass(frozen=True)
class RecipeSettings:
    """A recipe with every default filled in for one dataset and device."""

    name: str
    epochs: float
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    nesterov: bool
    label_smoothing: float
    schedule: str  # "epoch-cosine" (paper) or "warmup-linear" (fast)
    warmup_fraction: float
    clip_grad_norm: float | None
    augment: bool
    crop_padding: int
    horizontal_flip: bool
    bf16_autocast: bool
    channels_last: bool


PAPER_DEFAULTS: dict[str, Any] = {
    "batch_size": 128,
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "nesterov": False,
    "label_smoothing": 0.0,
    "schedule": "epoch-cosine",
    "warmup_fraction": 0.0,
    "clip_grad_norm": None,
}
# `fast`: tuned on Fashion-MNIST with the benchmark's reference CNN (benchmarks/proxy_train.py): one
# epoch, validation accuracy 0.737 (paper) → 0.801 (lr 0.1), 0.823 (lr 0.2), 0.832 (lr 0.4); label
# smoothing 0.1 cost ~0.008; batch 512 lost ~0.04 (too few steps). Clipping the gradient norm at 1.0
# cost ~0.002 there and keeps networks without normalisation layers from collapsing at lr 0.2.
FAST_DEFAULTS: dict[str, Any] = {
    "batch_size": 256,
    "lr": 0.2,  # at batch_size 256; scaled linearly when the recipe sets another batch size
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "nesterov": True,
    "label_smoothing": 0.0,
    "schedule": "warmup-linear",
    "warmup_fraction": 0.05,
    "clip_grad_norm": 1.0,
}


def crop_padding(height: int) -> int:
    """Zero padding of the random crop: 4 px for images of 32 px and more (the CIFAR protocol), 2 px for
    28x28 (MNIST-like: a 4 px shift would push strokes out of the frame), 1 px for tiny images."""
    if height >= 32:
        return 4
    return max(1, height // 14)


def resolve_recipe(recipe: Recipe, data: SandboxData, device: torch.device) -> RecipeSettings:
    """Fill the recipe's None fields with the named recipe's defaults for this data and device."""
    defaults = PAPER_DEFAULTS if recipe.name == "paper" else FAST_DEFAULTS
    batch_size = recipe.batch_size or defaults["batch_size"]
    lr = recipe.lr
    if lr is None:
        lr = defaults["lr"] * (batch_size / defaults["batch_size"] if recipe.name == "fast" else 1.0)
    on_gpu = device.type == "cuda"
    return RecipeSettings(
        name=recipe.name,
        epochs=recipe.epochs,
        batch_size=batch_size,
        lr=lr,
        momentum=defaults["momentum"] if recipe.momentum is None else recipe.momentum,
        weight_decay=defaults["weight_decay"] if recipe.weight_decay is None else recipe.weight_decay,
        nesterov=defaults["nesterov"] and (recipe.momentum is None or recipe.momentum > 0),
        label_smoothing=defaults["label_smoothing"],
        schedule=defaults["schedule"],
        warmup_fraction=defaults["warmup_fraction"],
        clip_grad_norm=defaults["clip_grad_norm"],
        augment=True if recipe.augment is None else recipe.augment,
        crop_padding=crop_padding(data.in_shape[1]),
        horizontal_flip=data.horizontal_flip,
        bf16_autocast=recipe.name == "fast" and on_gpu,
        channels_last=recipe.name == "fast",
    )


def learning_rate(settings: RecipeSettings, step: int, total_steps: int, steps_per_epoch: float) -> float:
    """The learning rate for 0-based `step`."""
    if settings.schedule == "epoch-cosine":
        # The published scheduler: CosineAnnealingLR(T_max=epochs) stepped after each full epoch.
        completed_epochs = math.floor(step / steps_per_epoch)
        return settings.lr * 0.5 * (1 + math.cos(math.pi * completed_epochs / math.ceil(settings.epochs)))
    warmup = max(1, round(settings.warmup_fraction * total_steps))
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    return settings.lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup))


# ----------------------------------------------------------------------------------- batches


def batch_bounds(samples: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, end) of each batch over `samples` samples; a final batch of one sample is dropped because
    BatchNorm cannot train on it."""
    bounds = [(start, min(start + batch_size, samples)) for start in range(0, samples, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < 2:
        bounds.pop()
    return bounds


CHUNK_BYTES = 16 << 20  # float32 bytes of training images prepared together (measured: larger is slower)


class BatchMaker:
    """Turns the uint8 training split into normalised, augmented float batches with batched tensor ops.

    The per-sample randomness (order, crop offsets, flips) is drawn up front from one seeded CPU
    generator, so a seed gives the same batches on every device. Batches are prepared a chunk of
    ~`CHUNK_BYTES` at a time and handed out as views: a handful of large tensor ops per chunk instead of
    several small ones per batch, which matters on a CPU whose threads are shared.
    """

    def __init__(self, data: SandboxData, settings: RecipeSettings, device: torch.device, seed: int) -> None:
        self.device = device
        self.settings = settings
        self.images = data.train_x.to(device)  # uint8, tensor-resident for the whole training
        self.labels = data.train_y.to(device)
        mean = torch.tensor(data.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(data.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        # x / 255 normalised = x * scale + shift, one fused multiply-add per pixel
        self.scale = 1.0 / (255.0 * std)
        self.shift = -mean / std
        self.generator = torch.Generator().manual_seed(seed)

    def sample_plan(self, total: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Indices of `total` samples (successive random permutations of the training split), crop offsets
        (total, 2) and flip flags (total,)."""
        count = len(self.images)
        permutations = [torch.randperm(count, generator=self.generator) for _ in range(math.ceil(total / count))]
        order = torch.cat(permutations)[:total]
        offsets = torch.randint(0, 2 * self.settings.crop_padding + 1, (total, 2), generator=self.generator)
        flips = torch.rand(total, generator=self.generator) < 0.5
        return order.to(self.device), offsets.to(self.device), flips.to(self.device)

    def train_batches(self, bounds: list[tuple[int, int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) of each batch in `bounds`, in order."""
        order, offsets, flips = self.sample_plan(bounds[-1][1])
        sample_bytes = 4 * self.images[0].numel()
        per_chunk = max(1, CHUNK_BYTES // (self.settings.batch_size * sample_bytes))
        for first in range(0, len(bounds), per_chunk):
            chunk = bounds[first : first + per_chunk]
            low, high = chunk[0][0], chunk[-1][1]
            images, labels = self.augmented(order[low:high], offsets[low:high], flips[low:high])
            for start, end in chunk:
                yield images[start - low : end - low], labels[start - low : end - low]

    def augmented(
        self, indices: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Crop and flip move uint8 pixels (a quarter of the float bytes); the float conversion comes last,
        # fused with normalisation. index_select is much faster than advanced indexing here.
        images = self.images.index_select(0, indices)  # (N, C, H, W) uint8
        if self.settings.augment:
            images = self.crop_and_flip(images, offsets, flips)
        return self.normalise(images), self.labels.index_select(0, indices)

    def crop_and_flip(self, images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """Zero-pad by `crop_padding` and cut each image's window at its own (dy, dx) offset, mirrored where
        `flips` says (if the dataset allows flips): one gather with a per-sample flat index."""
        pad = self.settings.crop_padding
        count, channels, height, width = images.shape
        padded_width = width + 2 * pad
        padded = F.pad(images, (pad, pad, pad, pad)).view(count, channels, -1)  # (N, C, (H+2p)*(W+2p))
        rows = torch.arange(height, device=images.device)[:, None] * padded_width
        columns = torch.arange(width, device=images.device)
        window = (rows + columns).view(-1)  # (H*W,) window at offset (0, 0)
        if self.settings.horizontal_flip:
            mirrored = (rows + (width - 1 - columns)).view(-1)
            index = torch.where(flips[:, None], mirrored, window)  # (N, H*W)
        else:
            index = window.expand(count, -1)
        index = index + (offsets[:, 0] * padded_width + offsets[:, 1])[:, None]
        index = index.view(count, 1, height * width).expand(count, channels, height * width)
        return padded.gather(2, index).view(count, channels, height, width)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        out = images.float().mul_(self.scale).add_(self.shift)
        if self.settings.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def eval_batches(self, images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(images), batch_size):
            yield self.normalise(images[start : start + batch_size].to(self.device))


# ----------------------------------------------------------------------------------- train and predict


REPORT_EVERY = 10  # steps between `on_step` calls (and non-finite checks on GPU, where .item() syncs)


def train_and_predict(
    model: nn.Module,
    data: SandboxData,
    recipe: Recipe,
    *,
    seed: int,
    device: torch.device,
    on_step: StepCallback | None = None,
) -> TrainOutput:
    """Train `model` on `data.train_x/train_y` with `recipe`, then predict the validation and test images.

    The model is moved to `device`. The data budget is `recipe.epochs` (may be fractional) passes over
    the training split. `on_step(step, loss)` is called with the 1-based step every `REPORT_EVERY` steps
    and at the last step; it may raise to stop training (pruning), and the exception propagates. Raises
    `NonFiniteLoss` when the loss is NaN or infinite. Same seed, same data, same model init → the same
    result on CPU.
    """
    settings = resolve_recipe(recipe, data, device)
    if len(data.train_x) < 2:
        raise ValueError(f"{data.name}: need at least 2 training images, got {len(data.train_x)}")
    previous_threads = torch.get_num_threads()
    if recipe.threads is not None:
        torch.set_num_threads(recipe.threads)
    try:
        torch.manual_seed(seed)  # dropout and other in-model randomness
        return _train_and_predict(model, data, settings, seed, device, on_step)
    finally:
        torch.set_num_threads(previous_threads)


def _train_and_predict(
    model: nn.Module,
    data: SandboxData,
    settings: RecipeSettings,
    seed: int,
    device: torch.device,
    on_step: StepCallback | None,
) -> TrainOutput:
    # ---- setup: model, optimizer, the whole sampling plan
    model.to(device)
    if settings.channels_last and not accepts_channels_last(model, data, settings, device):
        settings = replace(settings, channels_last=False)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        nesterov=settings.nesterov,
    )
    batches = BatchMaker(data, settings, device, seed)
    bounds = batch_bounds(max(2, round(settings.epochs * len(data.train_x))), settings.batch_size)
    samples = bounds[-1][1]
    total_steps = len(bounds)
    steps_per_epoch = len(data.train_x) / settings.batch_size
    tail_start = total_steps - max(1, round(0.1 * total_steps))  # train_loss / train_acc window
    losses = torch.zeros(total_steps, device=device)
    tail_correct = torch.zeros((), dtype=torch.int64, device=device)
    tail_seen = 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.bf16_autocast)

    # ---- the training loop
    model.train()
    compute_s = 0.0
    train_start = time.perf_counter()
    cpu_start = time.process_time()
    for step, (images, labels) in enumerate(batches.train_batches(bounds)):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(settings, step, total_steps, steps_per_epoch)

        compute_start = time.perf_counter()
        with autocast:
            logits = model(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=settings.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), settings.clip_grad_norm)
        optimizer.step()
        compute_s += time.perf_counter() - compute_start

        losses[step] = loss.detach()
        if step >= tail_start:
            tail_correct += (logits.detach().argmax(1) == labels).sum()
            tail_seen += len(labels)
        last = step == total_steps - 1
        if device.type == "cpu" or last or (step + 1) % REPORT_EVERY == 0:
            value = float(losses[step])  # free on CPU; a sync on GPU, hence only every few steps there
            if not math.isfinite(value):
                raise NonFiniteLoss(step + 1, value)
            if on_step is not None and (last or (step + 1) % REPORT_EVERY == 0):
                on_step(step + 1, value)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_s = time.perf_counter() - train_start
    train_cpu_s = time.process_time() - cpu_start

    # ---- prediction, in eval mode
    predict_start = time.perf_counter()
    val_pred = predict(model, batches, data.val_x, settings)
    test_pred = predict(model, batches, data.test_x, settings)
    predict_s = time.perf_counter() - predict_start

    return TrainOutput(
        train_loss=float(losses[tail_start:].mean()),
        train_acc=float(tail_correct) / max(1, tail_seen),
        val_pred=val_pred,
        test_pred=test_pred,
        train_s=train_s,
        samples_per_s=samples / train_s,
        steps=total_steps,
        data_s=max(0.0, train_s - compute_s),
        predict_s=predict_s,
        train_cpu_s=train_cpu_s,
        settings=asdict(settings),
    )


def set_memory_format(model: nn.Module, memory_format: torch.memory_format) -> None:
    model.to(memory_format=memory_format)  # type: ignore[call-overload]  # missing from torch's stubs


def accepts_channels_last(model: nn.Module, data: SandboxData, settings: RecipeSettings, device: torch.device) -> bool:
    """Convert `model` to channels_last if its forward pass works that way; otherwise leave it contiguous.

    Candidate code often flattens with `x.view(n, -1)`, which fails on a channels_last feature map. The
    probe (two images, eval mode, no gradients, so no state changes) catches that before training; any
    error means "not in this layout", and a genuine bug then surfaces in the contiguous training run.
    """
    set_memory_format(model, torch.channels_last)
    probe = data.train_x[:2].to(device).float().contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.bf16_autocast)
    model.eval()
    try:
        with torch.no_grad(), autocast:
            model(probe)
    except Exception:  # deliberately broad: any failure only means the layout is not usable here
        set_memory_format(model, torch.contiguous_format)
        return False
    finally:
        model.train()
    return True


def predict(model: nn.Module, batches: BatchMaker, images: torch.Tensor, settings: RecipeSettings) -> np.ndarray:
    """Predicted class indices (np.int64) for `images`, in eval mode without gradients, in batches."""
    model.eval()
    predictions: list[torch.Tensor] = []
    autocast = torch.autocast(batches.device.type, dtype=torch.bfloat16, enabled=settings.bf16_autocast)
    with torch.no_grad(), autocast:
        for batch in batches.eval_batches(images, max(256, 4 * settings.batch_size)):
            predictions.append(model(batch).argmax(1).cpu())
    if not predictions:
        return np.empty(0, dtype=np.int64)
    return torch.cat(predictions).numpy().astype(np.int64)
