"""The report's table of candidates: one sortable row per candidate, and details built on demand.

A search of 2,000 iterations stores a few kilobytes of code and prompts per candidate; written as HTML
that would be tens of megabytes of DOM for the browser to build up front. So each candidate's details
(notes, failure, code, diff against its first parent, LLM exchanges) travel as one JSON document in an
inert `<script type="application/json">` block, and the page's script builds a candidate's details with
`textContent` (never `innerHTML`) when its row is opened. The JSON is escaped so that no `<`, `>` or `&`
appears literally, hence untrusted text cannot end the block.
"""

from __future__ import annotations

import json
from typing import Any

from nasloop.candidate import Purpose
from nasloop.report.data import RunAnalysis, code_diff, evaluation_seconds
from nasloop.report.page import integer, number, text
from nasloop.store import CandidateRecord, LLMCallRecord

MESSAGE_PREVIEW = 240  # characters of a failure message shown in tooltips and tables


def preview(message: str, limit: int = MESSAGE_PREVIEW) -> str:
    """The message on one line, cut to `limit` characters."""
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def link(candidate_id: int) -> str:
    """A link to the candidate's row (opening it shows its details)."""
    return f'<a href="#cand-{candidate_id}">{candidate_id}</a>'


def script_json(data: Any) -> str:
    """JSON safe to embed in a `<script>` element: `<`, `>` and `&` are written as \\u escapes."""
    return (
        json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    )


# ----------------------------------------------------------------------------------------------------
# Details (JSON, rendered by the page's script)
# ----------------------------------------------------------------------------------------------------


def diff_class(line: str) -> str:
    """CSS class of a unified-diff line."""
    if line.startswith(("+++", "---")):
        return "file"
    if line.startswith("@@"):
        return "hunk"
    if line.startswith("+"):
        return "add"
    if line.startswith("-"):
        return "del"
    return "same"


def _diff(candidate: CandidateRecord, by_id: dict[int, CandidateRecord]) -> dict[str, Any] | None:
    made_from = candidate.parent if candidate.parent is not None else next(iter(candidate.parent_ids), None)
    if made_from is None or not candidate.code:
        return None
    parent = by_id.get(made_from)
    if parent is None or not parent.code:
        return None
    lines = code_diff(parent.code, candidate.code, f"candidate {parent.id}", f"candidate {candidate.id}")
    return {"parent": parent.id, "lines": [[diff_class(line), line] for line in lines]}


def _exchange(call: LLMCallRecord) -> dict[str, Any]:
    return {
        "summary": f"LLM {call.role} call {call.id} · {call.model} · {call.prompt_tokens:,} + "
        f"{call.completion_tokens:,} tokens · {call.latency_s:.1f} s",
        "messages": [[str(m.get("role", "?")), str(m.get("content", ""))] for m in call.messages],
        "completion": call.completion,
        "error": call.error,
    }


def candidate_details(
    candidate: CandidateRecord, by_id: dict[int, CandidateRecord], calls: dict[int, LLMCallRecord]
) -> dict[str, Any]:
    """What a candidate's opened row shows, as plain data."""
    failure = candidate.failure
    lineage = [["purpose", candidate.purpose.value]] if candidate.purpose is not Purpose.SEARCH else []
    lineage += [["parent", str(candidate.parent)]] if candidate.parent is not None else []
    return {
        "notes": lineage
        + [[key, value if isinstance(value, str) else json.dumps(value)] for key, value in candidate.notes.items()],
        "failure": failure.to_dict() if failure else None,
        "architecture": candidate.architecture,
        "code": candidate.code,
        "diff": _diff(candidate, by_id),
        "calls": [_exchange(calls[call_id]) for call_id in candidate.llm_call_ids if call_id in calls],
    }


# ----------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------


def _extra_metrics(analysis: RunAnalysis) -> list[str]:
    """Metric columns besides the selection metric: the other objectives, then params."""
    names = [o.metric for o in analysis.pareto.objectives] if analysis.pareto else []
    return [name for name in dict.fromkeys([*names, "params"]) if name != analysis.run.metric]


