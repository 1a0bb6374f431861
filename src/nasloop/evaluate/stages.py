"""The stages of one evaluation, run inside the sandboxed child process (never in the parent).

A job names its stages (`EvalJob.stages`); they run in the order their registrations declare
(`nasloop.registry.ordered_stages()`: static, build, hardware, zero-cost, train) and each fails fast with its
own failure kind:

    static     the open-code checks of `nasloop.spaces.open_code`   syntax, import, forbidden, build
    build      execute the module, build `Net(in_shape, num_classes)`, count the parameters, forward
               one batch of real training images                     import, build, budget, shape, nan, oom
    train      the proxy trainer, then predictions for val and test  nan, oom, shape, crash

A stage is a function `stage(context)` registered in `nasloop.registry.stages` under its name, with its
place in the order and whether it needs a model (the `register_stage` decorator; `Stage` is what the
registry holds; the measuring stages live in `nasloop.evaluate.measure_stages`, and
`nasloop.evaluate.builtin_stages` imports every built-in one). It reads and fills the `StageContext`: the
model, `metrics` (floats whose names carry their unit), `info`, and `predictions` (arrays the parent
scores). It fails by raising `StageFailed`; any other exception is classified by
`failure_from_exception`. Stages that need a model get the build stage run before them even when the job
did not name it. A requested stage that nobody registered is skipped and named in
`info["skipped_stages"]` with the reason (a config naming one fails at load already).

`run_stages` never raises: everything, `SystemExit` included, becomes a failure record.
"""

from __future__ import annotations

import errno
import linecache
import math
import sys
import time
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from nasloop.candidate import EvalResult, Failure, FailureKind, State
from nasloop.data.splits import SandboxData
from nasloop.evaluate.job import EvalJob
from nasloop.registry import ordered_stages, stages

CANDIDATE_FILENAME = "candidate.py"
CHECK_BATCH_SIZE = 4  # an unusual size, so a forward pass that hard-codes a batch size fails here
TRACEBACK_LIMIT_CHARS = 4000

# Exception text that means an allocation failed (torch CPU and CUDA allocators, glibc, Python).
_MEMORY_PHRASES = ("out of memory", "can't allocate memory", "cannot allocate memory", "failed to allocate")


