"""`nasloop report` and `nasloop compare` through the real command line: files written, escaping, errors,
the PNG plots, the live `--watch` mode, and a report of a run made by the real engine."""

import itertools
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from report_runs import INJECTION, PARETO_FRONT
from support import SHAPE_BROKEN_NET, FakeExecutor, fenced, good_net

from nasloop.candidate import State
from nasloop.cli import main
from nasloop.config import build_config
from nasloop.report import write_report
from nasloop.store import CandidateRecord, RunDir, RunStore

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_report_writes_an_offline_page_with_everything_escaped(feedback_run, tmp_path, capsys):
    output = tmp_path / "report.html"
    assert main(["report", str(feedback_run), "-o", str(output), "--no-png"]) == 0
    assert f"wrote {output}" in capsys.readouterr().out
    page = output.read_text()
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page  # no CDN
    assert page.count("<script>") == 1  # the page's own script; the other block is JSON data
    assert INJECTION not in page and "&lt;/script&gt;&lt;script&gt;document.title" in page  # failure message
    assert page.count('class="candidate"') == 18 and "repair of" in page
    details = candidate_details(page)
    assert INJECTION in details["4"]["code"]  # intact as data, escaped in the page (\u003c...)
    assert details["4"]["diff"]["parent"] == 3 and ["add", f"+# {INJECTION}"] in details["4"]["diff"]["lines"]
    assert details["4"]["calls"][1]["completion"].startswith("<b>Here</b>")
    assert details["2"]["failure"]["kind"] == "shape"
    assert details["3"]["notes"] == [["purpose", "repair"], ["parent", "2"]]


def candidate_details(page: str) -> dict:
    """The JSON block the page's expanders draw from."""
    start = page.index('<script type="application/json" id="candidate-details">')
    block = page[page.index(">", start) + 1 : page.index("</script>", start)]
    assert "<" not in block and ">" not in block and "&" not in block
    return json.loads(block)


@pytest.mark.slow  # matplotlib's import and four figures
def test_report_writes_png_plots_next_to_the_page(pareto_run, tmp_path):
    pytest.importorskip("matplotlib")
    files = write_report(pareto_run, tmp_path / "out" / "pareto.html")
    names = sorted(path.name for path in files.pngs)
    assert names == ["pareto-cost.png", "pareto-pareto.png", "pareto-score.png", "pareto-validity.png"]
    for path in files.pngs:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    assert files.png_skipped is None


def test_missing_matplotlib_skips_pngs_with_one_message(feedback_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an environment without it looks like
    assert main(["report", str(feedback_run), "-o", str(tmp_path / "r.html")]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("matplotlib is not installed") == 1 and "nasloop[report]" in captured.err
    assert not list(tmp_path.glob("*.png")) and (tmp_path / "r.html").exists()


def test_a_run_without_candidates_gets_a_report(empty_run, tmp_path):
    page = write_report(empty_run, tmp_path / "empty.html", pngs=False).html.read_text()
    assert page.count("no data yet") >= 3 and "No candidate failed" in page
    assert 'id="candidate-count">0<' in page and "HV needs two distinct values" in page


def test_bad_input_is_a_usage_error(feedback_run, tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert main(["report", str(feedback_run), "--window", "0"]) == 2
    assert main(["report", str(feedback_run), "--watch", "-1"]) == 2
    assert main(["compare", str(feedback_run), str(tmp_path), "-o", str(tmp_path / "c.html")]) == 2
    assert main(["compare", str(feedback_run), str(feedback_run), "-o", str(tmp_path / "c.html")]) == 2
    assert "listed twice" in capsys.readouterr().err


def test_compare_lists_every_run_with_common_front_bounds(feedback_run, pareto_run, tmp_path):
    output = tmp_path / "compare.html"
    assert main(["compare", str(feedback_run), str(pareto_run), "-o", str(output), "--no-png"]) == 0
    page = output.read_text()
    assert "feedback-run (feedback-memory)" in page and "pareto-run (niche-pareto)" in page
    assert page.count('class="compare-best"') >= 2  # one best-so-far line per run
    assert "feedback-run has no candidate with every objective metric" in page
    assert page.count('class="compare-front-point"') == len(PARETO_FRONT)


@pytest.mark.slow
def test_watch_regenerates_while_the_run_grows_and_stops_on_ctrl_c(feedback_run, tmp_path):
    run = tmp_path / "live"
    subprocess.run(["cp", "-r", str(feedback_run), str(run)], check=True)
    output = tmp_path / "live.html"
    command = [sys.executable, "-m", "nasloop.cli", "report", str(run), "-o", str(output), "--watch", "0.2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: output.exists() and 'id="cand-18"' in output.read_text())
        assert 'http-equiv="refresh"' in output.read_text()
        with RunStore(RunDir(run).store_path) as store:  # the search writes a new candidate meanwhile
            store.add_candidate(CandidateRecord(id=19, iteration=17, state=State.COMPLETE, metrics={"val_acc": 0.9}))
        assert _wait_for(lambda: 'id="cand-19"' in output.read_text())
        assert "0.9000" in output.read_text()  # the new best
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "stopped watching" in err and "18 candidates: wrote" in out
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".live.html")]  # no temporary left


def _wait_for(condition, timeout_s: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_report_of_a_real_engine_run(tmp_path):
    from nasloop.engine import Search
    from nasloop.llm.scripted import ScriptedBackend

    codes = iter([good_net(8), SHAPE_BROKEN_NET, good_net(9), "I cannot help with that.", good_net(10)])
    widths = itertools.count(11)

    def answer(messages):
        if "JSON" in messages[0]["content"] or "JSON" in messages[-1]["content"][-200:]:
            return json.dumps({"problem": "too shallow", "suggestion": "Add a convolution block."})
        code = next(codes, None) or good_net(next(widths))
        return code if code.startswith("I cannot") else fenced(code)

    config = build_config(
        {"strategy": "feedback-memory", "dataset": {"name": "digits"}, "budget": {"iterations": 6},
         "llm": {"backend": "scripted", "model": "scripted"}}
    )  # fmt: skip
    engine = Search.start(
        config, tmp_path / "run", backend=ScriptedBackend(answers=answer), executor=FakeExecutor(), progress=False
    )
    summary = engine.run()
    files = write_report(tmp_path / "run", pngs=False)
    page = files.html.read_text()
    assert page.count('class="candidate"') == summary.candidates
    assert page.count('class="score-point"') == sum(1 for c in engine.history if c.state is State.COMPLETE)
    assert '<span class="failure-kind">shape</span>' in page
    assert f"{summary.best.metrics['val_acc']:.4f}" in page
    assert "LLM improver call" in page and "LLM generator call" in page
