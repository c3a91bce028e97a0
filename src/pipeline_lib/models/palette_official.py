"""Palette's published U-Net (guided-diffusion layout) rewritten as diffusers `UNet2DModel` weights.

Palette's ``16_Network.pth`` is a bare state dict: the U-Net under ``denoise_fn.`` (``cond_embed``,
``input_blocks``, ``middle_block``, ``output_blocks``, ``out``) and the noise-schedule buffers of its
``Network`` (``gammas`` = ᾱ, posterior coefficients). Every part has a diffusers counterpart once the U-Net
is built with residual up/down-sampling blocks, scale-shift norm and middle-block attention
(`unet_config`); this module only renames tensors, splits the legacy fused qkv per head, infers the
architecture from shapes and tells which β schedule the buffers carry. No network code lives here.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from ..runtime.errors import DataError

#: the schedule buffers of Palette's `Network` (all [T]); the sampler reads them as stored
SCHEDULE_BUFFERS = ("gammas", "sqrt_recip_gammas", "sqrt_recipm1_gammas", "posterior_log_variance_clipped",
                    "posterior_mean_coef1", "posterior_mean_coef2")

_RESBLOCK = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
             "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}


def unet_config(in_chans: int, block_out_channels: list[int], layers_per_block: int, attention_head_dim: int,
                dropout: float, image_size: int) -> dict[str, Any]:
    """UNet2DModel keywords that reproduce guided-diffusion's U-Net as Palette configures it."""
    n = len(block_out_channels)
    return dict(sample_size=image_size, in_channels=2 * in_chans, out_channels=in_chans,
                block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
                down_block_types=("ResnetDownsampleBlock2D",) * n, up_block_types=("ResnetUpsampleBlock2D",) * n,
                norm_num_groups=32, norm_eps=1e-5, attention_head_dim=attention_head_dim, attn_norm_num_groups=32,
                resnet_time_scale_shift="scale_shift", flip_sin_to_cos=True, freq_shift=0, dropout=dropout,
                add_attention=True)


