"""Shared pieces of the checks: seeded masks, batched reconstruction, and the extractor's class scores."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..data.masks import sample_mask

#: a check's score of a set of reconstructions (normalised pixels): {"accuracy": ..., "fid": ...}
Scorer = Callable[[torch.Tensor], dict[str, float]]


def masks_for(spec: dict, n: int, image_size: int, granularity: int, seed: int, batch_size: int) -> torch.Tensor:
    """[n, 1, S, S] masks of `spec`, drawn batch by batch from `seed` (the same for every model)."""
    g = torch.Generator().manual_seed(seed)
    sizes = [min(batch_size, n - i) for i in range(0, n, batch_size)]
    return torch.cat([sample_mask(spec, b, image_size, granularity, g) for b in sizes])


@torch.no_grad()
def reconstruct(net, x: torch.Tensor, mask: torch.Tensor, batch_size: int) -> torch.Tensor:
    """`net.reconstruct` batch by batch, on the model's device, in eval mode; float CPU output."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    out = [net.reconstruct(xb.to(device), mb.to(device)).float().cpu()
           for xb, mb in zip(x.split(batch_size), mask.split(batch_size))]
    net.train(was_training)
    return torch.cat(out)


class ExtractorScorer:
    """Accuracy of the pipeline's classifier on reconstructions, and their FID to the ground truth.

    Images of a family at its own image size are resized to `size` (data.image_size, where the extractor
    was trained) before it, ground truth and reconstructions alike; by default they are taken as they come."""

    def __init__(self, extractor_path: str | Path, codec, gt: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 size: int | None = None):
        self.path, self.codec, self.labels, self.bs = str(extractor_path), codec, labels, batch_size
        self.size = size or codec.image_size
        self.gt_feat = self._features(gt)["feat"]

    def _features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        from ..evaluation import scores as evaluate

        return evaluate.extract_features(evaluate.at_size(self.codec.to_uint8(x), self.size), self.path, self.bs)

    def __call__(self, recon: torch.Tensor) -> dict[str, float]:
        from ..evaluation import scores as evaluate

        feats = self._features(recon)
        accuracy = (feats["logits_unbiased"].argmax(dim=1) == self.labels).double().mean()
        return {"accuracy": float(accuracy), "fid": evaluate.fid(feats["feat"], self.gt_feat)}
