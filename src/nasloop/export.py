"""Export a candidate as TorchScript or ONNX (`nasloop export --format torchscript|onnx`).

The `py` format (the candidate's module under a header) needs no execution and lives in the CLI. The two
compiled formats must build `Net(in_shape, num_classes)`, i.e. run the candidate's code, which is untrusted
(an LLM wrote it). So the code must first pass nasloop's static check
(`nasloop.spaces.open_code.check_code`: only torch/math imports, no file, network or interpreter
internals), and is then built and exported in a child process with a scrubbed environment (no API keys)
in its own session, killed with its process group when it runs past the timeout. The parent never
executes candidate code.

The exported model is in eval mode with *freshly initialised* weights (seeded): a run stores code and
metrics, not trained weights. The batch dimension is dynamic. Before the file is kept, the child loads it
back and checks that it reproduces the eager model's logits on a batch of another size (ONNX: with
onnxruntime when it is installed, else the ONNX checker only).

ONNX needs the `onnx` package, and torch's default exporter (`dynamo`) also `onnxscript`; the `legacy`
TorchScript-based exporter needs only `onnx`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nasloop.data.spec import DatasetSpec
from nasloop.errors import NasloopError

FORMATS = ("py", "torchscript", "onnx")
COMPILED_FORMATS = ("torchscript", "onnx")
OnnxExporter = Literal["dynamo", "legacy"]
EXAMPLE_BATCH = 2  # not 1, so a trace does not mistake the batch dimension for a constant 1
CHECK_BATCH = 3  # a different size: a model that hard-codes the batch size fails the check
DEFAULT_TIMEOUT_S = 300.0


class ExportError(NasloopError, RuntimeError):
    """The candidate could not be exported; the message says why and what to do."""


class MissingExportDependency(ExportError):
    """An optional package the format needs is not installed; the message names the pip command."""


@dataclass(frozen=True)
class ExportedModel:
    """What was written: the file, its format, the model's parameter count and how it was checked."""

    path: Path
    format: str
    params: int
    in_shape: tuple[int, int, int]
    num_classes: int
    check: str


def model_shapes(
    dataset: DatasetSpec, in_shape: str | None = None, num_classes: int | None = None
) -> tuple[tuple[int, int, int], int]:
    """The input shape (from "C,H,W" text) and class count to build the model with; each defaults to `dataset`'s."""
    shape: tuple[int, int, int] | None = None
    if in_shape is not None:
        try:
            sizes = [int(size) for size in in_shape.split(",")]
        except ValueError:
            sizes = []
        if len(sizes) != 3 or min(sizes) < 1:
            raise ExportError(f"the input shape must be three positive sizes C,H,W, got {in_shape!r}")
        shape = (sizes[0], sizes[1], sizes[2])
    if num_classes is not None and num_classes < 1:
        raise ExportError(f"the number of classes must be positive, got {num_classes}")
    if shape is not None and num_classes is not None:
        return shape, num_classes
    from nasloop.data import load_splits

    try:
        splits = load_splits(dataset)
    except FileNotFoundError as error:
        raise ExportError(f"{error}\n(or give the input shape C,H,W and the number of classes)") from None
    return shape or splits.in_shape, num_classes or splits.num_classes


def required_packages(format: str, onnx_exporter: OnnxExporter = "dynamo") -> list[str]:
    """The packages `format` needs beyond torch."""
    if format != "onnx":
        return []
    return ["onnx", "onnxscript"] if onnx_exporter == "dynamo" else ["onnx"]


def check_dependencies(format: str, onnx_exporter: OnnxExporter = "dynamo") -> None:
    """Raise MissingExportDependency naming the pip command when a needed package is missing."""
    missing = [name for name in required_packages(format, onnx_exporter) if importlib.util.find_spec(name) is None]
    if missing:
        hint = " (or use the legacy exporter, which needs only onnx)" if missing == ["onnxscript"] else ""
        raise MissingExportDependency(
            f"exporting to {format} with the {onnx_exporter} exporter needs {', '.join(missing)}: "
            f"pip install {' '.join(missing)}{hint}"
        )


def export_candidate(
    code: str,
    output: Path,
    format: str,
    in_shape: tuple[int, int, int],
    num_classes: int,
    *,
    onnx_exporter: OnnxExporter = "dynamo",
    seed: int = 0,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ExportedModel:
    """Build the candidate in a child process and write it to `output` as TorchScript or ONNX.

    Raises ExportError when the code fails the static check, does not build, does not export or the
    exported file does not reproduce the model; MissingExportDependency when a package is missing.
    `output` is written only when everything succeeded.
    """
    if format not in COMPILED_FORMATS:
        raise ValueError(f"format must be one of {', '.join(COMPILED_FORMATS)}, got {format!r}")
    check_dependencies(format, onnx_exporter)
    from nasloop.spaces.open_code import check_code

    failure = check_code(code)
    if failure is not None:
        raise ExportError(
            f"the candidate fails nasloop's static check, so it is not executed: {failure.kind.value}: "
            f"{failure.message}"
        )
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".nasloop-export-", dir=output.parent) as scratch:
        partial = Path(scratch) / output.name
        request = {
            "code": code, "output": str(partial), "format": format, "in_shape": list(in_shape),
            "num_classes": num_classes, "onnx_exporter": onnx_exporter, "seed": seed,
        }  # fmt: skip
        answer = _run_child(request, timeout_s)
        os.replace(partial, output)
    return ExportedModel(output, format, int(answer["params"]), in_shape, num_classes, str(answer["check"]))


