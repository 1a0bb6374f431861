"""End to end through the real sandbox: CLI round trip, and kill -9 then resume on a real subprocess run."""

import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from support import SHAPE_BROKEN_NET, fenced, good_net

from nasloop.candidate import Purpose, State
from nasloop.cli import main
from nasloop.store import RunDir, RunStore

pytestmark = pytest.mark.slow


def write_config(tmp_path: Path, answers: list[str], iterations: int) -> Path:
    config = {
        "strategy": "one-shot",
        "llm": {"backend": "scripted", "model": "scripted", "responses": answers},
        "dataset": {"name": "digits"},
        "limits": {"timeout_s": 60},
        "budget": {"iterations": iterations},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_search_show_export_import_round_trip(tmp_path, capsys):
    answers = [fenced(good_net(16)), "Sorry, no code today.", fenced(SHAPE_BROKEN_NET)]
    config = write_config(tmp_path, answers, iterations=3)
    run_dir = tmp_path / "run"
    assert main(["search", "--config", str(config), "--run-dir", str(run_dir), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "iterations: 3, valid: 1" in printed and "best: candidate 1" in printed

    assert main(["show", str(run_dir)]) == 0
    table = capsys.readouterr().out
    assert "extraction" in table and "shape" in table and "complete" in table

    exported = tmp_path / "best_model.py"
    assert main(["export", str(run_dir), "--best", "-o", str(exported)]) == 0
    spec = importlib.util.spec_from_file_location("best_model", exported)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import torch

    net = module.Net((1, 8, 8), 10)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)

    with RunStore(RunDir(run_dir).store_path, readonly=True) as store:
        seed, first, second, third = store.candidates()
    assert seed.purpose is Purpose.SEED and seed.state is State.COMPLETE
    assert first.state is State.COMPLETE and 0.0 <= first.metrics["val_acc"] <= 1.0
    assert second.failure.kind.value == "extraction" and third.failure.kind.value == "shape"


def test_kill_9_then_resume_loses_nothing_stored(tmp_path):
    answers = [fenced(good_net(width)) for width in range(8, 20)]
    config = write_config(tmp_path, answers, iterations=5)
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "nasloop.cli",
        "search",
        "--config",
        str(config),
        "--run-dir",
        str(run_dir),
        "--quiet",
    ]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    store_path = RunDir(run_dir).store_path
    deadline = time.monotonic() + 240
    stored: list = []
    while time.monotonic() < deadline and process.poll() is None:
        if store_path.exists():
            try:
                with RunStore(store_path, readonly=True) as store:
                    stored = store.candidates()
            except sqlite3.OperationalError:  # the file exists before the search has created its tables
                stored = []
            if len(stored) >= 2:
                break
        time.sleep(0.2)
    assert len(stored) >= 2, process.stderr.read().decode() if process.poll() is not None else "too slow"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)

    with RunStore(store_path, readonly=True) as store:
        before = {c.id: c for c in store.candidates()}
    assert main(["resume", str(run_dir), "--quiet"]) == 0
    with RunStore(store_path, readonly=True) as store:
        after = store.candidates()
    ids = [c.id for c in after]
    assert ids == sorted(set(ids)), "candidate ids are unique and increasing"
    for candidate in after:
        if candidate.id in before:  # stored rows are untouched: not re-added, not re-evaluated
            assert candidate.created == before[candidate.id].created
            assert candidate.metrics == before[candidate.id].metrics
    iterations = [c for c in after if c.purpose.counts_as_iteration]
    assert len(iterations) == 5
    # the resumed scripted model starts its answers again: those repeats are duplicates, never re-trained
    assert any(c.state is State.DUPLICATE for c in after if c.id not in before)
