"""MaskGIT's VQGAN tokenizer (the one MAGE ships as `vqgan_jax_strongaug.ckpt`), with its parameter names.

Why a second tokenizer: MAGE's published transformer predicts the codes of this exact network, so loading
MAGE's weights is useless without it. Its layout (MaskGIT's port of taming's VQGAN): conv_in, per level
`num_res_blocks` residual blocks (GroupNorm(32, eps 1e-6) + swish, bias-free 3×3 convolutions; when the
width changes, a bias-free 1×1 `nin_shortcut` is applied to the RESIDUAL branch and added to it, not to the
input), average-pool downsampling in the encoder, nearest ×2 + 3×3 conv upsampling in the decoder, two
middle residual blocks, no attention, no quant_conv; the encoder's convolutions are bias-free except its
1×1 conv_out. Quantisation is the plain Euclidean nearest code (no normalisation). Images are RGB in [0, 1].
It is loaded frozen from a checkpoint; training it here is not supported (the pipeline's small `VQTokenizer`
is what the Fashion-MNIST default pre-trains).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime.errors import DataError
from .base import load_state_exactly, official_shape, read_weights, save_weights

#: MaskGIT / MAGE's published tokenizer
OFFICIAL_ARCH = {"codebook_size": 1024, "code_dim": 256, "tokenizer_dim": 128, "ch_mult": [1, 1, 2, 2, 4],
                 "num_res_blocks": 2}


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResBlock(nn.Module):
    """norm1, swish, conv1, norm2, swish, conv2 (bias-free); a width change adds nin_shortcut(h) to h."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm2 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.nin_shortcut = nn.Conv2d(cout, cout, 1, bias=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(h) if self.nin_shortcut is not None else x) + h


