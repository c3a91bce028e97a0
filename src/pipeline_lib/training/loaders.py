"""Deterministic CPU batch streams: data order, masks and noise all come from one seeded generator.

Drawing every random tensor on the CPU makes a run repeatable whatever device trains it.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch

from ..data.masks import sample_mask
from ..noise.sampling import NoiseSampler
from ..data.streaming import batches, gather

MaskFn = Callable[[int], torch.Tensor]
Transform = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def mask_sampler(spec: dict, image_size: int, granularity: int, g: torch.Generator) -> MaskFn:
    return lambda batch: sample_mask(spec, batch, image_size, granularity, g)


class ImageLoader:
    """One shuffled pass over `x` per epoch; optional labels and masks ride along.

    `x` is a tensor or a streamed image set (`streaming`); `transform` (the family's codec) turns each
    stored batch into what the model sees.
    """

    def __init__(self, x, batch_size: int, g: torch.Generator, labels: torch.Tensor | None = None,
                 mask_fn: MaskFn | None = None, transform: Transform = _identity):
        self.x, self.labels, self.batch_size, self.g, self.mask_fn = x, labels, batch_size, g, mask_fn
        self.transform = transform

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        order = torch.randperm(len(self.x), generator=self.g).split(self.batch_size)
        for idx, x in zip(order, batches(self.x, order)):
            batch = {"x": self.transform(x), "n": len(idx)}
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

    def __init__(self, retain, forget, batch_size: int, g: torch.Generator,
                 mask_fn: MaskFn, noise: NoiseSampler | None = None, transform: Transform = _identity):
        if len(retain) == 0 or len(forget) == 0:
            raise ValueError("unlearning needs a non-empty retain set and forget set")
        self.retain, self.forget, self.batch_size, self.g = retain, forget, batch_size, g
        self.mask_fn, self.noise, self.transform = mask_fn, noise or NoiseSampler(), transform
        self._retain_order = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return math.ceil(len(self.forget) / self.batch_size)

    def _next_retain(self, n: int) -> torch.Tensor:
        while len(self._retain_order) < n:
            self._retain_order = torch.cat([self._retain_order, torch.randperm(len(self.retain), generator=self.g)])
        idx, self._retain_order = self._retain_order[:n], self._retain_order[n:]
        return idx

    def __iter__(self) -> Iterator[dict]:
        # forget batches are known up front (prefetched by workers); retain indices are drawn per step
        # from the same generator as before, so in-memory runs keep their exact numbers
        order = torch.randperm(len(self.forget), generator=self.g).split(self.batch_size)
        for idx, x_f in zip(order, batches(self.forget, order)):
            n = len(idx)
            x_f = self.transform(x_f)
            yield {
                "x_r": self.transform(gather(self.retain, self._next_retain(n))),
                "x_f": x_f,
                "mask_r": self.mask_fn(n),
                "mask_f": self.mask_fn(n),
                "noise": self.noise(x_f, self.g),
                "seed": int(torch.randint(2**31 - 1, (1,), generator=self.g)),  # for stochastic encoders
                "n": 2 * n,
            }
