"""Scores of reconstructions against their ground truth, computed with torch-fidelity's own FID and IS code.

Ground-truth features of each evaluation set are extracted once (the reference stage) and reused for every
model; each reconstruction set costs one pass of the extractor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch_fidelity.metric_fid import fid_featuresdict_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_featuresdict_to_metric
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from . import extractor as extractor_mod
from .atomic import atomic_path
from .errors import DataError

FEATURES = ["feat", "logits_unbiased"]


class _Uint8Images(torch.utils.data.Dataset):
    """uint8 [N, C, H, W] as torch-fidelity wants them: three channels."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = self.images[i]
        return img.expand(3, -1, -1) if img.shape[0] == 1 else img


def extract_features(images: torch.Tensor, extractor_path: str | Path, batch_size: int) -> dict[str, torch.Tensor]:
    extractor_mod.register()
    fe = create_feature_extractor(extractor_mod.EXTRACTOR_NAME, FEATURES, cuda=False,
                                  feature_extractor_weights_path=str(extractor_path), verbose=False)
    # save_cpu_ram: no DataLoader workers; the images are already in memory and workers only cost start-up
    return get_featuresdict_from_dataset(_Uint8Images(images), fe, batch_size, cuda=False, save_cpu_ram=True,
                                         verbose=False)


def save_features(features: dict[str, torch.Tensor], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in features.items()}, str(tmp))


def load_features(path: str | Path) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise DataError(f"reference features {path} are missing: run the reference stage")
    return load_file(str(path))


def score(recon: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], labels: torch.Tensor,
          seed: int) -> dict[str, Any]:
    """FID and IS (torch-fidelity), mean per-image embedding cosine and classifier accuracy."""
    if len(recon["feat"]) != len(reference["feat"]):
        raise DataError(f"{len(recon['feat'])} reconstructions but {len(reference['feat'])} ground-truth images")
    fid = fid_statistics_to_metric(fid_featuresdict_to_statistics(recon, "feat"),
                                   fid_featuresdict_to_statistics(reference, "feat"), verbose=False)
    isc = isc_featuresdict_to_metric(recon, "logits_unbiased", isc_splits=10, rng_seed=seed, verbose=False)
    cosine = F.cosine_similarity(recon["feat"].double(), reference["feat"].double(), dim=1, eps=1e-8)
    accuracy = (recon["logits_unbiased"].argmax(dim=1) == labels).double().mean()
    return {
        "fid": float(fid["frechet_inception_distance"]),
        "is": float(isc["inception_score_mean"]),
        "is_std": float(isc["inception_score_std"]),
        "cosine": float(cosine.mean()),
        "accuracy": float(accuracy),
        "images": len(labels),
    }
