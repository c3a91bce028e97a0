"""Process-wide run settings every stage shares: seeding, determinism, device choice and logging."""

from __future__ import annotations

import logging
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

LOG = logging.getLogger("pipeline_lib")


def seed_everything(seed: int) -> torch.Generator:
    """Seed every RNG and make CPU kernels deterministic; return a CPU generator for data order."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return torch.Generator().manual_seed(seed)


def configure_threads(requested: int | None) -> int:
    """Fix torch's CPU thread count: results depend on it (reduction order), so it must not follow whatever
    OMP_NUM_THREADS an engine sets (Snakemake sets it to a rule's `threads`, DVC does not). Default: the
    CPUs this process may run on (respects SLURM/cgroup CPU sets), shared with its torchrun siblings."""
    n = requested or process_cpus()
    torch.set_num_threads(n)
    return n


def process_cpus() -> int:
    """The CPUs this process may use: its affinity set, divided among the processes torchrun started on this
    node (LOCAL_WORLD_SIZE), so N data-parallel processes of one job do not each start a thread per CPU of the
    job (SLURM gives the job --cpus-per-gpu × GPUs). One process: all of them, as before."""
    return max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; an explicit device that is absent is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        from .errors import ParamsError

        raise ParamsError(f"runtime.device is '{name}' but no CUDA device is visible")
    return device


class _Tee:
    """A stderr that also lands in the stage's log file, progress bars included."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self):
        for stream in self.streams:
            stream.flush()

    def isatty(self):
        return False


def setup_logging(log_file: str | os.PathLike | None) -> None:
    """Log to stderr and, when given, copy all of stderr into the stage's own log file."""
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        sys.stderr = _Tee(sys.__stderr__, open(log_file, "w", buffering=1))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(sys.stderr)],
        force=True,
    )


def progress(iterable=None, **kwargs):
    """A bar on a terminal, periodic lines in logs (`pipeline_lib.runtime.progress`)."""
    from .progress import progress as _progress

    return _progress(iterable, **kwargs)
