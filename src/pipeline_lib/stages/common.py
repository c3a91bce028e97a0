"""What every stage shares: the device and numerics from params, the split file, the data set's reader and
image codec, a model ready to sample, and the main process's atomic output directory."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

import torch

from ..runtime import backends, distributed
from ..data import datasets, streaming
from ..params import dataset
from ..params.runtime import numerics
from ..runtime.atomic import atomic_path
from ..runtime.errors import DataError
from ..runtime.devices import resolve_device


def stage_device(params: dict) -> torch.device:
    return resolve_device(params["runtime"]["device"])


def stage_backend(params: dict) -> backends.Settings:
    """The device with its numerics set from params (`backends`): every stage that trains or samples."""
    return backends.configure(stage_device(params), **numerics(params))


def read_splits(path: str | Path) -> dict[str, Any]:
    if not Path(path).is_file():
        raise DataError(f"split file {path} is missing: run the splits stage")
    return json.loads(Path(path).read_text())


def data_reader(params: dict, data_dir: str, family: str | None = None):
    """The data set's reader at `family`'s image size (`params.dataset.image_size`); streamed sets decode with
    `runtime.loader_workers` DataLoader workers."""
    streaming.configure(params["runtime"].get("loader_workers"))
    return dataset.reader(params, data_dir, dataset.image_size(params, family))


def load_images(params: dict, data_dir: str, indices: list[int], train: bool, codec: datasets.ImageCodec):
    """A (small) subset in memory, normalised, decoded at the codec's size: evaluation sets."""
    streaming.configure(params["runtime"].get("loader_workers"))
    reader = dataset.reader(params, data_dir, codec.image_size)
    idx = torch.tensor(indices, dtype=torch.long)
    return codec.encode(streaming.materialise(reader.images(idx, train))), reader.labels(train)[idx]


def image_codec(params: dict, family: str | None = None) -> datasets.ImageCodec:
    return dataset.codec(params, family)


def sampling_model(params: dict, checkpoint: str, device: torch.device):
    """The checkpoint's model ready to sample on `device`, with params' backend settings (`backends`)."""
    from ..models import load_model

    backend = backends.configure(device, **numerics(params))
    net = load_model(checkpoint, device).eval()
    net = backends.prepare(net, backend, net.convolutional)
    net.configure_sampling(**params["model"][net.family].get("sampling", {}))
    return net


@contextlib.contextmanager
def main_output(out: str) -> Iterator[Path | None]:
    """The atomic temporary directory of `out` on the main process; None on the others, which write nothing."""
    if not distributed.is_main():
        yield None
        return
    with atomic_path(out, directory=True) as tmp:
        yield tmp
