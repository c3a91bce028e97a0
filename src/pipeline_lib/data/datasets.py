"""Fashion-MNIST acquisition and loading, offline first.

Order of sources: a configured directory, the Debian package `dataset-fashion-mnist`, then the official
download (torchvision's mirror list and md5 sums). Every file is md5-verified whichever source it came from:
either the official .gz checksum, or, for copies that were re-compressed (Debian's package drops the file
name from the gzip header, which changes the .gz checksum but not the deflate stream), the checksum of the
decompressed idx payload.
"""

from __future__ import annotations

import functools
import gzip
import logging
import shutil
import zlib
from pathlib import Path

import numpy as np
import torch

from ..runtime.atomic import atomic_path
from ..runtime.downloads import fetch, file_digest
from ..runtime.errors import DataError
from .classes import CLASSES

LOG = logging.getLogger(__name__)

#: file -> (md5 of the official .gz, md5 of its decompressed idx payload)
FILES = {
    "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def md5sum(path: Path, decompress: bool = False) -> str:
    return file_digest(path, "md5", decompress)


def verify(path: Path, gz_md5: str, payload_md5: str) -> str:
    """Return which checksum matched; raise DataError when neither does."""
    got = md5sum(path)
    if got == gz_md5:
        return "gz"
    try:
        payload = md5sum(path, decompress=True)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"checksum mismatch for {path.name}: md5 {got}, expected {gz_md5} ({exc})") from None
    if payload == payload_md5:
        return "payload"
    raise DataError(f"checksum mismatch for {path.name}: md5 {got}, expected {gz_md5} "
                    f"(decompressed md5 {payload}, expected {payload_md5})")


def _complete(directory: Path | None) -> bool:
    return directory is not None and all((directory / name).is_file() for name in FILES)


def official_mirrors() -> list[str]:
    """The official download locations, as torchvision knows them (imported only when a download is due)."""
    import torchvision

    return list(torchvision.datasets.FashionMNIST.mirrors)


def acquire(out_dir: str | Path, root: str | None, allow_download: bool, mirrors: list[str] | None = None,
            debian_dir: Path = DEBIAN_DIR) -> str:
    """Place the four verified idx.gz files in `out_dir`; return which source they came from."""
    out_dir = Path(out_dir)
    if root is not None:
        if not _complete(Path(root)):
            missing = [n for n in FILES if not (Path(root) / n).is_file()]
            raise DataError(f"data.root = {root} lacks {', '.join(missing)}")
        source, src = f"directory {root}", Path(root)
    elif _complete(debian_dir):
        source, src = f"Debian package ({debian_dir})", debian_dir
    elif allow_download:
        source, src = None, None
    else:
        raise DataError(
            f"no Fashion-MNIST found: set data.root, install the Debian package dataset-fashion-mnist "
            f"(files in {debian_dir}), or set data.download: true"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (gz_md5, payload_md5) in FILES.items():
        dest = out_dir / name
        if src is not None:
            with atomic_path(dest) as tmp:
                shutil.copyfile(src / name, tmp)
        else:
            errors = []
            for mirror in mirrors if mirrors is not None else official_mirrors():
                try:
                    fetch(mirror + name, dest, timeout=60.0)
                    source = f"download from {mirror}"
                    break
                except DataError as exc:
                    errors.append(str(exc))
            else:
                raise DataError("; ".join(errors))
        try:
            verify(dest, gz_md5, payload_md5)
        except DataError as exc:
            dest.unlink()
            raise DataError(f"{exc} (source: {source})") from None
    LOG.info("Fashion-MNIST from %s, md5 verified", source)
    return source


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=offset)


def load_split(data_dir: str | Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as uint8 [N, 28, 28] and labels as int64 [N] from the verified idx files.

    Cached per process (a stage reads the same split for several subsets); treat the tensors as read-only.
    """
    return _load_split(str(Path(data_dir).resolve()), train)


@functools.lru_cache(maxsize=4)
def _load_split(data_dir: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    data_dir = Path(data_dir)
    prefix = "train" if train else "t10k"
    images_path = data_dir / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = data_dir / f"{prefix}-labels-idx1-ubyte.gz"
    for p in (images_path, labels_path):
        if not p.is_file():
            raise DataError(f"{p} is missing: run the data stage first")
    images = _read_idx(images_path, 16).reshape(-1, 28, 28)
    labels = _read_idx(labels_path, 8)
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


#: preprocessing of each family where the data set does not fix one (data.mean/std null): the MAE sees
#: ImageNet-normalised pixels, MAGE's tokenizer [0, 1], Palette [-1, 1]; the split serves all three
FAMILY_NORMALISATION = {
    "mae": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "vqgan": (0.0, 1.0),
    "diffusion": (0.5, 0.5),
}
#: what a stage without a family (the metric extractor) uses then
NEUTRAL_NORMALISATION = (0.5, 0.5)


class ImageCodec:
    """Maps between stored uint8 images and the padded, normalised tensors the models see.

    `mean` and `std` are scalars or one value per channel. Fashion-MNIST's 28 px images are zero-padded to
    `image_size`; a class-folder tree's images arrive at `image_size` already.
    """

    def __init__(self, image_size: int, mean, std):
        self.image_size, self.mean, self.std = image_size, mean, std
        self._mean, self._std = (torch.tensor(v, dtype=torch.float32).view(-1, 1, 1) if isinstance(v, (list, tuple))
                                 else v for v in (mean, std))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W] (one channel) or [N, C, H, W] to normalised float [N, C, S, S]."""
        x = images.float().div(255.0)
        pad = self.image_size - x.shape[-1]
        left = pad // 2
        if pad:
            x = torch.nn.functional.pad(x, (left, pad - left, left, pad - left))
        x = (x - self._mean) / self._std
        return x.unsqueeze(1) if images.dim() == 3 else x

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised model space to [0, 1] pixels."""
        return (x * self._std + self._mean).clamp(0.0, 1.0)

    def to_uint8(self, x: torch.Tensor) -> torch.Tensor:
        return (self.to_unit(x) * 255.0).round().to(torch.uint8)


class FashionReader:
    """Fashion-MNIST behind the reader interface: small enough to hold, so images are tensors."""

    channels = 1
    classes = CLASSES

    def __init__(self, data_dir: str | Path, image_size: int):
        self.data_dir, self.image_size = data_dir, image_size

    def labels(self, train: bool) -> torch.Tensor:
        return load_split(self.data_dir, train)[1]

    def images(self, indices: list[int] | torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 [N, 28, 28]; the codec pads (kept as before, so the default run's numbers do not move)."""
        images = load_split(self.data_dir, train)[0]
        return images[torch.as_tensor(indices, dtype=torch.long)]


def reader(kind: str, data_dir: str | Path, size: int):
    """The one reader of a data set kind: `classes`, `channels`, `labels(train)`, `images(idx, train)`;
    class-folder images are decoded at `size` (Fashion-MNIST's codec pads its 28 px images to it)."""
    if kind == "image_folder":
        from .image_folder import FolderReader

        return FolderReader(data_dir, size)
    return FashionReader(data_dir, size)
