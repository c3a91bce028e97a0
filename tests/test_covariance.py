"""Σ estimation, storage and sampling (pipeline_lib.noise.covariance) and the unified noise sampler (noise).

All checks are real computations against torch.cov / torch.var / torch.linalg.eigh on problems small enough
to compute exactly. Variances use the unbiased (N − 1) convention throughout (torch's default).
"""

from __future__ import annotations

import math

import pytest
import torch

from helpers import codec, fashion_subset, temp_leftovers, torch_threads
from pipeline_lib.noise import covariance as cv
from pipeline_lib.noise import sampling as noise
from pipeline_lib.runtime.errors import DataError

SHAPE = (3, 2, 2)  # d = 12


def low_rank_images(n: int, rank: int, shape=SHAPE, noise_std: float = 0.0, seed: int = 0,
                    dtype=torch.float32) -> torch.Tensor:
    """n images = offset + (rank-r random factors) + optional isotropic noise, with a known structure."""
    g = torch.Generator().manual_seed(seed)
    d = math.prod(shape)
    basis = torch.randn(rank, d, generator=g, dtype=torch.float64) * torch.linspace(2.0, 0.5, rank,
                                                                                     dtype=torch.float64)[:, None]
    z = torch.randn(n, rank, generator=g, dtype=torch.float64)
    x = z @ basis + torch.randn(d, generator=g, dtype=torch.float64)  # non-zero mean
    if noise_std:
        x = x + noise_std * torch.randn(n, d, generator=g, dtype=torch.float64)
    return x.to(dtype).reshape(n, *shape)


def exact_cov(images: torch.Tensor) -> torch.Tensor:
    return torch.cov(images.reshape(len(images), -1).T)  # correction=1


# ---- estimation -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
@pytest.mark.parametrize("k", [3, 5, 12])
def test_lowrank_is_exact_when_k_covers_the_rank(dtype, tol, k):
    images = low_rank_images(300, rank=3, dtype=dtype)
    est = cv.estimate_covariance(images, "lowrank", k=k)
    exact = exact_cov(images)
    scale = exact.abs().max()
    assert (est.dense() - exact).abs().max() <= tol * scale
    assert est.explained_variance_ratio == pytest.approx(1.0, abs=1e-6 if dtype == torch.float64 else 1e-4)
    assert torch.allclose(est.mean, images.reshape(300, -1).mean(0), atol=tol * 10)
    # the directions are orthonormal
    assert torch.allclose(est.components.T @ est.components, torch.eye(k, dtype=dtype), atol=1e-4)


def test_lowrank_below_the_rank_keeps_the_top_eigenspace_and_the_exact_diagonal():
    images = low_rank_images(2000, rank=6, noise_std=0.1, dtype=torch.float64)
    exact = exact_cov(images)
    est = cv.estimate_covariance(images, "lowrank", k=3)
    evals, evecs = torch.linalg.eigh(exact)
    top = evecs[:, -3:] @ torch.diag(evals[-3:]) @ evecs[:, -3:].T
    factor = est.components * est.scales
    assert torch.allclose(factor @ factor.T, top, atol=1e-6 * exact.abs().max())
    # residual diagonal restores the per-pixel variance, so diag(Σ̂) = diag(Σ) exactly ...
    assert torch.allclose(est.diag(), torch.diagonal(exact), rtol=1e-10, atol=1e-12)
    assert torch.allclose(torch.diagonal(est.dense()), torch.diagonal(exact), rtol=1e-10, atol=1e-12)
    assert bool((est.residual >= 0).all())
    # ... while the off-diagonal part is only approximated (k < rank): the check above can fail
    assert (est.dense() - exact).abs().max() > 1e-3
    assert est.explained_variance_ratio == pytest.approx(float(evals[-3:].sum() / evals.sum()), rel=1e-9)
    assert 0.0 < est.explained_variance_ratio < 1.0


