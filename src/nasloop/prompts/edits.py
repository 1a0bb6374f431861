"""SEARCH/REPLACE edits of a parent's code: the `diff` edit format.

Instead of rewriting the whole module, the LLM answers with blocks that each name lines of the parent's
code and the lines that replace them:

    <<<<<<< SEARCH
            self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=3, padding=1)
    =======
            self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=5, padding=2)
    >>>>>>> REPLACE

`parse_edits(answer)` finds the blocks (in or out of code fences, with prose around them);
`apply_edits(code, edits)` applies them in order, each to the code as the blocks before it left it;
`apply_answer(code, answer)` does both. A problem comes back as an `EditFailure` whose message names the
block and can be sent to the LLM as it is. An answer with no block at all is its own outcome
(`EditProblem.NO_BLOCKS`): the caller may look for a full module in it instead.

Parsing is tolerant where that is unambiguous: markers of 5 to 9 `<`, `=` or `>` characters, `SEARCH` and
`REPLACE` in any case, spaces or tabs before and after a marker, CRLF or CR line endings, `<think>`
sections (dropped: reasoning models draft there), and a code fence wrapped around a SEARCH or REPLACE
section inside the markers (dropped). Matching is strict: SEARCH is a run of whole lines of the code, and
a line matches when it is equal once the line ending and the spaces and tabs at its end are set aside;
nothing else is normalised (indentation, blank lines, and everything inside a line count). SEARCH must
match exactly one place; none, several or an empty SEARCH are failures. Applied lines keep their content
as written and take the code's line ending; every line outside the matched ones is kept byte for byte.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from nasloop.candidate import Failure, FailureKind

EDIT_FORMAT = """\
Answer with SEARCH/REPLACE blocks that edit the parent's code, like this:

<<<<<<< SEARCH
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=3, padding=1)
=======
        self.conv1 = nn.Conv2d(in_channels, 32, kernel_size=5, padding=2)
>>>>>>> REPLACE

SEARCH holds whole lines copied exactly from the parent, indentation included, enough of them to match \
one place only. REPLACE holds the new lines (nothing, to delete them). Blocks apply in order. Send only \
the blocks, not the whole module.
"""

_SEARCH = re.compile(r"^[ \t]*<{5,9}[ \t]*SEARCH[ \t]*$", re.IGNORECASE)
_DIVIDER = re.compile(r"^[ \t]*={5,9}[ \t]*$")
_REPLACE = re.compile(r"^[ \t]*>{5,9}[ \t]*REPLACE[ \t]*$", re.IGNORECASE)
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class EditProblem(StrEnum):
    """Why an answer's edits could not be applied."""

    NO_BLOCKS = "no_blocks"  # the answer holds no SEARCH/REPLACE block (perhaps a full module)
    MALFORMED = "malformed"  # a block is missing its ======= or >>>>>>> REPLACE line (cut off?)
    EMPTY_SEARCH = "empty_search"  # a SEARCH section with no code in it
    NOT_FOUND = "not_found"  # SEARCH matches no place of the code
    AMBIGUOUS = "ambiguous"  # SEARCH matches several places


@dataclass(frozen=True)
class Edit:
    """One SEARCH/REPLACE block: the lines to find and their replacement, each line ending in `\\n`.

    `number` is the block's place in the answer (1-based) and `line` the answer's line (1-based) holding
    its SEARCH marker. An empty `replace` deletes the lines found.
    """

    search: str
    replace: str
    number: int
    line: int

    @property
    def first_line(self) -> str:
        """The first SEARCH line with code, stripped, to name the block in messages."""
        return next((line.strip() for line in _text_lines(self.search) if line.strip()), "")


@dataclass(frozen=True)
class EditFailure:
    """Edits that could not be applied: the problem, a message for the LLM, and the block concerned.

    `block` is the 1-based number of the failing block (None for `NO_BLOCKS`). `attempted` tells an
    answer whose blocks failed from one that had none.
    """

    problem: EditProblem
    message: str
    block: int | None = None

    @property
    def attempted(self) -> bool:
        """Whether the answer tried to edit (it held blocks); False for `NO_BLOCKS`."""
        return self.problem is not EditProblem.NO_BLOCKS

    def to_failure(self) -> Failure:
        """As a candidate failure: no code could be had from the answer."""
        return Failure(FailureKind.EXTRACTION, self.message)


NO_BLOCKS_MESSAGE = "Your answer contained no SEARCH/REPLACE block."


