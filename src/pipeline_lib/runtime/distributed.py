"""Data parallelism for one job on several devices: `torchrun`, one process per device, gradients averaged.

Every process runs the same seeded loader (the same global batches, masks and noise), takes its own
contiguous share of each batch, and the gradients are averaged weighted by share size before each step,
so N processes follow one process's run on the global batch up to floating-point reordering.
`training.batch_size` stays the per-process (per-GPU) batch, as paper 1 states it.

The stage CLI re-launches itself under torchrun when the family asks for more than one GPU
(`model.<family>.gpus`), so Snakemake and DVC keep running the same `python -m pipeline_lib ...` command.
Generation (`generate`, `crossval`) runs data-parallel the same way: each process reconstructs a contiguous
share of the fixed global batches (`share`) and the main process gathers and writes them (`gather_to_main`).
Methods that transform gradients themselves (EBU, the controllable method) see only their share's
gradients: they run on one process.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

import torch
import torch.distributed as dist

#: stages that train a family's model, or sample from it, and may run data-parallel
PARALLEL_STAGES = ("pretrain", "retrain", "unlearn", "generate", "crossval")


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def setup(device_name: str) -> None:
    """Join the process group torchrun describes (nccl on CUDA, gloo on CPU); no-op otherwise."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2 or dist.is_initialized():
        return
    cuda = device_name != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo")


def relaunch_command(stage: str, gpus: int, device_name: str, argv: list[str]) -> list[str] | None:
    """The torchrun command line this stage should run as on `gpus` devices (its family's `gpus`), or None to
    run here."""
    if stage not in PARALLEL_STAGES or "WORLD_SIZE" in os.environ or gpus < 2:
        return None
    if device_name == "cpu" or not torch.cuda.is_available():
        return None  # no devices to spread over: one process, as on a laptop
    gpus = min(gpus, torch.cuda.device_count())
    if gpus < 2:
        return None
    torchrun = shutil.which("torchrun") or "torchrun"
    # "--": torchrun's own parser would otherwise take the stage's --log for an abbreviation of its options
    return [torchrun, "--standalone", f"--nproc_per_node={gpus}", "-m", "pipeline_lib", "--", *argv]


def shard(batch: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """This process's contiguous share of every batch tensor, and its weight (share / whole)."""
    rank, size = world()
    if size == 1:
        return batch, 1.0
    out, weight = {}, None
    for k, v in batch.items():
        if torch.is_tensor(v) and v.dim() > 0:
            part = v.tensor_split(size)[rank]
            weight = weight if weight is not None else len(part) / len(v)
            out[k] = part
        else:
            out[k] = v
    return out, 1.0 if weight is None else weight


def share(n: int) -> range:
    """This process's contiguous share of `n` items (generation's global batches), split as `shard` splits."""
    rank, size = world()
    bounds = [len(part) for part in torch.arange(n).tensor_split(size)]
    start = sum(bounds[:rank])
    return range(start, start + bounds[rank])


def gather_to_main(tensors: list[torch.Tensor]) -> list[torch.Tensor] | None:
    """Every process's `tensors` concatenated in rank order (each process holds its `share`), on the main
    process; None on the others. Objects travel pickled, so shares may differ in length (or be empty)."""
    rank, size = world()
    if size == 1:
        return tensors
    parts: list[Any] | None = [None] * size if rank == 0 else None
    dist.gather_object([t.cpu() for t in tensors], parts, dst=0)
    if parts is None:
        return None
    return [torch.cat([p[i] for p in parts]) for i in range(len(tensors))]


def average_gradients(params: list[torch.nn.Parameter], weight: float) -> None:
    """Sum over processes of weight × gradient: the whole batch's mean-loss gradient."""
    if world()[1] == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.mul_(weight)
        dist.all_reduce(p.grad)


def average_losses(losses: dict[str, float], weight: float) -> dict[str, float]:
    if world()[1] == 1:
        return losses
    t = torch.tensor([v * weight for v in losses.values()], dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(losses, t.tolist()))


def run_relaunched(cmd: list[str]) -> int:
    """Replace this process by torchrun (its exit status becomes the stage's)."""
    sys.stdout.flush(), sys.stderr.flush()
    os.execvp(cmd[0], cmd)
    return 1  # not reached
