"""Class-folder image trees (ImageNet-1K, Places-365), read where they lie and decoded on the fly.

Layout: `<root>/train/<class>/*.JPEG` and `<root>/val/<class>/*.JPEG`. A class is the path of the directory
holding its images, relative to the split: an ImageNet wnid (`n01443537`) or a Places-365 category
(`airfield`, `desert/sand`). Places' official single-letter level (`a/airfield`, as in the category list's
`/a/airfield`) is dropped, so the official `data_256/` tree and `places365_standard/` name classes alike.

Nothing is copied: the data stage records the file list (split, class, path, size) in `files.tsv` with a
sha256 of that list, streaming it so its memory stays flat whatever the tree holds. DVC and Snakemake see a
change of the tree through that file, without hashing the images themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cached_property
from pathlib import Path
from typing import Iterator

import torch

from ..runtime.atomic import atomic_path
from ..runtime.errors import DataError, ParamsError

KIND = "image_folder"
SPLITS = {True: "train", False: "val"}
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
FILE_LIST = "files.tsv"
SOURCE = "SOURCE.json"


def class_name(relative_dir: str) -> str:
    """`a/airfield`, `/a/airfield` → `airfield`; `b/bakery/shop` → `bakery/shop`; wnids unchanged."""
    parts = relative_dir.strip("/").split("/")
    if len(parts) > 1 and len(parts[0]) == 1:
        parts = parts[1:]
    return "/".join(parts)


def _walk(split_dir: Path) -> Iterator[tuple[str, str, int]]:
    """(class, path relative to split_dir, size) of every image, in a stable (sorted) order, one directory
    at a time: memory follows the largest directory, not the tree."""
    for here, dirs, files in os.walk(split_dir):
        dirs.sort()
        rel = os.path.relpath(here, split_dir)
        if rel == ".":
            if any(f.lower().endswith(IMAGE_SUFFIXES) for f in files):
                raise DataError(f"{split_dir} holds images directly: expected one directory per class "
                                "(docs/paper-scale.md, re-arranging the official download)")
            continue
        for name in sorted(files):
            if name.lower().endswith(IMAGE_SUFFIXES):
                path = os.path.join(here, name)
                yield class_name(rel), os.path.relpath(path, split_dir), os.path.getsize(path)


def record(root: str | None, out_dir: str | Path) -> dict:
    """Write `files.tsv` (split, class, path, size) and `SOURCE.json` (root, classes, counts, sha256)."""
    if not root:
        raise ParamsError("params key 'data.root' is not set: point it at the directory holding train/ and val/")
    root_path = Path(root).resolve()
    for split in SPLITS.values():
        if not (root_path / split).is_dir():
            raise DataError(f"data.root = {root} has no {split}/ directory of class folders")
    digest, counts = hashlib.sha256(), {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / FILE_LIST) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for split in SPLITS.values():
            per_class: dict[str, int] = {}
            for cls, rel, size in _walk(root_path / split):
                line = f"{split}\t{cls}\t{rel}\t{size}\n"
                fh.write(line)
                digest.update(line.encode())
                per_class[cls] = per_class.get(cls, 0) + 1
            if not per_class:
                raise DataError(f"{root_path / split} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            counts[split] = per_class
        fh.flush()
    missing = sorted(set(counts["train"]) ^ set(counts["val"]))
    if missing:
        raise DataError(f"classes present in only one of train/ and val/ under {root}: {', '.join(missing[:20])}"
                        + (" …" if len(missing) > 20 else ""))
    source = {"kind": KIND, "root": str(root_path), "classes": sorted(counts["train"]),
              "images": {s: sum(c.values()) for s, c in counts.items()}, "per_class": counts,
              "files_sha256": digest.hexdigest()}
    with atomic_path(out_dir / SOURCE) as tmp:
        tmp.write_text(json.dumps(source, indent=1, sort_keys=True) + "\n")
    return source


def check_classes(root: str | None, names: list[str], key: str) -> None:
    """Every class named in params exists under train/ and val/ (a cheap isdir per name, no listing)."""
    if not root:
        raise ParamsError("params key 'data.root' is not set: point it at the directory holding train/ and val/")
    if not Path(root).is_dir():
        raise ParamsError(f"params key 'data.root' = {root} is not a directory")
    roots = [Path(root) / s for s in SPLITS.values()]
    missing = [n for n in names if not all(_class_dir(r, n) for r in roots)]
    if missing:
        raise ParamsError(f"params key '{key}' names {len(missing)} class(es) missing under {root}/train or "
                          f"/val: {', '.join(missing)}")


def _class_dir(split_root: Path, name: str) -> bool:
    if (split_root / name).is_dir():
        return True
    first = name[:1].lower()
    return bool(first) and (split_root / first / name).is_dir()  # Places' official a/airfield level


class FolderImages(torch.utils.data.Dataset):
    """Images of a class-folder tree as uint8 [3, S, S]: RGB, shorter side resized to S, centre-cropped.

    Decoding happens per item, in DataLoader workers; the tree is never held in memory.
    """

    def __init__(self, split_dir: str, files: list[str], image_size: int):
        self.split_dir, self.files, self.image_size = split_dir, files, image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return decode(os.path.join(self.split_dir, self.files[i]), self.image_size)


def decode(path: str, size: int) -> torch.Tensor:
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    with Image.open(path) as img:
        img.draft("RGB", (size, size))  # JPEG: decode at the smallest DCT scale still >= size (much faster)
        img = img.convert("RGB")
        x = TF.pil_to_tensor(img)
    x = TF.resize(x, size, antialias=True)
    return TF.center_crop(x, [size, size])


class FolderReader:
    """The data stage's record of a tree: class names, labels and a streamed view of any subset."""

    channels = 3

    def __init__(self, data_dir: str | Path, image_size: int):
        self.data_dir, self.image_size = Path(data_dir), image_size
        path = self.data_dir / SOURCE
        if not path.is_file():
            raise DataError(f"{path} is missing: run the data stage first")
        self.source = json.loads(path.read_text())
        self.classes: list[str] = self.source["classes"]

    @cached_property
    def _lists(self) -> dict[str, tuple[list[str], torch.Tensor]]:
        index = {c: i for i, c in enumerate(self.classes)}
        files: dict[str, list[str]] = {s: [] for s in SPLITS.values()}
        labels: dict[str, list[int]] = {s: [] for s in SPLITS.values()}
        with open(self.data_dir / FILE_LIST, encoding="utf-8") as fh:
            for line in fh:
                split, cls, rel, _ = line.rstrip("\n").split("\t")
                files[split].append(rel)
                labels[split].append(index[cls])
        return {s: (files[s], torch.tensor(labels[s], dtype=torch.long)) for s in files}

    def labels(self, train: bool) -> torch.Tensor:
        return self._lists[SPLITS[train]][1]

    def images(self, indices: list[int] | torch.Tensor, train: bool) -> FolderImages:
        files = self._lists[SPLITS[train]][0]
        split_dir = os.path.join(self.source["root"], SPLITS[train])
        return FolderImages(split_dir, [files[i] for i in torch.as_tensor(indices).tolist()], self.image_size)
