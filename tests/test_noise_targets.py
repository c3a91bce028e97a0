"""The noise stage's files and the samplers unlearning draws from, on real Fashion-MNIST forget images."""

from __future__ import annotations

import pytest
import torch

from helpers import codec, fashion_subset
from pipeline_lib.noise import targets as noise_targets
from pipeline_lib.noise.covariance import load


@pytest.fixture(scope="module")
def forget_images():
    images, _ = fashion_subset(300, classes=[1, 8])
    return codec().encode(images)


@pytest.mark.parametrize("kind", noise_targets.TARGET_KINDS)
def test_every_kind_writes_one_file_and_samples_batch_shaped_noise(tmp_path, forget_images, kind):
    out = tmp_path / f"{kind}.safetensors"
    noise_targets.prepare(kind, forget_images, rank=8, out=out)
    assert out.is_file()
    sampler = noise_targets.sampler(kind, out, codec())
    batch = forget_images[:16]
    n = sampler(batch, torch.Generator().manual_seed(0))
    assert n.shape == batch.shape and torch.isfinite(n).all()


def test_lowrank_file_holds_the_forget_set_statistics(tmp_path, forget_images):
    out = tmp_path / "lowrank.safetensors"
    noise_targets.prepare("lowrank", forget_images, rank=8, out=out)
    cov = load(out)
    flat = forget_images.flatten(1).double()
    assert cov.kind == "lowrank" and cov.k == 8 and cov.num_images == len(forget_images)
    assert torch.allclose(cov.diag().double(), flat.var(dim=0), atol=1e-4)


def test_gaussian_diagonal_noise_follows_the_per_pixel_std(tmp_path, forget_images):
    out = tmp_path / "diagonal.safetensors"
    noise_targets.prepare("diagonal", forget_images, rank=8, out=out)
    sampler = noise_targets.sampler("diagonal", out, codec())
    draws = torch.cat([sampler(forget_images[:100], torch.Generator().manual_seed(s)) for s in range(40)])
    std = forget_images.flatten(1).std(dim=0)
    corner, centre = 0, 16 * 32 + 16  # a padding pixel (std 0) and a pixel inside the clothes
    assert draws.flatten(1)[:, corner].abs().max() == 0
    assert draws.flatten(1)[:, centre].std() == pytest.approx(std[centre].item(), rel=0.1)


def test_batch_stats_noise_stays_within_valid_pixels(tmp_path, forget_images):
    out = tmp_path / "batch_stats.safetensors"
    noise_targets.prepare("batch_stats", forget_images, rank=8, out=out)
    c = codec()
    n = noise_targets.sampler("batch_stats", out, c)(forget_images[:64], torch.Generator().manual_seed(0))
    assert n.min() >= (0 - c.mean) / c.std - 1e-6 and n.max() <= (1 - c.mean) / c.std + 1e-6


def test_a_file_of_the_wrong_kind_is_refused(tmp_path, forget_images):
    out = tmp_path / "diagonal.safetensors"
    noise_targets.prepare("diagonal", forget_images, rank=8, out=out)
    with pytest.raises(ValueError, match="holds a 'diagonal' covariance"):
        noise_targets.sampler("lowrank", out, codec())
