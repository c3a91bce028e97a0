"""Benchmark: how fast do the paper-scale unlearning steps run on one GPU, and how far from its peak?

1. l2n unlearning steps of the official-size ViT-L/16 MAE (random weights) at 224 px, 16 images per side
   (retain + forget, paper 1's per-GPU batch), and of Palette's 256 px U-Net (presets/places365.yaml's
   architecture, random weights) at 8 per side: images/s and peak device memory, float32 side by side with
   the settings the presets use (bf16 autocast, TF32, channels-last for the U-Net), so the ratio is printed.
2. The MAE step's model FLOPs utilisation: FLOPs of one step (the teacher's forward for the noise target,
   the student's forward and backward) counted by
   torch.utils.flop_counter.FlopCounterMode, per second, over the device's dense bf16 peak (--peak-tflops, or
   looked up for H100/H200/A100/A10G).
3. With more than one GPU: the bf16 MAE step data-parallel on 2 processes (NCCL, the pipeline's own
   sharding and gradient averaging) against 1, as images/s and scaling efficiency.

Every step goes through the pipeline's code (`build_method`, `trainer._step`, `backends`, `distributed`), so the
numbers are the stages' own. Not for the CPU: without CUDA it stops with a message, except `--tiny` (tiny
models at 32 px on the CPU, a few seconds: what tests/test_bench.py runs to keep this script working).

    .venv/bin/python bench/gpu.py                      # on a CUDA machine
    .venv/bin/python bench/gpu.py --peak-tflops 989    # an unlisted device: its dense bf16 TFLOP/s
    .venv/bin/python bench/gpu.py --tiny               # CPU smoke run
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from dataclasses import dataclass

import torch
from tabulate import tabulate

from pipeline_lib.params.runtime import numerics
from pipeline_lib.runtime import backends, distributed
from pipeline_lib.training.loaders import BalancedLoader, mask_sampler
from pipeline_lib.methods import build_method
from pipeline_lib.models import build_model
from pipeline_lib.training.trainer import _step, build_optimizer

VIT_L = dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16, decoder_embed_dim=512, decoder_depth=8,
             decoder_num_heads=16, mlp_ratio=4.0, norm_pix_loss=True)
#: presets/places365.yaml's diffusion arch in Palette's own layout (what the official checkpoint converts to)
PALETTE = dict(block_out_channels=[64, 128, 256, 512], layers_per_block=2, attention=True, norm_num_groups=32,
               attention_head_dim=32, train_timesteps=2000, beta_start=1.0e-6, beta_end=0.01, layout="palette")
TINY_VIT = dict(patch_size=4, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1,
                decoder_num_heads=2, mlp_ratio=2.0, norm_pix_loss=True)
TINY_UNET = dict(block_out_channels=[32, 32], layers_per_block=1, attention=True, attention_head_dim=32,
                 train_timesteps=50, layout="palette")  # Palette's layout as the real one: 32 channels per group

#: dense bf16 tensor-core TFLOP/s by device name (first match wins; PCIe H100 before the SXM default)
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H200", 989.4), ("H100", 989.4), ("A100", 312.0), ("A10G", 70.0))


@dataclass(frozen=True)
class Case:
    """One benchmarked step: a family at a size and batch, with the precision settings to apply."""

    name: str
    family: str
    arch: dict
    size: int
    batch: int
    mask: dict
    runtime: dict


@dataclass
class Result:
    images_per_s: float
    peak_mib: float | None
    flops_per_step: float


def _cases(tiny: bool) -> list[Case]:
    fp32 = {"device": "auto", "amp": False}
    fast = {"device": "auto", "amp": True, "tf32": True}
    if tiny:
        vit, unet, (vs, vb), (us, ub) = TINY_VIT, TINY_UNET, (32, 2), (32, 2)
        vmask, umask = {"kind": "random", "ratio": 0.75, "patch": 4}, {"kind": "center", "size": 16}
    else:
        vit, unet, (vs, vb), (us, ub) = VIT_L, PALETTE, (224, 16), (256, 8)
        vmask, umask = {"kind": "random", "ratio": 0.75, "patch": 16}, {"kind": "center", "size": 128}
    return [
        Case("MAE ViT-L/16 fp32" if not tiny else "MAE tiny fp32", "mae", vit, vs, vb, vmask, fp32),
        Case("MAE ViT-L/16 bf16" if not tiny else "MAE tiny bf16", "mae", vit, vs, vb, vmask, fast),
        Case("Palette U-Net fp32" if not tiny else "U-Net tiny fp32", "diffusion", unet, us, ub, umask, fp32),
        Case("Palette U-Net bf16" if not tiny else "U-Net tiny bf16", "diffusion", unet, us, ub, umask, fast),
        Case("Palette U-Net bf16 NHWC" if not tiny else "U-Net tiny bf16 NHWC", "diffusion", unet, us, ub, umask,
             {**fast, "channels_last": True}),
    ]


def _setup(case: Case, device: torch.device, steps: int):
    """Student, objective, optimizer and the batches of `steps` steps (on the device), as the unlearn stage
    builds them; each process of a data-parallel run takes its share of every global batch."""
    settings = backends.configure(device, **numerics({"runtime": case.runtime}))
    torch.manual_seed(0)
    teacher = build_model(case.family, case.arch, case.size, in_chans=3).to(device)
    teacher = backends.prepare(teacher, settings, teacher.convolutional)
    student = copy.deepcopy(teacher)
    objective = build_method("l2n", student, teacher, alpha=0.25, norm="l2")
    optimizer = build_optimizer(objective.trainable_parameters(), {"name": "adamw", "lr": 1e-4})
    g = torch.Generator().manual_seed(0)
    world = distributed.world()[1]
    n = case.batch * world * steps
    data = torch.randn(n, 3, case.size, case.size, generator=g)
    loader = BalancedLoader(data, data, case.batch * world, g,
                            mask_sampler(case.mask, case.size, student.mask_granularity, g))
    batches = []
    for batch in loader:
        batch, weight = distributed.shard(batch)
        batches.append(({k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}, weight))
    objective.train_mode()
    return settings, objective, optimizer, batches


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(case: Case, device: torch.device, steps: int, warmup: int) -> Result:
    """`warmup` untimed steps, then the wall time of `steps` steps (one synchronisation at each end, so the
    device queue stays full as in training); the FLOPs of one more step."""
    from torch.utils.flop_counter import FlopCounterMode

    settings, objective, optimizer, batches = _setup(case, device, warmup + steps + 1)
    params = objective.trainable_parameters()

    def step(i: int) -> None:
        batch, weight = batches[i]
        _step(objective, optimizer, batch, params, device, settings.amp, weight, case.name, i)

    for i in range(warmup):
        step(i)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    _sync(device)
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    with FlopCounterMode(display=False) as counter:
        step(warmup + steps)
    images = 2 * case.batch * distributed.world()[1] * steps  # retain + forget, every process
    return Result(images / wall, peak, float(counter.get_total_flops()))


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given is not None or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((tflops for key, tflops in PEAK_BF16_TFLOPS if key in name), None)


def _ddp_worker(rank: int, world: int, store: str, case: Case, steps: int, warmup: int, out: str) -> None:
    import torch.distributed as dist

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        result = measure(case, torch.device("cuda", rank), steps, warmup)
        if rank == 0:
            torch.save(result.images_per_s, out)
    finally:
        dist.destroy_process_group()


def ddp_rate(case: Case, processes: int, steps: int, warmup: int) -> float:
    """Images/s of `case` data-parallel on `processes` GPUs (per-GPU batch as in one process)."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rate.pt")
        mp.spawn(_ddp_worker, args=(processes, os.path.join(tmp, "store"), case, steps, warmup, out),
                 nprocs=processes, join=True)
        return torch.load(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny models on the CPU: checks the script, measures nothing")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per case (default 20; tiny 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; tiny 1)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's dense bf16 TFLOP/s for the MFU (default: looked up by device name)")
    args = ap.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        print("bench/gpu.py measures CUDA devices and none is visible here (torch.cuda.is_available() is False); "
              "run it on a GPU machine, or `--tiny` for a CPU smoke run", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.tiny else "cuda")
    steps = args.steps or (2 if args.tiny else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 3)
    peak = peak_tflops(device, args.peak_tflops)
    name = "CPU (tiny models; amp, TF32 and NHWC do not apply)" if args.tiny else torch.cuda.get_device_name(device)
    print(f"{name}, torch {torch.__version__}, {steps} timed steps after {warmup}; batches are images per side "
          "(retain + forget)")
    rows, base = [], {}
    for case in _cases(args.tiny):
        r = measure(case, device, steps, warmup)
        base.setdefault(case.family, r.images_per_s)  # each family's first case (fp32) is the reference
        tflops = r.flops_per_step * r.images_per_s / (2 * case.batch) / 1e12
        mfu = f"{100 * tflops / peak:.1f}%" if peak and case.family == "mae" and case.runtime["amp"] else ""
        rows.append([case.name, f"{case.size} px x {case.batch}+{case.batch}", f"{r.images_per_s:.1f}",
                     f"{r.images_per_s / base[case.family]:.2f}", "" if r.peak_mib is None else f"{r.peak_mib:.0f}",
                     f"{r.flops_per_step / 1e9:.4g}", f"{tflops:.3g}", mfu])
    print(tabulate(rows, headers=["step (l2n)", "batch", "img/s", "x fp32", "peak MiB", "GFLOP/step",
                                  "TFLOP/s", f"MFU (peak {peak or '?'} TFLOP/s bf16)"], tablefmt="github"))
    if peak is None and not args.tiny:
        print("MFU: unknown device peak; pass --peak-tflops", file=sys.stderr)
    if not args.tiny and torch.cuda.device_count() > 1:
        mae_bf16 = _cases(False)[1]
        one = measure(mae_bf16, device, steps, warmup).images_per_s
        two = ddp_rate(mae_bf16, 2, steps, warmup)
        print()
        print(tabulate([[f"{one:.1f}", f"{two:.1f}", f"{two / one:.2f}", f"{100 * two / (2 * one):.0f}%"]],
                       headers=["MAE bf16 img/s, 1 process", "2 processes (DDP)", "speed-up", "scaling efficiency"],
                       tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