class StageFailed(Exception):
    """Raised by a stage to end the evaluation with `failure`."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass
class StageContext:
    """What the stages of one evaluation share.

    Set up by the sandbox: `job`, `data` (no evaluation labels), `device`, `on_step` (called with each
    training step and loss) and `on_stage` (called with each stage's name as it starts); both stream
    progress to the parent. Filled by the stages: `module`,
    `net_class`, `model`, `metrics`, `info`, `predictions` (name → int64 array, scored by the parent),
    `timings` (seconds per stage) and `stage` (the last stage started).
    """

    job: EvalJob
    data: SandboxData
    device: torch.device
    on_step: Callable[[int, float], None] | None = None
    on_stage: Callable[[str], None] | None = None
    module: types.ModuleType | None = None
    model: nn.Module | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    stage: str = ""

    def require_model(self) -> nn.Module:
        if self.model is None:
            raise RuntimeError(f"stage {self.stage!r} needs a built model; the build stage did not run")
        return self.model


StageFunction = Callable[[StageContext], None]


@dataclass(frozen=True)
class Stage:
    """A registered evaluation stage: its function, its place in the order (lower runs first; the built-in
    stages use 10 to 50, and a stage of your own may go between them) and whether it needs the model
    built first."""

    name: str
    order: int
    function: StageFunction
    needs_model: bool = True


def register_stage(name: str, *, order: int, needs_model: bool = True) -> Callable[[StageFunction], StageFunction]:
    """Decorator that registers `function(context)` as the stage `name` in `nasloop.registry.stages`."""

    def decorate(function: StageFunction) -> StageFunction:
        stages.register(name)(Stage(name, order, function, needs_model))
        return function

    return decorate


# ----------------------------------------------------------------------------------- planning and running


def plan_stages(requested: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """The stages to run, in their registered order, and the requested ones skipped (name → reason);
    "build" is added when a stage needs a model."""
    known = ordered_stages()
    skipped = {
        name: f"no stage named {name!r} is installed in this nasloop (known: {', '.join(known)})"
        for name in requested
        if name not in known
    }
    chosen = {name for name in requested if name in known}
    if any(stages.get(name).needs_model for name in chosen):
        chosen.add("build")
    return [name for name in known if name in chosen], skipped


def run_stages(context: StageContext) -> EvalResult:
    """Run the job's stages on `context`; a failure is returned as data, never raised."""
    names, skipped = plan_stages(context.job.stages)
    if skipped:
        context.info["skipped_stages"] = skipped
        for reason in skipped.values():
            print(f"nasloop sandbox: skipping a requested stage: {reason}", file=sys.stderr)
    failure: Failure | None = None
    for name in names:
        context.stage = name
        started = time.perf_counter()
        try:
            if context.on_stage is not None:
                context.on_stage(name)
            stages.get(name).function(context)
        except StageFailed as failed:
            failure = failed.failure
        except BaseException as error:  # the child's last line of defence: SystemExit included
            default = _DEFAULT_KINDS.get(name, FailureKind.CRASH)
            failure = failure_from_exception(error, default, context.job.limits.max_file_mb)
        context.timings[f"{name}_s"] = time.perf_counter() - started
        if failure is not None:
            break
    return _result(context, failure)


def _result(context: StageContext, failure: Failure | None) -> EvalResult:
    state = State.COMPLETE if failure is None else State.FAILED
    return EvalResult(
        state=state,
        metrics=dict(context.metrics),
        failure=failure,
        timings=dict(context.timings),
        stage=context.stage,
        info=dict(context.info),
    )


# The kind of an unexpected exception raised inside each stage.
_DEFAULT_KINDS = {"static": FailureKind.CRASH, "build": FailureKind.BUILD, "train": FailureKind.CRASH}


# ----------------------------------------------------------------------------------- classifying errors


def failure_from_exception(error: BaseException, default: FailureKind, max_file_mb: int | None = None) -> Failure:
    """A failure record for an exception raised by candidate code (or by training it).

    Memory errors become `oom`, a non-finite loss `nan`, `SystemExit` a `crash`, a file over the size
    limit or a refused fork a `crash` that says so; anything else gets `default`. The message names the
    exception and the last line of the candidate it came from; the traceback tail is kept.
    """
    described = describe_exception(error)
    tail = traceback_tail(error)
    if isinstance(error, SystemExit):
        return Failure(FailureKind.CRASH, f"candidate called sys.exit({error.code!r})", tail)
    if isinstance(error, KeyboardInterrupt):
        return Failure(FailureKind.CRASH, "the evaluation was interrupted", tail)
    if is_memory_error(error):
        return Failure(FailureKind.OOM, f"out of memory: {described}", tail)
    if type(error).__name__ == "NonFiniteLoss":
        return Failure(FailureKind.NAN, str(error), tail)
    if isinstance(error, OSError) and error.errno == errno.EFBIG:
        limit = f" of {max_file_mb} MB" if max_file_mb else ""
        return Failure(FailureKind.CRASH, f"the candidate wrote a file over the size limit{limit}: {described}", tail)
    if isinstance(error, OSError) and error.errno == errno.EAGAIN:
        return Failure(FailureKind.CRASH, f"the sandbox refused to start another process or thread: {described}", tail)
    return Failure(default, described, tail)


def is_memory_error(error: BaseException) -> bool:
    """Whether an exception reports a failed allocation (host or device)."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    return isinstance(error, RuntimeError) and any(phrase in str(error).lower() for phrase in _MEMORY_PHRASES)


def describe_exception(error: BaseException, limit: int = 600) -> str:
    """`Type: message (candidate.py line N, in function)`, cut to about `limit` characters."""
    text = str(error).strip()
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    described = f"{type(error).__name__}: {text}" if text else type(error).__name__
    frame = last_candidate_frame(error)
    if frame is not None:
        described += f" ({CANDIDATE_FILENAME} line {frame.lineno}, in {frame.name})"
    return described


def last_candidate_frame(error: BaseException) -> traceback.FrameSummary | None:
    """The innermost traceback frame that is in the candidate's code, if any."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename == CANDIDATE_FILENAME]
    return frames[-1] if frames else None


def traceback_tail(error: BaseException) -> str:
    """The formatted traceback, cut from the front to `TRACEBACK_LIMIT_CHARS`."""
    text = "".join(traceback.format_exception(error))
    return text if len(text) <= TRACEBACK_LIMIT_CHARS else "...\n" + text[-TRACEBACK_LIMIT_CHARS:]


def _reraise_sandbox_limit(error: BaseException) -> None:
    """Re-raise errors that come from the sandbox's limits (memory, file size, processes) untouched, so
    that `failure_from_exception` classifies them instead of the stage's own kind."""
    if is_memory_error(error) or (isinstance(error, OSError) and error.errno in (errno.EFBIG, errno.EAGAIN)):
        raise error


# ----------------------------------------------------------------------------------- static


@register_stage("static", order=10, needs_model=False)
def static_stage(context: StageContext) -> None:
    """The open-code checks; fails with their kind (syntax, import, forbidden, build)."""
    from nasloop.spaces.open_code import check_code

    failure = check_code(context.job.code)
    if failure is not None:
        raise StageFailed(failure)


# ----------------------------------------------------------------------------------- build


@register_stage("build", order=20, needs_model=False)
def build_stage(context: StageContext) -> None:
    """Execute the module, build the network, count and limit its parameters, check one forward pass."""
    module = execute_module(context.job.code)
    context.module = module
    torch.manual_seed(context.job.seed)  # the same seed gives the same initial weights
    model = build_model(module, context.data.in_shape, context.data.num_classes).to(context.device)
    context.model = model
    if has_lazy_parameters(model):  # lazy layers get their shapes from the first forward pass
        check_forward(model, context)
        count_parameters(model, context)
    else:
        count_parameters(model, context)
        check_forward(model, context)


def execute_module(code: str) -> types.ModuleType:
    """Run the candidate's code as a fresh module named `candidate` (source shown in tracebacks)."""
    linecache.cache[CANDIDATE_FILENAME] = (len(code), None, code.splitlines(keepends=True), CANDIDATE_FILENAME)
    module = types.ModuleType("candidate")
    module.__file__ = CANDIDATE_FILENAME
    sys.modules["candidate"] = module  # dataclasses and typing look modules up by name
    try:
        compiled = compile(code, CANDIDATE_FILENAME, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as error:
        raise StageFailed(Failure(FailureKind.SYNTAX, describe_exception(error))) from error
    try:
        exec(compiled, module.__dict__)
    except ImportError as error:
        raise StageFailed(Failure(FailureKind.IMPORT, describe_exception(error), traceback_tail(error))) from error
    except Exception as error:
        _reraise_sandbox_limit(error)
        message = f"the module raised while it was executed: {describe_exception(error)}"
        raise StageFailed(Failure(FailureKind.BUILD, message, traceback_tail(error))) from error
    return module


def build_model(module: types.ModuleType, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """`module.Net(in_shape, num_classes)`, checked to be an `nn.Module`."""
    net_class = getattr(module, "Net", None)
    if not (isinstance(net_class, type) and issubclass(net_class, nn.Module)):
        found = "nothing" if net_class is None else repr(net_class)[:80]
        message = f"the module must define `class Net(nn.Module)`; `Net` is {found}"
        raise StageFailed(Failure(FailureKind.BUILD, message))
    try:
        return net_class(tuple(in_shape), num_classes)
    except Exception as error:
        _reraise_sandbox_limit(error)
        message = f"Net({tuple(in_shape)}, {num_classes}) raised {describe_exception(error)}"
        raise StageFailed(Failure(FailureKind.BUILD, message, traceback_tail(error))) from error


def has_lazy_parameters(model: nn.Module) -> bool:
    return any(isinstance(parameter, nn.parameter.UninitializedParameter) for parameter in model.parameters())


def count_parameters(model: nn.Module, context: StageContext) -> None:
    """Record `params` (all parameters) and enforce `limits.max_params` (kind `budget`)."""
    count = sum(parameter.numel() for parameter in model.parameters())
    context.metrics["params"] = float(count)
    limit = context.job.limits.max_params
    if limit is not None and count > limit:
        message = f"the network has {count:,} parameters; the limit is {limit:,}. Make it smaller"
        largest = largest_layers(model, count)
        message += f"; the largest layers: {largest}." if largest else "."
        raise StageFailed(Failure(FailureKind.BUDGET, message))


def largest_layers(model: nn.Module, total: int, listed: int = 3) -> str:
    """The `listed` leaf layers with the most parameters, as `name = Layer(...): N (share)`."""
    sizes = [
        (sum(parameter.numel() for parameter in module.parameters()), name, module)
        for name, module in model.named_modules()
        if name and not any(True for _ in module.children())
    ]
    sizes = sorted((entry for entry in sizes if entry[0] > 0), key=lambda entry: -entry[0])[:listed]
    return ", ".join(f"{name} = {module!r}: {size:,} ({size / total:.0%})" for size, name, module in sizes)


def check_batch(data: SandboxData, device: torch.device) -> torch.Tensor:
    """The first few training images, normalised as the trainer normalises them (float32, per channel)."""
    images = data.train_x[:CHECK_BATCH_SIZE].to(device=device, dtype=torch.float32) / 255.0
    mean = torch.tensor(data.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return (images - mean) / std


# How many of the last layer outputs a forward-pass error lists.
TRACE_OUTPUTS = 6


class LayerTrace:
    """Forward hooks on the leaf layers of a model that remember the layer a forward pass failed in, the
    shapes it received and the output shapes of the layers before, so a shape error can name the layer,
    say what it expected and show the real shapes next to the ones the code's comments assume."""

    def __init__(self, model: nn.Module) -> None:
        self.open: list[tuple[str, nn.Module, list[tuple[int, ...]]]] = []  # entered, not returned yet
        self.failed_in: tuple[str, nn.Module, list[tuple[int, ...]]] | None = None
        self.outputs: list[tuple[str, tuple[int, ...]]] = []  # (layer, output shape), in call order
        self.first_inputs: dict[str, list[tuple[int, ...]]] = {}  # layer -> the shapes its first call received
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        for name, module in model.named_modules():
            if name and not any(True for _ in module.children()):
                self._handles.append(module.register_forward_pre_hook(self._enter(name)))
                self._handles.append(module.register_forward_hook(self._leave))

    def _enter(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            shapes = [tuple(arg.shape) for arg in args if isinstance(arg, torch.Tensor)]
            self.open.append((name, module, shapes))
            self.first_inputs.setdefault(name, shapes)

        return hook

    def _leave(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self.open and self.open[-1][1] is module:
            name = self.open.pop()[0]
            if isinstance(output, torch.Tensor):
                self.outputs.append((name, tuple(output.shape)))
                del self.outputs[:-TRACE_OUTPUTS]

    def fail(self) -> None:
        """Call when the forward pass raised: the innermost layer still open is where it failed."""
        self.failed_in = self.open[-1] if self.open else None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def describe(self) -> str:
        """`; it failed in layer `name` = Layer(...), which received ...` plus a fix for the usual cases."""
        before = ", ".join(f"{layer} -> {shape}" for layer, shape in self.outputs)
        shapes_before = f". Output shapes of the last layers before the error: {before}" if before else ""
        if self.failed_in is None:
            return shapes_before
        name, module, shapes = self.failed_in
        received = ", ".join(str(shape) for shape in shapes) or "no tensor"
        text = f". It failed in layer `{name}` = {module!r}, which received an input of shape {received}"
        first = self.first_inputs.get(name)
        if first and shapes and _input_size(module, first[0]) != _input_size(module, shapes[0]):
            # One layer called at two places of forward: no single size fits both calls.
            text += (
                f": `{name}` is called more than once in forward, and an earlier call received {first[0]}; a layer "
                "has one input size, so give each call its own layer (e.g. a second layer with the other size)"
            )
        elif shapes and isinstance(module, nn.Linear) and len(shapes[0]) > 2 and shapes[0][-1] != module.in_features:
            features = math.prod(shapes[0][1:])
            text += (
                f": the input was not flattened, so the layer saw {shapes[0][-1]} features where it expects "
                f"{module.in_features}; flatten before this layer (`x = torch.flatten(x, 1)`), after which the "
                f"input has {features} features and in_features must be {features}"
            )
        elif shapes and isinstance(module, nn.Linear) and shapes[0] and shapes[0][-1] != module.in_features:
            text += (
                f": its in_features is {module.in_features} but the input has {shapes[0][-1]} features; set "
                f"in_features={shapes[0][-1]}, or compute it from in_shape (e.g. nn.AdaptiveAvgPool2d before "
                "flattening)"
            )
        elif shapes and len(shapes[0]) >= 2:
            channels = shapes[0][1]
            for attribute in ("in_channels", "num_features"):  # convolutions; batch norms
                declared = getattr(module, attribute, None)
                if isinstance(declared, int) and declared != channels:
                    text += (
                        f": its {attribute} is {declared} but the input has {channels} channels; set "
                        f"{attribute}={channels}, the channels the layer before produces"
                    )
                    break
        return text + shapes_before


def _input_size(module: nn.Module, shape: tuple[int, ...]) -> int | None:
    """The size of an input of `shape` that `module` declares: features (the last dimension) for a Linear,
    channels (dimension 1) for the others."""
    if isinstance(module, nn.Linear):
        return shape[-1] if shape else None
    return shape[1] if len(shape) >= 2 else None


def check_forward(model: nn.Module, context: StageContext) -> None:
    """One forward pass in training mode: logits must be a finite float tensor (B, num_classes).

    Buffers (BatchNorm statistics) are restored afterwards, so training starts from the initial state.
    When the pass raises, the message names the layer it failed in and the shape that layer received.
    """
    images = check_batch(context.data, context.device)
    expected = (len(images), context.data.num_classes)
    saved = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    model.train()
    trace = LayerTrace(model)
    try:
        with torch.no_grad():
            logits = model(images)
    except Exception as error:
        _reraise_sandbox_limit(error)
        trace.fail()
        message = (
            f"the forward pass on a batch of shape {tuple(images.shape)} raised {describe_exception(error)}"
            + trace.describe()
        )
        raise StageFailed(Failure(FailureKind.SHAPE, message, traceback_tail(error))) from error
    finally:
        trace.remove()
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                if name in saved and buffer.shape == saved[name].shape:
                    buffer.copy_(saved[name])
    check_logits(logits, expected, tuple(images.shape))


def check_logits(logits: object, expected: tuple[int, int], input_shape: tuple[int, ...]) -> None:
    """Fail with `shape` unless `logits` is a float tensor of `expected` shape, `nan` if not finite."""
    if not isinstance(logits, torch.Tensor):
        message = f"forward must return one tensor of logits with shape {expected}; it returned {type(logits).__name__}"
        raise StageFailed(Failure(FailureKind.SHAPE, message))
    if tuple(logits.shape) != expected:
        message = (
            f"for an input of shape {input_shape} the logits must have shape {expected} "
            f"(batch, num_classes); got {tuple(logits.shape)}"
        )
        if logits.dim() > 2:
            message += (
                ": the features were not flattened before the classifier; flatten them "
                "(`x = torch.flatten(x, 1)`) before the last Linear and size its in_features to match"
            )
        raise StageFailed(Failure(FailureKind.SHAPE, message))
    if not logits.is_floating_point():
        raise StageFailed(Failure(FailureKind.SHAPE, f"the logits must be floating point; got {logits.dtype}"))
    if not bool(torch.isfinite(logits).all()):
        raise StageFailed(Failure(FailureKind.NAN, "the logits of the first forward pass contain NaN or infinity"))


# ----------------------------------------------------------------------------------- train


TRAIN_METRICS = ("train_loss", "train_acc", "train_s", "samples_per_s", "steps", "data_s", "predict_s")


@register_stage("train", order=50, needs_model=True)
def train_stage(context: StageContext) -> None:
    """Proxy-train the model with nasloop's recipe, then predict the validation and test images."""
    from nasloop.evaluate.train import train_and_predict

    model = context.require_model()
    if not any(parameter.requires_grad for parameter in model.parameters()):
        raise StageFailed(Failure(FailureKind.BUILD, "Net has no trainable parameters, so it cannot learn"))
    from nasloop.hardware import energy_meter

    try:
        with energy_meter(context.device, power_watts=context.job.measure.power_watts) as energy:
            output = train_and_predict(
                model, context.data, context.job.recipe, seed=context.job.seed, device=context.device,
                on_step=context.on_step,
            )  # fmt: skip
    except Exception as error:
        # An error raised inside the candidate's own code during training is a forward-pass problem.
        kind = FailureKind.SHAPE if last_candidate_frame(error) is not None else FailureKind.CRASH
        raise StageFailed(failure_from_exception(error, kind, context.job.limits.max_file_mb)) from error
    for name in TRAIN_METRICS:
        context.metrics[name] = float(getattr(output, name))
    if not math.isfinite(output.train_loss):
        raise StageFailed(Failure(FailureKind.NAN, f"the training loss is not finite ({output.train_loss})"))
    context.info["recipe"] = dict(output.settings)
    record_training_energy(context, energy.joules, output.train_s, output.predict_s, energy.method, energy.detail)
    context.predictions["val_pred"] = np.asarray(output.val_pred, dtype=np.int64)
    context.predictions["test_pred"] = np.asarray(output.test_pred, dtype=np.int64)


def record_training_energy(
    context: StageContext, joules: float, train_s: float, predict_s: float, method: str, detail: str
) -> None:
    """`train_energy_j` and `val_energy_j` (used by the combined model effectiveness of expert-rules).

    One meter spans training and prediction; the joules are split between them in proportion to their
    seconds, and `info["energy"]` says whether the total was measured or estimated.
    """
    total_s = train_s + predict_s
    share = predict_s / total_s if total_s > 0 else 0.0
    context.metrics["train_energy_j"] = joules * (1 - share)
    context.metrics["val_energy_j"] = joules * share
    context.info["energy"] = {"method": method, "detail": f"{detail}; split by time between training and prediction"}
