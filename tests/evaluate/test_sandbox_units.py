"""The sandbox's parts without processes: stages run in-process on tiny data, output capture, the
environment, bubblewrap arguments, reading what a child leaves behind, and failures from how it ended."""

from __future__ import annotations

import errno
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from nasloop.candidate import FailureKind, State
from nasloop.data.splits import SandboxData
from nasloop.evaluate.isolation import bwrap_command, directories_to_hide, scrubbed_environment
from nasloop.evaluate.job import EvalJob, Limits
from nasloop.evaluate.outcome import (
    PredictionError,
    outcome_result,
    read_child_result,
    read_new_progress,
    read_predictions,
)
from nasloop.evaluate.protocol import Done, JobOutcome, Kill, ProtocolError, Ready, Run, Started, decode, encode
from nasloop.evaluate.sandbox import JobRun
from nasloop.evaluate.stages import StageContext, failure_from_exception, plan_stages, run_stages
from nasloop.evaluate.worker import HeadTail

NET = textwrap.dedent(
    """
    import torch
    import torch.nn as nn


    class Net(nn.Module):
        def __init__(self, in_shape, num_classes):
            super().__init__()
            self.norm = nn.BatchNorm2d(in_shape[0])
            self.head = nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes)

        def forward(self, x):
            return self.head(self.norm(x).flatten(1))
    """
)


@pytest.fixture(scope="module")
def tiny_data() -> SandboxData:
    generator = torch.Generator().manual_seed(0)
    return SandboxData(
        name="tiny",
        train_x=torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8, generator=generator),
        train_y=torch.randint(0, 3, (16,), generator=generator),
        val_x=torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8, generator=generator),
        test_x=torch.randint(0, 256, (7, 1, 8, 8), dtype=torch.uint8, generator=generator),
        num_classes=3,
        in_shape=(1, 8, 8),
        mean=(0.5,),
        std=(0.25,),
    )


def run_in_process(code: str, data: SandboxData, **job_fields: object) -> StageContext:
    job = EvalJob.model_validate({"code": code, "stages": ("static", "build"), **job_fields})
    context = StageContext(job=job, data=data, device=torch.device("cpu"))
    context.info["result"] = run_stages(context)
    return context


def test_a_good_net_builds_and_its_parameters_are_counted(tiny_data: SandboxData) -> None:
    context = run_in_process(NET, tiny_data)
    result = context.info["result"]
    assert result.state is State.COMPLETE, result.failure
    assert result.metrics["params"] == 2 + 64 * 3 + 3
    assert set(result.timings) == {"static_s", "build_s"}
    assert result.stage == "build"


def test_the_forward_check_leaves_batchnorm_statistics_untouched(tiny_data: SandboxData) -> None:
    context = run_in_process(NET, tiny_data)
    assert context.model is not None
    norm = context.model.norm  # type: ignore[union-attr]
    assert torch.equal(norm.running_mean, torch.zeros(1)) and torch.equal(norm.running_var, torch.ones(1))
    assert int(norm.num_batches_tracked) == 0


def test_the_same_seed_builds_the_same_weights(tiny_data: SandboxData) -> None:
    first = run_in_process(NET, tiny_data, seed=3).model
    second = run_in_process(NET, tiny_data, seed=3).model
    assert first is not None and second is not None
    assert torch.equal(first.head.weight, second.head.weight)  # type: ignore[union-attr]