def apply_answer(code: str, answer: str) -> str | EditFailure:
    """`code` edited by the blocks of `answer`, or why not (`NO_BLOCKS` when it holds none)."""
    edits = parse_edits(answer)
    if isinstance(edits, EditFailure):
        return edits
    if not edits:
        return EditFailure(EditProblem.NO_BLOCKS, NO_BLOCKS_MESSAGE)
    return apply_edits(code, edits)


def has_edit_blocks(answer: str) -> bool:
    """Whether the answer tries SEARCH/REPLACE edits at all (it has a SEARCH marker line)."""
    return any(_SEARCH.match(line) for line in _LINE_BREAK.split(_THINK.sub("", answer)))


# ----------------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------------


def parse_edits(answer: str) -> list[Edit] | EditFailure:
    """The blocks of an answer in order (an empty list when there are none), or a `MALFORMED` failure
    for a block whose markers are out of order or missing (an answer cut off inside a block)."""
    lines = _LINE_BREAK.split(_THINK.sub(lambda match: "\n" * match[0].count("\n"), answer))
    edits: list[Edit] = []
    index = 0
    while index < len(lines):
        if not _SEARCH.match(lines[index]):
            index += 1
            continue
        parsed = _parse_block(lines, index, len(edits) + 1)
        if isinstance(parsed, EditFailure):
            return parsed
        edit, index = parsed
        edits.append(edit)
    return edits


def _parse_block(lines: list[str], start: int, number: int) -> tuple[Edit, int] | EditFailure:
    """The block whose SEARCH marker is `lines[start]`, and the index of the line after it."""
    sections: list[list[str]] = [[]]
    for index in range(start + 1, len(lines)):
        line = lines[index]
        if _SEARCH.match(line):
            return _malformed(number, "a new SEARCH marker comes before this block's >>>>>>> REPLACE line")
        if _DIVIDER.match(line) and len(sections) == 1:
            sections.append([])
        elif _REPLACE.match(line):
            if len(sections) == 1:
                return _malformed(number, "it has no ======= line between SEARCH and REPLACE")
            search, replace = (_text(_unfenced(section)) for section in sections)
            return Edit(search, replace, number, start + 1), index + 1
        else:
            sections[-1].append(line)
    missing = "======= and >>>>>>> REPLACE lines" if len(sections) == 1 else ">>>>>>> REPLACE line"
    return _malformed(number, f"the answer ends before its {missing} (was it cut off?)")


def _malformed(number: int, why: str) -> EditFailure:
    message = f"SEARCH/REPLACE block {number} is malformed: {why}."
    return EditFailure(EditProblem.MALFORMED, message, number)


def _unfenced(section: list[str]) -> list[str]:
    """A section without the code fence an LLM may have wrapped around it inside the markers."""
    if len(section) >= 2 and _FENCE.match(section[0]) and _FENCE.match(section[-1]):
        return section[1:-1]
    return section


