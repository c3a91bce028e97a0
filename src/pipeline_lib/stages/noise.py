"""The noise stage: the forget set's Σ for l2n's noise targets."""

from __future__ import annotations

import torch

from ..params import dataset
from ..noise import targets as noise_targets
from ..runtime.devices import seed_everything
from .common import image_codec, load_images, read_splits


def noise(params: dict, kind: str, data_dir: str, splits_path: str, out: str) -> None:
    """Σ (or nothing, for uniform and batch_stats) of the forget set, for l2n's noise targets."""
    seed_everything(params["seed"])
    codec, split = image_codec(params), read_splits(splits_path)
    if kind in noise_targets.ESTIMATED_KINDS:
        x_f, _ = load_images(params, data_dir, split["unlearn"]["forget"], True, codec)
    else:  # the image shape is all these kinds record
        x_f = torch.empty(0, dataset.channels(params), codec.image_size, codec.image_size)
    noise_targets.prepare(kind, x_f, params["noise"]["rank"], out)
