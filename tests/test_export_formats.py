"""`nasloop export --format py|torchscript|onnx`: round trips (export, load, forward) and refusals.

Every export builds the model in a fresh Python process, which takes seconds: those tests are marked slow.
"""

import importlib.util

import numpy as np
import pytest
import torch
from support import FakeExecutor, fenced, good_net

from nasloop.cli import main
from nasloop.config import build_config
from nasloop.engine import Search
from nasloop.evaluate.job import DatasetSpec
from nasloop.export import (
    ExportError,
    MissingExportDependency,
    check_dependencies,
    export_candidate,
    model_shapes,
)
from nasloop.llm.scripted import ScriptedBackend

HAS_ONNX = importlib.util.find_spec("onnx") is not None
HAS_ONNXRUNTIME = importlib.util.find_spec("onnxruntime") is not None
HAS_ONNXSCRIPT = importlib.util.find_spec("onnxscript") is not None

BATCH_HARD_CODED = """
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.head = nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes)

    def forward(self, x):
        return self.head(x.reshape(2, -1))  # only works for batches of 2
"""

READS_FILES = """
import torch.nn as nn

SECRET = open("/etc/passwd").read()


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.head = nn.Linear(1, num_classes)

    def forward(self, x):
        return self.head(x.mean((1, 2, 3))[:, None])
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    config = build_config(
        {
            "strategy": "one-shot", "dataset": {"name": "digits"}, "budget": {"iterations": 2},
            "llm": {"backend": "scripted", "model": "scripted"},
        }
    )  # fmt: skip
    answers = [fenced(good_net(8)), fenced(good_net(12))]
    root = tmp_path_factory.mktemp("export") / "run"
    engine = Search.start(config, root, backend=ScriptedBackend(answers=answers), executor=FakeExecutor(),
                          progress=False)  # fmt: skip
    engine.run()
    engine.close()
    return root


@pytest.mark.slow  # each export starts a Python process that imports torch
def test_torchscript_round_trip(tmp_path):
    output = tmp_path / "net.pt"
    exported = export_candidate(good_net(8), output, "torchscript", (1, 8, 8), 10)
    assert exported.params == 8 * 9 + 8 + 8 * 10 + 10 and "torch.jit.load" in exported.check
    loaded = torch.jit.load(str(output))
    assert loaded(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    assert [path.name for path in tmp_path.iterdir()] == ["net.pt"]  # no scratch files are left behind


@pytest.mark.slow  # each export starts a Python process that imports torch
@pytest.mark.skipif(not (HAS_ONNX and HAS_ONNXRUNTIME), reason="needs onnx and onnxruntime")
def test_onnx_round_trip_with_the_legacy_exporter(tmp_path):
    import onnxruntime

    output = tmp_path / "net.onnx"
    exported = export_candidate(good_net(8), output, "onnx", (3, 16, 16), 7, onnx_exporter="legacy")
    assert "onnxruntime reproduces the logits" in exported.check
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": np.random.randn(4, 3, 16, 16).astype(np.float32)})
    assert logits.shape == (4, 7)


@pytest.mark.slow  # the dynamo exporter alone takes several seconds
@pytest.mark.skipif(not (HAS_ONNX and HAS_ONNXSCRIPT and HAS_ONNXRUNTIME), reason="needs onnx, onnxscript, onnxruntime")
def test_onnx_round_trip_with_the_dynamo_exporter(tmp_path):
    import onnxruntime

    output = tmp_path / "net.onnx"
    export_candidate(good_net(8), output, "onnx", (1, 8, 8), 10)
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": np.random.randn(6, 1, 8, 8).astype(np.float32)})
    assert logits.shape == (6, 10)


def test_code_failing_the_static_check_is_never_executed(tmp_path):
    with pytest.raises(ExportError, match="static check, so it is not executed: forbidden"):
        export_candidate(READS_FILES, tmp_path / "net.pt", "torchscript", (1, 8, 8), 10)
    assert not (tmp_path / "net.pt").exists()


@pytest.mark.slow  # each export starts a Python process that imports torch
def test_a_model_that_hard_codes_the_batch_size_is_refused(tmp_path):
    with pytest.raises(ExportError, match=r"does not reproduce the model at batch 3|forward pass failed"):
        export_candidate(BATCH_HARD_CODED, tmp_path / "net.pt", "torchscript", (1, 8, 8), 10)
    assert not (tmp_path / "net.pt").exists()


@pytest.mark.slow  # each export starts a Python process that imports torch
def test_a_model_that_does_not_build_is_reported(tmp_path):
    broken = good_net(8).replace("nn.Linear(8, num_classes)", "nn.Linear(8, num_classes, bias=undefined_name)")
    with pytest.raises(ExportError, match=r"does not build: build: .*undefined_name"):
        export_candidate(broken, tmp_path / "net.pt", "torchscript", (1, 8, 8), 10)


def test_missing_onnx_packages_name_the_pip_command(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "onnx" else real_find_spec(name))
    with pytest.raises(MissingExportDependency, match="pip install onnx"):
        check_dependencies("onnx", "legacy")
    check_dependencies("torchscript")


def test_shapes_come_from_the_dataset_unless_given():
    assert model_shapes(DatasetSpec(name="digits")) == ((1, 8, 8), 10)
    assert model_shapes(DatasetSpec(name="digits"), "3,32,32", 100) == ((3, 32, 32), 100)
    with pytest.raises(ExportError, match="three positive sizes"):
        model_shapes(DatasetSpec(name="digits"), "3,32")


@pytest.mark.slow  # each export starts a Python process that imports torch
def test_cli_exports_the_best_candidate_in_each_format(run_dir, tmp_path, capsys):
    module = tmp_path / "best.py"
    assert main(["export", str(run_dir), "--best", "-o", str(module)]) == 0
    assert "class Net" in module.read_text()
    scripted = tmp_path / "best.pt"
    assert main(["export", str(run_dir), "--id", "2", "--format", "torchscript", "-o", str(scripted)]) == 0
    assert "freshly initialised weights" in capsys.readouterr().out
    assert torch.jit.load(str(scripted))(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    if HAS_ONNX:
        onnx_file = tmp_path / "best.onnx"
        arguments = ["--format", "onnx", "--onnx-exporter", "legacy", "-o", str(onnx_file)]
        assert main(["export", str(run_dir), "--best", *arguments]) == 0
        assert onnx_file.stat().st_size > 0


def test_cli_turns_export_errors_into_usage_errors(run_dir, tmp_path, capsys):
    output = tmp_path / "net.pt"
    assert (
        main(["export", str(run_dir), "--best", "--format", "torchscript", "--in-shape", "1,8", "-o", str(output)]) == 2
    )
    assert "three positive sizes" in capsys.readouterr().err