BROKEN = {
    "budget": (NET, {"limits": {"max_params": 100}}, FailureKind.BUDGET, "197 parameters; the limit is 100"),
    "shape": (NET.replace("in_shape[2], num_classes)", "in_shape[2], num_classes + 1)"), {}, FailureKind.SHAPE,
              "must have shape (4, 3) (batch, num_classes); got (4, 4)"),
    "forward raises": (NET.replace("flatten(1)", "flatten(1)[:, :10]"), {}, FailureKind.SHAPE,
                       "(4x10 and 64x3) (candidate.py line 13, in forward)"),
    "tuple output": (NET.replace("return self.head", "return 1, self.head"), {}, FailureKind.SHAPE, "tuple"),
    "nan": (NET.replace("return self.head(", "return float('nan') * self.head("), {}, FailureKind.NAN, "NaN"),
    "build raises": (NET.replace("super().__init__()", "super().__init__()\n        1 / 0"), {}, FailureKind.BUILD,
                     "ZeroDivisionError"),
    "not a module": ("class Net:\n    pass\n", {}, FailureKind.BUILD, "class Net(nn.Module)"),
    "no net": ("import torch\n", {"stages": ("build",)}, FailureKind.BUILD, "`Net` is nothing"),
    "syntax": ("class Net(:\n", {}, FailureKind.SYNTAX, "line 1"),
    "syntax without static": ("class Net(:\n", {"stages": ("build",)}, FailureKind.SYNTAX, "candidate.py"),
    "import without static": ("import nasloop_not_a_module\n" + NET, {"stages": ("build",)}, FailureKind.IMPORT,
                              "nasloop_not_a_module"),
    "module raises": ("raise ValueError('boom')\n" + NET, {"stages": ("build",)}, FailureKind.BUILD, "boom"),
    "forbidden": ("import os\n" + NET, {}, FailureKind.IMPORT, "`import os`"),
    "sys.exit": ("import sys\nsys.exit(4)\n" + NET, {"stages": ("build",)}, FailureKind.CRASH,
                 "candidate called sys.exit(4)"),
    "memory": ("raise MemoryError()\n" + NET, {"stages": ("build",)}, FailureKind.OOM, "out of memory"),
    "no parameters": (NET.replace("self.norm = nn.BatchNorm2d(in_shape[0])", "self.norm = nn.Identity()")
                      .replace("self.head = nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes)",
                               "self.head = nn.Flatten()")
                      .replace("self.norm(x).flatten(1)", "x[:, 0, 0, :3]"),
                      {"stages": ("build", "train")}, FailureKind.BUILD, "no trainable parameters"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BROKEN))
def test_each_broken_candidate_fails_with_its_own_kind(tiny_data: SandboxData, case: str) -> None:
    code, fields, kind, fragment = BROKEN[case]
    result = run_in_process(code, tiny_data, **fields).info["result"]
    assert result.state is State.FAILED
    assert result.failure.kind is kind, result.failure
    assert fragment in result.failure.message or fragment in result.failure.traceback, result.failure


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        (("flatten(1)", "flatten(1)[:, :10]"),
         ("failed in layer `head` = Linear(in_features=64, out_features=3", "which received an input of shape "
          "(4, 10): its in_features is 64 but the input has 10 features; set in_features=10")),
        (("nn.BatchNorm2d(in_shape[0])", "nn.BatchNorm2d(16)"),
         ("failed in layer `norm` = BatchNorm2d(16,", "which received an input of shape (4, 1, 8, 8): its "
          "num_features is 16 but the input has 1 channels")),
    ],
)  # fmt: skip
def test_a_forward_error_names_the_layer_and_the_shape_it_received(
    tiny_data: SandboxData, change: tuple[str, str], fragments: tuple[str, str]
) -> None:
    failure = run_in_process(NET.replace(*change), tiny_data).info["result"].failure
    assert failure.kind is FailureKind.SHAPE and all(part in failure.message for part in fragments), failure.message


def test_an_error_outside_any_layer_lists_the_real_shapes_and_the_hooks_are_removed(tiny_data: SandboxData) -> None:
    code = NET.replace("return self.head(self.norm(x).flatten(1))", "return self.head(self.norm(x).flatten(1)) @ x")
    context = run_in_process(code, tiny_data)
    failure = context.info["result"].failure
    assert failure.kind is FailureKind.SHAPE and "failed in layer" not in failure.message
    assert failure.message.endswith(
        "Output shapes of the last layers before the error: norm -> (4, 1, 8, 8), head -> (4, 3)"
    )
    good = run_in_process(NET, tiny_data).model
    assert good is not None and all(
        not module._forward_hooks and not module._forward_pre_hooks for module in good.modules()
    )


def test_lazy_layers_are_counted_after_the_forward_pass(tiny_data: SandboxData) -> None:
    code = NET.replace("nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes)", "nn.LazyLinear(num_classes)")
    result = run_in_process(code, tiny_data).info["result"]
    assert result.state is State.COMPLETE, result.failure
    assert result.metrics["params"] == 2 + 64 * 3 + 3


