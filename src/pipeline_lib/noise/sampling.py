"""Noise targets n for the forget set, drawn in the normalised pixel space the models see.

Every method draws its noise here, so the paper's variants stay comparable:

- ``gaussian``: n ~ N(0, Σ) (paper 1, Lemma 1's max-entropy target). Σ = I by default (the paper's choice:
  normalised images have unit per-pixel variance and near-zero covariances); any estimated
  :class:`~pipeline_lib.noise.covariance.Covariance` (diagonal, lowrank) can replace it.
- ``uniform``: n ~ U[−1, 1] (the paper's noise-type ablation).
- ``batch_stats``: the official MAGE code's target, clamp(randn·std(x) + mean(x), lo, hi) with the
  scalar (all-element, unbiased) std and mean of the batch x, and [lo, hi] the valid-pixel range [0, 1]
  mapped into normalised space. The official code clamps to [0, 1] in pixel space; because normalising is
  an increasing affine map, drawing and clamping in normalised space gives the same noise.

``sample_noise(kind, shape, g)`` is the shape-only entry point the loaders use (gaussian with Σ = I, or
uniform); :class:`NoiseSampler` covers every kind and takes the forget batch itself.
"""

from __future__ import annotations

import math

import torch

from .covariance import Covariance

#: kinds `sample_noise` can draw from a shape alone
KINDS = ("gaussian", "uniform")
#: kinds `NoiseSampler` covers
SAMPLER_KINDS = ("gaussian", "uniform", "batch_stats")


def sample_noise(kind: str, shape: torch.Size | tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Gaussian N(0, I) or uniform U[−1, 1] noise of `shape` (kinds that need no batch or Σ)."""
    if kind == "gaussian":
        return torch.randn(shape, generator=g)
    if kind == "uniform":
        return uniform_noise(shape, g)
    raise ValueError(f"unknown noise kind '{kind}'; known: {', '.join(KINDS)}")


def uniform_noise(shape: torch.Size | tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """U[−1, 1], the paper's ablation of the Gaussian target."""
    return torch.rand(shape, generator=g) * 2.0 - 1.0


def normalised_pixel_bounds(mean: float, std: float) -> tuple[float, float]:
    """Where valid pixels [0, 1] land after (x − mean) / std: the clamp bounds of ``batch_stats``."""
    if std <= 0:
        raise ValueError(f"normalisation std must be positive, got {std}")
    return (0.0 - mean) / std, (1.0 - mean) / std


def batch_stats_noise(batch: torch.Tensor, bounds: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    """clamp(randn·std(batch) + mean(batch), lo, hi): the official code's target, matched to the batch."""
    lo, hi = bounds
    if not lo < hi:
        raise ValueError(f"clamp bounds must satisfy lo < hi, got {bounds}")
    if batch.numel() < 2:
        raise ValueError("batch_stats noise needs a batch with at least 2 elements for its std")
    std, mean = torch.std_mean(batch.detach().float())
    noise = torch.randn(batch.shape, generator=g) * std + mean
    return noise.clamp_(*_float32_inside(lo, hi))


def _float32_inside(lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The bounds rounded inward to float32, so no clamped value lies outside [lo, hi] by a rounding step."""
    lo32, hi32 = torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32)
    if float(lo32) < lo:
        lo32 = torch.nextafter(lo32, torch.tensor(math.inf))
    if float(hi32) > hi:
        hi32 = torch.nextafter(hi32, torch.tensor(-math.inf))
    return lo32, hi32


class NoiseSampler:
    """The one noise sampler every method uses: ``sampler(x_f, g)`` → a noise target shaped like x_f.

    kind ``gaussian`` uses `covariance` (default Σ = I), whose image shape must match the batch's
    [C, H, W]; with ``at_data_mean`` it centres at the covariance's data mean instead of 0 (the paper
    uses 0). ``batch_stats`` needs `bounds`, e.g. ``normalised_pixel_bounds(codec.mean, codec.std)``.
    Draws come only from the generator passed in, so a seeded run stays repeatable; gaussian with Σ = I and
    uniform draw exactly what ``sample_noise`` draws from the same generator state.
    """

    def __init__(self, kind: str = "gaussian", covariance: Covariance | None = None,
                 bounds: tuple[float, float] | None = None, at_data_mean: bool = False):
        if kind not in SAMPLER_KINDS:
            raise ValueError(f"unknown noise kind '{kind}'; known: {', '.join(SAMPLER_KINDS)}")
        if covariance is not None and kind != "gaussian":
            raise ValueError(f"a covariance applies to gaussian noise only, not '{kind}'")
        if at_data_mean and kind != "gaussian":
            raise ValueError("at_data_mean applies to gaussian noise only")
        if kind == "batch_stats" and bounds is None:
            raise ValueError("batch_stats noise needs clamp bounds: normalised_pixel_bounds(mean, std)")
        if bounds is not None and kind != "batch_stats":
            raise ValueError(f"clamp bounds apply to batch_stats noise only, not '{kind}'")
        self.kind, self.covariance, self.bounds, self.at_data_mean = kind, covariance, bounds, at_data_mean

    def __repr__(self) -> str:
        extra = f", covariance={self.covariance.kind}(k={self.covariance.k})" if self.covariance else ""
        extra += f", bounds={self.bounds}" if self.bounds else ""
        return f"NoiseSampler('{self.kind}'{extra})"

    def __call__(self, batch: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """A noise target for the forget batch `batch` [N, C, H, W] (only its shape matters unless batch_stats)."""
        if self.kind == "uniform":
            return uniform_noise(batch.shape, g)
        if self.kind == "batch_stats":
            return batch_stats_noise(batch, self.bounds, g)
        if self.covariance is None:
            return torch.randn(batch.shape, generator=g)
        if tuple(batch.shape[1:]) != self.covariance.shape:
            raise ValueError(f"covariance is for images of shape {self.covariance.shape}, "
                             f"but the batch has {tuple(batch.shape[1:])}")
        return self.covariance.sample(batch.shape[0], g, at_data_mean=self.at_data_mean)
