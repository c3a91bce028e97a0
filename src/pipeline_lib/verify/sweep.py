"""Worst-case inputs: a model that forgets only on the evaluation hole is caught on another one.

Every (hole, seed) of the grid reconstructs the same forget images; the result keeps each cell and, per
model, the worst case for forgetting (the highest forget accuracy, the lowest forget FID) beside the mean.
"""

from __future__ import annotations

from typing import Any

import torch

from .common import Scorer, masks_for, reconstruct


def sweep(net, x: torch.Tensor, scorer: Scorer, specs: list[dict], seeds: list[int], image_size: int,
          batch_size: int, retain: tuple[torch.Tensor, Scorer] | None = None) -> dict[str, Any]:
    """Score `net`'s reconstructions of `x` under every spec x seed; `retain` (images, scorer) adds the
    retain set's scores per cell, so a hole that only breaks the model shows as such."""
    cells = []
    for i, spec in enumerate(specs):
        for seed in seeds:
            mask = masks_for(spec, len(x), image_size, net.mask_granularity, seed, batch_size)
            cell = {"mask": i, "spec": spec, "seed": seed, "forget": scorer(reconstruct(net, x, mask, batch_size))}
            if retain is not None:
                xr, scorer_r = retain
                mask_r = masks_for(spec, len(xr), image_size, net.mask_granularity, seed, batch_size)
                cell["retain"] = scorer_r(reconstruct(net, xr, mask_r, batch_size))
            cells.append(cell)
    acc = [c["forget"]["accuracy"] for c in cells]
    fid = [c["forget"]["fid"] for c in cells]
    return {"cells": cells,
            "worst": {"accuracy": max(acc), "fid": min(fid), "accuracy_cell": int(max(range(len(acc)), key=acc.__getitem__)),
                      "fid_cell": int(min(range(len(fid)), key=fid.__getitem__))},
            "mean": {"accuracy": sum(acc) / len(acc), "fid": sum(fid) / len(fid)}}
