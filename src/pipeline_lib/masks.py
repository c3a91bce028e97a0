"""I2I tasks as pixel masks: True marks a pixel the model must fill in.

Masks are drawn on the CPU from an explicit generator so every run, on any device, sees the same holes.
Random masks hide whole patches of the model's grid, with the same count in every sample of a batch
(ViT encoders drop hidden tokens, which needs equal lengths).
"""

from __future__ import annotations

import torch


def center_mask(batch: int, image_size: int, size: int) -> torch.Tensor:
    mask = torch.zeros(batch, 1, image_size, image_size, dtype=torch.bool)
    start = (image_size - size) // 2
    mask[:, :, start : start + size, start : start + size] = True
    return mask


def random_patch_mask(batch: int, image_size: int, patch: int, ratio: float, g: torch.Generator) -> torch.Tensor:
    grid = image_size // patch
    n = grid * grid
    hidden = int(round(n * ratio))
    order = torch.rand(batch, n, generator=g).argsort(dim=1)
    patch_mask = torch.zeros(batch, n, dtype=torch.bool)
    patch_mask.scatter_(1, order[:, :hidden], True)
    patch_mask = patch_mask.view(batch, 1, grid, grid)
    return patch_mask.repeat_interleave(patch, 2).repeat_interleave(patch, 3)


def sample_mask(spec: dict, batch: int, image_size: int, patch: int, g: torch.Generator) -> torch.Tensor:
    """One batch of masks from a params mask spec; `mixed` picks centre or random per batch."""
    kind = spec["kind"]
    if kind == "mixed":
        kind = "center" if torch.rand(1, generator=g).item() < 0.5 else "random"
    if kind == "center":
        return center_mask(batch, image_size, spec["size"])
    if kind == "random":
        return random_patch_mask(batch, image_size, patch, spec["ratio"], g)
    raise ValueError(f"unknown mask kind '{kind}'")


def apply_mask(x: torch.Tensor, mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """T(x): the partial input, hidden pixels set to `fill` (0 = the mean in normalised space)."""
    return x.masked_fill(mask, fill)
