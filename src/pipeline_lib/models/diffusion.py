"""Palette-style conditional diffusion (Saharia et al. 2022) as an I2I model, built on diffusers.

The network is a small `diffusers.UNet2DModel` whose input is the channel concatenation
``[y_in, T(x), mask]`` (2·in_chans + 1 channels; 3 for grey images) and whose output is the predicted
noise ε̂ (in_chans channels). Training uses a `DDPMScheduler` with a linear β schedule (Palette:
1e-6 → 0.01 over 2000 steps); sampling uses a `DDIMScheduler` (η = 0) on the same β's.

Conventions (they follow the Palette code, jpmorganchase/i2i_Palette):

* mask: True marks a hidden pixel (as everywhere in pipeline_lib); T(x) = `masks.apply_mask(x, mask)`,
  hidden pixels set to 0 (the data mean in normalised space; Palette fills them with N(0, 1) noise).
* Known pixels: the target channel the network sees is ``y_in = mask·y_t + (1 − mask)·x``, i.e. the
  visible pixels are the CLEAN input, in training as in sampling (Palette's
  ``y_noisy*mask + (1-mask)*y_0`` in training and ``y_t = y_0*(1-mask) + mask*y_t`` after every sampling
  step). This is Palette's re-imposition, not RePaint's (which would paste x noised to level t−1).
* `training_loss`: ε-prediction MSE (Eq. C.24) on the HIDDEN pixels only (Palette's
  ``mse(mask*noise, mask*noise_hat)``), averaged over the hidden pixels rather than over all pixels (a
  constant factor per mask); visible pixels are pasted at sampling time, so their ε̂ is never used.

Encoder / decoder split (paper 1, App. C.5; Palette: ``cond_embed`` + ``input_blocks`` + ``middle_block``):
encoder = ``unet.conv_in``, ``unet.time_embedding`` (Palette's noise-level ``cond_embed``; there is no
separate conditioning path: T(x) and the mask enter through conv_in), ``unet.down_blocks``,
``unet.mid_block``; decoder = ``unet.up_blocks``, ``unet.conv_norm_out``, ``unet.conv_out``.
`encode` returns every down-path feature map that UNet2DModel keeps as a skip connection (the conv_in
output, every resnet/attention output, every downsampler output: guided-diffusion's ``input_blocks``
outputs) plus the middle block's output, each flattened and concatenated. It calls the U-Net's submodules
directly, mirroring ``UNet2DModel.forward`` step for step (tests check that against forward hooks), so
the decoder is never run and receives no gradient.

The l2n teacher question (paper 1, Eq. C.25): for a forget sample the ORIGINAL encoder sees the noise n in
place of the noisy target x̃_f, with the SAME conditioning T(x_f) and the same noise level η. Through the
family-agnostic interface ``encode(x, mask)`` (what methods/l2n.py calls: ``teacher.encode(noise, mask_f)``
and ``model.encode(x_f, mask_f)``) that cannot be expressed, because the first argument is the only image
there is. So:

* ``encode(x, mask, t=None, noise=None)`` treats x as the clean image: the noisy target is
  ``y_t = sqrt(ᾱ_t)·x + sqrt(1 − ᾱ_t)·γ`` and the conditioning is T(x). The defaults are deterministic, so
  that a student and a teacher call see the SAME t and γ: t = ``encode_timestep`` (arch; default the
  middle of the schedule) and γ = a fixed Gaussian drawn from ``torch.Generator().manual_seed(encode_seed)``
  (γ = 0 would give sqrt(ᾱ_t)·x, an input far off the training distribution). ``teacher.encode(n, mask_f)``
  therefore computes E_θ0(T(n), y_t(n), η): Algorithm 1's literal "E_θ0(T(n))" (noise in place of the
  forget image everywhere), not C.25's (n as the noisy target, T(x_f) as conditioning).
* ``encode_input(y, condition, mask, t)`` is the exact C.25 entry point: y is used verbatim as the
  noisy target, T(condition) as conditioning. A diffusion-aware l2n would call
  ``model.encode(x_f, mask_f)`` and ``teacher.encode_input(n, x_f, mask_f, model.encode_timestep)``
  (and ``model.noisy_target(x_f)`` gives the matching x̃_f); methods/ is left unchanged here.

`output(x, mask)`: the one-step estimate x̂_0 = (y_t − sqrt(1−ᾱ_t)·ε̂)/sqrt(ᾱ_t) at the encode timestep and
noise (differentiable, every pixel predicted, nothing pasted). `reconstruct` runs the full DDIM sampler
(differentiable only if the caller enables grad, and then costly).

Official checkpoints (``layout="palette"``): Palette's ``16_Network.pth`` loads through `from_official`
(conversion in `palette_official`). That layout follows Palette exactly rather than this module's own
conventions: the U-Net input is ``[cond, y_in]`` with the condition cond = x·(1 − m) + m·ξ, ξ ~ N(0, 1)
(no mask channel); the noise level fed to the sinusoidal embedding is the continuous ᾱ (Palette's γ), not
an integer t, in training (γ ~ U[ᾱ_t, ᾱ_{t−1}], t ~ U{1..T−1}), sampling and `encode`, and
`reconstruct` is Palette's ancestral sampler (x̂₀ clamped to [−1, 1], known pixels re-pasted after every step;
fewer steps than the schedule's levels respace the chain over an evenly spaced subsequence of them;
``sampler: ddim`` gives the deterministic variant). The condition noise ξ is a fixed draw from
``encode_seed + 1`` in `encode`/`output`, and the first draw of the generator in `reconstruct` (Palette starts
the chain from the condition itself: y_T = cond).

Two schedules, as in Palette's code. The checkpoint's buffers (``schedule.*``) are its TRAINING schedule
(1e-6 → 0.01 over 2000 steps for the published file): `training_loss`, `encode`, `encode_input`,
`encoding_state`, `output`, `sample_losses` and `noise_levels` of an integer t read them, so unlearning sees
training-phase γ, as the official unlearning run (train phase) does. `reconstruct` samples over
``sample_schedule`` (params ``model.diffusion.sampling.schedule``): by default paper 1's TEST phase
(`palette_official.TEST_SCHEDULE`, linear 1e-4 → 0.09 over 2000 levels), which the official test run builds
after a non-strict load that drops the file's buffers; ``"checkpoint"`` samples over the buffers instead. The
value is recorded in the arch (so in every sidecar). The pipeline layout has one schedule, for both.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from ..runtime.errors import DataError
from ..data.masks import apply_mask
from . import palette_official
from .base import I2IModel, check_stated_arch, load_state_exactly

ENCODER_PREFIXES = ("unet.conv_in.", "unet.time_embedding.", "unet.down_blocks.", "unet.mid_block.")
DECODER_PREFIXES = ("unet.up_blocks.", "unet.conv_norm_out.", "unet.conv_out.")
LAYOUTS = ("pipeline", "palette")
SAMPLERS = {"pipeline": ("ddim",), "palette": ("ddpm", "ddim")}
#: seed of the default sampling noise (reconstruct is repeatable without a generator)
DEFAULT_SAMPLE_SEED = 0
LOG = logging.getLogger(__name__)


class PaletteDiffusion(I2IModel):
    family = "diffusion"
    trainable_reconstruct = False  # the sampler runs the U-Net sample_steps times
    convolutional = True  # the U-Net
    encoder_prefixes = ENCODER_PREFIXES
    sampling_keys = {"steps": "sample_steps", "sampler": "sampler", "schedule": "sample_schedule"}

    def __init__(self, image_size: int = 32, in_chans: int = 1, block_out_channels: list[int] | tuple[int, ...] = (32, 64),
                 layers_per_block: int = 1, attention: bool = False, norm_num_groups: int = 8,
                 attention_head_dim: int = 8, train_timesteps: int = 2000, beta_start: float = 1e-6,
                 beta_end: float = 0.01, sample_steps: int = 50, encode_timestep: int | None = None,
                 encode_seed: int = 0, layout: str = "pipeline", beta_schedule: str = "linear",
                 dropout: float = 0.0, sampler: str | None = None, sample_schedule: str | dict | None = None):
        super().__init__()
        block_out_channels = [int(c) for c in block_out_channels]
        n = len(block_out_channels)
        if image_size % (2 ** (n - 1)):
            raise ValueError(f"image size {image_size} is not divisible by 2^{n - 1} ({n} U-Net levels)")
        if encode_timestep is None:
            encode_timestep = train_timesteps // 2
        if not 0 <= encode_timestep < train_timesteps:
            raise ValueError(f"encode_timestep {encode_timestep} is outside [0, {train_timesteps})")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown diffusion layout '{layout}' (known: {', '.join(LAYOUTS)})")
        if layout == "palette":  # sampled over paper 1's test-phase schedule unless told otherwise
            sample_schedule = palette_official.sampling_schedule(
                palette_official.TEST_SCHEDULE if sample_schedule is None else sample_schedule)
        elif sample_schedule is not None:
            raise ValueError(f"params {palette_official.SCHEDULE_KEY} is an option of Palette's checkpoint (layout "
                             "'palette') only: the pipeline layout samples over its training β's")
        levels = (palette_official.schedule_levels(sample_schedule, train_timesteps) if layout == "palette"
                  else train_timesteps)
        if not 1 <= sample_steps <= levels:
            raise ValueError(f"sample_steps {sample_steps} is outside [1, {levels}]")
        sampler = sampler or SAMPLERS[layout][0]
        if sampler not in SAMPLERS[layout]:
            raise ValueError(f"sampler '{sampler}' is not available with layout '{layout}' "
                             f"(available: {', '.join(SAMPLERS[layout])})")
        self.layout, self.sampler = layout, sampler
        self.image_size, self.in_chans = image_size, in_chans
        self.mask_granularity = 1
        self._arch = dict(block_out_channels=block_out_channels, layers_per_block=layers_per_block,
                          attention=attention, norm_num_groups=norm_num_groups,
                          attention_head_dim=attention_head_dim, train_timesteps=train_timesteps,
                          beta_start=beta_start, beta_end=beta_end, sample_steps=sample_steps,
                          encode_timestep=encode_timestep, encode_seed=encode_seed)
        if layout == "palette":  # recorded only there, so the pipeline layout's sidecars stay as they were
            self._arch.update(layout=layout, beta_schedule=beta_schedule, dropout=dropout, sampler=sampler,
                              sample_schedule=sample_schedule)
        elif beta_schedule != "linear" or dropout:
            raise ValueError("beta_schedule and dropout are options of layout 'palette' only (the pipeline layout "
                             "is linear, without dropout)")
        self.sample_steps, self.encode_timestep, self.encode_seed = sample_steps, encode_timestep, encode_seed
        self.sample_schedule = sample_schedule  # None in the pipeline layout
        if layout == "palette":
            self._init_palette(image_size, in_chans, block_out_channels, layers_per_block, attention_head_dim,
                               dropout, beta_schedule, train_timesteps, beta_start, beta_end)
            return
        # attention (if asked for) only at the lowest resolution, and in the middle block
        down = ["DownBlock2D"] * n
        up = ["UpBlock2D"] * n
        if attention:
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        from diffusers import DDPMScheduler, UNet2DModel  # imported on use: diffusers costs seconds to load

        self.unet = UNet2DModel(
            sample_size=image_size, in_channels=2 * in_chans + 1, out_channels=in_chans,
            block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
            down_block_types=tuple(down), up_block_types=tuple(up), norm_num_groups=norm_num_groups,
            attention_head_dim=attention_head_dim, add_attention=attention)
        self.train_scheduler = DDPMScheduler(num_train_timesteps=train_timesteps, beta_start=beta_start,
                                             beta_end=beta_end, beta_schedule="linear", clip_sample=False)
        # ᾱ_t as a float32 table (not a buffer: it is rebuilt from the arch, never saved)
        self._alphas_cumprod = self.train_scheduler.alphas_cumprod.to(torch.float32)

    def _init_palette(self, image_size, in_chans, block_out_channels, layers_per_block, attention_head_dim,
                      dropout, beta_schedule, train_timesteps, beta_start, beta_end) -> None:
        """Palette's own U-Net and schedule buffers (float64-computed, stored float32, replaced by a checkpoint's)."""
        from diffusers import UNet2DModel

        self.unet = UNet2DModel(**palette_official.unet_config(in_chans, block_out_channels, layers_per_block,
                                                               attention_head_dim, dropout, image_size))
        self.schedule = nn.Module()
        kind = beta_schedule if beta_schedule in ("linear", "quad") else "linear"  # "unrecognised": from the file
        for name, value in palette_official.schedule_buffers(kind, train_timesteps, beta_start, beta_end).items():
            self.schedule.register_buffer(name, value)

    def configure_sampling(self, **options: Any) -> None:
        """params ``sampling``: steps, sampler and (Palette layout) schedule, checked together."""
        sampler = options.get("sampler", self.sampler)
        if sampler not in SAMPLERS[self.layout]:
            raise ValueError(f"sampler '{sampler}' is not available with layout '{self.layout}' "
                             f"(available: {', '.join(SAMPLERS[self.layout])})")
        if "schedule" in options:
            if self.layout != "palette":
                raise ValueError(f"params {palette_official.SCHEDULE_KEY} is an option of Palette's checkpoint "
                                 "(layout 'palette') only: the pipeline layout samples over its training β's")
            options["schedule"] = palette_official.sampling_schedule(options["schedule"])
        levels = self.sampling_levels(options.get("schedule", self.sample_schedule))
        steps = options.get("steps", self.sample_steps)
        if not 1 <= steps <= levels:
            raise ValueError(f"sampling steps {steps} outside [1, {levels}] (the levels of the sampling schedule; "
                             "params model.diffusion.sampling.steps)")
        super().configure_sampling(**options)
        if self.layout == "palette":
            LOG.info("Palette sampling: %s %d-step chain over %s", self.sampler, self.sample_steps,
                     palette_official.describe_schedule(self.sample_schedule))

    def sampling_levels(self, schedule: str | dict | None = None) -> int:
        """Noise levels of the sampling schedule (pipeline layout: the training timesteps)."""
        if self.layout != "palette":
            return self._arch["train_timesteps"]
        schedule = self.sample_schedule if schedule is None else schedule
        return palette_official.schedule_levels(schedule, self._arch["train_timesteps"])

    def abar_table(self) -> torch.Tensor:
        """ᾱ_t for t = 0..T−1 of the training schedule (Palette layout: the checkpoint's `gammas` buffer)."""
        return self.schedule.gammas if self.layout == "palette" else self._alphas_cumprod

    def arch(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, (list, tuple)) else dict(v) if isinstance(v, dict) else v)
                for k, v in self._arch.items()}


    def decoder_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n.startswith(DECODER_PREFIXES)]

    # --- pieces ----------------------------------------------------------------------------------------
    def sample_scheduler(self):
        """A fresh DDIM scheduler (η = 0, trailing spacing: the first step starts at t = T − 1)."""
        from diffusers import DDIMScheduler

        a = self._arch
        s = DDIMScheduler(num_train_timesteps=a["train_timesteps"], beta_start=a["beta_start"],
                          beta_end=a["beta_end"], beta_schedule="linear", clip_sample=False,
                          set_alpha_to_one=True, timestep_spacing="trailing")
        s.set_timesteps(self.sample_steps)
        return s

    def _abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self.abar_table().to(like.device)[t].to(like.dtype).view(-1, 1, 1, 1)

    def _timesteps(self, t: int | torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        if t is None:
            t = self.encode_timestep
        t = torch.as_tensor(t, dtype=torch.long, device=device)
        return t.expand(batch) if t.dim() == 0 else t

    def default_noise(self, x: torch.Tensor) -> torch.Tensor:
        """γ of `encode`/`output`: fixed per shape (drawn on the CPU from `encode_seed`), same for every call."""
        g = torch.Generator().manual_seed(self.encode_seed)
        return torch.randn(x.shape, generator=g).to(device=x.device, dtype=x.dtype)

    def noisy_target(self, x: torch.Tensor, t: int | torch.Tensor | None = None,
                     noise: torch.Tensor | None = None) -> torch.Tensor:
        """x̃ = sqrt(ᾱ_t)·x + sqrt(1 − ᾱ_t)·γ (defaults: t = encode_timestep, γ = `default_noise`)."""
        t = self._timesteps(t, x.shape[0], x.device)
        noise = self.default_noise(x) if noise is None else noise
        abar = self._abar(t, x)
        return abar.sqrt() * x + (1 - abar).sqrt() * noise

    def condition_noise(self, x: torch.Tensor) -> torch.Tensor:
        """Palette layout: ξ of the condition in `encode`/`output`, fixed per shape (from `encode_seed` + 1)."""
        g = torch.Generator().manual_seed(self.encode_seed + 1)
        return torch.randn(x.shape, generator=g).to(device=x.device, dtype=x.dtype)

    def net_input(self, y: torch.Tensor, condition: torch.Tensor, mask: torch.Tensor,
                  cond_noise: torch.Tensor | None = None) -> torch.Tensor:
        """What the U-Net sees. Pipeline layout: [mask·y + (1−mask)·condition, T(condition), mask].
        Palette layout: [condition·(1−m) + m·ξ, mask·y + (1−mask)·condition] (ξ: `cond_noise`)."""
        y_in = torch.where(mask, y, condition)
        if self.layout == "palette":
            xi = self.condition_noise(condition) if cond_noise is None else cond_noise
            return torch.cat([torch.where(mask, xi, condition), y_in], dim=1)
        return torch.cat([y_in, apply_mask(condition, mask), mask.to(condition.dtype)], dim=1)

    def noise_levels(self, t: int | torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """The U-Net's noise-level input: integer t (pipeline layout) or Palette's continuous γ = ᾱ_t of the
        TRAINING buffers. A floating-point tensor is taken as γ already (Palette's training draws γ between two
        levels; the sampler passes the sampling schedule's γ)."""
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            t = t.to(device).reshape(-1)
            return t.expand(batch) if t.numel() == 1 else t
        t = self._timesteps(t, batch, device)
        return self.schedule.gammas.to(device)[t] if self.layout == "palette" else t

    def predict_noise(self, y: torch.Tensor, condition: torch.Tensor, mask: torch.Tensor,
                      t: torch.Tensor, cond_noise: torch.Tensor | None = None) -> torch.Tensor:
        level = self.noise_levels(t, y.shape[0], y.device)
        return self.unet(self.net_input(y, condition, mask, cond_noise), level).sample

    def encoder_features(self, y: torch.Tensor, condition: torch.Tensor, mask: torch.Tensor,
                         t: int | torch.Tensor | None = None) -> list[torch.Tensor]:
        """The down-path skip tensors and the middle block output, as UNet2DModel.forward computes them."""
        unet = self.unet
        sample = self.net_input(y, condition, mask)
        t = self.noise_levels(t, y.shape[0], y.device)
        emb = unet.time_embedding(unet.time_proj(t).to(dtype=unet.dtype))
        sample = unet.conv_in(sample)
        features = [sample]
        for block in unet.down_blocks:
            sample, res = block(hidden_states=sample, temb=emb)
            features.extend(res)
        if unet.mid_block is not None:
            sample = unet.mid_block(sample, emb)
        features.append(sample)
        return features

    def encode_input(self, y: torch.Tensor, condition: torch.Tensor, mask: torch.Tensor,
                     t: int | torch.Tensor | None = None) -> torch.Tensor:
        """E(T(condition), y, t) flattened to [B, D], y used verbatim as the noisy target (paper 1, Eq. C.25)."""
        return torch.cat([f.flatten(1) for f in self.encoder_features(y, condition, mask, t)], dim=1)

    # --- the I2IModel interface --------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, mask: torch.Tensor, t: int | torch.Tensor | None = None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        """E(T(x), x̃_t, t) with x̃_t = `noisy_target(x, t, noise)`; deterministic defaults (see module doc).
        Palette layout: ᾱ_t (the level and the U-Net's γ input) from the checkpoint's training buffers, never the
        sampling schedule."""
        return self.encode_input(self.noisy_target(x, t, noise), x, mask, t)

    def encode_noise_target(self, n: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
                            t: int | torch.Tensor | None = None, **_state: Any) -> torch.Tensor:
        """Eq. C.25: the noise n replaces the noisy target x̃_f, with the forget image's condition T(x_f)."""
        return self.encode_input(n, x, mask, t)

    def encoding_state(self, x: torch.Tensor, seed: int) -> dict[str, Any]:
        """t ~ U{0..T−1} and γ ~ N(0, I) per sample, as in training (Eq. C.24): unlearning then reaches the
        encoder at every timestep the sampler visits, not only at `encode_timestep`."""
        g = torch.Generator().manual_seed(seed)
        t = torch.randint(0, self._arch["train_timesteps"], (x.shape[0],), generator=g)
        noise = torch.randn(x.shape, generator=g)
        return {"t": t.to(x.device), "noise": noise.to(device=x.device, dtype=x.dtype)}

    def training_loss(self, x: torch.Tensor, mask: torch.Tensor,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Eq. C.24: ‖ε̂(T(x), x̃_t, t) − γ‖² averaged over the hidden pixels, t ~ U{0..T−1}, γ ~ N(0, I).

        Palette layout: as Palette trains, the level is a continuous ᾱ ~ U[ᾱ_t, ᾱ_{t−1}] with t ~ U{1..T−1},
        and the condition carries fresh N(0, 1) noise in the hole."""
        b = x.shape[0]
        if self.layout == "palette":
            gammas = self.schedule.gammas.to(x.device)
            t = torch.randint(1, self._arch["train_timesteps"], (b,), generator=generator).to(x.device)
            u = torch.rand((b,), generator=generator).to(x.device)
            level = gammas[t - 1] + (gammas[t] - gammas[t - 1]) * u
            noise = torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
            xi = torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
            g4 = level.to(x.dtype).view(-1, 1, 1, 1)
            y_t = g4.sqrt() * x + (1 - g4).sqrt() * noise
            eps = self.predict_noise(y_t, x, mask, level, cond_noise=xi)
        else:
            t = torch.randint(0, self._arch["train_timesteps"], (b,), generator=generator).to(x.device)
            noise = torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
            y_t = self.train_scheduler.add_noise(x, noise, t)
            eps = self.predict_noise(y_t, x, mask, t)
        hidden = mask.expand_as(x)
        sq = torch.where(hidden, (eps - noise).pow(2), torch.zeros((), dtype=eps.dtype, device=eps.device))
        return sq.sum() / hidden.sum().clamp_min(1)

    def sample_losses(self, x: torch.Tensor, mask: torch.Tensor, t: int | None = None) -> torch.Tensor:
        """[B] noise-prediction error over the hidden pixels at timestep `t` (default `encode_timestep`) with
        the fixed noise of `default_noise` (and, Palette layout, the fixed condition noise): SecMI/PIA-style
        membership scores, the same draws for every model."""
        t = self._timesteps(t, x.shape[0], x.device)
        noise = self.default_noise(x)
        eps = self.predict_noise(self.noisy_target(x, t, noise), x, mask, t)
        hidden = mask.expand_as(x).float()
        return ((eps - noise).float().pow(2) * hidden).flatten(1).sum(1) / hidden.flatten(1).sum(1).clamp_min(1)

    def output(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One-step x̂_0 at the encode timestep and noise, every pixel predicted (nothing pasted)."""
        t = self._timesteps(None, x.shape[0], x.device)
        y_t = self.noisy_target(x, t)
        eps = self.predict_noise(y_t, x, mask, t)
        abar = self._abar(t, x)
        return (y_t - (1 - abar).sqrt() * eps) / abar.sqrt()

    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """DDIM (η = 0) from Gaussian noise in `sample_steps` steps, known pixels re-imposed after every step.

        The starting noise is drawn on the CPU from `generator` (default: a fresh one seeded with
        DEFAULT_SAMPLE_SEED), so a call is repeatable and device independent. Pixels outside the mask are
        returned exactly as given.
        """
        if generator is None:
            generator = torch.Generator().manual_seed(DEFAULT_SAMPLE_SEED)
        if self.layout == "palette":
            return self._palette_sample(x, mask, generator)
        scheduler = self.sample_scheduler()
        noise = torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
        y = torch.where(mask, noise, x)
        for t in scheduler.timesteps:
            eps = self.predict_noise(y, x, mask, t.to(x.device))
            y = scheduler.step(eps, t, y, eta=0.0).prev_sample
            y = torch.where(mask, y, x)  # Palette: y_t = y_0·(1 − mask) + mask·y_t
        return y

    # --- Palette's sampler ------------------------------------------------------------------------------
    def sampling_buffers(self) -> dict[str, torch.Tensor]:
        """The six schedule tensors the sampler reads, [T'] each: for a stated β schedule (the default: paper 1's
        test phase) those Palette's `set_new_noise_schedule` computes for it (float64, stored float32), for
        ``schedule: checkpoint`` the checkpoint's own buffers (its training schedule, `schedule.*`)."""
        if self.sample_schedule == palette_official.CHECKPOINT_SCHEDULE:
            return {k: getattr(self.schedule, k) for k in palette_official.SCHEDULE_BUFFERS}
        s = self.sample_schedule
        device = self.schedule.gammas.device
        return {k: v.to(device) for k, v in palette_official.schedule_buffers(
            s["beta_schedule"], s["timesteps"], s["beta_start"], s["beta_end"]).items()}

    def palette_chain(self) -> dict[str, torch.Tensor]:
        """Per-step coefficients of the sampling chain, in ascending level order, over `sampling_buffers`.

        With ``sample_steps`` = the schedule's T' levels they are those buffers as they are (the official chain,
        exactly); with fewer, the chain is respaced over the levels round(linspace(T'−1, 0, n)) and the posterior
        of each jump (β' = 1 − ᾱ_t/ᾱ_prev) is computed in float64 from the float32 ᾱ.
        """
        buf = self.sampling_buffers()
        gammas = buf["gammas"]
        total = gammas.shape[0]
        one = torch.ones(1, dtype=gammas.dtype, device=gammas.device)
        if self.sample_steps == total:
            chain = dict(buf)
            chain["gammas_prev"] = torch.cat([one, gammas[:-1]])
            return chain
        levels = np.unique(np.linspace(total - 1, 0, self.sample_steps).round().astype(np.int64))
        g = gammas.double()[torch.from_numpy(levels).to(gammas.device)]
        prev = torch.cat([one.double(), g[:-1]])
        beta = 1 - g / prev
        var = beta * (1 - prev) / (1 - g)
        chain = {"gammas": g, "sqrt_recip_gammas": (1 / g).sqrt(), "sqrt_recipm1_gammas": (1 / g - 1).sqrt(),
                 "posterior_log_variance_clipped": var.clamp_min(1e-20).log(),
                 "posterior_mean_coef1": beta * prev.sqrt() / (1 - g),
                 "posterior_mean_coef2": (1 - prev) * (1 - beta).sqrt() / (1 - g), "gammas_prev": prev}
        return {k: v.float() for k, v in chain.items()}

    def _palette_sample(self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Palette's `restoration`: y_T = condition, x̂₀ clamped, known pixels pasted after every step; the U-Net's
        noise level at each step is the SAMPLING schedule's γ (as in the official test phase).

        Draw order from `generator` (CPU): the condition noise ξ, then one N(0, I) per ancestral step above
        the last (none for DDIM)."""
        def randn() -> torch.Tensor:
            return torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)

        xi = randn()
        y = torch.where(mask, xi, x)
        chain = {k: v.to(x.device) for k, v in self.palette_chain().items()}
        for k in reversed(range(chain["gammas"].shape[0])):
            c = {name: v[k].to(x.dtype) for name, v in chain.items()}
            eps = self.predict_noise(y, x, mask, c["gammas"].view(1), cond_noise=xi)
            x0 = (c["sqrt_recip_gammas"] * y - c["sqrt_recipm1_gammas"] * eps).clamp(-1.0, 1.0)
            if self.sampler == "ddim":
                eps = (c["sqrt_recip_gammas"] * y - x0) / c["sqrt_recipm1_gammas"]
                y = c["gammas_prev"].sqrt() * x0 + (1 - c["gammas_prev"]).sqrt() * eps
            else:
                y = c["posterior_mean_coef1"] * x0 + c["posterior_mean_coef2"] * y
                if k > 0:
                    y = y + randn() * (0.5 * c["posterior_log_variance_clipped"]).exp()
            y = torch.where(mask, y, x)
        return y

    # --- official checkpoints ------------------------------------------------------------------------
    @classmethod
    def from_official(cls, checkpoint: dict[str, Any], image_size: int = 256, attention_head_dim: int = 32,
                      dropout: float = 0.0, sample_steps: int | None = None, sampler: str | None = None,
                      encode_timestep: int | None = None, encode_seed: int = 0,
                      sample_schedule: str | dict | None = None, block_out_channels: list[int] | None = None,
                      layers_per_block: int | None = None, attention: bool | None = None,
                      norm_num_groups: int | None = None, train_timesteps: int | None = None,
                      beta_start: float | None = None, beta_end: float | None = None) -> "PaletteDiffusion":
        """A Palette-layout model from Palette's `16_Network.pth` (bare `denoise_fn.*` state dict + schedule
        buffers). The head width is not in the weights (Palette: 32, params ``arch.attention_head_dim``); the
        detected β schedule of the buffers (the TRAINING schedule) is in ``official_meta`` and the arch.

        Sampling schedule (`sample_schedule`, params ``model.diffusion.sampling.schedule`` at generation time):
        by default paper 1's test phase (`palette_official.TEST_SCHEDULE`: linear 1e-4 → 0.09 over 2000 levels),
        which is what the official test run samples with: it never reads the buffers in the file. ``"checkpoint"``
        samples over the file's buffers instead. `sample_steps` defaults to every level of that schedule.
        Training, unlearning, `encode` and `output` use the file's buffers (training-phase γ) either way.

        `block_out_channels` … `beta_end` are what params ``model.diffusion.arch`` state: a value the tensors
        contradict is a DataError naming both (Palette's U-Net has middle-block attention and GroupNorm(32)).
        Errors name the checkpoint's own keys (``denoise_fn.…``), with both shapes for a mis-shaped tensor."""
        what = "Palette checkpoint"
        unet, buffers = palette_official.split_state(checkpoint)
        total = buffers["gammas"].shape[0] if buffers["gammas"].dim() == 1 else 0
        for name, value in buffers.items():
            if value.dim() != 1 or value.shape[0] != total or total < 2:
                raise DataError(f"Palette checkpoint buffer '{name}' has shape {list(value.shape)}, "
                                f"expected [T] like 'gammas' {list(buffers['gammas'].shape)}, T >= 2")
        arch = palette_official.infer_arch(unet)
        schedule = palette_official.detect_schedule(buffers["gammas"])
        levels = len(arch["block_out_channels"])
        implied = {"block_out_channels": (arch["block_out_channels"], "denoise_fn.input_blocks.N.0.out_layers.3.weight "
                                          "of each level"),
                   "layers_per_block": (arch["layers_per_block"], f"{levels * (arch['layers_per_block'] + 1)} "
                                        f"denoise_fn.output_blocks over {levels} levels"),
                   "attention": (True, "denoise_fn.middle_block.1.qkv.weight"),
                   "norm_num_groups": (32, "Palette's GroupNorm32 around every denoise_fn convolution"),
                   "train_timesteps": (total, f"buffer 'gammas' [{total}]")}
        if schedule["beta_schedule"] != "unrecognised":
            for key in ("beta_start", "beta_end"):
                implied[key] = (schedule[key], f"the {schedule['beta_schedule']} schedule of buffer 'gammas'")
        elif beta_start is not None or beta_end is not None:
            raise DataError(f"{what}: params model.diffusion.arch.beta_start/beta_end are {beta_start}/{beta_end}, but "
                            f"buffer 'gammas' matches no linear or quadratic β schedule (final γ "
                            f"{schedule['final_gamma']:.3g})")
        check_stated_arch("diffusion", {"block_out_channels": block_out_channels, "layers_per_block": layers_per_block,
                                        "attention": attention, "norm_num_groups": norm_num_groups,
                                        "train_timesteps": train_timesteps, "beta_start": beta_start,
                                        "beta_end": beta_end}, implied, what)
        weights, names = palette_official.convert(unet, arch["block_out_channels"], arch["layers_per_block"],
                                                  attention_head_dim)
        try:
            sampling = palette_official.sampling_schedule(
                palette_official.TEST_SCHEDULE if sample_schedule is None else sample_schedule)
            model = cls(image_size=image_size, in_chans=arch["in_chans"], block_out_channels=arch["block_out_channels"],
                        layers_per_block=arch["layers_per_block"], attention=True, norm_num_groups=32,
                        attention_head_dim=attention_head_dim, train_timesteps=total,
                        beta_start=schedule.get("beta_start", 1e-6), beta_end=schedule.get("beta_end", 0.01),
                        beta_schedule=schedule["beta_schedule"], layout="palette", dropout=dropout, sampler=sampler,
                        encode_timestep=encode_timestep, encode_seed=encode_seed, sample_schedule=sampling,
                        sample_steps=sample_steps or palette_official.schedule_levels(sampling, total))
        except ValueError as exc:
            raise DataError(f"{what}: {exc}") from None
        state = {"unet." + k: v.to(torch.float32) for k, v in weights.items()}
        state.update({"schedule." + k: v for k, v in buffers.items()})
        load_state_exactly(model, state, what, {"unet." + k: v for k, v in names.items()})
        model.official_meta = {"format": "palette", "noise_schedule": schedule,
                               "sampling_schedule": model.sample_schedule}
        return model
