"""Downloading dataset files: checksums, a progress bar, atomic rename.

`download` accepts any URL urllib opens (https, http, file), so a mirror can be a web server or a
local directory. A file lands under its final name only after its checksum matched.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from nasloop.data.errors import ChecksumMismatch, DownloadError

_CHUNK = 1 << 20


def _algorithm(checksum: str) -> tuple[str, str]:
    """(algorithm, hex digest) of `checksum`: "md5:..." / "sha256:..." or a bare digest recognised by length."""
    if ":" in checksum:
        algorithm, digest = checksum.split(":", 1)
        return algorithm.lower(), digest.lower()
    by_length = {32: "md5", 40: "sha1", 64: "sha256"}
    if len(checksum) not in by_length:
        raise ValueError(f"cannot tell the algorithm of checksum {checksum!r}; write it as 'sha256:<hex>'")
    return by_length[len(checksum)], checksum.lower()


def file_checksum(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's content."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: Path, checksum: str) -> None:
    """Raise `ChecksumMismatch` (naming both digests) unless `path` has `checksum`."""
    algorithm, expected = _algorithm(checksum)
    actual = file_checksum(path, algorithm)
    if actual != expected:
        raise ChecksumMismatch(
            f"{path.name}: {algorithm} is {actual}, expected {expected}. The file is corrupt, truncated or "
            "not the published one; it was not kept."
        )


def download(url: str, dest: Path, checksum: str | None, *, progress: bool = True, timeout_s: float = 60.0) -> Path:
    """Download `url` to `dest` and return `dest`.

    The body is written to a temporary file next to `dest`, checked against `checksum` (md5 or sha256
    hex; None skips the check), then renamed into place, so `dest` is either absent or complete and
    correct. Raises `DownloadError` on network or HTTP errors and `ChecksumMismatch` on a wrong file.
    No resume: an interrupted download starts over.
    """
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    temporary_path = Path(temporary)
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout_s) as response:
                    total = int(response.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                        while chunk := response.read(_CHUNK):
                            out.write(chunk)
                            bar.update(len(chunk))
            except (urllib.error.URLError, OSError) as error:
                raise DownloadError(f"downloading {url} failed: {error}") from error
        if total is not None and temporary_path.stat().st_size != total:
            raise DownloadError(f"{url}: got {temporary_path.stat().st_size} of {total} bytes")
        if checksum is not None:
            verify_checksum(temporary_path, checksum)
        os.replace(temporary_path, dest)
    finally:
        temporary_path.unlink(missing_ok=True)
    return dest


def extract_tarball(archive: Path, dest: Path) -> None:
    """Extract `archive` into `dest`, refusing members that would land outside it."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        tar.extractall(dest, filter="data")
