"""Evaluation: the job contract, the sandbox that runs untrusted candidates, and the stages it runs.

    from nasloop.evaluate import Sandbox, evaluate

`Sandbox` and `evaluate` are imported lazily, so that importing `nasloop.evaluate.job` (as every config
does) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nasloop.evaluate.sandbox import Sandbox, SandboxError, evaluate

__all__ = ["Sandbox", "SandboxError", "evaluate"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from nasloop.evaluate import sandbox

        return getattr(sandbox, name)
    raise AttributeError(f"module 'nasloop.evaluate' has no attribute {name!r}")
