"""The runtime as params state it: the numerics each stage asks of torch's backends, a family's GPU count."""

from __future__ import annotations

from typing import Any

from ..runtime.backends import DEFAULTS


def numerics(params: dict[str, Any]) -> dict[str, bool]:
    """`runtime.amp`, `channels_last`, `tf32`, `cudnn_benchmark` as `backends.configure` keywords (unset: its
    defaults, which keep CPU results and fp32 CUDA numerics exact)."""
    return {k: bool(v) for k, v in params["runtime"].items() if k in DEFAULTS}


def gpus(params: dict[str, Any], family: str | None) -> int:
    """How many GPUs `family`'s training and sampling stages spread over (`model.<family>.gpus`); one when the
    stage names no family."""
    return params["model"].get(family, {}).get("gpus", 1) if family is not None else 1
