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


def fetch(url: str, dest: str | Path, verify: Callable[[Path], None] | None = None, timeout: float = 120.0) -> Path:
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