def test_diagonal_is_the_unbiased_per_pixel_variance():
    images = low_rank_images(500, rank=4, noise_std=0.3)
    est = cv.estimate_covariance(images, "diagonal")
    flat = images.reshape(500, -1)
    assert torch.allclose(est.variance, torch.var(flat, dim=0, correction=1), rtol=1e-5)
    assert not torch.allclose(est.variance, torch.var(flat, dim=0, correction=0), rtol=1e-5)
    assert torch.equal(est.dense(), torch.diag(est.variance))
    assert est.k == 0 and est.explained_variance_ratio is None and est.num_images == 500


def test_explained_variance_ratio_grows_with_k_and_stays_in_unit_interval():
    images = low_rank_images(400, rank=8, noise_std=0.2)
    ratios = [cv.estimate_covariance(images, "lowrank", k=k).explained_variance_ratio for k in (1, 2, 4, 8, 12)]
    assert all(0.0 <= r <= 1.0 for r in ratios)
    assert all(a < b for a, b in zip(ratios, ratios[1:]))
    assert ratios[-1] == pytest.approx(1.0, abs=1e-4)  # k = d explains everything


def test_estimate_rejects_bad_arguments_and_bad_data():
    images = low_rank_images(10, rank=2)
    with pytest.raises(ValueError, match="unknown covariance kind"):
        cv.estimate_covariance(images, "full")
    with pytest.raises(ValueError, match="k ≤ min"):
        cv.estimate_covariance(images, "lowrank", k=11)
    with pytest.raises(ValueError, match="k ≤ min"):
        cv.estimate_covariance(images, "lowrank")
    with pytest.raises(ValueError, match="lowrank kind only"):
        cv.estimate_covariance(images, "diagonal", k=2)
    with pytest.raises(ValueError, match="at least 2"):
        cv.estimate_covariance(images[:1], "diagonal")
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        cv.estimate_covariance(images.reshape(10, -1), "diagonal")
    bad = images.clone()
    bad[3, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        cv.estimate_covariance(bad, "lowrank", k=2)


def test_estimate_is_reproducible():
    images = low_rank_images(200, rank=5, noise_std=0.5)
    a = cv.estimate_covariance(images, "lowrank", k=2)
    b = cv.estimate_covariance(images, "lowrank", k=2)
    assert torch.equal(a.components, b.components) and torch.equal(a.scales, b.scales)


# ---- sampling -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,k", [("diagonal", None), ("lowrank", 2), ("lowrank", 4)])
def test_sample_covariance_matches_the_estimate(kind, k):
    """200k draws of d = 12: the empirical covariance is within 0.05·max|Σ| of Σ̂ (≈ 15 standard errors)."""
    images = low_rank_images(1000, rank=4, noise_std=0.3)
    est = cv.estimate_covariance(images, kind, k=k)
    samples = est.sample(200_000, torch.Generator().manual_seed(1))
    assert samples.shape == (200_000, *SHAPE)
    flat = samples.reshape(200_000, -1)
    sigma = est.dense()
    assert (torch.cov(flat.T) - sigma).abs().max() < 0.05 * sigma.abs().max()
    assert flat.mean(0).abs().max() < 0.02 * math.sqrt(sigma.diagonal().max())  # N(0, Σ), not N(mean, Σ)
    shifted = est.sample(200_000, torch.Generator().manual_seed(1), at_data_mean=True)
    assert torch.allclose(shifted.reshape(200_000, -1).mean(0), est.mean, atol=0.02 * math.sqrt(sigma.diagonal().max()))


def test_lowrank_sample_needs_its_residual():
    """Dropping the residual diagonal would show in the samples: the tolerance above can fail."""
    images = low_rank_images(1000, rank=4, noise_std=0.3)
    est = cv.estimate_covariance(images, "lowrank", k=2)
    est.residual = torch.zeros_like(est.residual)
    flat = est.sample(200_000, torch.Generator().manual_seed(1)).reshape(200_000, -1)
    sigma = exact_cov(images)
    assert (torch.cov(flat.T) - sigma).abs().max() > 0.05 * sigma.abs().max()


def test_identity_samples_have_unit_variance_and_match_sample_noise():
    ident = cv.Covariance.identity(SHAPE)
    flat = ident.sample(100_000, torch.Generator().manual_seed(2)).reshape(100_000, -1)
    assert (flat.var(0) - 1).abs().max() < 0.03
    assert flat.mean(0).abs().max() < 0.02
    assert torch.equal(ident.dense(), torch.eye(12))
    # the identity kind consumes the generator exactly as the loaders' sample_noise does
    a = ident.sample(4, torch.Generator().manual_seed(3))
    b = noise.sample_noise("gaussian", (4, *SHAPE), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_dense_refuses_above_the_threshold():
    assert cv.DENSE_MAX_DIM <= 4096
    with pytest.raises(ValueError, match="refusing to build the dense"):
        cv.Covariance.identity((3, 256, 256)).dense()
    big = cv.Covariance("diagonal", (1, 65, 64), torch.zeros(65 * 64), variance=torch.ones(65 * 64))
    with pytest.raises(ValueError, match="dense"):
        big.dense()
    assert big.diag().shape == (65 * 64,)  # the diagonal is always available
    assert cv.dense_nbytes(256 * 256 * 3) == (256 * 256 * 3) ** 2 * 4


# ---- persistence ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,k", [("identity", None), ("diagonal", None), ("lowrank", 3)])
def test_save_load_round_trip(tmp_path, kind, k):
    images = low_rank_images(100, rank=4, noise_std=0.1)
    est = cv.estimate_covariance(images, kind, k=k)
    path = est.save(tmp_path / "sigma" / "cov.safetensors")
    assert temp_leftovers(path.parent) == []
    back = cv.load(path)
    assert back.kind == kind and back.shape == SHAPE and back.k == est.k and back.num_images == 100
    assert back.explained_variance_ratio == est.explained_variance_ratio
    for name in ("mean", "variance", "components", "scales", "residual"):
        a, b = getattr(est, name), getattr(back, name)
        assert (a is None and b is None) or torch.equal(a, b), name
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(est.sample(3, g1), back.sample(3, g2))
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["kind"] == kind and meta["d"] == "12" and meta["shape"] == "[3, 2, 2]"
    assert meta["num_images"] == "100" and meta["k"] == str(est.k) and "explained_variance_ratio" in meta


def test_the_same_covariance_saves_to_the_same_bytes(tmp_path):
    """safetensors orders header metadata differently from call to call; the saved file must not vary, or
    DVC would see a changed output after every re-run."""
    est = cv.estimate_covariance(low_rank_images(50, rank=4, noise_std=0.1), "lowrank", k=3)
    files = {est.save(tmp_path / f"cov{i}.safetensors").read_bytes() for i in range(8)}
    assert len(files) == 1
    assert cv.load(tmp_path / "cov0.safetensors").k == 3


def test_load_missing_or_corrupt_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="missing"):
        cv.load(tmp_path / "nope.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 not a safetensors file")
    with pytest.raises(DataError, match="corrupt"):
        cv.load(garbage)
    good = cv.estimate_covariance(low_rank_images(50, rank=2), "lowrank", k=2).save(tmp_path / "good.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(DataError, match="corrupt"):
        cv.load(truncated)
    from safetensors.torch import save_file
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(DataError, match="not a covariance"):
        cv.load(foreign)


# ---- the unified noise sampler --------------------------------------------------------------------------
def _forget_batch(n: int = 64) -> torch.Tensor:
    images, _ = fashion_subset(n, classes=[1, 8])  # Trouser, Bag: the default forget classes
    return codec().encode(images)


def test_batch_stats_noise_respects_valid_pixel_bounds_and_batch_statistics():
    c = codec()
    x_f = _forget_batch()
    lo, hi = noise.normalised_pixel_bounds(c.mean, c.std)
    assert lo == pytest.approx((0 - c.mean) / c.std) and hi == pytest.approx((1 - c.mean) / c.std)
    sampler = noise.NoiseSampler("batch_stats", bounds=(lo, hi))
    n = sampler(x_f, torch.Generator().manual_seed(0))
    assert n.shape == x_f.shape
    assert float(n.min()) >= lo and float(n.max()) <= hi
    assert float(n.min()) == pytest.approx(lo) and float(n.max()) == pytest.approx(hi)  # the clamp is active
    # in pixel space it is the official clamp(randn·std + mean, 0, 1)
    assert float(c.to_unit(n).min()) >= 0.0
    # with bounds out of reach it is plain randn·std(batch) + mean(batch)
    wide = noise.NoiseSampler("batch_stats", bounds=(-1e9, 1e9))(x_f, torch.Generator().manual_seed(0))
    assert float(wide.mean()) == pytest.approx(float(x_f.mean()), abs=0.01)
    assert float(wide.std()) == pytest.approx(float(x_f.std()), rel=0.01)
    with pytest.raises(ValueError, match="needs clamp bounds"):
        noise.NoiseSampler("batch_stats")


def test_uniform_noise_stays_in_unit_interval_and_matches_sample_noise():
    x_f = torch.zeros(16, 1, 32, 32)
    n = noise.NoiseSampler("uniform")(x_f, torch.Generator().manual_seed(0))
    assert float(n.min()) >= -1.0 and float(n.max()) <= 1.0
    assert float(n.min()) < -0.99 and float(n.max()) > 0.99
    assert torch.equal(n, noise.sample_noise("uniform", x_f.shape, torch.Generator().manual_seed(0)))


def test_gaussian_noise_sampler_uses_the_covariance():
    images = low_rank_images(500, rank=3, noise_std=0.2)
    est = cv.estimate_covariance(images, "lowrank", k=3)
    batch = torch.zeros(8, *SHAPE)
    assert torch.equal(noise.NoiseSampler("gaussian", covariance=est)(batch, torch.Generator().manual_seed(4)),
                       est.sample(8, torch.Generator().manual_seed(4)))
    assert torch.equal(noise.NoiseSampler()(batch, torch.Generator().manual_seed(4)),
                       noise.sample_noise("gaussian", batch.shape, torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError, match="shape"):
        noise.NoiseSampler("gaussian", covariance=est)(torch.zeros(8, 1, 32, 32), torch.Generator())
    with pytest.raises(ValueError, match="gaussian noise only"):
        noise.NoiseSampler("uniform", covariance=est)
    with pytest.raises(ValueError, match="unknown noise kind"):
        noise.NoiseSampler("laplace")


# ---- real data ----------------------------------------------------------------------------------------------
def test_fashion_mnist_lowrank_explains_more_variance_with_larger_k():
    images, _ = fashion_subset(1000)
    x = codec().encode(images)  # [1000, 1, 32, 32], d = 1024
    with torch_threads(1):
        exact_evals = torch.linalg.eigvalsh(exact_cov(x).double()).flip(0)
        ratios = {}
        for k in (4, 16, 64, 256):
            est = cv.estimate_covariance(x, "lowrank", k=k)
            ratios[k] = est.explained_variance_ratio
            # the randomized SVD finds (nearly) the true top-k eigenvalues ...
            assert ratios[k] == pytest.approx(float(exact_evals[:k].sum() / exact_evals.sum()), rel=0.01)
            # ... and the residual keeps diag(Σ̂) at the per-pixel variance
            assert torch.allclose(est.diag(), x.reshape(1000, -1).var(0), rtol=1e-3, atol=1e-5)
    values = [ratios[k] for k in sorted(ratios)]
    assert all(a < b for a, b in zip(values, values[1:])), ratios
    assert values[0] > 0.3 and values[-1] > 0.95, ratios  # clothing images are strongly low-rank
