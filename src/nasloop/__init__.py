"""nasloop: LLM-driven neural architecture search for image classification on your own hardware.

The Python API mirrors the CLI::

    import nasloop
    summary = nasloop.search("examples/quickstart.yaml", budget__iterations=5)
    print(summary.best.metrics)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def search(*args: Any, **kwargs: Any) -> Any:
    """Run a search; see `nasloop.api.search`."""
    from nasloop.api import search as run_search

    return run_search(*args, **kwargs)


def resume(*args: Any, **kwargs: Any) -> Any:
    """Continue a stored run; see `nasloop.api.resume`."""
    from nasloop.api import resume as run_resume

    return run_resume(*args, **kwargs)


__all__ = ["__version__", "resume", "search"]