def split_state(checkpoint: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(U-Net tensors without the ``denoise_fn.`` prefix, schedule buffers) of a Palette checkpoint."""
    state = checkpoint
    for key in ("state_dict", "netG"):
        if isinstance(state.get(key), dict):
            state = state[key]
    unet = {k.split("denoise_fn.", 1)[1]: v for k, v in state.items() if k.startswith("denoise_fn.")}
    if not unet:
        unet = {k: v for k, v in state.items() if k.split(".", 1)[0] in
                ("cond_embed", "input_blocks", "middle_block", "output_blocks", "out")}
    if "input_blocks.0.0.weight" not in unet:
        raise DataError("not a Palette checkpoint: no 'denoise_fn.input_blocks.0.0.weight' (expected the "
                        "guided-diffusion U-Net keys cond_embed., input_blocks., middle_block., output_blocks., out. "
                        "under 'denoise_fn.')")
    missing = [k for k in SCHEDULE_BUFFERS if k not in state]
    if missing:
        raise DataError(f"Palette checkpoint lacks the schedule buffer(s) {', '.join(missing)}: the sampler needs "
                        "Network's own gammas and posterior coefficients")
    return unet, {k: state[k].to(torch.float32) for k in SCHEDULE_BUFFERS}


def _need(unet: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in unet:
        raise DataError(f"Palette checkpoint lacks 'denoise_fn.{key}'")
    return unet[key]


def infer_arch(unet: dict[str, torch.Tensor]) -> dict[str, Any]:
    """in_chans, block_out_channels and layers_per_block from tensor shapes (head width is not in them)."""
    if any(re.match(r"(input|output)_blocks\.\d+\.\d+\.qkv\.", k) for k in unet):
        raise DataError("Palette checkpoint has attention inside the U-Net levels (attn_res reached); only the "
                        "published layout with attention in the middle block alone is supported")
    inner = _need(unet, "cond_embed.0.weight").shape[1]
    in_channel = _need(unet, "input_blocks.0.0.weight").shape[1]
    n_out = 1 + max(int(k.split(".")[1]) for k in unet if k.startswith("output_blocks."))
    n_up = len({k.split(".")[1] for k in unet if re.match(r"output_blocks\.\d+\.1\.in_layers\.", k)})
    levels = n_up + 1
    if n_out % levels:
        raise DataError(f"Palette checkpoint: {n_out} output blocks do not split into {levels} levels")
    res_blocks = n_out // levels - 1
    channels = [int(_need(unet, f"input_blocks.{1 + level * (res_blocks + 1)}.0.out_layers.3.weight").shape[0])
                for level in range(levels)]
    if in_channel % 2:
        raise DataError(f"Palette checkpoint: input_blocks.0.0 takes {in_channel} channels, expected an even "
                        "count (condition then y_t)")
    if channels[0] != inner:
        raise DataError(f"Palette checkpoint: first level has {channels[0]} channels, cond_embed expects {inner}")
    return {"in_chans": in_channel // 2, "block_out_channels": channels, "layers_per_block": res_blocks}


def _resblock(unet: dict, src: str, dst: str, out: dict) -> None:
    for old, new in _RESBLOCK.items():
        for leaf in ("weight", "bias"):
            key = f"{src}.{old}.{leaf}"
            if key in unet:
                out[f"{dst}.{new}.{leaf}"] = unet.pop(key)


def _attention(unet: dict, src: str, dst: str, head_dim: int, out: dict) -> None:
    """Legacy qkv: output channels ordered (head, q/k/v, channel); diffusers wants per-head q, k, v blocks."""
    w, b = unet.pop(f"{src}.qkv.weight"), unet.pop(f"{src}.qkv.bias")
    c = w.shape[1]
    if c % head_dim:
        raise DataError(f"Palette checkpoint: {src} has {c} channels, not divisible by the head width {head_dim} "
                        "(params model.diffusion.arch.attention_head_dim)")
    heads = c // head_dim
    w = w.reshape(heads, 3, head_dim, c)
    b = b.reshape(heads, 3, head_dim)
    for i, name in enumerate(("to_q", "to_k", "to_v")):
        out[f"{dst}.{name}.weight"] = w[:, i].reshape(c, c).contiguous()
        out[f"{dst}.{name}.bias"] = b[:, i].reshape(c).contiguous()
    out[f"{dst}.to_out.0.weight"] = unet.pop(f"{src}.proj_out.weight").reshape(c, c)
    out[f"{dst}.to_out.0.bias"] = unet.pop(f"{src}.proj_out.bias")
    out[f"{dst}.group_norm.weight"] = unet.pop(f"{src}.norm.weight")
    out[f"{dst}.group_norm.bias"] = unet.pop(f"{src}.norm.bias")


def convert(unet: dict[str, torch.Tensor], levels: int, res_blocks: int, head_dim: int) -> dict[str, torch.Tensor]:
    """guided-diffusion names -> UNet2DModel names; a tensor left over is an error naming it."""
    unet = dict(unet)
    out: dict[str, torch.Tensor] = {}
    plain = {"cond_embed.0": "time_embedding.linear_1", "cond_embed.2": "time_embedding.linear_2",
             "input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out"}
    for old, new in plain.items():
        for leaf in ("weight", "bias"):
            out[f"{new}.{leaf}"] = _need(unet, f"{old}.{leaf}")
            del unet[f"{old}.{leaf}"]
    for level in range(levels):
        base = 1 + level * (res_blocks + 1)
        for i in range(res_blocks):
            _resblock(unet, f"input_blocks.{base + i}.0", f"down_blocks.{level}.resnets.{i}", out)
        if level < levels - 1:
            _resblock(unet, f"input_blocks.{base + res_blocks}.0", f"down_blocks.{level}.downsamplers.0", out)
    _resblock(unet, "middle_block.0", "mid_block.resnets.0", out)
    try:
        _attention(unet, "middle_block.1", "mid_block.attentions.0", head_dim, out)
    except KeyError as exc:
        raise DataError(f"Palette checkpoint lacks 'denoise_fn.{exc.args[0]}'") from None
    _resblock(unet, "middle_block.2", "mid_block.resnets.1", out)
    for j in range(levels):
        for i in range(res_blocks + 1):
            block = j * (res_blocks + 1) + i
            _resblock(unet, f"output_blocks.{block}.0", f"up_blocks.{j}.resnets.{i}", out)
            if j < levels - 1 and i == res_blocks:
                _resblock(unet, f"output_blocks.{block}.1", f"up_blocks.{j}.upsamplers.0", out)
    if unet:
        raise DataError(f"Palette checkpoint has tensor(s) the conversion does not place: "
                        f"{', '.join('denoise_fn.' + k for k in sorted(unet)[:8])}")
    return out


# --- noise schedules ---------------------------------------------------------------------------------------

def beta_schedule(kind: str, timesteps: int, start: float, end: float) -> np.ndarray:
    """β_t in float64, as Palette's make_beta_schedule computes the linear and quadratic ones."""
    if kind == "linear":
        return np.linspace(start, end, timesteps, dtype=np.float64)
    if kind == "quad":
        return np.linspace(start**0.5, end**0.5, timesteps, dtype=np.float64) ** 2
    raise ValueError(f"unknown beta_schedule '{kind}' (known: linear, quad)")


def schedule_buffers(kind: str, timesteps: int, start: float, end: float) -> dict[str, torch.Tensor]:
    """Palette's Network buffers for a β schedule: computed in float64, stored in float32."""
    betas = beta_schedule(kind, timesteps, start, end)
    alphas = 1.0 - betas
    gammas = np.cumprod(alphas)
    prev = np.append(1.0, gammas[:-1])
    var = betas * (1.0 - prev) / (1.0 - gammas)
    values = {"gammas": gammas, "sqrt_recip_gammas": np.sqrt(1.0 / gammas),
              "sqrt_recipm1_gammas": np.sqrt(1.0 / gammas - 1),
              "posterior_log_variance_clipped": np.log(np.maximum(var, 1e-20)),
              "posterior_mean_coef1": betas * np.sqrt(prev) / (1.0 - gammas),
              "posterior_mean_coef2": (1.0 - prev) * np.sqrt(alphas) / (1.0 - gammas)}
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()}