@pytest.mark.slow  # the first optimizer imports torch._dynamo: seconds
def test_the_train_stage_trains_and_predicts(tiny_data: SandboxData) -> None:
    steps: list[tuple[int, float]] = []
    stages_seen: list[str] = []
    job = EvalJob(code=NET, stages=("train",), recipe={"batch_size": 4, "epochs": 3})  # type: ignore[arg-type]
    context = StageContext(
        job=job,
        data=tiny_data,
        device=torch.device("cpu"),
        on_step=lambda step, loss: steps.append((step, loss)),
        on_stage=stages_seen.append,
    )
    result = run_stages(context)
    assert result.state is State.COMPLETE, result.failure
    assert stages_seen == ["build", "train"]  # build is implied by train
    assert result.metrics["steps"] == 12 and steps[-1][0] == 12
    assert context.predictions["val_pred"].shape == (5,) and context.predictions["test_pred"].shape == (7,)
    assert "val_acc" not in result.metrics  # only the parent, which holds the labels, scores


def test_a_training_error_inside_the_candidate_is_a_shape_failure(tiny_data: SandboxData) -> None:
    # Passes the check batch of 4, fails for the training batch of 8.
    code = NET.replace("self.norm(x).flatten(1)", "self.norm(x).reshape(4, -1)")
    job = EvalJob(code=code, stages=("train",), recipe={"batch_size": 8})  # type: ignore[arg-type]
    result = run_stages(StageContext(job=job, data=tiny_data, device=torch.device("cpu")))
    assert result.failure is not None and result.failure.kind is FailureKind.SHAPE
    assert "candidate.py line 13" in result.failure.message


def test_unknown_stages_are_skipped_and_named(tiny_data: SandboxData) -> None:
    context = run_in_process(NET, tiny_data, stages=("static", "no-such-stage", "build"))
    result = context.info["result"]
    assert result.state is State.COMPLETE
    assert "no-such-stage" in result.info["skipped_stages"]


def test_stage_plan_order_and_implied_build() -> None:
    assert plan_stages(("train", "static")) == (["static", "build", "train"], {})
    names, skipped = plan_stages(("hardware", "static"))
    assert names[0] == "static" and ("hardware" in skipped or "build" in names)


@pytest.mark.parametrize(
    ("error", "kind", "fragment"),
    [
        (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), FailureKind.OOM, "out of memory"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory"), FailureKind.OOM, "out of memory"),
        (OSError(errno.EFBIG, "File too large"), FailureKind.CRASH, "size limit of 64 MB"),
        (BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable"), FailureKind.CRASH, "another process"),
        (SystemExit(2), FailureKind.CRASH, "sys.exit(2)"),
        (KeyboardInterrupt(), FailureKind.CRASH, "interrupted"),
        (ValueError("plain"), FailureKind.BUILD, "ValueError: plain"),
    ],
)
def test_exception_classification(error: BaseException, kind: FailureKind, fragment: str) -> None:
    failure = failure_from_exception(error, FailureKind.BUILD, max_file_mb=64)
    assert failure.kind is kind and fragment in failure.message


def test_head_tail_keeps_both_ends() -> None:
    capture = HeadTail(limit=20)
    for index in range(100):
        capture.add(f"{index:03d}".encode())
    text = capture.text()
    assert text.startswith("0000010020") and text.endswith("6097098099")
    assert "[... 280 bytes of output dropped ...]" in text and capture.total == 300


def test_the_environment_is_scrubbed() -> None:
    source = {"PATH": "/bin", "HOME": "/home/a", "LC_ALL": "C", "OPENAI_API_KEY": "sk-x", "AWS_SECRET_ACCESS_KEY": "y",
              "HF_TOKEN": "z", "PYTHONPATH": "/extra", "OMP_NUM_THREADS": "2"}  # fmt: skip
    environment = scrubbed_environment(source)
    assert not {"OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN"} & environment.keys()
    assert environment["PATH"] == "/bin" and environment["LC_ALL"] == "C" and environment["OMP_NUM_THREADS"] == "2"
    assert environment["PYTHONPATH"].endswith(os.pathsep + "/extra")


def test_bwrap_command_isolates_and_rebinds(tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.mkdir()
    argv = bwrap_command(Path("/tmp/x/jobs"), Path("/tmp/x/data"), (labels, Path("/")))
    joined = " ".join(argv)
    for flag in ("--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session", "--ro-bind / /"):
        assert flag in joined
    assert "--bind /tmp/x/jobs /tmp/x/jobs" in joined and "--ro-bind /tmp/x/data /tmp/x/data" in joined
    assert "--perms 0755 --dir /tmp/x" in joined  # nobody must be able to traverse to its work directory
    assert f"--tmpfs {Path.home().resolve()}" in joined
    assert "--tmpfs / " not in joined  # never hide the root
    assert argv[-1] == "--"


def test_directories_holding_python_are_not_hidden(tmp_path: Path) -> None:
    python = tmp_path / "venv"
    python.mkdir()
    hidden = directories_to_hide((tmp_path, tmp_path / "missing"), [python])
    assert tmp_path not in hidden and hidden[0] == Path("/tmp")


def test_predictions_must_be_plain_arrays_of_the_right_length(tmp_path: Path) -> None:
    good = tmp_path / "good.npy"
    np.save(good, np.arange(5))
    assert read_predictions(good, 5).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(PredictionError, match="expected shape"):
        read_predictions(good, 6)
    floats = tmp_path / "floats.npy"
    np.save(floats, np.zeros(5))
    with pytest.raises(PredictionError, match="dtype float64"):
        read_predictions(floats, 5)
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}] * 5, dtype=object), allow_pickle=True)
    with pytest.raises(PredictionError, match="not a valid"):
        read_predictions(pickled, 5)
    link = tmp_path / "link.npy"
    link.symlink_to(good)
    with pytest.raises(PredictionError, match="missing"):
        read_predictions(link, 5)


