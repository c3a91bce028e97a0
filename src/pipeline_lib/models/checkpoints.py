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

from ..runtime.downloads import fetch_verified, file_digest, verify_sha256
from ..runtime.errors import DataError
from . import FAMILIES, I2IModel

LOG = logging.getLogger(__name__)

#: published checkpoints the loaders understand (none is reachable from the offline build machines)
OFFICIAL_URLS = {
    "mae": [
        "https://dl.fbaipublicfiles.com/mae/visualize/mae_visualize_vit_base.pth",
        "https://dl.fbaipublicfiles.com/mae/visualize/mae_visualize_vit_large.pth",
        "https://dl.fbaipublicfiles.com/mae/visualize/mae_visualize_vit_large_ganloss.pth",
    ],
}
#: Google-Drive file ids from the papers' code (fetched by hand, then named as {path, sha256}; docs/models.md)
OFFICIAL_DRIVE_IDS = {
    "mage-vitb-1600.pth": "1Q6tbt3vF0bSrv5sPrjpFu8ksG3vTsVX2",
    "vqgan_jax_strongaug.ckpt": "13S_unB87n6KKuuMdyMnyExW0G1kplTbP",
    "16_Network.pth": "1lxkcyMc6-VUDvNnOg3krryLoGMpBChuM",
}


def sha256sum(path: str | Path) -> str:
    return file_digest(path, "sha256")


def fetch_checkpoint(url: str, sha256: str | None, dest: str | Path, timeout: float = 120.0,
                     key: str | None = None) -> Path:
    """Download `url` to `dest` and verify it against params `key`.sha256; a mismatch, an unpinned hash or a
    failed transfer leaves no file behind."""
    fetch_verified(url, sha256, dest, key, timeout)
    LOG.info("checkpoint %s verified (sha256 %s)", url, sha256)
    return Path(dest)


def obtain_checkpoint(spec: dict[str, Any], dest: str | Path, key: str, timeout: float = 120.0) -> tuple[Path, bool]:
    """The verified checkpoint file params `key` names: ``{url, sha256}`` (downloaded to `dest`) or
    ``{path, sha256}`` (used in place). Returns (file, downloaded). None of the official files has a published
    hash, so ``sha256: null`` is refused with the file's actual sha256 in the message, for the user to pin."""
    expected = spec.get("sha256")
    if "path" in spec:
        path = Path(spec["path"])
        if not path.is_file():
            raise DataError(f"params {key}.path: no file {path}")
        verify_sha256(path, expected, key)
        return path, False
    return fetch_checkpoint(spec["url"], expected, dest, timeout, key), True


def load_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """A pickled checkpoint dict read with `torch.load(weights_only=True)` (tensors and containers only)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or non-weights files
        raise DataError(f"{path} is not a loadable weights-only checkpoint: {exc}") from None
    if not isinstance(checkpoint, dict):
        raise DataError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint


def load_official(family: str, path: str | Path, arch: dict, **context: Any) -> I2IModel:
    """Build a model of `family` from its official checkpoint file.

    The family's `from_official` receives the params arch keys (and `context`, e.g. image_size) that its
    signature names: what the weights cannot tell (head counts, head width, sampling steps)."""
    checkpoint = load_checkpoint_file(path)
    cls = FAMILIES[family]
    if not hasattr(cls, "from_official"):
        raise DataError(f"model family '{family}' has no official checkpoint loader")
    accepted = inspect.signature(cls.from_official).parameters
    given = {**arch, **context}
    return cls.from_official(checkpoint, **{k: v for k, v in given.items() if k in accepted and k != "checkpoint"})
