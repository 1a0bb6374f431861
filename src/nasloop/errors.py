"""The root of every error nasloop raises on purpose, so a library user can catch "any nasloop error".

    try:
        nasloop.search("my.yaml")
    except nasloop.NasloopError as error:
        print(error)

Each family keeps its own module and, where it helps callers, a built-in base too (a `ConfigError` is also
a `ValueError`, a missing dataset also a `FileNotFoundError`). The families:

- `UsageError`: bad command-line input;
- `nasloop.config.ConfigError`: a config that cannot be used, naming the key;
- `nasloop.engine.SearchAborted`: a run stopped by a fault outside any candidate (its seed failed, the LLM
  is unreachable);
- `nasloop.llm.base.LLMError`: the LLM backends' tree (`RecoverableLLMError`: one answer lost, the search
  goes on);
- `nasloop.evaluate.sandbox.SandboxError`: the sandbox itself could not run;
- `nasloop.final_training.RunInUse`: a run that another process is writing;
- and the plugin families' own errors (datasets, benchmarks, spaces, templates, exports).

A candidate's failure is never an exception: it is data (`nasloop.candidate.Failure`).
"""

from __future__ import annotations


class NasloopError(Exception):
    """Base of every error nasloop raises on purpose."""


class UsageError(NasloopError):
    """Bad command-line input; printed without a traceback and exits with status `EXIT_USAGE`."""


#: exit statuses of the commands
EXIT_OK = 0
EXIT_USAGE = 2


__all__ = ["EXIT_OK", "EXIT_USAGE", "NasloopError", "UsageError"]
