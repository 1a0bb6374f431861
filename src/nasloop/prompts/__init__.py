"""Prompt templates (Jinja2, shipped as package data) and the extraction of code from replies.

Templates live in `nasloop/prompts/templates/NAME.md`. A user directory can override any of them by
file name (a run's `template_dir`), so prompts can be tuned without editing the package. Rendering is
strict: a variable the template uses but the caller did not pass is an error, never an empty string.
Prompt builders are pure functions of their arguments: same context, same prompt.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2

from nasloop.errors import NasloopError

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE_SUFFIXES = (".md", ".j2")


class TemplateError(NasloopError, ValueError):
    """A template is missing, malformed, or was rendered without a variable it uses."""


def render(name: str, /, template_dir: Path | None = None, **context: Any) -> str:
    """Render template `name` (`NAME.md`) with `context`.

    A file of the same name in `template_dir` overrides the packaged template. Raises `TemplateError`
    naming the template when it does not exist, does not parse, or uses a variable not in `context`.
    """
    environment = _environment(str(template_dir) if template_dir is not None else None)
    filename = _filename(name, environment)
    try:
        return environment.get_template(filename).render(**context)
    except jinja2.UndefinedError as error:
        raise TemplateError(f"template {filename!r}: {error.message}; pass it to render()") from None
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(f"template {filename!r} line {error.lineno}: {error.message}") from None


def list_templates(template_dir: Path | None = None) -> list[str]:
    """Names of every template (packaged and user overrides), without the file suffix."""
    environment = _environment(str(template_dir) if template_dir is not None else None)
    names = {Path(filename).stem for filename in environment.list_templates() if _is_template(filename)}
    return sorted(names)


def _is_template(filename: str) -> bool:
    return filename.endswith(TEMPLATE_SUFFIXES) and "/" not in filename


def _filename(name: str, environment: jinja2.Environment) -> str:
    if name.endswith(TEMPLATE_SUFFIXES):
        return name
    available = set(environment.list_templates())
    for suffix in TEMPLATE_SUFFIXES:
        if name + suffix in available:
            return name + suffix
    known = ", ".join(sorted({Path(f).stem for f in available if _is_template(f)})) or "none"
    raise TemplateError(f"no prompt template named {name!r}. Known: {known}.")


@functools.lru_cache(maxsize=16)
def _environment(template_dir: str | None) -> jinja2.Environment:
    """One Jinja2 environment per override directory (user templates first, then the packaged ones)."""
    search_path = [template_dir, str(TEMPLATE_DIR)] if template_dir else [str(TEMPLATE_DIR)]
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(search_path),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # prompts are plain text, not HTML
    )


__all__ = ["TEMPLATE_DIR", "TemplateError", "list_templates", "render"]
