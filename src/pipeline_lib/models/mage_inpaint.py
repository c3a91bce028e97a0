"""MAGE inpainting as paper 1's code ran it (jpmorganchase/i2i_mage `testpaint.py`), every number a setting.

Why a second decoding loop: the published numbers come from this procedure, which differs from the
pipeline's own (`MaskedTokenModel.generate_tokens`) in ways that change outputs: the hole is filled with
the ImageNet mean before tokenising; the token mask is the hole's tokens plus a ring (for a box hole
[a, b) the rows/columns [a//s − ring, b//s + ring) of tokens of size s, so a hole ending on a token edge
takes the next token, one ending inside a token does not); the cosine schedule counts over ALL tokens
(skipping steps while cos(π r / 2) ≥ the masked fraction); the number re-masked is
max(1, min(unknown − 1, floor(L · cos(π r / 2)))) with `unknown` of the batch's FIRST sample; sampling is
categorical at temperature 1 (torch generator) and the confidence is log p + t·(1 − r)·Gumbel (numpy
`RandomState`, as the official `np.random.gumbel`), known tokens at p = 1e20; the re-masked set is every
token whose confidence is ≤ the mask_len-th smallest. The decoded image is pasted back through the hole
dilated by `paste_margin` px and blurred by PIL's GaussianBlur(`paste_blur`), mixed with the mean-filled
input, so visible pixels near the hole are blended too (unlike the pipeline's contract of returning them
unchanged). Images are RGB in [0, 1].
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

#: the ImageNet mean MAGE fills the hole with (RGB, [0, 1])
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: the official settings (testpaint.py; mask_margin 14 and blur radius 7 are for 256 px images)
OFFICIAL = {"steps": 20, "temperature": 6.0, "token_ring": 1, "paste_margin": 14, "paste_blur": 7.0,
            "fill": list(IMAGENET_MEAN)}
#: confidence given to already-known tokens (MAGE's _CONFIDENCE_OF_KNOWN_TOKENS)
KNOWN_CONFIDENCE = 1e20


def token_mask(hole: torch.Tensor, token_size: int, ring: int) -> torch.Tensor:
    """[B, L] token mask of a pixel hole [B, 1, H, W]: the official box formula, applied per axis."""
    m = hole.to(torch.float32)
    m = F.max_pool2d(F.pad(m, (1, 0, 1, 0)), 2, stride=1)  # the pixel just past the hole's far edge
    t = F.max_pool2d(m, token_size, token_size)  # tokens from a//s to b//s (b exclusive)
    if ring > 0:  # token j masked if any of j − (ring − 1) .. j + ring is
        t = F.max_pool2d(F.pad(t, (ring - 1, ring, ring - 1, ring)), 2 * ring, stride=1)
    return t.flatten(1) > 0


def paste_mask(hole: torch.Tensor, margin: int, blur: float) -> torch.Tensor:
    """[B, 1, H, W] float weights of the decoded image: hole dilated by `margin`, 8-bit, PIL-blurred."""
    m = F.max_pool2d(hole.to(torch.float32), 2 * margin + 1, stride=1, padding=margin) if margin else hole.float()
    out = []
    for sample in m[:, 0].cpu().numpy():
        img = Image.fromarray(np.uint8(sample * 255.0)).filter(ImageFilter.GaussianBlur(radius=blur))
        out.append(torch.from_numpy(np.float32(img) / 255.0))
    return torch.stack(out).unsqueeze(1).to(hole.device)


def filled(x: torch.Tensor, hole: torch.Tensor, fill: list[float]) -> torch.Tensor:
    if len(fill) != x.shape[1]:
        raise ValueError(f"params model.vqgan.sampling.fill has {len(fill)} value(s), the images have "
                         f"{x.shape[1]} channel(s)")
    value = torch.tensor(fill, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return torch.where(hole, value.expand_as(x), x)


def decode(model: Any, tokens: torch.Tensor, tmask: torch.Tensor, steps: int, temperature: float,
           generator: torch.Generator, rng: np.random.RandomState) -> torch.Tensor:
    """The official iterative decoding; returns the sampled token ids [B, L] of the last step run."""
    mask_id = model.mask_token_label
    total = tokens.shape[1]
    ids = tokens.masked_fill(tmask, mask_id)
    mask_rate = float(tmask.float().mean())
    sampled = None
    for step in range(steps):
        ratio = (step + 1) / steps
        mask_ratio = np.cos(math.pi / 2.0 * ratio)
        if mask_ratio >= mask_rate:
            continue
        unknown = ids == mask_id
        logits = model.logits(ids, unknown).float()
        probs = logits.softmax(dim=-1)
        draw = torch.multinomial(probs.reshape(-1, probs.shape[-1]).cpu(), 1, True, generator=generator)
        sampled = torch.where(unknown, draw.view(ids.shape).to(ids.device), ids)
        chosen = probs.gather(-1, sampled.unsqueeze(-1)).squeeze(-1)
        chosen = torch.where(unknown, chosen.double(), KNOWN_CONFIDENCE).float()
        mask_len = max(1.0, min(float(unknown[0].sum()) - 1, float(np.floor(total * mask_ratio))))
        gumbel = torch.Tensor(temperature * (1 - ratio) * rng.gumbel(size=tuple(chosen.shape))).to(chosen.device)
        confidence = torch.log(chosen) + gumbel
        cut = confidence.sort(dim=-1).values[:, int(mask_len) - 1:int(mask_len)]
        ids = torch.where(confidence <= cut, mask_id, sampled)
    if sampled is None:
        raise ValueError(f"no decoding step ran: the hole covers {mask_rate:.3f} of the tokens, below "
                         f"cos(π/2 · r) for every step r of {steps}")
    return sampled


def inpaint(model: Any, x: torch.Tensor, hole: torch.Tensor, settings: dict[str, Any],
            seed: int = 0) -> torch.Tensor:
    """testpaint.py's `inpaint_image_mage_multisteps` for a pixel hole; returns the pasted image in [0, 1]."""
    given = filled(x, hole, settings["fill"])
    tmask = token_mask(hole, model.mask_granularity, int(settings["token_ring"]))
    tokens = model.tokenizer.tokenize(given)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.RandomState(seed)
    ids = decode(model, tokens, tmask, int(settings["steps"]), float(settings["temperature"]), generator, rng)
    out = model.tokenizer.detokenize(ids).to(x.dtype)
    weight = paste_mask(hole, int(settings["paste_margin"]), float(settings["paste_blur"])).to(x.dtype)
    return out * weight + given * (1 - weight)
