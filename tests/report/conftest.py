"""Fixtures of the report tests: recorded runs (see report_runs.py)."""

from pathlib import Path

import pytest
from report_runs import write_feedback_run, write_pareto_run


@pytest.fixture(scope="module")
def feedback_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_feedback_run(tmp_path_factory.mktemp("runs") / "feedback-run").root


@pytest.fixture(scope="module")
def pareto_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pareto_run(tmp_path_factory.mktemp("runs") / "pareto-run").root
