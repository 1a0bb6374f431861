"""Fixtures of the report tests: recorded runs (see report_runs.py)."""

from pathlib import Path

import pytest
from report_runs import create_run, write_feedback_run, write_pareto_run


@pytest.fixture(scope="module")
def feedback_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_feedback_run(tmp_path_factory.mktemp("runs") / "feedback-run").root


@pytest.fixture(scope="module")
def pareto_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pareto_run(tmp_path_factory.mktemp("runs") / "pareto-run").root


@pytest.fixture
def empty_run(tmp_path: Path) -> Path:
    """A run that has just started: config stored, no candidate and no LLM call yet."""
    config = {"strategy": "niche-pareto", "objectives": ["val_acc:max", "latency_ms:min"]}
    layout, store = create_run(tmp_path / "empty-run", config)
    store.close()
    return layout.root
