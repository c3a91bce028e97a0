"""Fetching files from the outside world: checksummed, atomic, and with errors that name the URL."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import urllib.request
from pathlib import Path
from typing import Callable

from .atomic import atomic_path
from .errors import DataError


def file_digest(path: str | Path, algorithm: str, decompress: bool = False) -> str:
    """Hex digest of a file (of its gunzipped payload with `decompress`), read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with (gzip.open(path, "rb") if decompress else open(path, "rb")) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, dest: str | Path, verify: Callable[[Path], object] | None = None, timeout: float = 120.0) -> Path:
    """Download `url` to `dest`; `verify` (raising DataError) sees the file before it is moved into place,
    so a failed transfer or a checksum mismatch leaves nothing at `dest`."""
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as exc:
            raise DataError(f"download from {url} failed: {exc}") from None
        if verify is not None:
            verify(tmp)
    return dest


def verify_sha256(path: str | Path, expected: str | None, key: str | None = None, source: str | None = None) -> str:
    """The one rule for every pinned file (checkpoints, metric weights): its sha256 must equal params
    `key`.sha256. ``sha256: null`` is refused with the actual hash in the message, so the user pins what they
    checked rather than trusting whatever arrived. `source` (a URL) names the file in messages; returns the hash."""
    got = file_digest(path, "sha256")
    where = source or str(path)
    if expected is None:
        raise DataError(f"params {key}.sha256 is null: {where} has sha256 {got}; pin it there to use the file")
    if got != expected:
        named = f" (params {key}.sha256)" if key else ""
        raise DataError(f"checksum mismatch for {where}: sha256 {got}, expected {expected}{named}")
    return got


def fetch_verified(url: str, expected: str | None, dest: str | Path, key: str | None = None,
                   timeout: float = 120.0) -> Path:
    """Download `url` to `dest` atomically and verify it (verify_sha256): a failed transfer, a mismatch or an
    unpinned hash leaves nothing at `dest`."""
    return fetch(url, dest, lambda tmp: verify_sha256(tmp, expected, key, url), timeout)
