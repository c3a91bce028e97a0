"""The standard metric networks' weights as params name them (`metrics.<kind>`): which are configured, which
the weights stage downloads, and the checks the schema cannot express. The files and their verification are
`evaluation.metric_weights`."""

from __future__ import annotations

from typing import Any

from ..evaluation.metric_weights import KINDS, download_file, download_name, key
from ..runtime.errors import ParamsError


def specs(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The configured standard extractors, in KINDS order."""
    return {kind: params["metrics"][kind] for kind in KINDS if params["metrics"].get(kind) is not None}


def check(params: dict[str, Any]) -> None:
    """What the schema cannot say: exactly one of `url` and `weights`, and a url's `sha256` key present."""
    for kind, spec in specs(params).items():
        has_url, has_path = "url" in spec, "weights" in spec
        if has_url == has_path:
            raise ParamsError(f"params key '{key(kind)}' needs either 'url' (downloaded by the weights stage) "
                              "or 'weights' (a local path, never downloaded)" + (", not both" if has_url else ""))
        if has_url and "sha256" not in spec:
            raise ParamsError(f"params key '{key(kind)}' has a url but no 'sha256': pin the file's hash (or give "
                              "sha256: null once and the weights stage prints it)")
        if has_url and not download_name(spec["url"]):
            raise ParamsError(f"params key '{key(kind)}.url' = {spec['url']!r} names no file")


def downloaded(params: dict[str, Any]) -> dict[str, str]:
    """kind -> file, for the kinds the weights stage fetches: the stages both engines plan, and the inputs
    of every metrics job."""
    return {kind: download_file(kind, spec) for kind, spec in specs(params).items() if "url" in spec}
