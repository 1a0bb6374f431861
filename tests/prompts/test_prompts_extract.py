"""Code and JSON extraction from realistic LLM replies."""

from __future__ import annotations

import ast
import textwrap

import pytest

from nasloop.candidate import Failure, FailureKind
from nasloop.prompts.extract import extract_code, extract_json, find_json_value

NET = textwrap.dedent(
    """\
    import torch
    import torch.nn as nn


    class Net(nn.Module):
        def __init__(self, in_shape, num_classes):
            super().__init__()
            channels = in_shape[0]
            self.features = nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
            self.head = nn.Linear(16, num_classes)

        def forward(self, x):
            return self.head(self.features(x).flatten(1))
    """
)


def code_of(reply: str, **kwargs: bool) -> str:
    result = extract_code(reply, **kwargs)
    assert isinstance(result, str), result
    ast.parse(result)
    return result


def failure_of(reply: str, **kwargs: bool) -> Failure:
    result = extract_code(reply, **kwargs)
    assert isinstance(result, Failure), result
    return result


# ----------------------------------------------------------------------------------------------------
# Fenced replies
# ----------------------------------------------------------------------------------------------------


def test_single_python_fence_with_prose_around() -> None:
    reply = f"Here is an improved network with a wider stem:\n\n```python\n{NET}```\n\nIt should reach ~92%."
    assert code_of(reply) == NET


@pytest.mark.parametrize("fence", ["```", "~~~", "````"])
def test_untagged_and_tilde_fences(fence: str) -> None:
    reply = f"Sure!\n{fence}\n{NET}{fence}\nDone."
    assert code_of(reply) == NET


def test_tag_variants_and_trailing_spaces() -> None:
    reply = f"```Python3  \n{NET}```  \n"
    assert code_of(reply) == NET


def test_chooses_block_defining_net_over_shell_and_usage_blocks() -> None:
    reply = (
        "First install the dependencies:\n```bash\npip install torch\n```\n"
        f"The model:\n```python\n{NET}```\n"
        "Usage:\n```python\nmodel = Net((3, 32, 32), 10)\nprint(model)\n```\n"
    )
    assert code_of(reply) == NET


def test_last_corrected_version_wins() -> None:
    draft = NET.replace("16", "8")
    reply = f"Draft:\n```python\n{draft}```\nWait, that is too narrow. Corrected:\n```python\n{NET}```"
    assert code_of(reply) == NET


def test_helpers_from_earlier_blocks_are_prepended() -> None:
    reply = textwrap.dedent(
        """\
        First a residual block:
        ```python
        import torch.nn as nn

        class ResidualBlock(nn.Module):
            def __init__(self, channels):
                super().__init__()
                self.conv = nn.Conv2d(channels, channels, 3, padding=1)

            def forward(self, x):
                return x + self.conv(x)

        block = ResidualBlock(8)  # quick check
        ```
        Now the network:
        ```python
        class Net(nn.Module):
            def __init__(self, in_shape, num_classes):
                super().__init__()
                self.stem = nn.Conv2d(in_shape[0], 8, 3, padding=1)
                self.block = ResidualBlock(8)
                self.head = nn.Linear(8, num_classes)

            def forward(self, x):
                return self.head(self.block(self.stem(x)).mean((2, 3)))
        ```
        """
    )
    code = code_of(reply)
    assert code.index("import torch.nn as nn") < code.index("class ResidualBlock") < code.index("class Net")
    assert "quick check" not in code  # earlier usage code is not carried over
    namespace: dict[str, object] = {}
    exec(compile(code, "<candidate>", "exec"), namespace)
    assert "Net" in namespace


def test_missing_standard_imports_are_added() -> None:
    reply = textwrap.dedent(
        """\
        ```python
        class Net(nn.Module):
            def __init__(self, in_shape, num_classes):
                super().__init__()
                self.fc = nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], num_classes)

            def forward(self, x):
                return self.fc(F.relu(torch.flatten(x, 1)))
        ```"""
    )
    code = code_of(reply)
    for line in ("import torch", "import torch.nn as nn", "import torch.nn.functional as F"):
        assert line in code.splitlines()


def test_main_guard_is_dropped() -> None:
    reply = f"```python\n{NET}\nif __name__ == '__main__':\n    print(Net((1, 28, 28), 10))\n```"
    code = code_of(reply)
    assert "__main__" not in code and "class Net" in code


def test_indented_fence_inside_a_list_item() -> None:
    indented = textwrap.indent(NET, "   ")
    reply = f"1. Replace the model with:\n   ```python\n{indented}   ```\n2. Train it."
    assert code_of(reply) == NET


def test_reasoning_section_is_ignored() -> None:
    draft = NET.replace("16", "4")
    reply = f"<think>Maybe:\n```python\n{draft}```\nNo, wider is better.</think>\n```python\n{NET}```"
    assert code_of(reply) == NET


# ----------------------------------------------------------------------------------------------------
# Unfenced replies
# ----------------------------------------------------------------------------------------------------


def test_bare_code_without_prose() -> None:
    assert code_of(NET) == NET


def test_unfenced_code_with_prose_before_and_after() -> None:
    reply = f"Here is the network you asked for.\n\n{NET}\nThis network uses global average pooling.\n"
    assert code_of(reply).strip() == NET.strip()


