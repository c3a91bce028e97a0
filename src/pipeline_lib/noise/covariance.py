"""The noise covariance Σ as a first-class object: estimated from images, saved, loaded and sampled.

Paper 1 draws the forget-set noise target n ~ N(0, Σ) in normalised pixel space and uses Σ = I; the full
Σ of 256×256×3 images (d ≈ 2·10⁵) would take d² × 4 bytes ≈ 155 GB (144 GiB) in float32, so a data-driven
Σ has to be structured. Three kinds, none of which ever forms the d×d matrix:

- ``identity``: Σ = I, the paper default; stores only the image shape (and the data mean, if estimated).
- ``diagonal``: Σ = diag(per-pixel variance).
- ``lowrank``: Σ = U S² Uᵀ + D, with U [d, k] the top-k principal directions (randomized SVD of the
  centred data) and D the residual diagonal, chosen so that diag(Σ) equals the per-pixel variance.

Conventions: images are [N, C, H, W] in the normalised space the models see, pixels are flattened in
C, H, W order; variances and covariances use the unbiased (N − 1) denominator, as ``torch.var`` and
``torch.cov`` do by default. The data mean is kept: ``sample`` draws N(0, Σ) as the paper does, or
N(mean, Σ) with ``at_data_mean=True``. ``dense()`` builds Σ only for d ≤ DENSE_MAX_DIM (tests, tiny data).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..runtime.atomic import atomic_path
from ..runtime.errors import DataError

KINDS = ("identity", "diagonal", "lowrank")
#: largest d for which a d×d matrix may be formed (4096² float32 = 64 MiB)
DENSE_MAX_DIM = 4096
FORMAT_VERSION = "1"
#: randomized SVD defaults: extra columns beyond k and power iterations (Halko et al. 2011, Alg. 4.4)
OVERSAMPLE = 10
POWER_ITERS = 2


def dense_nbytes(d: int, bytes_per_value: int = 4) -> int:
    """Memory the full d×d matrix would take (float32 by default)."""
    return d * d * bytes_per_value


def canonical_safetensors(data: bytes) -> bytes:
    """`data` with its JSON header's keys sorted. safetensors writes header metadata from a hash map, in an
    order that changes from one call to the next; sorted, the same content gives the same bytes. The header
    keeps its length (same keys and values, another order; spaces pad it, as safetensors itself pads)."""
    size = int.from_bytes(data[:8], "little")
    text = json.dumps(json.loads(data[8:8 + size]), sort_keys=True, separators=(",", ":")).encode()
    if len(text) > size:
        raise ValueError(f"safetensors header grew from {size} to {len(text)} bytes when its keys were sorted")
    return data[:8] + text.ljust(size) + data[8 + size:]


@dataclass
class Covariance:
    """Σ of `shape`-sized images; see the module docstring for the kinds and conventions.

    Fields (d = C·H·W): ``mean`` [d]; ``variance`` [d] (diag(Σ); None for identity); ``components`` [d, k]
    orthonormal principal directions and ``scales`` [k] the standard deviation along each (lowrank only);
    ``residual`` [d] = variance − diag(U S² Uᵀ) ≥ 0 (lowrank only); ``explained_variance_ratio`` =
    Σ scales² / Σ variance (lowrank only); ``num_images`` the estimate's sample size (0 = not estimated).
    """

    kind: str
    shape: tuple[int, int, int]
    mean: torch.Tensor
    variance: torch.Tensor | None = None
    components: torch.Tensor | None = None
    scales: torch.Tensor | None = None
    residual: torch.Tensor | None = None
    explained_variance_ratio: float | None = None
    num_images: int = 0

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)
        if self.kind not in KINDS:
            raise ValueError(f"unknown covariance kind '{self.kind}'; known: {', '.join(KINDS)}")
        if len(self.shape) != 3:
            raise ValueError(f"covariance shape must be (C, H, W), got {self.shape}")
        need = {"identity": (), "diagonal": ("variance",), "lowrank": ("variance", "components", "scales", "residual")}
        missing = [f for f in need[self.kind] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a '{self.kind}' covariance needs {', '.join(missing)}")
        d = self.d
        for name in ("mean", "variance", "residual"):
            t = getattr(self, name)
            if t is not None and tuple(t.shape) != (d,):
                raise ValueError(f"covariance {name} has shape {tuple(t.shape)}, expected ({d},)")
        if self.kind == "lowrank":
            k = self.scales.shape[0]
            if tuple(self.components.shape) != (d, k):
                raise ValueError(f"covariance components have shape {tuple(self.components.shape)}, "
                                 f"expected ({d}, {k})")

    # ---- shape ------------------------------------------------------------------------------------------
    @property
    def d(self) -> int:
        return math.prod(self.shape)

    @property
    def k(self) -> int:
        """Number of principal directions (0 unless lowrank)."""
        return 0 if self.scales is None else int(self.scales.shape[0])

    @classmethod
    def identity(cls, shape: tuple[int, int, int]) -> "Covariance":
        """Σ = I with a zero mean: the paper's default, needing no data."""
        return cls("identity", tuple(shape), torch.zeros(math.prod(shape)))

    # ---- matrix views -----------------------------------------------------------------------------------
    def diag(self) -> torch.Tensor:
        """diag(Σ) as [d] (for lowrank: U S² Uᵀ's diagonal plus the residual, = the per-pixel variance)."""
        if self.kind == "identity":
            return torch.ones(self.d, dtype=self.mean.dtype)
        if self.kind == "diagonal":
            return self.variance.clone()
        return (self.components.square() @ self.scales.square()) + self.residual

    def dense(self) -> torch.Tensor:
        """Σ as a [d, d] matrix; only for d ≤ DENSE_MAX_DIM, because at image sizes it does not fit in memory."""
        if self.d > DENSE_MAX_DIM:
            raise ValueError(f"refusing to build the dense {self.d}×{self.d} covariance "
                             f"({dense_nbytes(self.d) / 2**30:.1f} GiB in float32); "
                             f"dense() is limited to d ≤ {DENSE_MAX_DIM}")
        if self.kind == "identity":
            return torch.eye(self.d, dtype=self.mean.dtype)
        if self.kind == "diagonal":
            return torch.diag(self.variance)
        factor = self.components * self.scales
        return factor @ factor.T + torch.diag(self.residual)

    def nbytes(self) -> int:
        """Bytes held by this object's tensors (what saving or keeping it in memory costs)."""
        tensors = (self.mean, self.variance, self.components, self.scales, self.residual)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    # ---- sampling ---------------------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator, at_data_mean: bool = False) -> torch.Tensor:
        """n draws of N(0, Σ) (paper 1) — or N(mean, Σ) with at_data_mean — as [n, C, H, W].

        lowrank draws U·diag(s)·z₁ + sqrt(D)·z₂ with independent standard normals z₁ [k], z₂ [d], whose
        covariance is exactly U S² Uᵀ + D. identity is a plain randn, so it consumes the generator exactly
        as ``noise.sample_noise("gaussian", ...)`` does.
        """
        dtype = self.mean.dtype
        if self.kind == "identity":
            flat = torch.randn((n, self.d), generator=generator, dtype=dtype)
        elif self.kind == "diagonal":
            flat = torch.randn((n, self.d), generator=generator, dtype=dtype) * self.variance.clamp_min(0).sqrt()
        else:
            z1 = torch.randn((n, self.k), generator=generator, dtype=dtype)
            z2 = torch.randn((n, self.d), generator=generator, dtype=dtype)
            flat = (z1 * self.scales) @ self.components.T
            flat.addcmul_(z2, self.residual.clamp_min(0).sqrt())
        if at_data_mean:
            flat = flat + self.mean
        return flat.reshape(n, *self.shape)

    # ---- persistence ------------------------------------------------------------------------------------
    def metadata(self) -> dict[str, str]:
        """The safetensors header metadata (strings only)."""
        return {
            "format": "pipeline_lib.covariance",
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "k": str(self.k),
            "explained_variance_ratio": json.dumps(self.explained_variance_ratio),
            "num_images": str(self.num_images),
            "d": str(self.d),
            "shape": json.dumps(list(self.shape)),
            "ddof": "1",
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write a .safetensors file atomically (an interrupted save leaves no file that looks complete), with
        the same bytes for the same content, so DVC and Snakemake's cache see an unchanged file as unchanged."""
        from safetensors.torch import save

        tensors = {name: getattr(self, name).contiguous()
                   for name in ("mean", "variance", "components", "scales", "residual")
                   if getattr(self, name) is not None}
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(canonical_safetensors(save(tensors, metadata=self.metadata())))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Covariance":
        """Read a file written by ``save``; a missing, corrupt or inconsistent file raises DataError."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise DataError(f"covariance file {path} is missing: run the covariance estimation first")
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                tensors = {name: fh.get_tensor(name) for name in fh.keys()}
        except Exception as exc:  # safetensors raises its own error types for truncated or foreign files
            raise DataError(f"covariance file {path} is corrupt or not a safetensors file: {exc}") from None
        if meta.get("format") != "pipeline_lib.covariance":
            raise DataError(f"{path} is a safetensors file but not a covariance (metadata 'format' = "
                            f"{meta.get('format')!r})")
        try:
            shape = tuple(json.loads(meta["shape"]))
            cov = cls(kind=meta["kind"], shape=shape, mean=tensors["mean"], variance=tensors.get("variance"),
                      components=tensors.get("components"), scales=tensors.get("scales"),
                      residual=tensors.get("residual"),
                      explained_variance_ratio=json.loads(meta["explained_variance_ratio"]),
                      num_images=int(meta["num_images"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise DataError(f"covariance file {path} is inconsistent: {exc!r}") from None
        if str(cov.d) != meta.get("d") or str(cov.k) != meta.get("k"):
            raise DataError(f"covariance file {path}: metadata d={meta.get('d')}, k={meta.get('k')} "
                            f"do not match its tensors (d={cov.d}, k={cov.k})")
        return cov


def load(path: str | os.PathLike) -> Covariance:
    return Covariance.load(path)


# ---- estimation -------------------------------------------------------------------------------------------
def _orthonormal(a: torch.Tensor) -> torch.Tensor:
    return torch.linalg.qr(a, mode="reduced").Q


def _top_directions(x: torch.Tensor, mean: torch.Tensor, k: int, oversample: int, power_iters: int,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k right singular vectors V [d, k] and singular values [k] of the centred data X − 1·meanᵀ.

    Randomized SVD (Halko, Martinsson & Tropp 2011, Alg. 4.4 with QR re-orthonormalisation) written so the
    centred [N, d] matrix is never formed: products use X·A − 1·(meanᵀA) and Xᵀ·B − mean·(1ᵀB). Peak extra
    memory is a few [d, k + oversample] blocks. The right factor B = QᵀXc satisfies BᵀB ≼ XcᵀXc, so the
    residual diagonal it leaves is non-negative (up to rounding).
    """
    n, d = x.shape
    cols = min(k + oversample, n, d)

    def times(a: torch.Tensor) -> torch.Tensor:  # Xc @ a, [N, cols]
        return x @ a - (mean @ a).unsqueeze(0)

    def t_times(b: torch.Tensor) -> torch.Tensor:  # Xcᵀ @ b, [d, cols]
        return x.T @ b - mean.unsqueeze(1) * b.sum(0, keepdim=True)

    omega = torch.randn((d, cols), generator=generator, dtype=x.dtype)
    q = _orthonormal(times(omega))
    del omega
    for _ in range(power_iters):
        q = _orthonormal(times(_orthonormal(t_times(q))))
    bt = t_times(q)  # Bᵀ = Xcᵀ Q, [d, cols]
    # Bᵀ = Q₂R, R = U_r S V_rᵀ  ⇒  the right singular vectors of B are Q₂U_r (no wide SVD needed).
    q2, r = torch.linalg.qr(bt, mode="reduced")
    del bt
    u_r, s, _ = torch.linalg.svd(r)
    return (q2 @ u_r[:, :k]), s[:k]


def estimate_covariance(images: torch.Tensor, kind: str, k: int | None = None, *,
                        oversample: int = OVERSAMPLE, power_iters: int = POWER_ITERS,
                        generator: torch.Generator | None = None) -> Covariance:
    """Estimate Σ of `images` [N, C, H, W] (normalised space) as a Covariance of `kind`.

    `k` (lowrank only) is the number of principal directions, 1 ≤ k ≤ min(N, d). The randomized SVD uses
    `generator` (default: seeded with 0) so an estimate is reproducible. Float64 input is computed in
    float64, anything else in float32; the input is never modified, and a contiguous float32/float64
    input is never copied (peak extra memory ≈ a few [d, k + oversample] blocks, see the bench).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown covariance kind '{kind}'; known: {', '.join(KINDS)}")
    if images.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
    n, shape = images.shape[0], tuple(images.shape[1:])
    if n < 2:
        raise ValueError(f"estimating a covariance needs at least 2 images, got {n}")
    d = math.prod(shape)
    if kind == "lowrank":
        if k is None or not 1 <= k <= min(n, d):
            raise ValueError(f"lowrank covariance needs 1 ≤ k ≤ min(N, d) = {min(n, d)}, got k={k}")
    elif k is not None:
        raise ValueError(f"k applies to the lowrank kind only, got k={k} for '{kind}'")
    x = images.reshape(n, d)
    if x.dtype != torch.float64:
        x = x.float()
    variance, mean = torch.var_mean(x, dim=0, correction=1)
    if not bool(torch.isfinite(variance).all()):
        raise DataError("images contain NaN or infinite values; cannot estimate a covariance")
    if kind == "identity":
        return Covariance("identity", shape, mean, num_images=n)
    if kind == "diagonal":
        return Covariance("diagonal", shape, mean, variance=variance, num_images=n)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    directions, singular = _top_directions(x, mean, k, oversample, power_iters, generator)
    scales = singular / math.sqrt(n - 1)
    explained = directions.square() @ scales.square()
    residual = (variance - explained).clamp_min(0)
    total = float(variance.sum())
    ratio = float(scales.square().sum()) / total if total > 0 else 1.0
    return Covariance("lowrank", shape, mean, variance=variance, components=directions, scales=scales,
                      residual=residual, explained_variance_ratio=min(max(ratio, 0.0), 1.0), num_images=n)