def _run_child(request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run the exporter child with `request` on stdin; its one JSON line of answer, or ExportError."""
    from nasloop.evaluate.sandbox import scrubbed_environment

    process = subprocess.Popen(
        [sys.executable, "-m", "nasloop.export"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=scrubbed_environment(),
        start_new_session=True,  # its own process group, killed as a whole on timeout
    )
    try:
        stdout, stderr = process.communicate(json.dumps(request), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise ExportError(f"building and exporting the candidate took more than {timeout_s:g} s: killed") from None
    answer = _last_json_line(stdout)
    if answer is None:
        tail = stderr.strip()[-1500:]
        raise ExportError(f"the exporter process ended with status {process.returncode} without an answer:\n{tail}")
    if not answer.get("ok"):
        raise ExportError(str(answer.get("error")))
    return answer


def _last_json_line(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                continue
            return parsed if isinstance(parsed, dict) else None
    return None


# ---------------------------------------------------------------------------------------------------------
# The child: runs with the candidate's code, never in the parent process
# ---------------------------------------------------------------------------------------------------------


def _child_main() -> int:
    """Read one request on stdin, export, and print one JSON line: {"ok": true, ...} or {"ok": false, "error"}."""
    request = json.loads(sys.stdin.read())
    try:
        answer = {"ok": True, **_build_and_export(request)}
    except ExportError as error:
        answer = {"ok": False, "error": str(error)}
    # Candidate code may have printed; the answer is the last line.
    print("\n" + json.dumps(answer), flush=True)
    return 0


def _build_and_export(request: dict[str, Any]) -> dict[str, Any]:
    import torch

    from nasloop.evaluate.stages import StageFailed, build_model, execute_module

    in_shape = tuple(int(size) for size in request["in_shape"])
    num_classes = int(request["num_classes"])
    try:
        module = execute_module(request["code"])
        torch.manual_seed(int(request["seed"]))
        model = build_model(module, (in_shape[0], in_shape[1], in_shape[2]), num_classes).eval()
    except StageFailed as failed:
        failure = failed.failure
        raise ExportError(f"the candidate does not build: {failure.kind.value}: {failure.message}") from None
    example = torch.randn(EXAMPLE_BATCH, *in_shape)
    check_input = torch.randn(CHECK_BATCH, *in_shape)
    try:
        with torch.no_grad():
            logits = model(example)
            expected = model(check_input)
    except Exception as error:  # the candidate's own forward pass: report it, whatever it raised
        raise ExportError(f"the forward pass failed: {type(error).__name__}: {error}") from None
    if tuple(logits.shape) != (EXAMPLE_BATCH, num_classes):
        raise ExportError(f"the logits have shape {tuple(logits.shape)}, expected {(EXAMPLE_BATCH, num_classes)}")
    path = Path(request["output"])
    if request["format"] == "torchscript":
        check = _export_torchscript(model, example, check_input, expected, path)
    else:
        check = _export_onnx(model, example, check_input, expected, path, request["onnx_exporter"])
    return {"params": sum(parameter.numel() for parameter in model.parameters()), "check": check}


def _export_torchscript(model: Any, example: Any, check_input: Any, expected: Any, path: Path) -> str:
    import torch

    try:
        with torch.no_grad():
            traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path))
        with torch.no_grad():
            reproduced = loaded(check_input)
    except Exception as error:  # tracing runs the candidate's code: any error is the candidate's
        raise ExportError(f"torch.jit.trace could not export the model: {type(error).__name__}: {error}") from None
    _compare(expected.numpy(), reproduced.numpy(), "the TorchScript file")
    return f"reloaded with torch.jit.load; logits match the eager model at batch {CHECK_BATCH}"


def _export_onnx(model: Any, example: Any, check_input: Any, expected: Any, path: Path, exporter: str) -> str:
    import torch

    try:
        if exporter == "dynamo":
            batch = {0: torch.export.Dim.DYNAMIC}
            torch.onnx.export(model, (example,), str(path), dynamo=True, dynamic_shapes=(batch,),
                              external_data=False, verbose=False, input_names=["input"],
                              output_names=["logits"])  # fmt: skip
        else:
            axes = {"input": {0: "batch"}, "logits": {0: "batch"}}
            torch.onnx.export(model, (example,), str(path), dynamo=False, dynamic_axes=axes,
                              input_names=["input"], output_names=["logits"])  # fmt: skip
    except Exception as error:  # exporting runs the candidate's code: any error is the candidate's
        raise ExportError(f"torch.onnx.export ({exporter}) failed: {type(error).__name__}: {error}") from None
    import onnx

    try:
        onnx.checker.check_model(onnx.load(str(path)))
    except Exception as error:  # the checker's exception types vary between onnx versions
        raise ExportError(f"the ONNX file does not pass onnx.checker: {error}") from None
    if importlib.util.find_spec("onnxruntime") is None:
        return "passes onnx.checker (install onnxruntime to also compare the logits)"
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reproduced = session.run(None, {"input": check_input.numpy()})[0]
    _compare(expected.numpy(), reproduced, "the ONNX file")
    return f"passes onnx.checker; onnxruntime reproduces the logits at batch {CHECK_BATCH}"


def _compare(expected: Any, reproduced: Any, what: str) -> None:
    import numpy as np

    if expected.shape != reproduced.shape or not np.allclose(expected, reproduced, rtol=1e-3, atol=1e-4):
        raise ExportError(
            f"{what} does not reproduce the model at batch {CHECK_BATCH} (shape {reproduced.shape} vs "
            f"{expected.shape}); does the forward pass hard-code the batch size or depend on Python control flow?"
        )


__all__ = [
    "COMPILED_FORMATS",
    "FORMATS",
    "ExportError",
    "ExportedModel",
    "MissingExportDependency",
    "check_dependencies",
    "export_candidate",
    "model_shapes",
    "required_packages",
]


if __name__ == "__main__":
    sys.exit(_child_main())