def _mid(channels: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1, mid.block_2 = ResBlock(channels, channels), ResBlock(channels, channels)
    return mid


class Encoder(nn.Module):
    def __init__(self, in_chans: int, ch: int, ch_mult: list[int], num_res_blocks: int, code_dim: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_chans, ch, 3, padding=1, bias=False)
        self.down = nn.ModuleList()
        cin = ch
        for mult in ch_mult:
            level = nn.Module()
            level.block = nn.ModuleList()
            for _ in range(num_res_blocks):
                level.block.append(ResBlock(cin, ch * mult))
                cin = ch * mult
            self.down.append(level)
        self.mid = _mid(cin)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, code_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for i, level in enumerate(self.down):
            for block in level.block:
                h = block(h)
            if i < len(self.down) - 1:
                h = F.avg_pool2d(h, 2, 2)
        h = self.mid.block_2(self.mid.block_1(h))
        return self.conv_out(F.silu(self.norm_out(h)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    def __init__(self, out_chans: int, ch: int, ch_mult: list[int], num_res_blocks: int, code_dim: int):
        super().__init__()
        cin = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(code_dim, cin, 3, padding=1)
        self.mid = _mid(cin)
        levels: list[nn.Module] = []
        for i in reversed(range(len(ch_mult))):
            level = nn.Module()
            level.block = nn.ModuleList()
            for _ in range(num_res_blocks):
                level.block.append(ResBlock(cin, ch * ch_mult[i]))
                cin = ch * ch_mult[i]
            if i:
                level.upsample = Upsample(cin)
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)  # index = resolution level, as in the checkpoint
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, out_chans, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.block_1(self.conv_in(z)))
        for i in reversed(range(len(self.up))):
            for block in self.up[i].block:
                h = block(h)
            if i:
                h = self.up[i].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Quantize(nn.Module):
    def __init__(self, codebook_size: int, code_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, code_dim)


class MaskGITVQGAN(nn.Module):
    """image [B, C, H, W] in [0, 1] <-> tokens [B, (H/2^(levels−1))²]; the tokenizer API of `VQTokenizer`."""

    kind = "maskgit_vqgan"

    def __init__(self, image_size: int = 256, in_chans: int = 3, codebook_size: int = 1024, code_dim: int = 256,
                 tokenizer_dim: int = 128, ch_mult: list[int] | tuple[int, ...] = (1, 1, 2, 2, 4),
                 num_res_blocks: int = 2):
        super().__init__()
        ch_mult = [int(m) for m in ch_mult]
        self.downsample = 2 ** (len(ch_mult) - 1)
        if image_size % self.downsample:
            raise ValueError(f"image size {image_size} is not divisible by the tokenizer's {self.downsample}x "
                             "downsampling")
        if tokenizer_dim % 32:
            raise ValueError(f"tokenizer_dim {tokenizer_dim} must be a multiple of 32 (GroupNorm(32))")
        self.image_size, self.in_chans, self.codebook_size = image_size, in_chans, codebook_size
        self.grid = image_size // self.downsample
        self._arch = dict(codebook_size=codebook_size, code_dim=code_dim, tokenizer_dim=tokenizer_dim,
                          ch_mult=ch_mult, num_res_blocks=num_res_blocks)
        self.encoder = Encoder(in_chans, tokenizer_dim, ch_mult, num_res_blocks, code_dim)
        self.decoder = Decoder(in_chans, tokenizer_dim, ch_mult, num_res_blocks, code_dim)
        self.quantize = Quantize(codebook_size, code_dim)

    def arch(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._arch.items()}

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    def codes(self) -> torch.Tensor:
        return self.quantize.embedding.weight

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """LongTensor [B, L] (row-major) of nearest codes, ‖z‖² + ‖e‖² − 2 z·e as MaskGIT computes it."""
        with torch.no_grad():
            z = self.encoder(x).flatten(2).transpose(1, 2)
            e = self.codes()
            dist = z.pow(2).sum(-1, keepdim=True) + e.pow(2).sum(-1) - 2 * z @ e.t()
            return dist.argmin(dim=-1)

    def _decode(self, zq: torch.Tensor) -> torch.Tensor:
        b, _, c = zq.shape
        return self.decoder(zq.transpose(1, 2).reshape(b, c, self.grid, self.grid))

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._decode(self.codes()[tokens])

    def detokenize_weights(self, weights: torch.Tensor) -> torch.Tensor:
        """Decode [B, L, K] weights over the codebook (one-hot rows reproduce `detokenize`); differentiable."""
        return self._decode(weights.to(self.codes().dtype) @ self.codes())

    def training_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError("MaskGIT's VQGAN is loaded from its checkpoint, not trained here "
                                  "(its GAN and perceptual losses are not part of the pipeline)")

    def save(self, path: str | Path, meta: dict[str, Any] | None = None) -> None:
        save_weights(self, path, {"kind": self.kind, "image_size": self.image_size, "in_chans": self.in_chans,
                                  "arch": self.arch(), "meta": meta or {}})

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "MaskGITVQGAN":
        state, sidecar = read_weights(path, map_location)
        if sidecar.get("kind") != cls.kind:
            raise DataError(f"{path} is not a MaskGIT VQGAN tokenizer (sidecar kind {sidecar.get('kind')!r})")
        tok = cls(image_size=sidecar["image_size"], in_chans=sidecar["in_chans"], **sidecar["arch"])
        tok.load_state_dict(state)
        return tok.to(map_location)

    # --- official checkpoint -------------------------------------------------------------------------
    @classmethod
    def from_official(cls, checkpoint: dict[str, Any], image_size: int | None = None,
                      grid: int | None = None) -> "MaskGITVQGAN":
        """From `vqgan_jax_strongaug.ckpt` (keys encoder.*, decoder.*, quantize.embedding.weight, possibly under
        'state_dict') or a MAGE checkpoint's `vqgan.*` (possibly under 'model'); architecture from shapes.
        Image size: `image_size`, else `grid` tokens a side (default 16, MAGE's 256 px) × the downsampling."""
        state = checkpoint
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
        prefix = ""
        if any(k.startswith("vqgan.") for k in state):
            prefix = "vqgan."
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        what = "MaskGIT VQGAN checkpoint"
        for key in ("quantize.embedding.weight", "encoder.conv_in.weight", "encoder.conv_out.weight"):
            if key not in state:
                raise DataError(f"not a MaskGIT VQGAN checkpoint: missing '{key}' (optionally under 'vqgan.')")
        shaped = {prefix + k: v for k, v in state.items()}  # shapes are read under the file's own names
        codebook_size, code_dim = official_shape(shaped, prefix + "quantize.embedding.weight", 2, what)
        ch, in_chans = official_shape(shaped, prefix + "encoder.conv_in.weight", 4, what)[:2]
        levels = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.down."))
        blocks = 1 + max(int(k.split(".")[4]) for k in state if k.startswith("encoder.down.0.block."))
        mults = []
        for level in range(levels):
            key = f"encoder.down.{level}.block.0.conv1.weight"
            width = official_shape(shaped, prefix + key, 4, what)[0]
            if width % ch:
                raise DataError(f"{what}: '{prefix}{key}' has shape {list(state[key].shape)}: {width} channels are not "
                                f"a multiple of the base width {ch} ('{prefix}encoder.conv_in.weight')")
            mults.append(width // ch)
        if any(".attn" in k for k in state):
            raise DataError("MaskGIT VQGAN checkpoint has attention blocks; the published tokenizer has none")
        if image_size is None:
            image_size = (grid or 16) * 2 ** (levels - 1)
        try:
            model = cls(image_size=image_size, in_chans=in_chans, codebook_size=codebook_size, code_dim=code_dim,
                        tokenizer_dim=ch, ch_mult=mults, num_res_blocks=blocks)
        except ValueError as exc:
            raise DataError(f"{what} ('{prefix}encoder.conv_in.weight' {list(state['encoder.conv_in.weight'].shape)}): "
                            f"{exc}") from None
        names = {k: prefix + k for k in {*model.state_dict(), *state}} if prefix else None
        load_state_exactly(model, state, what, names)
        return model.eval()