def detect_schedule(gammas: torch.Tensor) -> dict[str, Any]:
    """Which β schedule produced `gammas` (ᾱ_t): linear or quad with start/end rounded to 3 significant digits
    and checked by rebuilding ᾱ; {"beta_schedule": "unrecognised"} when neither matches."""
    g = gammas.to(torch.float64).numpy()
    timesteps = len(g)
    betas = 1.0 - g / np.append(1.0, g[:-1])
    steps = np.arange(timesteps, dtype=np.float64)
    for kind in ("linear", "quad"):
        # a least-squares line through β (or √β) averages out the float32 rounding of the stored ᾱ
        fit = np.polyfit(steps, betas if kind == "linear" else np.sqrt(np.clip(betas, 0, None)), 1)
        ends = np.polyval(fit, [0, timesteps - 1]) ** (1 if kind == "linear" else 2)
        start, end = (float(f"{v:.3g}") for v in ends)
        rebuilt = np.cumprod(1.0 - beta_schedule(kind, timesteps, start, end)).astype(np.float32)
        if np.allclose(rebuilt, g, rtol=1e-5, atol=1e-7):
            return {"beta_schedule": kind, "beta_start": start, "beta_end": end, "train_timesteps": timesteps}
    return {"beta_schedule": "unrecognised", "train_timesteps": timesteps, "final_gamma": float(g[-1])}