def test_a_planted_symlink_result_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "result.json").symlink_to("/etc/passwd")
    assert read_child_result(tmp_path) is None
    (tmp_path / "result.json").unlink()
    (tmp_path / "result.json").write_text("{not json")
    assert read_child_result(tmp_path) is None


def test_progress_lines_are_read_incrementally_and_junk_skipped(tmp_path: Path) -> None:
    run = JobRun(job=EvalJob(code=""), job_dir=tmp_path, on_progress=None)
    (tmp_path / "work").mkdir()
    progress = tmp_path / "work" / "progress.jsonl"
    progress.write_text('{"stage": "build"}\n{"step": 1, "loss": 2.5}\nnot json\n{"step": 2, "lo')
    assert read_new_progress(run) == [{"stage": "build"}, {"step": 1, "loss": 2.5}]
    with progress.open("a") as handle:
        handle.write('ss": 2.0}\n')
    assert read_new_progress(run) == [{"step": 2, "loss": 2.0}]


@pytest.mark.parametrize(
    ("answer", "kind", "fragment"),
    [
        ({"timed_out": True, "signal": "SIGTERM"}, FailureKind.TIMEOUT, "3 s wall-clock limit during stage train"),
        ({"signal": "SIGKILL", "max_rss_mb": 900.0}, FailureKind.OOM, "peak resident memory 900 MB"),
        ({"signal": "SIGXFSZ"}, FailureKind.CRASH, "more than 64 MB to one file"),
        ({"signal": "SIGSEGV", "stderr": 'Fatal Python error\n  File "candidate.py", line 7 in <module>\n'},
         FailureKind.CRASH, "SIGSEGV (segmentation fault) during stage train (last reported step 20) at candidate.py"),
        ({"exit": 3}, FailureKind.CRASH, "exited with status 3"),
        ({"disk_exceeded": True, "signal": "SIGTERM"}, FailureKind.CRASH, "more than 256 MB of files"),
    ],
)  # fmt: skip
def test_failures_from_how_the_child_ended(answer: dict[str, object], kind: FailureKind, fragment: str) -> None:
    run = JobRun(job=EvalJob(code="", limits=Limits(timeout_s=3)), job_dir=Path("/nonexistent"), on_progress=None)
    run.stage, run.curve = "train", [(10, 2.0), (20, 1.5)]
    result = outcome_result(run, JobOutcome(**answer))
    assert result.failure is not None and result.failure.kind is kind
    assert fragment in result.failure.message, result.failure.message


@pytest.mark.parametrize(
    "message",
    [Ready(12), Run({"code": "x"}, "/jobs/1", "cuda", 1.5), Started(34), Kill(),
     Done(JobOutcome(exit=0, signal=None, max_rss_mb=12.5, stdout="hi", stdout_bytes=2))],
)  # fmt: skip
def test_protocol_messages_round_trip(message: object) -> None:
    line = encode(message)  # type: ignore[arg-type]
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line) == message


@pytest.mark.parametrize("line", [b"not json", b'{"kind": "explode"}', b'{"kind": "started"}', b"[1, 2]"])
def test_protocol_rejects_lines_that_are_no_message(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(line)
