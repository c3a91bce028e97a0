"""Deterministic CPU batch streams: data order, masks and noise all come from one seeded generator.

Drawing every random tensor on the CPU makes a run repeatable whatever device trains it.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch

from .masks import sample_mask
from .noise import NoiseSampler

MaskFn = Callable[[int], torch.Tensor]


def mask_sampler(spec: dict, image_size: int, granularity: int, g: torch.Generator) -> MaskFn:
    return lambda batch: sample_mask(spec, batch, image_size, granularity, g)


class ImageLoader:
    """One shuffled pass over `x` per epoch; optional labels and masks ride along."""

    def __init__(self, x: torch.Tensor, batch_size: int, g: torch.Generator, labels: torch.Tensor | None = None,
                 mask_fn: MaskFn | None = None):
        self.x, self.labels, self.batch_size, self.g, self.mask_fn = x, labels, batch_size, g, mask_fn

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        order = torch.randperm(len(self.x), generator=self.g)
        for idx in order.split(self.batch_size):
            batch = {"x": self.x[idx], "n": len(idx)}
            if self.labels is not None:
                batch["y"] = self.labels[idx]
            if self.mask_fn is not None:
                batch["mask"] = self.mask_fn(len(idx))
            yield batch


class BalancedLoader:
    """Paper 1 Algorithm 1: every step pairs a forget batch with an equally large retain batch.

    An epoch is one pass over the forget set; retain images are drawn from a reshuffled cycle, so a small
    (limited or proxy) retain set is over-sampled to keep the balance.
    """

    def __init__(self, retain: torch.Tensor, forget: torch.Tensor, batch_size: int, g: torch.Generator,
                 mask_fn: MaskFn, noise: NoiseSampler | None = None):
        if len(retain) == 0 or len(forget) == 0:
            raise ValueError("unlearning needs a non-empty retain set and forget set")
        self.retain, self.forget, self.batch_size, self.g = retain, forget, batch_size, g
        self.mask_fn, self.noise = mask_fn, noise or NoiseSampler()
        self._retain_order = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return math.ceil(len(self.forget) / self.batch_size)

    def _next_retain(self, n: int) -> torch.Tensor:
        while len(self._retain_order) < n:
            self._retain_order = torch.cat([self._retain_order, torch.randperm(len(self.retain), generator=self.g)])
        idx, self._retain_order = self._retain_order[:n], self._retain_order[n:]
        return idx

    def __iter__(self) -> Iterator[dict]:
        order = torch.randperm(len(self.forget), generator=self.g)
        for idx in order.split(self.batch_size):
            n = len(idx)
            x_f = self.forget[idx]
            yield {
                "x_r": self.retain[self._next_retain(n)],
                "x_f": x_f,
                "mask_r": self.mask_fn(n),
                "mask_f": self.mask_fn(n),
                "noise": self.noise(x_f, self.g),
                "seed": int(torch.randint(2**31 - 1, (1,), generator=self.g)),  # for stochastic encoders
                "n": 2 * n,
            }
