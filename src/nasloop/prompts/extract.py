"""Extract the candidate's Python code (or a JSON answer) from an LLM's free-form reply.

LLM replies mix prose and code: one or several fenced blocks (```python, ```, ~~~), code with no fence
at all, a first draft followed by a corrected version, helper classes in one block and `class Net` in
the next, reasoning inside <think> tags, and answers cut off by `max_tokens`. `extract_code` returns the
code to evaluate, or a `Failure` (kind `extraction` or `syntax`) whose message can be sent back to the
LLM as it is. It does not judge the code beyond parsing it: the static check does that.
"""

from __future__ import annotations

import ast
import builtins
import json
import re
from dataclasses import dataclass
from typing import Any

from nasloop.candidate import Failure, FailureKind

PYTHON_TAGS = {"", "python", "python3", "py", "pytorch", "torch", "ipython", "python-repl"}

NO_CODE_MESSAGE = (
    "Your answer contained no Python code. Reply with exactly one ```python code block holding a complete, "
    "self-contained module that defines `class Net(nn.Module)` with "
    "`__init__(self, in_shape, num_classes)` and `forward(self, x)` returning logits."
)

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<tag>[^\s`]*)[^`]*$")
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_DEFINES_NET = re.compile(r"^class[ \t]+Net[ \t]*[(:]", re.MULTILINE)
_CODE_START = re.compile(r"^(import\s|from\s+\S+\s+import\s|class\s+\w|def\s+\w|@\w)")
_PYTHON_KEYWORDS = {
    "import", "from", "class", "def", "return", "if", "elif", "else", "for", "while", "with", "try",
    "except", "finally", "raise", "assert", "del", "global", "nonlocal", "pass", "break", "continue",
    "lambda", "yield", "async", "await", "print",
}  # fmt: skip
_PROSE_START = re.compile(r"^([A-Za-z][\w']*[ \t]+[A-Za-z(`\"']|[-*•]\s|\d+[.)]\s|\*\*)")
_STANDARD_IMPORTS = {
    "torch": "import torch",
    "nn": "import torch.nn as nn",
    "F": "import torch.nn.functional as F",
    "math": "import math",
}


@dataclass
class _Block:
    """One code block found in a reply."""

    code: str
    tag: str
    closed: bool
    start_line: int  # 1-based line of the reply where the code starts

    @property
    def is_python(self) -> bool:
        return self.tag.lower() in PYTHON_TAGS or bool(_DEFINES_NET.search(self.code))

    def syntax_error(self) -> SyntaxError | None:
        try:
            ast.parse(self.code)
        except SyntaxError as error:
            return error
        return None


# ----------------------------------------------------------------------------------------------------
# Code
# ----------------------------------------------------------------------------------------------------


def extract_code(text: str, *, truncated: bool = False) -> str | Failure:
    """The Python module to evaluate from an LLM reply, or a `Failure` saying what to do instead.

    * Several blocks: the last one that defines `class Net` and parses wins (replies often show a draft,
      then a fix). Helper classes, functions and imports it uses that live in earlier blocks are
      prepended; missing standard imports (`torch`, `nn`, `F`, `math`) are added.
    * An `if __name__ == "__main__":` section is dropped (candidates run no code of their own).
    * A reply cut off mid-code (an unclosed fence, or `truncated=True` because the completion ended on
      `max_tokens` or the deadline) whose code does not parse gives a `syntax` Failure saying where.
    * A reply with no code gives an `extraction` Failure.
    A complete block with a genuine syntax error is returned as is: the static check reports it with
    the line number.
    """
    reply = _strip_reasoning(text)
    if not reply.strip():
        return Failure(FailureKind.EXTRACTION, "Your answer was empty. " + NO_CODE_MESSAGE)
    blocks = [block for block in _fenced_blocks(reply) if block.is_python]
    if not blocks and not _has_fence(reply):
        blocks = _unfenced_blocks(reply)
    if not blocks:
        return Failure(FailureKind.EXTRACTION, NO_CODE_MESSAGE)
    chosen_index = _choose(blocks)
    chosen = blocks[chosen_index]
    error = chosen.syntax_error()
    if error is not None and (truncated or not chosen.closed or _error_at_end(error, chosen.code)):
        return _cut_failure(chosen, error)
    if error is not None:
        return chosen.code.strip() + "\n"
    return _assemble(chosen.code, [b.code for b in blocks[:chosen_index] if b.syntax_error() is None])


