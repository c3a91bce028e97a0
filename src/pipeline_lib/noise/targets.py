"""The noise target of an l2n run, named in params (`methods.l2n.noise`) and prepared by the noise stage.

Gaussian kinds (identity, diagonal, lowrank) need Σ of the forget set, estimated once per dataset and kind;
uniform and batch_stats need no statistics, and their stage file records the identity Σ (the image shape)
so every kind is one cached DAG node with one file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .covariance import Covariance, estimate_covariance, load
from ..data.datasets import ImageCodec
from .sampling import NoiseSampler, normalised_pixel_bounds

LOG = logging.getLogger(__name__)

GAUSSIAN_KINDS = ("identity", "diagonal", "lowrank")
TARGET_KINDS = GAUSSIAN_KINDS + ("uniform", "batch_stats")
#: kinds whose stage file needs the forget images themselves (the others record only the image shape)
ESTIMATED_KINDS = ("diagonal", "lowrank")


def prepare(kind: str, forget_images: torch.Tensor, rank: int, out: str | Path) -> Covariance:
    """Estimate what `kind` needs from the forget set (normalised images) and save it to `out`."""
    if kind not in TARGET_KINDS:
        raise ValueError(f"unknown noise target '{kind}'; known: {', '.join(TARGET_KINDS)}")
    shape = tuple(forget_images.shape[1:])
    if kind in ("diagonal", "lowrank"):
        cov = estimate_covariance(forget_images, kind, k=rank if kind == "lowrank" else None)
    else:
        cov = Covariance.identity(shape)
    cov.save(out)
    LOG.info("noise target %s: %s", kind, cov.metadata())
    return cov


def sampler(kind: str, path: str | Path, codec: ImageCodec) -> NoiseSampler:
    """The sampler an unlearning run draws its noise from, at the images of `codec` (the family's size).

    The noise stage runs once per kind at data.image_size; Σ = I holds no statistics, so it is rebuilt at a
    family's own size (`model.<family>.image_size`) and draws exactly what it would have drawn there. An
    estimated Σ is for data.image_size only (params.checks refuses it for a family at another size)."""
    if kind in GAUSSIAN_KINDS:
        cov = load(path)
        if cov.kind != kind:
            raise ValueError(f"{path} holds a '{cov.kind}' covariance, but the run asks for '{kind}'")
        if cov.kind == "identity" and cov.shape[1:] != (codec.image_size, codec.image_size):
            cov = Covariance.identity((cov.shape[0], codec.image_size, codec.image_size))
        return NoiseSampler("gaussian", covariance=cov)
    if kind == "uniform":
        return NoiseSampler("uniform")
    if kind == "batch_stats":
        return NoiseSampler("batch_stats", bounds=normalised_pixel_bounds(codec.mean, codec.std))
    raise ValueError(f"unknown noise target '{kind}'; known: {', '.join(TARGET_KINDS)}")
