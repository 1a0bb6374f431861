"""SEARCH/REPLACE edits against a parent's code: parsing LLM answers, exact application, failures."""

from __future__ import annotations

import ast

import pytest

from nasloop.candidate import FailureKind
from nasloop.prompts.edits import (
    EDIT_FORMAT,
    Edit,
    EditFailure,
    EditProblem,
    apply_answer,
    apply_edits,
    has_edit_blocks,
    parse_edits,
)

PARENT = """\
import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(in_shape[0], 32, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
"""

WIDEN = """\
<<<<<<< SEARCH
        self.conv1 = nn.Conv2d(in_shape[0], 32, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
=======
        self.conv1 = nn.Conv2d(in_shape[0], 48, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(48)
        self.conv2 = nn.Conv2d(48, 64, kernel_size=3, padding=1)
>>>>>>> REPLACE
"""

WIDENED = (
    PARENT.replace("0], 32, kernel", "0], 48, kernel")
    .replace("BatchNorm2d(32)", "BatchNorm2d(48)")
    .replace("Conv2d(32, 64", "Conv2d(48, 64")
)

GELU = """\
<<<<<<< SEARCH
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
=======
        x = F.max_pool2d(F.gelu(self.bn2(self.conv2(x))), 2)
>>>>>>> REPLACE
"""


def applied(code: str, answer: str) -> str:
    result = apply_answer(code, answer)
    assert isinstance(result, str), result
    return result


def failed(code: str, answer: str) -> EditFailure:
    result = apply_answer(code, answer)
    assert isinstance(result, EditFailure), result
    return result


# ----------------------------------------------------------------------------------------------------
# Parsing and applying
# ----------------------------------------------------------------------------------------------------


def test_single_block_widens_a_conv_and_its_batch_norm() -> None:
    result = applied(PARENT, WIDEN)
    assert result == WIDENED
    ast.parse(result)


def test_blocks_in_a_fence_with_prose_around() -> None:
    answer = f"I widen the first stage and switch to GELU.\n\n```python\n{WIDEN}{GELU}```\n\nThis adds ~20k parameters."
    assert applied(PARENT, answer) == WIDENED.replace("F.relu(self.bn2", "F.gelu(self.bn2")


def test_blocks_out_of_fences_and_each_in_its_own_fence() -> None:
    bare = f"Change one:\n{WIDEN}\nChange two:\n{GELU}Done."
    fenced = f"```\n{WIDEN}```\nthen\n```python\n{GELU}```"
    expected = WIDENED.replace("F.relu(self.bn2", "F.gelu(self.bn2")
    assert applied(PARENT, bare) == expected
    assert applied(PARENT, fenced) == expected


def test_parse_gives_text_number_and_answer_line() -> None:
    edits = parse_edits(f"Two changes:\n\n{WIDEN}\n{GELU}")
    assert isinstance(edits, list)
    assert [(edit.number, edit.line) for edit in edits] == [(1, 3), (2, 13)]
    assert edits[1].search == "        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)\n"
    assert edits[1].first_line == "x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)"


def test_application_keeps_every_other_byte() -> None:
    parent = PARENT.replace("    def forward", "    # odd   spacing\t \n    def forward") + "\n\n# trailing comment"
    result = applied(parent, GELU)
    assert result == parent.replace("F.relu(self.bn2", "F.gelu(self.bn2")


def test_blocks_apply_in_order_to_the_code_as_edited() -> None:
    second = (
        "<<<<<<< SEARCH\n        self.bn1 = nn.BatchNorm2d(48)\n=======\n"
        "        self.bn1 = nn.BatchNorm2d(48, eps=1e-3)\n>>>>>>> REPLACE\n"
    )
    edits = parse_edits(WIDEN + second)
    assert isinstance(edits, list) and len(edits) == 2
    assert apply_edits(PARENT, edits) == WIDENED.replace("BatchNorm2d(48)", "BatchNorm2d(48, eps=1e-3)")