def test_unfenced_reply_keeps_comments_and_decorators() -> None:
    code = (
        "import torch.nn as nn\n\n# a comment\n@staticmethod\ndef helper():\n    return 1\n\n" + NET.split("\n", 2)[2]
    )
    assert "# a comment" in code_of(code)


# ----------------------------------------------------------------------------------------------------
# Truncated and empty replies
# ----------------------------------------------------------------------------------------------------


def test_unclosed_fence_cut_mid_statement_is_a_syntax_failure() -> None:
    cut = NET[: NET.index("self.head = nn.Linear(") + len("self.head = nn.Linear(")]
    failure = failure_of(f"Here you go:\n```python\n{cut}")
    assert failure.kind is FailureKind.SYNTAX
    assert "cut off" in failure.message and "nn.Linear(" in failure.message
    assert "nn.Linear(" in failure.traceback


def test_unclosed_fence_that_parses_is_accepted() -> None:
    assert code_of(f"```python\n{NET}") == NET


def test_truncated_flag_marks_unparsable_unfenced_code_as_cut() -> None:
    cut = NET[: NET.index("def forward")] + "    def forward(self, x):\n"
    failure = failure_of(cut, truncated=True)
    assert failure.kind is FailureKind.SYNTAX and "cut off" in failure.message


def test_closed_block_with_genuine_syntax_error_is_returned_for_the_static_check() -> None:
    broken = NET.replace("def forward(self, x):", "def forward(self, x)")
    result = extract_code(f"```python\n{broken}```\nThat's all.")
    assert isinstance(result, str) and "def forward(self, x)\n" in result


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "   \n",
        "I cannot help with that request.",
        "The best architecture is a ResNet-18 with a 3x3 stem. Use SGD with momentum.",
        "```bash\npip install torch\n```",
        "<think>Let me think about the best model...</think>",
    ],
)
def test_replies_without_code_are_extraction_failures(reply: str) -> None:
    failure = failure_of(reply)
    assert failure.kind is FailureKind.EXTRACTION
    assert "class Net" in failure.message and "```python" in failure.message


def test_failure_message_is_usable_as_feedback() -> None:
    failure = failure_of("Sorry, I don't know.")
    assert failure.short(500).startswith("extraction: ")


# ----------------------------------------------------------------------------------------------------
# JSON
# ----------------------------------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {"operation": {"type": "string"}, "edge": {"type": "integer"}},
    "required": ["operation", "edge"],
}


@pytest.mark.parametrize(
    "reply",
    [
        '{"operation": "conv3x3", "edge": 2}',
        'Sure! Here is the mutation:\n```json\n{"operation": "conv3x3", "edge": 2}\n```',
        'I suggest {"operation": "conv3x3", "edge": 2} because it adds capacity.',
        '```\n{\n  "operation": "conv3x3",\n  "edge": 2,\n}\n```',
        '<think>{"operation": "skip", "edge": 0} maybe</think>{"operation": "conv3x3", "edge": 2}',
    ],
)
def test_extract_json_tolerates_fences_prose_and_trailing_commas(reply: str) -> None:
    assert extract_json(reply, SCHEMA) == {"operation": "conv3x3", "edge": 2}


def test_extract_json_schema_mismatch_is_a_failure_naming_the_field() -> None:
    failure = extract_json('{"operation": "conv3x3", "edge": "two"}', SCHEMA)
    assert isinstance(failure, Failure) and failure.kind is FailureKind.EXTRACTION
    assert "edge" in failure.message


@pytest.mark.parametrize("reply", ["no json here", '{"operation": "conv3x3", "edge":', "[1, 2, 3]"])
def test_extract_json_without_an_object_fails(reply: str) -> None:
    result = extract_json(reply)
    assert isinstance(result, Failure) and result.kind is FailureKind.EXTRACTION


def test_find_json_value_returns_arrays_and_none() -> None:
    assert find_json_value('rules:\n["widen", "deepen"]') == ["widen", "deepen"]
    assert find_json_value("nothing {here}") is None


def test_unfenced_helper_and_net_separated_by_prose() -> None:
    reply = textwrap.dedent(
        """\
        We start with a helper:
        import torch.nn as nn

        def conv_bn(inputs, outputs):
            return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs), nn.ReLU())

        Now the network itself, which stacks two of them:
        class Net(nn.Module):
            def __init__(self, in_shape, num_classes):
                super().__init__()
                self.body = nn.Sequential(conv_bn(in_shape[0], 8), conv_bn(8, 16), nn.AdaptiveAvgPool2d(1))
                self.head = nn.Linear(16, num_classes)

            def forward(self, x):
                return self.head(self.body(x).flatten(1))
        I hope this helps!
        """
    )
    code = code_of(reply)
    assert "def conv_bn" in code and code.index("def conv_bn") < code.index("class Net")
    assert "helps" not in code and "Now the network" not in code


def test_unfenced_reply_cut_mid_line_is_a_syntax_failure_without_the_flag() -> None:
    cut = NET[: NET.index("nn.AdaptiveAvgPool2d(1))")] + "nn.Adaptive"
    failure = failure_of("Here is my network:\n" + cut)
    assert failure.kind is FailureKind.SYNTAX
