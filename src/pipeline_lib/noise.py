"""Noise targets n for the forget set, drawn in the normalised pixel space the models see.

Paper 1 uses n ~ N(0, Σ) with Σ = I (normalised images have unit per-pixel variance and near-zero
covariances) and ablates uniform U[-1, 1] noise.
"""

from __future__ import annotations

import torch

KINDS = ("gaussian", "uniform")


def sample_noise(kind: str, shape: torch.Size | tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    if kind == "gaussian":
        return torch.randn(shape, generator=g)
    if kind == "uniform":
        return torch.rand(shape, generator=g) * 2.0 - 1.0
    raise ValueError(f"unknown noise kind '{kind}'; known: {', '.join(KINDS)}")