def test_empty_replace_deletes_the_lines() -> None:
    answer = "<<<<<<< SEARCH\n        self.bn2 = nn.BatchNorm2d(64)\n=======\n>>>>>>> REPLACE\n"
    result = applied(PARENT, answer)
    assert result == PARENT.replace("        self.bn2 = nn.BatchNorm2d(64)\n", "")


def test_insertion_by_repeating_the_anchor_line() -> None:
    answer = (
        "<<<<<<< SEARCH\n        self.head = nn.Linear(64, num_classes)\n=======\n"
        "        self.head = nn.Linear(64, num_classes)\n        self.dropout = nn.Dropout(0.1)\n>>>>>>> REPLACE"
    )
    result = applied(PARENT, answer)
    assert "num_classes)\n        self.dropout = nn.Dropout(0.1)\n\n    def forward" in result


def test_tolerant_markers() -> None:
    answer = (
        "<<<<< search  \n        self.bn2 = nn.BatchNorm2d(64)\n=========\t\n"
        "        self.bn2 = nn.BatchNorm2d(64, momentum=0.05)\n  >>>>>>>>> Replace \n"
    )
    assert applied(PARENT, answer) == PARENT.replace("BatchNorm2d(64)", "BatchNorm2d(64, momentum=0.05)")


def test_fence_inside_the_markers_is_dropped() -> None:
    answer = (
        "<<<<<<< SEARCH\n```python\n        self.bn2 = nn.BatchNorm2d(64)\n```\n=======\n"
        "```python\n        self.bn2 = nn.Identity()\n```\n>>>>>>> REPLACE\n"
    )
    assert applied(PARENT, answer) == PARENT.replace("nn.BatchNorm2d(64)", "nn.Identity()")


def test_reasoning_sections_are_ignored() -> None:
    draft = WIDEN.replace("48", "96")
    answer = f"<think>Maybe:\n{draft}No, too wide.</think>\n{WIDEN}"
    assert applied(PARENT, answer) == WIDENED
    edits = parse_edits(answer)
    assert isinstance(edits, list) and edits[0].line == answer.splitlines().index("<<<<<<< SEARCH", 3) + 1


# ----------------------------------------------------------------------------------------------------
# Normalisation: line endings and trailing whitespace only
# ----------------------------------------------------------------------------------------------------


def test_crlf_answer_against_lf_parent() -> None:
    assert applied(PARENT, WIDEN.replace("\n", "\r\n")) == WIDENED


def test_crlf_parent_keeps_its_line_endings() -> None:
    parent = PARENT.replace("\n", "\r\n")
    result = applied(parent, WIDEN)
    assert result == WIDENED.replace("\n", "\r\n")


def test_trailing_whitespace_is_ignored_on_both_sides() -> None:
    parent = PARENT.replace("self.bn2 = nn.BatchNorm2d(64)\n", "self.bn2 = nn.BatchNorm2d(64)   \n")
    answer = GELU.replace("), 2)\n=======", "), 2) \t\n=======")
    result = applied(parent, answer)
    assert result == parent.replace("F.relu(self.bn2", "F.gelu(self.bn2")
    assert "BatchNorm2d(64)   \n" in result  # the parent's own trailing spaces outside the match stay


def test_indentation_is_not_normalised() -> None:
    failure = failed(PARENT, GELU.replace("        x = F.max_pool2d(F.relu", "    x = F.max_pool2d(F.relu"))
    assert failure.problem is EditProblem.NOT_FOUND
    assert "only the indentation differs" in failure.message


def test_last_line_without_newline() -> None:
    parent = PARENT.rstrip("\n")
    answer = (
        "<<<<<<< SEARCH\n        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))\n=======\n"
        "        x = F.adaptive_avg_pool2d(x, 1)\n        return self.head(torch.flatten(x, 1))\n>>>>>>> REPLACE\n"
    )
    result = applied(parent, answer)
    assert result.endswith("\n        return self.head(torch.flatten(x, 1))")


# ----------------------------------------------------------------------------------------------------
# Failures
# ----------------------------------------------------------------------------------------------------


