"""Unlearning methods: each is a loss over balanced retain/forget batches, trained by `trainer.fit`."""

from __future__ import annotations

from .base import UnlearningMethod, distance
from .l2n import L2N

METHODS: dict[str, type[UnlearningMethod]] = {"l2n": L2N}


def build_method(name: str, model, teacher, alpha: float, norm: str) -> UnlearningMethod:
    if name not in METHODS:
        raise KeyError(f"unknown unlearning method '{name}'; known: {', '.join(METHODS)}")
    return METHODS[name](model, teacher, alpha=alpha, norm=norm)


__all__ = ["METHODS", "L2N", "UnlearningMethod", "build_method", "distance"]
