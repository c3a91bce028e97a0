"""Which weights file each standard metric network reads, and how it got there.

`metrics.<kind>` (kind: inception, clip, places) names its weights one of two ways:

- ``{url, sha256}``: the `weights` stage downloads the file to `data/weights/<kind>/<file name>` (atomic,
  verified, a DVC output cached like any other), and every metrics job takes that file as an input, so a
  machine that is online obtains the standard networks by itself and every run reads the same bytes;
- ``{weights: path}``: a file already on disk, never downloaded (an offline machine, or a copy fetched by
  hand). With a `sha256` key it is verified in place by each metrics job; while it is absent the pipeline's
  own extractor stands in and the metrics file says so (the default params.yaml relies on this).

`sha256: null` is refused with the file's actual hash in the message, for the user to pin (as for the
official checkpoints). Malformed specs are ParamsErrors naming the key, raised before any job starts (`params.weights`).
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from ..runtime.errors import DataError, ParamsError

LOG = logging.getLogger(__name__)

KINDS = ("inception", "clip", "places")
ROOT = "data/weights"


def key(kind: str) -> str:
    return f"metrics.{kind}"


def download_name(url: str) -> str:
    return PurePosixPath(urlparse(url).path).name


def download_file(kind: str, spec: dict[str, Any]) -> str:
    """Where the weights stage puts a downloaded file (the url's own file name, so the source stays visible)."""
    return f"{ROOT}/{kind}/{download_name(spec['url'])}"


def fetch(kind: str, spec: dict[str, Any] | None, out: str) -> None:
    """The weights stage: download `metrics.<kind>.url` (`spec`) to `out`, verified against its pinned sha256."""
    from ..runtime.downloads import fetch_verified

    if spec is None or "url" not in spec:
        raise ParamsError(f"params key '{key(kind)}' has no url to download")
    fetch_verified(spec["url"], spec["sha256"], out, key(kind))
    LOG.info("%s weights %s verified (sha256 %s) at %s", kind, spec["url"], spec["sha256"], out)


def resolve(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """What a metrics job records about one extractor's weights: file, and sha256 and url when known.

    A downloaded file was verified by the weights stage (an input of the job); it must be present. A local
    path with a `sha256` key is verified here when present; an absent local file is left to
    `standard_extractors.available`, which falls back to the pipeline's extractor with a note."""
    from ..runtime.downloads import verify_sha256
    from .standard_extractors import inception_weights

    if "url" in spec:
        path = download_file(kind, spec)
        if not Path(path).is_file():
            raise DataError(f"params {key(kind)}.url: {path} is missing: run the weights stage (python -m "
                            f"pipeline_lib weights --params params.yaml --kind {kind} --out {path})")
        return {"file": path, "sha256": spec["sha256"], "url": spec["url"]}
    if spec["weights"] is None:
        return {"file": None}
    path = inception_weights(spec["weights"]) if kind == "inception" else Path(spec["weights"])
    entry: dict[str, Any] = {"file": str(path)}
    if "sha256" in spec and path.is_file():
        entry["sha256"] = verify_sha256(path, spec["sha256"], key(kind))
    return entry