def _strip_reasoning(text: str) -> str:
    """Drop <think>…</think> sections (reasoning models), which often hold drafts of the code."""
    without = _THINK.sub("", text)
    # An unclosed <think> means the answer never left its reasoning; keep it, it may be all there is.
    return without


def _has_fence(text: str) -> bool:
    return any(_FENCE.match(line) for line in text.splitlines())


def _fenced_blocks(text: str) -> list[_Block]:
    """Every fenced block, in order. An unclosed final fence yields a block marked `closed=False`."""
    blocks: list[_Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        body: list[str] = []
        index += 1
        start = index + 1
        closed = False
        while index < len(lines):
            stripped = lines[index].strip()
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                closed = True
                index += 1
                break
            body.append(lines[index][indent:] if lines[index][:indent].isspace() else lines[index])
            index += 1
        blocks.append(_Block("\n".join(body), opening["tag"], closed, start))
    return blocks


def _unfenced_blocks(text: str) -> list[_Block]:
    """Code with no fence: runs of code-looking lines, from the first line that starts Python code."""
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if _CODE_START.match(line)), None)
    if first is None:
        return []
    blocks: list[_Block] = []
    current: list[str] = []
    current_start = first
    for index in range(first, len(lines)):
        line = lines[index]
        if _is_prose(line):
            if current:
                blocks.append(_Block("\n".join(current).rstrip(), "", True, current_start + 1))
            current = []
            continue
        if not current:
            current_start = index
        current.append(line)
    if current:
        # The last run reaches the end of the reply: if it does not parse, the reply was cut there.
        blocks.append(_Block("\n".join(current).rstrip(), "", False, current_start + 1))
    return [block for block in blocks if _looks_like_code(block.code)]


def _is_prose(line: str) -> bool:
    """A line at column 0 that reads as a sentence, a bullet or a heading rather than Python."""
    if not line or line[0].isspace():
        return False
    first_word = re.split(r"[\s(.:=\[]", line, maxsplit=1)[0]
    if first_word in _PYTHON_KEYWORDS:
        return False
    return bool(_PROSE_START.match(line))


def _looks_like_code(code: str) -> bool:
    return any(_CODE_START.match(line) for line in code.splitlines())


def _choose(blocks: list[_Block]) -> int:
    """Index of the block to evaluate: the last that defines Net and parses, else the last defining Net
    (it will be reported as cut or broken), else the last that parses, else the last."""
    defines_net = [i for i, block in enumerate(blocks) if _DEFINES_NET.search(block.code)]
    parses = [i for i, block in enumerate(blocks) if block.syntax_error() is None]
    for preferred in ([i for i in defines_net if i in parses], defines_net, parses):
        if preferred:
            return preferred[-1]
    return len(blocks) - 1


def _error_at_end(error: SyntaxError, code: str) -> bool:
    """Whether the syntax error is at the end of the code, as when generation stopped mid-statement."""
    last_line = len(code.rstrip().splitlines())
    message = str(error.msg)
    return (error.lineno or 0) >= last_line or "never closed" in message or "unexpected EOF" in message


def _cut_failure(block: _Block, error: SyntaxError) -> Failure:
    lines = block.code.rstrip().splitlines()
    last = lines[-1].strip() if lines else ""
    message = (
        f"Your answer was cut off after {len(lines)} lines of code (last line: {last[:80]!r}), so the code "
        f"does not parse ({error.msg}). Reply with a shorter, complete module: one ```python block, "
        "closed with ```, defining `class Net`."
    )
    return Failure(FailureKind.SYNTAX, message, traceback="\n".join(lines[-8:]))


def _assemble(code: str, earlier: list[str]) -> str:
    """`code` without its __main__ section, preceded by what it needs from earlier blocks."""
    body = ast.parse(code).body
    guards = [node for node in body if _is_main_guard(node)]
    dropped = {line for node in guards for line in range(node.lineno, (node.end_lineno or node.lineno) + 1)}
    kept = "\n".join(line for number, line in enumerate(code.splitlines(), start=1) if number not in dropped)
    missing = _undefined_names([node for node in body if node not in guards])
    prefix = _definitions_needed(missing, earlier)
    missing -= _defined_names_in("\n\n".join(prefix))
    imports = [_STANDARD_IMPORTS[name] for name in sorted(missing) if name in _STANDARD_IMPORTS]
    parts = ["\n".join(imports)] if imports else []
    parts += [*prefix, kept]
    return "\n\n".join(part.strip("\n") for part in parts if part.strip()).rstrip() + "\n"