def _cell(shown: str, value: float | None) -> str:
    data = "" if value is None else repr(float(value))
    return f'<td class="num" data-value="{data}">{text(shown)}</td>'


def _metric_text(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{int(value):,}" if float(value).is_integer() and abs(value) >= 1000 else f"{value:.4g}"


def _outcome_text(candidate: CandidateRecord) -> str:
    if candidate.duplicate_of is not None:
        return f"duplicate of {link(candidate.duplicate_of)}"
    if candidate.failure is not None:
        return f"<b>{text(candidate.failure.kind.value)}</b>: {text(preview(candidate.failure.message, 120))}"
    if candidate.purpose in (Purpose.REPAIR, Purpose.RETRY, Purpose.FINAL) and candidate.parent is not None:
        return f"{candidate.purpose.value} of {link(candidate.parent)}"
    if candidate.purpose is Purpose.SEED:
        return "seed network"
    return ""


def _row(candidate: CandidateRecord, analysis: RunAnalysis, calls: dict[int, LLMCallRecord]) -> str:
    metric = analysis.run.metric
    tokens = sum(calls[i].prompt_tokens + calls[i].completion_tokens for i in candidate.llm_call_ids if i in calls)
    score = candidate.metrics.get(metric) if candidate.state.value == "complete" else None
    state = text(candidate.state.value)
    cells = [
        '<td><button class="toggle" aria-expanded="false" title="code, diff, LLM exchange">▸</button></td>',
        _cell(str(candidate.id), candidate.id),
        _cell(str(candidate.iteration), candidate.iteration),
        f'<td data-value="{state}"><span class="state-{state}">{state}</span></td>',
        _cell(number(score), score),
        *[
            _cell(_metric_text(candidate.metrics.get(name)), candidate.metrics.get(name))
            for name in _extra_metrics(analysis)
        ],
        _cell(f"{evaluation_seconds(candidate):.1f}", evaluation_seconds(candidate)),
        _cell(integer(tokens), tokens),
        f"<td>{', '.join(link(p) for p in candidate.parent_ids)}</td>",
        f"<td>{_outcome_text(candidate)}</td>",
    ]
    return (
        f'<tbody class="candidate" id="cand-{candidate.id}"><tr class="row">{"".join(cells)}</tr>'
        f'<tr class="detail" hidden><td colspan="{len(cells)}"></td></tr></tbody>'
    )


def candidates_section(analysis: RunAnalysis) -> str:
    """The 'Candidates' section: the sortable table and the JSON its expanders draw from."""
    columns = [
        ("id", "id", "number"),
        ("iteration", "iteration", "number"),
        ("state", "state", "text"),
        (analysis.run.metric, "score", "number"),
        *[(name, name, "number") for name in _extra_metrics(analysis)],
        ("eval s", "eval_s", "number"),
        ("LLM tokens", "tokens", "number"),
        ("parents", "parents", "text"),
        ("outcome", "outcome", "text"),
    ]
    head = '<th title="details"></th>' + "".join(
        f'<th aria-sort="none" data-key="{text(key)}" data-type="{kind}">{text(label)}</th>'
        for label, key, kind in columns
    )
    candidates = sorted(analysis.run.candidates, key=lambda c: c.id)
    by_id = {c.id: c for c in candidates}
    calls = {call.id: call for call in analysis.run.llm_calls}
    rows = "\n".join(_row(candidate, analysis, calls) for candidate in candidates)
    details = {str(c.id): candidate_details(c, by_id, calls) for c in candidates}
    return (
        '<h2 id="candidates">Candidates</h2>'
        '<p class="note">Click a column to sort; ▸ opens the candidate\'s code, its diff against its first '
        "parent and the LLM exchange(s) that produced it.</p>"
        f'<table id="candidates-table" class="sortable"><thead><tr>{head}</tr></thead>{rows}</table>'
        f'<script type="application/json" id="candidate-details">{script_json(details)}</script>'
    )
