"""Batches of images from wherever a reader keeps them: a tensor in memory, or files decoded by workers.

A batch's indices are fixed before any pixel is read (by the loaders' seeded generator), so the order, and
hence every result, is the same for any number of workers; workers only change how fast batches arrive.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

#: DataLoader workers per stream; set once per stage from params (`runtime.loader_workers`)
WORKERS = {"n": 0}


def configure(workers: int | None) -> int:
    """Workers per process: `workers`, or (None) this process's CPUs less one for itself, at most 8."""
    from ..runtime.devices import process_cpus

    WORKERS["n"] = min(8, max(0, process_cpus() - 1)) if workers is None else workers
    return WORKERS["n"]


def batches(images, index_batches: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
    """uint8 batches of `images` at `index_batches`, in that order (prefetched by workers for files)."""
    if torch.is_tensor(images):
        for idx in index_batches:
            yield images[idx]
        return
    if not len(index_batches):
        return
    n = WORKERS["n"]
    loader = torch.utils.data.DataLoader(images, batch_sampler=[b.tolist() for b in index_batches], num_workers=n,
                                         pin_memory=torch.cuda.is_available(), prefetch_factor=4 if n else None)
    yield from loader


def gather(images, idx: torch.Tensor) -> torch.Tensor:
    """One batch at indices drawn just now (decoded here, in order)."""
    if torch.is_tensor(images):
        return images[idx]
    return torch.stack([images[i] for i in idx.tolist()])


def materialise(images, batch_size: int = 256) -> torch.Tensor:
    """The whole (small) set as one uint8 tensor: evaluation sets, the noise stage's forget set."""
    if torch.is_tensor(images):
        return images
    return torch.cat(list(batches(images, list(torch.arange(len(images)).split(batch_size)))))
