"""Obtaining an original model from a published checkpoint: download, sha256 check, official-format load.

Official checkpoints are pickled dicts; they are read with `torch.load(weights_only=True)`, which refuses
anything but tensors and plain containers.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import torch

from .downloads import fetch, file_digest
from .errors import DataError
from .models import FAMILIES, I2IModel

LOG = logging.getLogger(__name__)

#: published checkpoints the loaders understand (none is reachable from the offline build machines)
OFFICIAL_URLS = {
    "mae": [
        "https://dl.fbaipublicfiles.com/mae/visualize/mae_visualize_vit_base.pth",
        "https://dl.fbaipublicfiles.com/mae/visualize/mae_visualize_vit_large.pth",
        "https://dl.fbaipublicfiles.com/mae/visualize/mae_visualize_vit_large_ganloss.pth",
    ],
}


def sha256sum(path: str | Path) -> str:
    return file_digest(path, "sha256")


def fetch_checkpoint(url: str, sha256: str, dest: str | Path, timeout: float = 120.0) -> Path:
    """Download `url` to `dest` and verify it; a mismatch or failed transfer leaves no file behind."""

    def verify(path: Path) -> None:
        got = sha256sum(path)
        if got != sha256:
            raise DataError(f"checksum mismatch for checkpoint {url}: sha256 {got}, expected {sha256}")

    fetch(url, dest, verify, timeout)
    LOG.info("checkpoint %s verified (sha256 %s)", url, sha256)
    return Path(dest)


def load_official(family: str, path: str | Path, arch: dict, **context: Any) -> I2IModel:
    """Build a model of `family` from its official checkpoint file.

    The family's `from_official` receives the params arch keys (and `context`, e.g. image_size) that its
    signature names: what the weights cannot tell (head counts, head width, sampling steps)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or non-weights files
        raise DataError(f"{path} is not a loadable weights-only checkpoint: {exc}") from None
    if not isinstance(checkpoint, dict):
        raise DataError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    cls = FAMILIES[family]
    if not hasattr(cls, "from_official"):
        raise DataError(f"model family '{family}' has no official checkpoint loader")
    accepted = inspect.signature(cls.from_official).parameters
    given = {**arch, **context}
    return cls.from_official(checkpoint, **{k: v for k, v in given.items() if k in accepted and k != "checkpoint"})