def test_not_found_names_the_block_and_shows_the_closest_parent_lines() -> None:
    miscopied = GELU.replace("self.bn2(self.conv2(x))), 2)\n=", "self.bn2(self.conv2(x)), 2))\n=")
    failure = failed(PARENT, WIDEN + miscopied)
    assert failure.problem is EditProblem.NOT_FOUND
    assert failure.block == 2 and failure.attempted
    assert "block 2 (SEARCH starting `x = F.max_pool2d(F.relu(self.bn2(self.conv2(x)), 2))`)" in failure.message
    assert "closest lines of the code are line 17:" in failure.message
    assert "        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)" in failure.message
    assert "the code has `x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)`" in failure.message
    assert failure.to_failure().kind is FailureKind.EXTRACTION


def test_not_found_because_an_earlier_block_changed_the_lines() -> None:
    again = WIDEN.replace("48", "40")
    failure = failed(PARENT, WIDEN + again)
    assert failure.problem is EditProblem.NOT_FOUND and failure.block == 2
    assert "an earlier block changed those lines" in failure.message


def test_not_found_with_nothing_close_shows_no_lines() -> None:
    failure = failed(PARENT, "<<<<<<< SEARCH\nqqqq zzzz\n=======\nx\n>>>>>>> REPLACE\n")
    assert failure.problem is EditProblem.NOT_FOUND
    assert "closest" not in failure.message


def test_ambiguous_search_is_a_failure_naming_the_places() -> None:
    answer = "<<<<<<< SEARCH\n        super().__init__()\n=======\n        super().__init__()\n>>>>>>> REPLACE\n"
    parent = PARENT + "\n\nclass Other(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
    failure = failed(parent, answer)
    assert failure.problem is EditProblem.AMBIGUOUS and failure.block == 1
    assert "matches 2 places of the code (starting at lines 8, 23)" in failure.message


def test_empty_search_is_a_failure() -> None:
    for search in ("", "\n   \n"):
        failure = failed(PARENT, f"<<<<<<< SEARCH\n{search}=======\nimport math\n>>>>>>> REPLACE\n")
        assert failure.problem is EditProblem.EMPTY_SEARCH and failure.block == 1
        assert "empty SEARCH" in failure.message


def test_no_blocks_is_its_own_outcome() -> None:
    answer = f"Here is the improved network:\n```python\n{PARENT}```"
    assert parse_edits(answer) == []
    assert not has_edit_blocks(answer)
    failure = failed(PARENT, answer)
    assert failure.problem is EditProblem.NO_BLOCKS
    assert not failure.attempted and failure.block is None
    assert has_edit_blocks(WIDEN)


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (WIDEN.replace(">>>>>>> REPLACE\n", ""), "ends before its >>>>>>> REPLACE line"),
        (WIDEN.split("=======")[0], "ends before its ======= and >>>>>>> REPLACE lines"),
        (WIDEN.replace("=======\n", ""), "no ======= line"),
        (WIDEN.replace(">>>>>>> REPLACE\n", "") + GELU, "a new SEARCH marker"),
    ],
)
def test_malformed_blocks_are_failures(answer: str, why: str) -> None:
    failure = failed(PARENT, answer)
    assert failure.problem is EditProblem.MALFORMED and failure.block == 1 and failure.attempted
    assert why in failure.message


def test_failing_block_leaves_the_parent_untouched() -> None:
    edits = [
        Edit("        self.bn1 = nn.BatchNorm2d(32)\n", "        self.bn1 = nn.Identity()\n", 1, 1),
        Edit("not in the code\n", "", 2, 5),
    ]
    assert isinstance(apply_edits(PARENT, edits), EditFailure)
    assert "nn.BatchNorm2d(32)" in PARENT


def test_format_text_is_short_and_its_example_is_a_valid_block() -> None:
    assert len(EDIT_FORMAT) < 700
    edits = parse_edits(EDIT_FORMAT)
    assert isinstance(edits, list) and len(edits) == 1
    code = "class Net:\n    def __init__(self, in_channels):\n" + edits[0].search
    result = apply_edits(code, edits)
    assert isinstance(result, str) and "kernel_size=5, padding=2" in result
    ast.parse(result)