def _text(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _text_lines(text: str) -> list[str]:
    """The lines of an edit's text, without endings (`str.splitlines` would also split at form feeds)."""
    lines = _LINE_BREAK.split(text)
    return lines[:-1] if lines[-1] == "" else lines


# ----------------------------------------------------------------------------------------------------
# Applying
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Line:
    content: str  # without its line ending
    ending: str  # "\n", "\r\n", "\r", or "" for a last line with none

    @property
    def key(self) -> str:
        return self.content.rstrip(" \t")


def apply_edits(code: str, edits: Sequence[Edit]) -> str | EditFailure:
    """`code` with each edit applied in turn, or the failure of the first edit that does not apply."""
    original = _lines(code)
    lines = list(original)
    newline = _newline(original)
    for edit in edits:
        search = [line.rstrip(" \t") for line in _text_lines(edit.search)]
        if not any(line.strip() for line in search):
            return _empty_search(edit)
        matches = _matches(lines, search)
        if len(matches) != 1:
            return _not_found(edit, lines, search, original) if not matches else _ambiguous(edit, matches)
        start, end = matches[0], matches[0] + len(search)
        lines[start:end] = _replacement(edit.replace, newline, last_ending=lines[end - 1].ending)
    return "".join(line.content + line.ending for line in lines)


def _lines(code: str) -> list[_Line]:
    parts = re.split(r"(\r\n|\r|\n)", code)
    lines = [_Line(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
    return [*lines, _Line(parts[-1], "")] if parts[-1] else lines


def _newline(lines: list[_Line]) -> str:
    """The code's line ending: the commonest one ("\\n" for code of one line or none)."""
    endings = [line.ending for line in lines if line.ending]
    return max(set(endings), key=endings.count) if endings else "\n"


def _matches(lines: list[_Line], search: list[str]) -> list[int]:
    keys = [line.key for line in lines]
    size = len(search)
    return [start for start in range(len(keys) - size + 1) if keys[start : start + size] == search]


def _replacement(replace: str, newline: str, last_ending: str) -> list[_Line]:
    """The REPLACE lines as code lines; the last keeps "no line ending" when it replaces the code's last line."""
    lines = [_Line(content, newline) for content in _text_lines(replace)]
    if lines and not last_ending:
        lines[-1] = _Line(lines[-1].content, "")
    return lines


# ----------------------------------------------------------------------------------------------------
# Failure messages
# ----------------------------------------------------------------------------------------------------


def _named(edit: Edit) -> str:
    first = edit.first_line
    shown = first if len(first) <= 80 else first[:77] + "..."
    return f"SEARCH/REPLACE block {edit.number} (SEARCH starting `{shown}`)" if shown else f"block {edit.number}"


def _empty_search(edit: Edit) -> EditFailure:
    message = (
        f"SEARCH/REPLACE block {edit.number} has an empty SEARCH section. SEARCH must copy the lines to "
        "change; to add code, copy the line it should follow and repeat that line at the start of REPLACE."
    )
    return EditFailure(EditProblem.EMPTY_SEARCH, message, edit.number)


def _ambiguous(edit: Edit, matches: list[int]) -> EditFailure:
    places = ", ".join(str(start + 1) for start in matches[:5]) + (", ..." if len(matches) > 5 else "")
    message = (
        f"{_named(edit)} matches {len(matches)} places of the code (starting at lines {places}); it must "
        "match exactly one. Copy more of the surrounding lines into SEARCH so that it is unique."
    )
    return EditFailure(EditProblem.AMBIGUOUS, message, edit.number)


def _not_found(edit: Edit, lines: list[_Line], search: list[str], original: list[_Line]) -> EditFailure:
    message = f"{_named(edit)} does not match the code: SEARCH must copy whole lines of it exactly."
    if edit.number > 1 and len(_matches(original, search)) == 1:
        message += (
            " It matches the parent's code, but an earlier block changed those lines: blocks apply in order, "
            "so SEARCH must show the code as the blocks before it left it."
        )
    closest = _closest(lines, search)
    if closest is not None:
        start, difference = closest
        window = lines[start : start + len(search)]
        shown = "\n".join(line.content for line in window)
        where = f"line {start + 1}" if len(window) == 1 else f"lines {start + 1}-{start + len(window)}"
        message += f" The closest lines of the code are {where}:\n```\n{shown}\n```"
        if difference:
            message += f"\n{difference}"
    return EditFailure(EditProblem.NOT_FOUND, message, edit.number)


def _closest(lines: list[_Line], search: list[str]) -> tuple[int, str] | None:
    """The start of the window of code most like SEARCH (difflib), and its first differing line."""
    keys = [line.key for line in lines]
    size = min(len(search), len(keys))
    if size == 0:
        return None
    windows = ["\n".join(keys[start : start + size]) for start in range(len(keys) - size + 1)]
    matcher = difflib.SequenceMatcher(None, autojunk=False)
    matcher.set_seq2("\n".join(search))

    def similarity(start: int, exact: bool) -> float:
        matcher.set_seq1(windows[start])
        return matcher.ratio() if exact else matcher.quick_ratio()

    # The exact ratio is slow: compute it only for the likeliest windows; ties go to the earliest.
    likeliest = sorted(range(len(windows)), key=lambda start: similarity(start, False), reverse=True)[:20]
    start = max(sorted(likeliest), key=lambda start: similarity(start, True))
    ratio = similarity(start, True)
    if ratio < 0.3:
        return None
    return start, _first_difference(keys[start : start + size], search)


def _first_difference(window: list[str], search: list[str]) -> str:
    for position, (code_line, search_line) in enumerate(zip(window, search, strict=False), start=1):
        if code_line != search_line:
            how = " (only the indentation differs)" if code_line.strip() == search_line.strip() else ""
            return f"SEARCH line {position} is `{search_line.strip()}`; the code has `{code_line.strip()}`{how}."
    if len(search) > len(window):
        return f"SEARCH has {len(search)} lines but the code ends after {len(window)} of them."
    return ""


__all__ = [
    "EDIT_FORMAT",
    "NO_BLOCKS_MESSAGE",
    "Edit",
    "EditFailure",
    "EditProblem",
    "apply_answer",
    "apply_edits",
    "has_edit_blocks",
    "parse_edits",
]
