"""Scores of reconstructions against their ground truth, computed with torch-fidelity's own FID, IS and KID code.

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
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from . import extractor as extractor_mod
from ..runtime.atomic import atomic_path
from ..runtime.errors import DataError

FEATURES = ["feat", "logits_unbiased"]

#: KID: the mean and spread of the unbiased MMD^2 over this many random subsets of each set
KID_SUBSETS = 100
#: torch-fidelity's subset size, capped at half a set: our 48-900 image sets are below it, and subsets of the
#: whole set would all be the same images (a spread of 0); the estimator is unbiased at any subset size
KID_MAX_SUBSET = 1000


class Uint8Images(torch.utils.data.Dataset):
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
    return get_featuresdict_from_dataset(Uint8Images(images), fe, batch_size, cuda=False, save_cpu_ram=True,
                                         verbose=False)


def at_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N, C, H, W] at size x size (antialiased bilinear, as decoding resizes): a family's images at its own
    `model.<family>.image_size` brought to data.image_size, where the pipeline's extractor was trained and the
    reference features were taken. Images already at `size` are returned as they are."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(images, [size, size], antialias=True)


def save_features(features: dict[str, torch.Tensor], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in features.items()}, str(tmp))


def load_features(path: str | Path) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise DataError(f"reference features {path} are missing: run the reference stage")
    return load_file(str(path))


def kid_subset_size(n: int) -> int:
    """KID subset size for sets of n images: half a set, at most KID_MAX_SUBSET, at least 2 (MMD needs pairs)."""
    size = min(KID_MAX_SUBSET, n // 2)
    if size < 2:
        raise DataError(f"KID needs at least 4 images per set, got {n}")
    return size


def kid(features_1: torch.Tensor, features_2: torch.Tensor, seed: int) -> tuple[float, float]:
    """(mean, std) of torch-fidelity's KID (cubic polynomial kernel) over KID_SUBSETS seeded subsets."""
    size = kid_subset_size(min(len(features_1), len(features_2)))
    out = kid_features_to_metric(features_1, features_2, kid_subsets=KID_SUBSETS, kid_subset_size=size,
                                 rng_seed=seed, verbose=False)
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])


def fid(features_1: torch.Tensor, features_2: torch.Tensor) -> float:
    """torch-fidelity's Fréchet distance between two feature sets."""
    stats = [fid_featuresdict_to_statistics({"f": f}, "f") for f in (features_1, features_2)]
    return float(fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"])


def inception_score(logits: torch.Tensor, seed: int) -> tuple[float, float]:
    """(mean, std) of torch-fidelity's Inception Score over 10 seeded splits of the logits."""
    out = isc_featuresdict_to_metric({"logits": logits}, "logits", isc_splits=10, rng_seed=seed, verbose=False)
    return float(out["inception_score_mean"]), float(out["inception_score_std"])


def score(recon: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], labels: torch.Tensor,
          seed: int) -> dict[str, Any]:
    """FID, IS and KID (torch-fidelity), mean per-image embedding cosine and classifier accuracy."""
    if len(recon["feat"]) != len(reference["feat"]):
        raise DataError(f"{len(recon['feat'])} reconstructions but {len(reference['feat'])} ground-truth images")
    is_mean, is_std = inception_score(recon["logits_unbiased"], seed)
    kid_mean, kid_std = kid(recon["feat"], reference["feat"], seed)
    cosine = F.cosine_similarity(recon["feat"].double(), reference["feat"].double(), dim=1, eps=1e-8)
    accuracy = (recon["logits_unbiased"].argmax(dim=1) == labels).double().mean()
    return {
        "fid": fid(recon["feat"], reference["feat"]),
        "is": is_mean,
        "is_std": is_std,
        "kid": kid_mean,
        "kid_std": kid_std,
        "cosine": float(cosine.mean()),
        "accuracy": float(accuracy),
        "images": len(labels),
    }