def _is_main_guard(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)


def _source(code: str, node: ast.stmt) -> str:
    """The exact source of a top-level statement, decorators included."""
    lines = code.splitlines()
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    end = node.end_lineno or node.lineno
    return "\n".join(lines[start - 1 : end])


def _undefined_names(body: list[ast.stmt]) -> set[str]:
    """Names the statements read that they neither define, import, nor get from builtins."""
    module = ast.Module(body=body, type_ignores=[])
    loaded = {n.id for n in ast.walk(module) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    stored = {n.id for n in ast.walk(module) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    arguments = {a.arg for a in ast.walk(module) if isinstance(a, ast.arg)}
    return loaded - stored - arguments - _top_level_names(body) - set(dir(builtins))


def _top_level_names(body: list[ast.stmt]) -> set[str]:
    names: set[str] = set()
    for node in body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def _defined_names_in(code: str) -> set[str]:
    return _top_level_names(ast.parse(code).body) if code.strip() else set()


def _definitions_needed(missing: set[str], earlier: list[str]) -> list[str]:
    """Top-level statements of earlier blocks that define `missing` names (and what those need), in order."""
    wanted = set(missing)
    chosen: dict[tuple[int, int], str] = {}
    changed = True
    while changed:  # a helper may itself need another helper or an import
        changed = False
        for block_index, code in enumerate(earlier):
            for node_index, node in enumerate(ast.parse(code).body):
                key = (block_index, node_index)
                if key in chosen or _is_main_guard(node) or not (_top_level_names([node]) & wanted):
                    continue
                chosen[key] = _source(code, node)
                wanted |= _undefined_names([node])
                changed = True
    return [chosen[key] for key in sorted(chosen, key=lambda k: (not _is_import_source(chosen[k]), k))]


def _is_import_source(source: str) -> bool:
    return source.startswith(("import ", "from "))


# ----------------------------------------------------------------------------------------------------
# JSON
# ----------------------------------------------------------------------------------------------------


def find_json_value(text: str) -> Any | None:
    """The first JSON object or array in `text` (whole text, fenced blocks, then embedded), or None.

    Tolerates fences, prose around the value and trailing commas.
    """
    reply = _strip_reasoning(text).strip()
    candidates = [reply] + [block.code for block in _fenced_blocks(reply)]
    for candidate in candidates:
        value = _loads(candidate.strip())
        if value is not None:
            return value
    return _first_embedded(reply)


def extract_json(text: str, schema: dict[str, Any] | None = None) -> dict[str, Any] | Failure:
    """The JSON object in an LLM reply, validated against `schema` when given, or an `extraction` Failure."""
    value = find_json_value(text)
    if not isinstance(value, dict):
        what = "a JSON array" if isinstance(value, list) else "no JSON object"
        return Failure(
            FailureKind.EXTRACTION,
            f"Your answer contained {what}. Reply with a single JSON object and nothing else.",
        )
    if schema:
        import jsonschema

        try:
            jsonschema.validate(value, schema)
        except jsonschema.ValidationError as error:
            where = "/".join(str(part) for part in error.absolute_path) or "the top level"
            return Failure(
                FailureKind.EXTRACTION,
                f"Your JSON answer does not match the required schema at {where}: {error.message}. "
                "Reply with a corrected JSON object.",
            )
    return value


_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


def _loads(candidate: str) -> Any | None:
    if not candidate or candidate[0] not in "{[":
        return None
    for attempt in (candidate, _TRAILING_COMMA.sub(r"\1", candidate)):
        try:
            value = json.loads(attempt)
        except ValueError:
            continue
        if isinstance(value, dict | list):
            return value
    return None


def _first_embedded(text: str) -> Any | None:
    """The first `{`/`[` in the text from which a whole JSON object or array decodes."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[{\[]", text):
        for source in (text[match.start() :], _TRAILING_COMMA.sub(r"\1", text[match.start() :])):
            try:
                value, _ = decoder.raw_decode(source)
            except ValueError:
                continue
            if isinstance(value, dict | list) and value:
                return value
    return None
