"""Palette's published U-Net (guided-diffusion layout) rewritten as diffusers `UNet2DModel` weights.

Palette's ``16_Network.pth`` is a bare state dict: the U-Net under ``denoise_fn.`` (``cond_embed``,
``input_blocks``, ``middle_block``, ``output_blocks``, ``out``) and the noise-schedule buffers of its
``Network`` (``gammas`` = ᾱ, posterior coefficients). Every part has a diffusers counterpart once the U-Net
is built with residual up/down-sampling blocks, scale-shift norm and middle-block attention
(`unet_config`); this module only renames tensors (keeping each converted name's checkpoint key for the
messages), checks every shape before it splits the legacy fused qkv per head, infers the architecture from
shapes and tells which β schedule the buffers carry. No network code lives here.

The buffers are the TRAINING schedule. Palette's test run never reads them (a non-strict load before they
exist, then `set_new_noise_schedule(phase="test")`): it samples over the configuration's test schedule,
`TEST_SCHEDULE` for paper 1; `sampling_schedule` checks the params value that selects one or the other.
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
#: the sampling schedule of paper 1's test run: `beta_schedule.test` of jpmorganchase/i2i_Palette (branch i2i)
#: config/inpainting_places2_unlearn_test.json. Its test phase loads the file non-strictly before any buffer
#: exists (the stored ones are dropped) and then builds this schedule (`set_new_noise_schedule(phase="test")`)
TEST_SCHEDULE = {"beta_schedule": "linear", "timesteps": 2000, "beta_start": 1e-4, "beta_end": 0.09}
#: the sampling-schedule value that samples over the checkpoint's own buffers (its training schedule)
CHECKPOINT_SCHEDULE = "checkpoint"
#: params key of the sampling schedule (named in the errors)
SCHEDULE_KEY = "model.diffusion.sampling.schedule"

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


def _shape(unet: dict[str, torch.Tensor], key: str, ndim: int) -> tuple[int, ...]:
    """The shape of 'denoise_fn.<key>', which must have `ndim` dimensions (the architecture is read from it)."""
    value = _need(unet, key)
    if value.dim() != ndim:
        raise DataError(f"Palette checkpoint: 'denoise_fn.{key}' has shape {list(value.shape)}, expected {ndim} "
                        "dimensions")
    return tuple(value.shape)


def _count(unet: dict[str, torch.Tensor], part: str) -> int:
    indices = [int(k.split(".")[1]) for k in unet if k.startswith(part + ".")]
    if not indices:
        raise DataError(f"Palette checkpoint has no 'denoise_fn.{part}.*' tensors")
    return 1 + max(indices)


def infer_arch(unet: dict[str, torch.Tensor]) -> dict[str, Any]:
    """in_chans, block_out_channels and layers_per_block from tensor shapes (head width is not in them).

    Both halves must tell the same story: input_blocks (conv_in, then per level `res_blocks` resblocks and a
    downsampler, none after the last level) and output_blocks (per level res_blocks + 1 resblocks, an upsampler
    in the last block of every level but the last), so a file missing a whole block is refused."""
    if any(re.match(r"(input|output)_blocks\.\d+\.\d+\.qkv\.", k) for k in unet):
        raise DataError("Palette checkpoint has attention inside the U-Net levels (attn_res reached); only the "
                        "published layout with attention in the middle block alone is supported")
    inner = _shape(unet, "cond_embed.0.weight", 2)[1]
    in_channel = _shape(unet, "input_blocks.0.0.weight", 4)[1]
    n_in, n_out = _count(unet, "input_blocks"), _count(unet, "output_blocks")
    n_up = len({k.split(".")[1] for k in unet if re.match(r"output_blocks\.\d+\.1\.in_layers\.", k)})
    levels = n_up + 1
    if n_out % levels or n_in != n_out:
        raise DataError(f"Palette checkpoint: {n_out} output blocks (denoise_fn.output_blocks.0 to "
                        f"{n_out - 1}, {n_up} of them upsampling) and {n_in} input blocks (denoise_fn.input_blocks.0 "
                        f"to {n_in - 1}) do not make {levels} levels of equal size: a block is missing")
    res_blocks = n_out // levels - 1
    channels = [_shape(unet, f"input_blocks.{1 + level * (res_blocks + 1)}.0.out_layers.3.weight", 4)[0]
                for level in range(levels)]
    if in_channel % 2:
        raise DataError(f"Palette checkpoint: 'denoise_fn.input_blocks.0.0.weight' takes {in_channel} channels, "
                        "expected an even count (condition then y_t)")
    if channels[0] != inner:
        raise DataError(f"Palette checkpoint: first level has {channels[0]} channels "
                        f"('denoise_fn.input_blocks.1.0.out_layers.3.weight'), 'denoise_fn.cond_embed.0.weight' "
                        f"expects {inner}")
    return {"in_chans": in_channel // 2, "block_out_channels": channels, "layers_per_block": res_blocks}


def _take(unet: dict, src: str, dst: str, out: dict, names: dict) -> None:
    names[dst] = "denoise_fn." + src
    if src in unet:
        out[dst] = unet.pop(src)


def _resblock(unet: dict, src: str, dst: str, out: dict, names: dict) -> None:
    for old, new in _RESBLOCK.items():
        for leaf in ("weight", "bias"):
            _take(unet, f"{src}.{old}.{leaf}", f"{dst}.{new}.{leaf}", out, names)


def _attention(unet: dict, src: str, dst: str, channels: int, head_dim: int, out: dict, names: dict) -> None:
    """Legacy qkv: output channels ordered (head, q/k/v, channel); diffusers wants per-head q, k, v blocks.
    Every tensor's shape is checked before it is split or reshaped (the width is the middle block's)."""
    c = channels
    expected = {"qkv.weight": [3 * c, c, 1], "qkv.bias": [3 * c], "proj_out.weight": [c, c, 1],
                "proj_out.bias": [c], "norm.weight": [c], "norm.bias": [c]}
    for leaf, shape in expected.items():
        got = list(_need(unet, f"{src}.{leaf}").shape)
        if got != shape:
            raise DataError(f"Palette checkpoint: 'denoise_fn.{src}.{leaf}' has shape {got}, expected {shape} "
                            f"(the middle block's {c} channels)")
    if c % head_dim:
        raise DataError(f"Palette checkpoint: 'denoise_fn.{src}.qkv.weight' has {c} channels, not divisible by "
                        f"params model.diffusion.arch.attention_head_dim = {head_dim}")
    heads = c // head_dim
    w = unet.pop(f"{src}.qkv.weight").reshape(heads, 3, head_dim, c)
    b = unet.pop(f"{src}.qkv.bias").reshape(heads, 3, head_dim)
    for i, name in enumerate(("to_q", "to_k", "to_v")):
        out[f"{dst}.{name}.weight"] = w[:, i].reshape(c, c).contiguous()
        out[f"{dst}.{name}.bias"] = b[:, i].reshape(c).contiguous()
        names[f"{dst}.{name}.weight"], names[f"{dst}.{name}.bias"] = (f"denoise_fn.{src}.qkv.weight",
                                                                      f"denoise_fn.{src}.qkv.bias")
    out[f"{dst}.to_out.0.weight"] = unet.pop(f"{src}.proj_out.weight").reshape(c, c)
    names[f"{dst}.to_out.0.weight"] = f"denoise_fn.{src}.proj_out.weight"
    _take(unet, f"{src}.proj_out.bias", f"{dst}.to_out.0.bias", out, names)
    _take(unet, f"{src}.norm.weight", f"{dst}.group_norm.weight", out, names)
    _take(unet, f"{src}.norm.bias", f"{dst}.group_norm.bias", out, names)


def convert(unet: dict[str, torch.Tensor], block_out_channels: list[int], res_blocks: int,
            head_dim: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """guided-diffusion names -> UNet2DModel names, and each UNet2DModel name -> the checkpoint's own key
    ('denoise_fn.…', for the messages); a tensor left over is an error naming it."""
    unet = dict(unet)
    out: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}
    levels = len(block_out_channels)
    plain = {"cond_embed.0": "time_embedding.linear_1", "cond_embed.2": "time_embedding.linear_2",
             "input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out"}
    for old, new in plain.items():
        for leaf in ("weight", "bias"):
            _need(unet, f"{old}.{leaf}")
            _take(unet, f"{old}.{leaf}", f"{new}.{leaf}", out, names)
    for level in range(levels):
        base = 1 + level * (res_blocks + 1)
        for i in range(res_blocks):
            _resblock(unet, f"input_blocks.{base + i}.0", f"down_blocks.{level}.resnets.{i}", out, names)
        if level < levels - 1:
            _resblock(unet, f"input_blocks.{base + res_blocks}.0", f"down_blocks.{level}.downsamplers.0", out, names)
    _resblock(unet, "middle_block.0", "mid_block.resnets.0", out, names)
    _attention(unet, "middle_block.1", "mid_block.attentions.0", block_out_channels[-1], head_dim, out, names)
    _resblock(unet, "middle_block.2", "mid_block.resnets.1", out, names)
    for j in range(levels):
        for i in range(res_blocks + 1):
            block = j * (res_blocks + 1) + i
            _resblock(unet, f"output_blocks.{block}.0", f"up_blocks.{j}.resnets.{i}", out, names)
            if j < levels - 1 and i == res_blocks:
                _resblock(unet, f"output_blocks.{block}.1", f"up_blocks.{j}.upsamplers.0", out, names)
    if unet:
        raise DataError(f"Palette checkpoint has tensor(s) the conversion does not place: "
                        f"{', '.join('denoise_fn.' + k for k in sorted(unet)[:8])}")
    return out, names


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


def sampling_schedule(spec: Any) -> str | dict[str, Any]:
    """A checked sampling schedule: ``"checkpoint"`` (the file's own buffers) or a β schedule
    ``{beta_schedule: linear|quad, timesteps, beta_start, beta_end}`` built as Palette's test phase builds it.
    ValueError naming the params key otherwise."""
    if spec == CHECKPOINT_SCHEDULE:
        return CHECKPOINT_SCHEDULE
    keys = ("beta_schedule", "timesteps", "beta_start", "beta_end")
    if not isinstance(spec, dict) or sorted(spec) != sorted(keys):
        raise ValueError(f"params {SCHEDULE_KEY} is {spec!r}: expected '{CHECKPOINT_SCHEDULE}' (the checkpoint's "
                         f"buffers) or a mapping with exactly {', '.join(keys)} (Palette's test phase: {TEST_SCHEDULE})")
    kind, steps, start, end = (spec[k] for k in keys)
    if kind not in ("linear", "quad"):
        raise ValueError(f"params {SCHEDULE_KEY}.beta_schedule is {kind!r}: expected linear or quad")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"params {SCHEDULE_KEY}.timesteps is {steps!r}: expected an integer >= 2")
    if not 0 < float(start) <= float(end) < 1:
        raise ValueError(f"params {SCHEDULE_KEY}: beta_start {start} and beta_end {end} must satisfy "
                         "0 < beta_start <= beta_end < 1")
    return {"beta_schedule": kind, "timesteps": int(steps), "beta_start": float(start), "beta_end": float(end)}


def schedule_levels(schedule: str | dict[str, Any], checkpoint_levels: int) -> int:
    """How many noise levels a sampling schedule has (the checkpoint's own: `checkpoint_levels`)."""
    return checkpoint_levels if schedule == CHECKPOINT_SCHEDULE else int(schedule["timesteps"])


def describe_schedule(schedule: str | dict[str, Any]) -> str:
    if schedule == CHECKPOINT_SCHEDULE:
        return "the checkpoint's own schedule buffers (its training schedule)"
    s = schedule
    return f"{s['beta_schedule']} β {s['beta_start']:g} → {s['beta_end']:g} over {s['timesteps']} levels"


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
