"""Benchmark: a low-rank Σ at image size (d = 256·256·3) versus the dense d×d matrix it replaces.

Generates N synthetic low-rank-plus-noise images in normalised space (float32, in chunks so the only large
allocation is the [N, d] data itself), estimates the lowrank covariance for each k, and prints estimation
time, peak extra memory and the stored size next to the d² × 4 bytes a dense float32 Σ would need.

Memory is the process's peak resident set size (Linux VmHWM) during the estimate minus the resident size
just before it. The peak is reset before each estimate by writing 5 to /proc/self/clear_refs; where that is
not allowed, the increase of resource.getrusage(RUSAGE_SELF).ru_maxrss is reported instead (a lower bound,
0 when an earlier step peaked higher). The table says which was used.

    .venv/bin/python bench/covariance.py                 # defaults: N = 2000, d = 196608, k = 64, 256
    .venv/bin/python bench/covariance.py --n 500 --ks 16 64 --shape 3 64 64   # quick
"""

from __future__ import annotations

import argparse
import math
import resource
import time
from pathlib import Path

import torch
from tabulate import tabulate

from pipeline_lib.noise import covariance as cv

MiB, GiB = 2**20, 2**30


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak extra resident memory of a block, in bytes (see the module docstring for the method)."""

    def __enter__(self):
        self.exact = _reset_peak() and _status_kib("VmHWM") is not None
        self.method = "VmHWM - VmRSS (peak reset via clear_refs)" if self.exact else "ru_maxrss delta (lower bound)"
        self.before = (_status_kib("VmRSS") if self.exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        return self

    def __exit__(self, *exc):
        after = _status_kib("VmHWM") if self.exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.extra_bytes = max(after - self.before, 0) * 1024
        return False


def synthetic_images(n: int, shape: tuple[int, int, int], rank: int, noise_std: float, chunk: int,
                     seed: int) -> torch.Tensor:
    """n images = mean + Σ_r z_r·σ_r·b_r + noise_std·ε: a rank-`rank` signal plus noise, pixel variance ≈ 1."""
    g = torch.Generator().manual_seed(seed)
    d = math.prod(shape)
    basis = torch.linalg.qr(torch.randn(d, rank, generator=g)).Q.T.contiguous()  # orthonormal rows [rank, d]
    # decaying signal std per direction, scaled so each pixel's variance is ≈ 1 as in normalised images
    spectrum = torch.logspace(0, -1.5, rank)
    spectrum *= math.sqrt(d * max(1.0 - noise_std**2, 0.0) / float(spectrum.square().sum()))
    factor = basis * spectrum[:, None]
    mean = 0.1 * torch.randn(d, generator=g)
    x = torch.empty(n, d)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        block = x[start:stop]
        torch.randn(block.shape, generator=g, out=block)
        block.mul_(noise_std).add_(mean)
        block.addmm_(torch.randn(stop - start, rank, generator=g), factor)
    return x.reshape(n, *shape)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="number of synthetic images (default 2000)")
    ap.add_argument("--shape", type=int, nargs=3, default=(3, 256, 256), metavar=("C", "H", "W"))
    ap.add_argument("--ks", type=int, nargs="+", default=(64, 256), help="principal directions to keep")
    ap.add_argument("--rank", type=int, default=128, help="rank of the synthetic signal (default 128)")
    ap.add_argument("--noise-std", type=float, default=0.5, help="isotropic noise std (default 0.5)")
    ap.add_argument("--chunk", type=int, default=250, help="images generated per chunk")
    ap.add_argument("--power-iters", type=int, default=cv.POWER_ITERS)
    ap.add_argument("--oversample", type=int, default=cv.OVERSAMPLE)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = tuple(args.shape)
    d = math.prod(shape)
    data_bytes = args.n * d * 4
    print(f"d = {'·'.join(map(str, shape))} = {d}; N = {args.n}; data {data_bytes / GiB:.2f} GiB float32; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    t0 = time.perf_counter()
    images = synthetic_images(args.n, shape, args.rank, args.noise_std, args.chunk, args.seed)
    print(f"generated in {time.perf_counter() - t0:.1f} s (signal rank {args.rank}, noise std {args.noise_std})")

    dense = cv.dense_nbytes(d)
    rows, method = [], None
    for k in args.ks:
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            est = cv.estimate_covariance(images, "lowrank", k=k, oversample=args.oversample,
                                         power_iters=args.power_iters)
            seconds = time.perf_counter() - t0
        method = mem.method
        stored = est.nbytes()
        rows.append([k, f"{seconds:.1f}", f"{mem.extra_bytes / MiB:.0f}", f"{stored / MiB:.1f}",
                     f"{dense / GiB:.1f}", f"{dense / max(mem.extra_bytes, 1):.0f}×", f"{dense / stored:.0f}×",
                     f"{est.explained_variance_ratio:.3f}"])
        del est
    print()
    print(tabulate(rows, headers=["k", "time (s)", "peak extra (MiB)", "stored Σ (MiB)", "dense Σ (GiB)",
                                  "dense / peak", "dense / stored", "explained var"],
                   colalign=("right",) * 8))
    print(f"\ndense Σ = d² × 4 bytes = {dense:,} B = {dense / 1e9:.1f} GB = {dense / GiB:.1f} GiB (float32)")
    print(f"peak extra = {method}; excludes the {data_bytes / MiB:.0f} MiB of input images")


if __name__ == "__main__":
    main()
