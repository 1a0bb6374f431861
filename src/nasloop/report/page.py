"""The shell shared by nasloop's HTML pages: inline CSS and JavaScript, escaping and small table helpers.

Pages are single self-contained files: no CDN, no external fonts, no fetched data. Everything that comes
from a run (candidate code, LLM prompts and answers, failure messages, even the run's directory name) is
untrusted: it goes through `text()` into HTML, or as escaped JSON into an inert data block that the static
script below turns into elements with `textContent`. That script is the only code on a page.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from html import escape

CSS = """
:root { --ink: #1d2329; --muted: #5d6770; --line: #d8dde2; --soft: #f4f6f8; --accent: #0072B2; --bad: #D55E00; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1180px; padding: 20px 28px 60px; color: var(--ink);
       font: 14px/1.45 "DejaVu Sans", "Liberation Sans", Arial, sans-serif; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 32px 0 8px; border-bottom: 1px solid var(--line);
padding-bottom: 4px; } h3 { font-size: 15px; margin: 18px 0 6px; }
.subtitle, .note { color: var(--muted); } .note { font-size: 13px; margin: 4px 0 8px; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 14px 0; }
.card { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px;
        min-width: 130px; }
.card .label { color: var(--muted); font-size: 12px; } .card .value { font-size: 18px; font-weight: 600; }
svg.chart { width: 100%; height: auto; display: block; }
svg.chart text { font-size: 11px; fill: var(--ink); } svg.chart .axis-label { font-size: 12px; font-weight: 600; }
svg.chart .no-data { fill: var(--muted); font-size: 14px; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--soft); } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.sortable th { cursor: pointer; user-select: none; white-space: nowrap; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; }
tr.detail > td { background: #fbfcfd; padding: 8px 12px 14px; }
button.toggle { border: 1px solid var(--line); background: #fff; border-radius: 4px; cursor: pointer; padding: 0 6px; }
.state-failed, .state-pruned { color: var(--bad); } .state-duplicate { color: var(--muted); }
pre { background: var(--soft); border: 1px solid var(--line); padding: 8px; overflow: auto; max-height: 480px;
      font: 12px/1.4 "DejaVu Sans Mono", "Liberation Mono", monospace; white-space: pre; }
pre.wrap { white-space: pre-wrap; word-break: break-word; }
pre.diff .add { color: #116329; background: #e6ffec; display: block; }
pre.diff .del { color: #82071e; background: #ffebe9; display: block; }
pre.diff .hunk { color: #6639ba; display: block; }
details { margin: 6px 0; } summary { cursor: pointer; color: var(--accent); }
.message-role { font-weight: 600; color: var(--muted); margin-top: 6px; }
dl.notes { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 4px 0; }
dl.notes dt { color: var(--muted); } dl.notes dd { margin: 0; white-space: pre-wrap; }
"""

# Sorting: click a header (numbers sort high-to-low first); missing values always sort last.
# `#sort=KEY:asc|desc` in the address applies a sort on load; `#cand-N` opens candidate N's details.
# A row's details are built from the JSON block `candidate-details` the first time it is opened.
SCRIPT = """
(function () {
  const table = document.getElementById('candidates-table');
  if (!table) { return; }
  const headers = Array.from(table.tHead.rows[0].cells);
  function cellValue(body, column, numeric) {
    const cell = body.rows[0].cells[column];
    const raw = cell.hasAttribute('data-value') ? cell.getAttribute('data-value') : cell.textContent.trim();
    if (!numeric) { return raw === '' ? null : raw.toLowerCase(); }
    const number = parseFloat(raw);
    return Number.isNaN(number) ? null : number;
  }
  function sortBy(column, descending) {
    const numeric = headers[column].dataset.type === 'number';
    const bodies = Array.from(table.tBodies);
    bodies.sort(function (a, b) {
      const x = cellValue(a, column, numeric);
      const y = cellValue(b, column, numeric);
      if (x === y) { return 0; }
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      const order = x < y ? -1 : 1;
      return descending ? -order : order;
    });
    bodies.forEach(function (body) { table.appendChild(body); });
    headers.forEach(function (header, index) {
      header.setAttribute('aria-sort', index === column ? (descending ? 'descending' : 'ascending') : 'none');
    });
  }
  headers.forEach(function (header, column) {
    if (!header.dataset.key) { return; }
    header.addEventListener('click', function () {
      const state = header.getAttribute('aria-sort');
      const numeric = header.dataset.type === 'number';
      const descending = state === 'none' || state === null ? numeric : state === 'ascending';
      sortBy(column, descending);
    });
  });
  const source = document.getElementById('candidate-details');
  let details = null;
  function element(tag, className, content) {
    const node = document.createElement(tag);
    if (className) { node.className = className; }
    if (content !== undefined && content !== null) { node.textContent = content; }
    return node;
  }
  function section(summary, open, children) {
    const node = element('details');
    node.open = open;
    node.appendChild(element('summary', '', summary));
    children.forEach(function (child) { node.appendChild(child); });
    return node;
  }
  function fill(cell, info) {
    if (info.notes.length) {
      const list = element('dl', 'notes');
      info.notes.forEach(function (note) {
        list.appendChild(element('dt', '', note[0]));
        list.appendChild(element('dd', '', note[1]));
      });
      cell.appendChild(list);
    }
    if (info.failure) {
      const line = element('p');
      line.appendChild(element('b', '', info.failure.kind));
      line.appendChild(document.createTextNode(': ' + info.failure.message));
      cell.appendChild(line);
      if (info.failure.traceback) {
        cell.appendChild(section('traceback', false, [element('pre', 'wrap', info.failure.traceback)]));
      }
    }
    if (info.architecture) { cell.appendChild(element('p', '', 'architecture: ' + info.architecture)); }
    if (info.code) { cell.appendChild(section('code', true, [element('pre', 'code', info.code)])); }
    if (info.diff && info.diff.lines.length) {
      const diff = element('pre', 'diff');
      info.diff.lines.forEach(function (line) { diff.appendChild(element('span', line[0], line[1] + '\\n')); });
      cell.appendChild(section('diff against candidate ' + info.diff.parent, false, [diff]));
    } else if (info.diff) {
      cell.appendChild(element('p', '', 'Same code as candidate ' + info.diff.parent + '.'));
    }
    info.calls.forEach(function (call) {
      const parts = [];
      call.messages.forEach(function (message) {
        parts.push(element('div', 'message-role', message[0]));
        parts.push(element('pre', 'wrap', message[1]));
      });
      const answered = call.completion !== null;
      parts.push(element('div', 'message-role', answered ? 'completion' : 'error'));
      parts.push(element('pre', 'wrap', answered ? call.completion : call.error));
      const exchange = section(call.summary, false, parts);
      exchange.className = 'llm-call';
      cell.appendChild(exchange);
    });
  }
  function setOpen(body, open) {
    const button = body.querySelector('button.toggle');
    const cell = body.rows[1].cells[0];
    if (open && source && !cell.hasChildNodes()) {
      details = details || JSON.parse(source.textContent);
      fill(cell, details[body.id.slice('cand-'.length)]);
    }
    body.rows[1].hidden = !open;
    button.setAttribute('aria-expanded', String(open));
    button.textContent = open ? '\u25be' : '\u25b8';
  }
  table.addEventListener('click', function (event) {
    const button = event.target.closest('button.toggle');
    if (button) { const body = button.closest('tbody'); setOpen(body, body.rows[1].hidden); }
  });
  function applyHash() {
    const sort = /sort=([A-Za-z0-9_.-]+)(?::(asc|desc))?/.exec(location.hash);
    if (sort) {
      const column = headers.findIndex(function (header) { return header.dataset.key === sort[1]; });
      if (column >= 0) { sortBy(column, sort[2] === 'desc'); }
    }
    const open = /cand-(\\d+)/.exec(location.hash);
    if (open) {
      const body = document.getElementById('cand-' + open[1]);
      if (body) { setOpen(body, true); body.scrollIntoView(); }
    }
  }
  window.addEventListener('hashchange', applyHash);
  applyHash();
})();
"""


def text(value: object) -> str:
    """HTML-escaped text of any value (quotes escaped too, so it is safe inside attributes)."""
    return escape(str(value), quote=True)


def number(value: float | None, digits: int = 4) -> str:
    """A fixed-precision number, or an en dash for a missing one."""
    return "–" if value is None else f"{value:.{digits}f}"


def integer(value: float) -> str:
    return f"{round(value):,}"


def card(label: str, value: str, element_id: str = "") -> str:
    """A summary card; `value` is already HTML."""
    identifier = f' id="{text(element_id)}"' if element_id else ""
    return f'<div class="card"><div class="label">{text(label)}</div><div class="value"{identifier}>{value}</div></div>'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[bool] = (), css: str = "") -> str:
    """A plain table; `rows` hold HTML cells, `numeric` right-aligns the columns marked True."""
    aligned = list(numeric) + [False] * (len(headers) - len(numeric))
    head = "".join(f'<th class="{"num" if aligned[i] else ""}">{text(h)}</th>' for i, h in enumerate(headers))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"num" if aligned[i] else ""}">{cell}</td>' for i, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    css_class = f' class="{text(css)}"' if css else ""
    return f"<table{css_class}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def document(title: str, body: str, *, refresh_s: float | None = None) -> str:
    """A complete HTML page; `refresh_s` makes the browser reload it (live view while the file is regenerated)."""
    refresh = f'<meta http-equiv="refresh" content="{max(1, round(refresh_s))}">' if refresh_s else ""
    generated = time.strftime("%Y-%m-%d %H:%M:%S")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{refresh}<title>{text(title)}</title><style>{CSS}</style></head>\n"
        f'<body>\n{body}\n<p class="note">generated by nasloop on {text(generated)}'
        f"{' · reloads every ' + text(max(1, round(refresh_s))) + ' s' if refresh_s else ''}</p>\n"
        f"<script>{SCRIPT}</script>\n</body></html>\n"
    )
