"""Downloads from a real loopback HTTP server and from a local directory: checksums, atomic files,
clear errors, and an end-to-end fetch + load of datasets in their official formats."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from nasloop.data import ChecksumMismatch, DownloadError, download, file_checksum, load_splits
from nasloop.data.__main__ import main as data_cli
from nasloop.data.sources import CIFAR10, FashionMNIST, RemoteFile, mirror_url
from nasloop.evaluate.job import DatasetSpec


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, directory) of an HTTP server on 127.0.0.1 serving the directory."""
    directory = tmp_path / "served"
    directory.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", directory
    finally:
        server.shutdown()
        server.server_close()


def test_download_verifies_md5_and_sha256(served: tuple[str, Path], tmp_path: Path) -> None:
    base, directory = served
    (directory / "file.bin").write_bytes(b"nasloop" * 1000)
    md5 = file_checksum(directory / "file.bin", "md5")
    sha256 = file_checksum(directory / "file.bin", "sha256")
    for checksum in (md5, sha256, f"sha256:{sha256}"):
        dest = download(f"{base}/file.bin", tmp_path / "out" / checksum[:8], checksum, progress=False)
        assert dest.read_bytes() == b"nasloop" * 1000


def test_checksum_mismatch_is_an_error_and_leaves_nothing(served: tuple[str, Path], tmp_path: Path) -> None:
    base, directory = served
    (directory / "file.bin").write_bytes(b"tampered")
    with pytest.raises(ChecksumMismatch, match=r"expected 0{32}"):
        download(f"{base}/file.bin", tmp_path / "out" / "file.bin", "0" * 32, progress=False)
    assert list((tmp_path / "out").iterdir()) == []  # neither the file nor a partial


def test_http_error_is_a_download_error(served: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = served
    with pytest.raises(DownloadError, match="404"):
        download(f"{base}/missing.bin", tmp_path / "missing.bin", None, progress=False)
    assert not (tmp_path / "missing.bin").exists()


def test_mirror_url_replaces_the_directory(tmp_path: Path) -> None:
    url = "https://example.org/data/train.gz"
    assert mirror_url(url, None) == url
    assert mirror_url(url, "http://127.0.0.1:8000/mirror/") == "http://127.0.0.1:8000/mirror/train.gz"
    assert mirror_url(url, str(tmp_path)) == (tmp_path / "train.gz").as_uri()


def _with_checksums(source_class: type, directory: Path) -> type:
    """The registered source, with the checksums of the files a test generated instead of the official ones."""
    files = tuple(
        RemoteFile(f.filename, f.url, file_checksum(directory / f.filename, "sha256")) for f in source_class.files
    )
    return type(f"Local{source_class.__name__}", (source_class,), {"files": files})


def test_fetch_from_http_mirror_then_load(served: tuple[str, Path], tmp_path: Path, dataset_writers: dict) -> None:
    base, directory = served
    dataset_writers["cifar10"](directory)
    source = _with_checksums(CIFAR10, directory)()
    root = source.fetch(tmp_path / "cifar10", mirror=base, progress=False)
    assert (root / "cifar-10-python.tar.gz").read_bytes() == (directory / "cifar-10-python.tar.gz").read_bytes()
    splits = load_splits(DatasetSpec(name="cifar10", root=str(root)))
    assert splits.in_shape == (3, 32, 32) and len(splits.test_x) == 30


def test_fetch_from_local_directory_then_load(tmp_path: Path, dataset_writers: dict) -> None:
    mirror = dataset_writers["fashion-mnist"](tmp_path / "mirror")
    source = _with_checksums(FashionMNIST, mirror)()
    root = source.fetch(tmp_path / "fashion", mirror=str(mirror), progress=False)
    splits = load_splits(DatasetSpec(name="fashion-mnist", root=str(root), val_fraction=0.0))
    assert len(splits.train_x) == 120 and splits.train_x.dtype == torch.uint8


def test_fetch_with_official_checksums_rejects_other_files(tmp_path: Path, dataset_writers: dict) -> None:
    mirror = dataset_writers["mnist"](tmp_path / "mirror")
    with pytest.raises(ChecksumMismatch, match=r"train-images-idx3-ubyte\.gz"):
        FashionMNIST().fetch(tmp_path / "fashion", mirror=str(mirror), progress=False)
    assert not (tmp_path / "fashion" / "train-images-idx3-ubyte.gz").exists()


def test_cli_lists_datasets(capsys: pytest.CaptureFixture[str]) -> None:
    assert data_cli(["list"]) == 0
    listed = capsys.readouterr().out
    assert "fashion-mnist" in listed and "cifar100" in listed


def test_cli_download_reports_a_checksum_mismatch(
    tmp_path: Path, dataset_writers: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    mirror = dataset_writers["mnist"](tmp_path / "mirror")
    code = data_cli(["download", "mnist", "--root", str(tmp_path / "mnist"), "--mirror", str(mirror)])
    assert code == 1
    assert "md5" in capsys.readouterr().err
