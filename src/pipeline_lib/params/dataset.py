"""The data set as params state it: its kind, channels, each family's image size and normalisation, its reader.

The data layer takes these values; this is the one place that reads them from params.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data import datasets


def kind(params: dict[str, Any]) -> str:
    return params["data"].get("kind", "fashion_mnist")


def channels(params: dict[str, Any]) -> int:
    return 3 if kind(params) == "image_folder" else 1


def image_size(params: dict[str, Any], family: str | None = None) -> int:
    """The side of the images `family` sees: `model.<family>.image_size`, else `data.image_size` (also what a
    stage without a family uses: the pipeline's extractor, its reference features, the noise stage).

    Class-folder images are resized and centre-cropped when decoded, so one split serves every size: paper 1
    runs the MAE at its native 224 px beside MAGE and Palette at 256. Fashion-MNIST has one size
    (`params.checks.check_image_sizes`).
    """
    if family is not None:
        own = params.get("model", {}).get(family, {}).get("image_size")
        if own is not None:
            return own
    return params["data"]["image_size"]


def codec(params: dict[str, Any], family: str | None = None) -> datasets.ImageCodec:
    """The data set's normalisation when params fix one (Fashion-MNIST), else `family`'s own; `family`'s
    image size (`image_size`)."""
    d, size = params["data"], image_size(params, family)
    if d.get("mean") is not None:
        return datasets.ImageCodec(size, d["mean"], d["std"])
    mean, std = datasets.FAMILY_NORMALISATION[family] if family else datasets.NEUTRAL_NORMALISATION
    return datasets.ImageCodec(size, mean, std)


def reader(params: dict[str, Any], data_dir: str | Path, size: int | None = None):
    """The data set's reader (`datasets.reader`) at `size` (default data.image_size)."""
    return datasets.reader(kind(params), data_dir, size or params["data"]["image_size"])
