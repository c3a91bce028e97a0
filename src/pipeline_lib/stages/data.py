"""Data stages: the data set's verified files and the forget/retain splits."""

from __future__ import annotations

import logging

from ..data import datasets
from ..params import dataset
from ..runtime.atomic import atomic_path, write_json
from ..runtime.errors import ParamsError
from ..params.sets import make_splits, set_names
from .common import data_reader

LOG = logging.getLogger(__name__)


def data(params: dict, out: str) -> None:
    """Fashion-MNIST: verified copies of the idx files; a class-folder tree: its file list, nothing copied."""
    d = params["data"]
    with atomic_path(out, directory=True) as tmp:
        if dataset.kind(params) == "image_folder":
            from ..data.image_folder import record

            source = record(d["root"], tmp)
            LOG.info("%s: %d classes, %s images, file list sha256 %s", d["root"], len(source["classes"]),
                     source["images"], source["files_sha256"])
            return
        source = datasets.acquire(tmp, d["root"], d.get("download", False))
        write_json(tmp / "SOURCE.json", {"source": source, "md5": datasets.FILES})


def splits(params: dict, data_dir: str, out: str, set_name: str | None = None) -> None:
    """One forget set's classes and image indices (`set_name` names it when params list several)."""
    names = set_names(params)
    if set_name not in names:
        raise ParamsError(f"params key 'splits' holds the sets [{', '.join(map(str, names))}]; "
                          + ("name one with --set" if set_name is None else f"not '{set_name}'"))
    reader = data_reader(params, data_dir)
    result = make_splits(params, reader.labels(True), reader.labels(False), set_name, reader.classes)
    for part in ("unlearn", "eval"):
        for name, idx in result[part].items():
            LOG.info("%s/%s: %d images of %s", part, name, len(idx), ", ".join(result["classes"][name]))
    write_json(out, result)
