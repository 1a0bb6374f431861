"""The reports opened in a real headless browser (Debian `chromium`): scripts run without console errors,
the charts render the right number of points and labels, sorting and expanders work, injected HTML stays
text, and a screenshot is taken (left in the test's temporary directory for a person to look at)."""

import shutil
import struct
import subprocess
import uuid
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_runs import FEEDBACK_BEST, INJECTION, PARETO_FRONT

from nasloop.report import write_comparison, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt-get install chromium)"),
]

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium(page: Path, tmp_path: Path, *arguments: str, fragment: str = "") -> subprocess.CompletedProcess[str]:
    """Run chromium once on `page` with a fresh profile; returns stdout (e.g. the DOM) and stderr (the log)."""
    profile = tmp_path / f"profile-{uuid.uuid4().hex[:8]}"
    url = page.resolve().as_uri() + fragment
    command = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *arguments, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def console_messages(log: str) -> list[str]:
    """Console output and uncaught errors of the page, from chromium's log."""
    return [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


VOID_ELEMENTS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Dom(HTMLParser):
    """The elements of a dumped DOM: (tag, attributes) in document order, and the text inside each id."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.texts: dict[str, list[str]] = {}
        self._open: list[tuple[str, str | None]] = []  # (tag, id) of the elements enclosing the parser
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        attributes = {name: value or "" for name, value in attrs}
        self.elements.append((tag, attributes))
        if tag not in VOID_ELEMENTS:
            self._open.append((tag, attributes.get("id")))
            if attributes.get("id"):
                self.texts[attributes["id"]] = []

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag):
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index][0] == tag:
                del self._open[index:]
                return

    def handle_data(self, data):
        for _, identifier in self._open:
            if identifier:
                self.texts[identifier].append(data)

    def with_class(self, css: str, tag: str | None = None) -> list[dict[str, str]]:
        return [a for t, a in self.elements if css in a.get("class", "").split() and (tag is None or t == tag)]

    def text(self, identifier: str) -> str:
        return " ".join("".join(self.texts[identifier]).split())

    def tag_count(self, tag: str) -> int:
        return sum(1 for t, _ in self.elements if t == tag)


@pytest.fixture(scope="module")
def feedback_page(feedback_run, tmp_path_factory) -> Path:
    return write_report(feedback_run, tmp_path_factory.mktemp("pages") / "feedback.html", pngs=False).html


def test_report_renders_charts_without_console_errors(feedback_page, tmp_path):
    result = chromium(feedback_page, tmp_path, "--dump-dom")
    assert console_messages(result.stderr) == []
    dom = Dom(result.stdout)
    # score chart: 11 scored candidates as points, the 5 failures as strip markers, trend and best-so-far lines
    assert len(dom.with_class("score-point", "circle")) == 11
    assert len(dom.with_class("failure-mark", "path")) == 5
    assert len(dom.with_class("pruned-mark")) == 1 and len(dom.with_class("duplicate-mark")) == 1
    assert dom.with_class("trend-line", "polyline") and dom.with_class("best-line", "polyline")
    assert dom.text("chart-score").count("candidate (evaluation order)") == 1 and "val_acc" in dom.text("chart-score")
    assert "valid rate" in dom.text("chart-validity")
    # the summary shows the best value and where it came from
    assert f"{FEEDBACK_BEST:.4f}" in dom.text("best-score") and "candidate 16" in dom.text("best-score")
    assert dom.text("valid-rate") == "65%" and dom.text("spearman") == "0.93"
    # failure taxonomy lists every kind
    kinds = [a for t, a in dom.elements if t == "span" and a.get("class") == "failure-kind"]
    assert len(kinds) == 4
    for kind in ("shape", "syntax", "timeout", "extraction"):
        assert f'<span class="failure-kind">{kind}</span>' in result.stdout
    # cost charts have one line per role (generator, improver) and evaluation for seconds
    assert {a["class"] for a in dom.with_class("cost-line")} >= {"cost-line role-generator", "cost-line role-improver"}
    assert dom.with_class("role-evaluation")
    # injected markup in failure messages stayed text
    assert_nothing_injected(dom, result.stdout)


def assert_nothing_injected(dom: Dom, markup: str) -> None:
    """The candidates' `<script>` and `<img onerror>` were shown as text, not run or loaded."""
    assert len([a for t, a in dom.elements if t == "script" and "type" not in a]) == 1  # the page's own
    assert dom.tag_count("img") == 0 and "<title>nasloop report: feedback-run</title>" in markup


def test_sorting_by_address_puts_missing_scores_last(feedback_page, tmp_path):
    result = chromium(feedback_page, tmp_path, "--dump-dom", fragment="#sort=score:desc")
    assert console_messages(result.stderr) == []
    dom = Dom(result.stdout)
    order = [int(a["id"].removeprefix("cand-")) for a in dom.with_class("candidate", "tbody")]
    assert order[:4] == [16, 17, 18, 12]  # 0.74, 0.72, 0.71, 0.70
    assert sorted(order[-7:]) == [2, 5, 7, 9, 11, 13, 15]  # unscored candidates sort last
    score_header = next(attributes for tag, attributes in dom.elements if attributes.get("data-key") == "score")
    assert score_header["aria-sort"] == "descending"


def test_a_candidate_address_opens_its_details(feedback_page, tmp_path):
    result = chromium(feedback_page, tmp_path, "--dump-dom", fragment="#cand-4")
    assert console_messages(result.stderr) == []
    opened = Dom(result.stdout)
    hidden = {a.get("hidden") is not None for a in opened.with_class("detail", "tr")}
    assert hidden == {True, False}  # candidate 4's details are open, the others are not
    text = opened.text("cand-4")
    assert "diff against candidate 3" in text and "LLM generator call 8" in text and "LLM improver call 7" in text
    assert "<b>Here</b>" in text and f"# {INJECTION}" in text  # the LLM's answer and the code, as text
    assert_nothing_injected(opened, result.stdout)
    # the diff from candidate 3 (width 11): three lines with the new width, a blank line and the comment
    assert (len(opened.with_class("add", "span")), len(opened.with_class("del", "span"))) == (5, 3)


def test_screenshot_of_the_report(feedback_page, tmp_path):
    screenshot = tmp_path / "report.png"
    result = chromium(feedback_page, tmp_path, f"--screenshot={screenshot}", "--window-size=1280,2000")
    assert console_messages(result.stderr) == []
    data = screenshot.read_bytes()
    width, height = struct.unpack(">II", data[16:24])  # the PNG header's IHDR chunk
    assert (width, height) == (1280, 2000)
    assert len(data) > 100_000  # charts and tables drawn, not a blank page


def test_pareto_report_renders(pareto_run, tmp_path):
    page = write_report(pareto_run, tmp_path / "pareto.html", pngs=False).html
    result = chromium(page, tmp_path, "--dump-dom")
    assert console_messages(result.stderr) == []
    dom = Dom(result.stdout)
    assert len(dom.with_class("pareto-point", "circle")) == 8
    assert len(dom.with_class("front-point", "circle")) == len(PARETO_FRONT)
    assert "latency_ms (min)" in dom.text("chart-pareto") and "val_acc (max)" in dom.text("chart-pareto")
    assert dom.with_class("hv-line", "polyline") and float(dom.text("final-hv")) > 0
    assert "knowledge_base/generation-001" in result.stdout and "&lt;script&gt;x&lt;/script&gt;" in result.stdout


def test_comparison_renders(feedback_run, pareto_run, tmp_path):
    comparison = write_comparison([feedback_run, pareto_run], tmp_path / "compare.html", pngs=False).html
    result = chromium(comparison, tmp_path, "--dump-dom")
    assert console_messages(result.stderr) == []
    dom = Dom(result.stdout)
    assert len(dom.with_class("compare-best", "polyline")) >= 2
    assert "feedback-run (feedback-memory)" in dom.text("chart-compare-best")
    assert len(dom.with_class("compare-front-point", "circle")) == len(PARETO_FRONT)


def test_a_run_without_candidates_renders(empty_run, tmp_path):
    page = write_report(empty_run, tmp_path / "empty.html", pngs=False).html
    result = chromium(page, tmp_path, "--dump-dom", fragment="#sort=score:desc")
    assert console_messages(result.stderr) == []
    dom = Dom(result.stdout)
    assert "no data yet" in dom.text("chart-score") and not dom.with_class("candidate", "tbody")
