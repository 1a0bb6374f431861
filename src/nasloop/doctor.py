"""`nasloop doctor`: what is present, what is missing, and the command that gets each missing piece."""

from __future__ import annotations

import importlib.util
import platform
import shutil
from dataclasses import dataclass


@dataclass
class Check:
    """One line of the doctor's report."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def _torch() -> list[Check]:
    try:
        import torch
    except ImportError:
        return [Check("torch", False, "not installed", "pip install torch==2.13.0 (CPU) or a CUDA build")]
    checks = [Check("torch", True, f"{torch.__version__}, {torch.get_num_threads()} CPU threads")]
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        checks.append(Check("cuda", True, names))
    else:
        checks.append(Check("cuda", False, "no CUDA GPU: evaluations run on the CPU", ""))
    return checks


def _sandbox() -> list[Check]:
    bwrap = shutil.which("bwrap")
    if bwrap:
        return [Check("sandbox isolation", True, f"bubblewrap ({bwrap}): no network, read-only filesystem")]
    return [
        Check(
            "sandbox isolation",
            False,
            "bubblewrap not found: candidates run with resource limits only",
            "apt-get install bubblewrap",
        )
    ]


def _datasets() -> list[Check]:
    from nasloop.data import get_source
    from nasloop.data.errors import DatasetError
    from nasloop.registry import datasets

    checks = []
    for name in datasets.names():
        source = get_source(name)
        try:
            root = source.find_root(None)
            checks.append(Check(f"dataset {name}", True, f"files in {root}"))
        except DatasetError:
            hint = source.install_hint(source.default_roots()[-1])
            checks.append(Check(f"dataset {name}", False, "files not found", hint))
        except ImportError as error:
            checks.append(Check(f"dataset {name}", False, str(error), "pip install 'nasloop[data]'"))
    return checks


def _embedded_llm() -> list[Check]:
    from nasloop.llm.embedded import EMBEDDED_MODELS, embedded_model, is_installed, models_dir

    checks = []
    if importlib.util.find_spec("llama_cpp") is None:
        checks.append(
            Check(
                "llama-cpp-python",
                False,
                "not installed: the embedded LLM cannot run",
                "pip install 'nasloop[embedded]' (compiles llama.cpp, ~6 minutes)",
            )
        )
    else:
        checks.append(Check("llama-cpp-python", True, "installed"))
    for name in EMBEDDED_MODELS:
        model = embedded_model(name)
        joined = models_dir() / model.filename
        if not is_installed(name):
            checks.append(Check(f"model {name}", False, "parts not installed", model.pip_command()))
        elif joined.is_file():
            checks.append(Check(f"model {name}", True, f"ready: {joined} ({model.size_bytes / 1e6:.0f} MB)"))
        else:
            checks.append(Check(f"model {name}", True, "parts installed; joined and verified on first use"))
    return checks


def _extras() -> list[Check]:
    extras = [
        ("openai", "openai client (OpenAI-compatible servers)", "pip install openai"),
        ("ray", "Ray executor", "pip install 'nasloop[ray]'"),
        ("matplotlib", "PNG plots in reports", "pip install 'nasloop[report]'"),
        ("transformers", "local Hugging Face models", "pip install 'nasloop[transformers]'"),
    ]
    return [
        Check(module, importlib.util.find_spec(module) is not None, purpose, fix) for module, purpose, fix in extras
    ]


def _registered() -> list[Check]:
    from nasloop.registry import strategies

    return [Check("strategies", True, ", ".join(strategies.names()))]


def run_checks() -> list[Check]:
    """Every check, in the order the report prints them."""
    checks = [Check("python", True, platform.python_version())]
    for group in (_torch, _sandbox, _datasets, _embedded_llm, _extras, _registered):
        checks.extend(group())
    return checks
