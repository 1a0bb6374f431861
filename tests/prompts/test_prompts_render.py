"""Prompt template rendering: packaged templates, user overrides, strict variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from nasloop.prompts import TemplateError, list_templates, render

CONTEXT = {"dataset": "CIFAR-10", "in_shape": (3, 32, 32), "num_classes": 10}


def test_packaged_example_renders_with_loops_and_conditions() -> None:
    history = [{"summary": "wider stem", "outcome": "val_acc 0.71"}, {"summary": "deeper", "outcome": "oom"}]
    text = render("example", **CONTEXT, history=history)
    assert "CIFAR-10 (3x32x32 inputs, 10 classes)" in text
    assert "- wider stem: val_acc 0.71\n- deeper: oom\n" in text
    assert render("example", **CONTEXT, history=[]).count("Previous attempts") == 0


def test_rendering_is_pure() -> None:
    assert render("example", **CONTEXT, history=[]) == render("example", **CONTEXT, history=[])


def test_missing_variable_is_an_error_naming_it() -> None:
    with pytest.raises(TemplateError, match="num_classes"):
        render("example", dataset="x", in_shape=(1, 2, 3), history=[])


def test_unknown_template_lists_known_ones() -> None:
    with pytest.raises(TemplateError, match="example"):
        render("no-such-template")


def test_user_directory_overrides_by_file_name_and_adds_templates(tmp_path: Path) -> None:
    (tmp_path / "example.md").write_text("custom for {{ dataset }}\n", encoding="utf-8")
    (tmp_path / "extra.md").write_text("{{ value }}", encoding="utf-8")
    assert render("example", template_dir=tmp_path, dataset="MNIST") == "custom for MNIST\n"
    assert render("extra", template_dir=tmp_path, value=3) == "3"
    assert {"example", "extra"} <= set(list_templates(tmp_path))
    assert "extra" not in list_templates()


def test_template_syntax_error_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "broken.md").write_text("line one\n{% if x %}\nno end\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"broken\.md"):
        render("broken", template_dir=tmp_path, x=True)


def test_templates_are_package_data() -> None:
    assert "example" in list_templates()
