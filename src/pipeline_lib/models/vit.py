"""Transformer pieces with the parameter names of timm / facebookresearch/mae, so official weights load as-is.

The blocks are timm's own (as in the official MAE and MAGE code); only the patch embedding, the init and the
fixed sin-cos position table are written here."""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from torch import nn


def vit_block(dim: int, num_heads: int, mlp_ratio: float) -> nn.Module:
    """timm's ViT block as facebookresearch/mae and MAGE build theirs (qkv bias, LayerNorm eps 1e-6), so the
    official parameter names (norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2) come from the same library."""
    from timm.models.vision_transformer import Block as TimmBlock  # timm (and torchvision) load with a ViT only

    if dim % num_heads:
        raise ValueError(f"embedding dim {dim} is not divisible by {num_heads} heads")
    return TimmBlock(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def init_linear_and_norm(modules) -> None:
    """Xavier-uniform linear layers with zero bias and unit LayerNorms, as MAE and MAGE initialise them."""
    for m in modules:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def sincos_pos_embed(dim: int, grid: int, cls_token: bool = True) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding [1, grid*grid (+1), dim], as in MAE."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))
    ys, xs = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")

    def axis(pos):
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    emb = np.concatenate([axis(xs), axis(ys)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, dim]), emb], axis=0)
    return torch.from_numpy(emb).float().unsqueeze(0)
