"""Generated class-folder trees (ImageNet and Places-365 layouts) with real class names, for the tests.

Images are small JPEGs of random shapes; sizes vary and some are grey or landscape, so decoding, RGB
conversion and resize + centre crop all have something to do.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import yaml

from helpers import REPO_ROOT

#: the first forget / retain synsets of paper 1's ImageNet split (shared/REFERENCE.md) and two proxy ones
IMAGENET_FORGET = ["n01443537", "n01484850"]
IMAGENET_RETAIN = ["n02437616", "n02445715"]
IMAGENET_PROXY = ["n09999999", "n15075141"]
#: Places-365 categories of paper 1's split, one-level and two-level, and a proxy one
PLACES_RETAIN = ["badlands", "desert/sand"]
PLACES_FORGET = ["archive", "bakery/shop"]
PLACES_PROXY = ["zen_garden"]


def _image(rng: np.random.Generator, grey: bool):
    from PIL import Image

    h, w = int(rng.integers(48, 96)), int(rng.integers(48, 120))
    base = rng.integers(0, 255, size=3)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = base
    y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    img[y: y + h // 2, x: x + w // 2] = 255 - base
    out = Image.fromarray(img)
    return out.convert("L") if grey else out


def make_tree(root: Path, classes: list[str], train: int, val: int, seed: int = 0, places_letters: bool = False,
              suffix: str = ".JPEG") -> Path:
    """root/train/<class>/*.JPEG and root/val/<class>/*.JPEG; `places_letters`: the official a/airfield level."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("val", val)):
        for cls in classes:
            d = root / split / (f"{cls[0]}/{cls}" if places_letters else cls)
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _image(rng, grey=(i % 5 == 4)).save(d / f"{cls.replace('/', '_')}_{i:05d}{suffix}", quality=85)
    return root


def folder_params(preset: str, root: Path, forget: list[str], retain: list[str], **splits) -> dict:
    """A preset restricted to the classes present, at `root`."""
    params = yaml.safe_load((REPO_ROOT / "presets" / f"{preset}.yaml").read_text())
    params = copy.deepcopy(params)
    params["data"]["root"] = str(root)
    params["splits"].update({"forget": forget, "retain": retain, **splits})
    params["runtime"]["loader_workers"] = 0
    return params


def tiny_folder_params(root: Path, forget: list[str], retain: list[str], dataset: str = "imagenet") -> dict:
    """The smoke preset's tiny models of all three families on a class-folder tree at 64 px (8 px patches
    and tokens), each family with its own preprocessing: the whole DAG in a few minutes on a CPU."""
    params = yaml.safe_load((REPO_ROOT / "presets" / "smoke.yaml").read_text())
    params["dataset"] = dataset
    params["data"] = {"kind": "image_folder", "root": str(root), "image_size": 64, "mean": None, "std": None}
    params["splits"].update({"forget": forget, "retain": retain, "unlearn_per_class": 4, "eval_per_class": 3})
    params["model"]["mae"]["arch"]["patch_size"] = 8
    params["model"]["vqgan"]["tokenizer"]["arch"]["downsample"] = 8
    for model in ("mae", "vqgan", "diffusion"):
        params["model"][model]["pretrain"]["batch_size"] = 8
    params["model"]["vqgan"]["tokenizer"]["pretrain"]["batch_size"] = 8
    params["extractor"]["training"].update({"batch_size": 8, "subset": None})
    params["unlearn"]["training"]["batch_size"] = 4
    params["methods"]["l2n"] = {"alpha": [0.25], "noise": ["identity"]}
    params["task"]["center"] = {"kind": "center", "size": 16}
    params["generate"]["batch_size"] = 8
    params["metrics"]["batch_size"] = 8
    params["runtime"].update({"threads": 1, "loader_workers": 1})
    return params
