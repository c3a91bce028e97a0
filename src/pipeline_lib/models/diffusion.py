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

Official checkpoints: Palette's (``16_Network.pth``) uses guided-diffusion names (``cond_embed``,
``input_blocks``, ``middle_block``, ``output_blocks``, ``out``) with a different block layout from
diffusers' UNet2DModel (``conv_in``, ``time_embedding``, ``down_blocks``, ``mid_block``, ``up_blocks``,
``conv_out``). A name-by-name mapping could not be verified against the real file (not reachable from
here), and a silently wrong mapping is worse than none, so `from_official` raises `errors.DataError` naming
both layouts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import DataError
from ..masks import apply_mask
from .base import I2IModel

ENCODER_PREFIXES = ("unet.conv_in.", "unet.time_embedding.", "unet.down_blocks.", "unet.mid_block.")
DECODER_PREFIXES = ("unet.up_blocks.", "unet.conv_norm_out.", "unet.conv_out.")
#: top-level names of a guided-diffusion / Palette U-Net state dict
OFFICIAL_PREFIXES = ("cond_embed.", "input_blocks.", "middle_block.", "output_blocks.", "out.")
#: seed of the default sampling noise (reconstruct is repeatable without a generator)
DEFAULT_SAMPLE_SEED = 0


class PaletteDiffusion(I2IModel):
    family = "diffusion"
    trainable_reconstruct = False  # the sampler runs the U-Net sample_steps times
    encoder_prefixes = ENCODER_PREFIXES
    sampling_keys = {"steps": "sample_steps"}

    def __init__(self, image_size: int = 32, in_chans: int = 1, block_out_channels: list[int] | tuple[int, ...] = (32, 64),
                 layers_per_block: int = 1, attention: bool = False, norm_num_groups: int = 8,
                 attention_head_dim: int = 8, train_timesteps: int = 2000, beta_start: float = 1e-6,
                 beta_end: float = 0.01, sample_steps: int = 50, encode_timestep: int | None = None,
                 encode_seed: int = 0):
        super().__init__()
        block_out_channels = [int(c) for c in block_out_channels]
        n = len(block_out_channels)
        if image_size % (2 ** (n - 1)):
            raise ValueError(f"image size {image_size} is not divisible by 2^{n - 1} ({n} U-Net levels)")
        if encode_timestep is None:
            encode_timestep = train_timesteps // 2
        if not 0 <= encode_timestep < train_timesteps:
            raise ValueError(f"encode_timestep {encode_timestep} is outside [0, {train_timesteps})")
        if not 1 <= sample_steps <= train_timesteps:
            raise ValueError(f"sample_steps {sample_steps} is outside [1, {train_timesteps}]")
        self.image_size, self.in_chans = image_size, in_chans
        self.mask_granularity = 1
        self._arch = dict(block_out_channels=block_out_channels, layers_per_block=layers_per_block,
                          attention=attention, norm_num_groups=norm_num_groups,
                          attention_head_dim=attention_head_dim, train_timesteps=train_timesteps,
                          beta_start=beta_start, beta_end=beta_end, sample_steps=sample_steps,
                          encode_timestep=encode_timestep, encode_seed=encode_seed)
        self.sample_steps, self.encode_timestep, self.encode_seed = sample_steps, encode_timestep, encode_seed
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

    def arch(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in self._arch.items()}


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
        return self._alphas_cumprod.to(like.device)[t].to(like.dtype).view(-1, 1, 1, 1)

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

    def net_input(self, y: torch.Tensor, condition: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[mask·y + (1−mask)·condition, T(condition), mask]: what the U-Net sees."""
        y_in = torch.where(mask, y, condition)
        return torch.cat([y_in, apply_mask(condition, mask), mask.to(condition.dtype)], dim=1)

    def predict_noise(self, y: torch.Tensor, condition: torch.Tensor, mask: torch.Tensor,
                      t: torch.Tensor) -> torch.Tensor:
        t = self._timesteps(t, y.shape[0], y.device)
        return self.unet(self.net_input(y, condition, mask), t).sample

    def encoder_features(self, y: torch.Tensor, condition: torch.Tensor, mask: torch.Tensor,
                         t: int | torch.Tensor | None = None) -> list[torch.Tensor]:
        """The down-path skip tensors and the middle block output, as UNet2DModel.forward computes them."""
        unet = self.unet
        sample = self.net_input(y, condition, mask)
        t = self._timesteps(t, y.shape[0], y.device)
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
        """E(T(x), x̃_t, t) with x̃_t = `noisy_target(x, t, noise)`; deterministic defaults (see module doc)."""
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
        """Eq. C.24: ‖ε̂(T(x), x̃_t, t) − γ‖² averaged over the hidden pixels, t ~ U{0..T−1}, γ ~ N(0, I)."""
        b = x.shape[0]
        t = torch.randint(0, self._arch["train_timesteps"], (b,), generator=generator).to(x.device)
        noise = torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
        y_t = self.train_scheduler.add_noise(x, noise, t)
        eps = self.predict_noise(y_t, x, mask, t)
        hidden = mask.expand_as(x)
        sq = torch.where(hidden, (eps - noise).pow(2), torch.zeros((), dtype=eps.dtype, device=eps.device))
        return sq.sum() / hidden.sum().clamp_min(1)

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
        scheduler = self.sample_scheduler()
        noise = torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
        y = torch.where(mask, noise, x)
        for t in scheduler.timesteps:
            eps = self.predict_noise(y, x, mask, t.to(x.device))
            y = scheduler.step(eps, t, y, eta=0.0).prev_sample
            y = torch.where(mask, y, x)  # Palette: y_t = y_0·(1 − mask) + mask·y_t
        return y

    # --- official checkpoints ------------------------------------------------------------------------
    @classmethod
    def from_official(cls, checkpoint: dict[str, Any], **_unused: Any) -> "PaletteDiffusion":
        """Always raises DataError: Palette's guided-diffusion names do not map onto UNet2DModel (module doc)."""
        state = checkpoint
        for key in ("state_dict", "model", "netG"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        keys = [k for k in state if isinstance(k, str)] if isinstance(state, dict) else []
        stripped = {k.split("denoise_fn.", 1)[-1] for k in keys}
        found = sorted({p for p in OFFICIAL_PREFIXES if any(k.startswith(p) for k in stripped)})
        if found:
            raise DataError(
                "this is a Palette / guided-diffusion U-Net checkpoint (found key prefixes "
                f"{', '.join(found)}): its layout (cond_embed., input_blocks., middle_block., output_blocks., out.) "
                "does not map onto diffusers' UNet2DModel used by the 'diffusion' family (expected prefixes "
                f"{', '.join(ENCODER_PREFIXES + DECODER_PREFIXES)}); converting it is not implemented")
        raise DataError(
            "not a Palette checkpoint: expected guided-diffusion key prefixes "
            f"{', '.join(OFFICIAL_PREFIXES)} (optionally under 'denoise_fn.'); the 'diffusion' family has no "
            f"official-weight loader for other layouts (its own prefixes: {', '.join(ENCODER_PREFIXES + DECODER_PREFIXES)})")
