"""Evaluation stages: reference features, scores of one reconstruction directory, metric weights."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..params import paths
from ..runtime.atomic import atomic_path, write_json
from ..runtime.errors import ParamsError
from ..models.base import read_meta
from ..runtime import kernels
from ..runtime.devices import seed_everything
from ..params.weights import downloaded as downloaded_weights, specs as weight_specs
from .common import image_codec, load_images, read_splits, stage_device

LOG = logging.getLogger(__name__)


def _eval_uint8(params: dict, data_dir: str, split: dict, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    codec = image_codec(params)
    x, labels = load_images(params, data_dir, split["eval"][which], False, codec)
    return codec.to_uint8(x), labels


def reference(params: dict, data_dir: str, splits_path: str, extractor_path: str, out: str) -> None:
    """Ground-truth features of each evaluation set, extracted once for every model's metrics."""
    from ..evaluation import scores as evaluate

    split = read_splits(splits_path)
    with atomic_path(out, directory=True) as tmp:
        for which in paths.SETS:
            gt, _ = _eval_uint8(params, data_dir, split, which)
            feats = evaluate.extract_features(gt, extractor_path, params["metrics"]["batch_size"])
            evaluate.save_features(feats, tmp / f"{which}.safetensors")


def _standard_extractors(params: dict, result: dict) -> dict[str, dict]:
    """The standard extractors whose weights are on disk (checked once per job): kind -> {file, arch?}. Each
    configured one is named in `result["extractors"]`: used or not and why, its file, and its sha256 and url
    when known, so a metrics file says which bytes produced its numbers."""
    from ..evaluation import metric_weights
    from ..evaluation import standard_extractors as std

    usable = {}
    for kind, spec in weight_specs(params).items():
        entry = metric_weights.resolve(kind, spec)
        ok, reason = std.available({"kind": kind, "weights": entry["file"],
                                    **({"arch": spec.get("arch")} if kind == "clip" else {})})
        result["extractors"][kind] = {"used": ok, "note": reason, **entry}
        if ok:
            usable[kind] = {"file": entry["file"], "arch": spec.get("arch")}
        else:
            LOG.warning("%s", reason)
    return usable


def _standard_metrics(params: dict, usable: dict[str, dict], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Inception-v3 FID/IS/KID, CLIP cosine and Places365 IS of one set, beside the pipeline extractor's."""
    from ..evaluation import standard_extractors as std

    bs, device, seed, out = params["metrics"]["batch_size"], stage_device(params), params["seed"], {}
    if "inception" in usable:
        out["inception"] = std.inception_scores(tensors["recon"], tensors["gt"], usable["inception"]["file"], bs,
                                                seed, device)
    if "clip" in usable:
        out["clip_cosine"] = std.clip_cosine(tensors["recon"], tensors["gt"], usable["clip"]["arch"],
                                             usable["clip"]["file"], bs, device)
    if "places" in usable:
        out.update(std.places_scores(tensors["recon"], usable["places"]["file"], bs, seed, device))
    return out


def _pipeline_input(recon: torch.Tensor, extractor_path: str, size: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """(images the pipeline extractor sees, its entry in the metrics file's `extractors`).

    The extractor was trained, and the reference features taken, at data.image_size; a family at its own
    `model.<family>.image_size` has its reconstructions resized to it, and the entry says so. Inception, CLIP
    and Places365 see the reconstructions (and their ground truth, saved beside them) as the model made them."""
    from ..evaluation import scores as evaluate, extractor

    entry: dict[str, Any] = {"used": True, "file": extractor_path,
                             "note": f"{extractor.EXTRACTOR_NAME} at {extractor_path}"}
    made = recon.shape[-1]
    if made != size:
        entry["resized"] = {"from": made, "to": size}
        entry["note"] += f"; reconstructions resized from the model's {made} px to data.image_size {size} px"
    return evaluate.at_size(recon, size), entry


def metrics(params: dict, recon: str, reference_dir: str, extractor_path: str, checkpoint: str, out: str) -> None:
    """Scores of one reconstruction directory; the file names every extractor that produced them."""
    from ..evaluation import scores as evaluate, extractor

    from safetensors.torch import load_file

    seed_everything(params["seed"])
    result: dict[str, Any] = {"extractor": extractor.EXTRACTOR_NAME, "recon": recon, "extractors": {}}
    usable = _standard_extractors(params, result)
    for which in paths.SETS:
        tensors = load_file(str(Path(recon) / f"{which}.safetensors"))
        seen, result["extractors"]["pipeline"] = _pipeline_input(tensors["recon"], extractor_path,
                                                                 params["data"]["image_size"])
        feats = evaluate.extract_features(seen, extractor_path, params["metrics"]["batch_size"])
        ref = evaluate.load_features(Path(reference_dir) / f"{which}.safetensors")
        result[which] = evaluate.score(feats, ref, tensors["labels"], params["seed"])
        result[which].update(_standard_metrics(params, usable, tensors))
        LOG.info("%s: %s", which, result[which])
    meta = read_meta(checkpoint)
    training = meta.get("training", {})
    result["training"] = {k: training[k] for k in ("wall_time_s", "images_per_s", "steps") if k in training}
    result["objectives"] = meta.get("objectives", {})  # f1/f2 after unlearning, for the Pareto plot
    result["machine"] = kernels.fingerprint()  # where these numbers were computed, and what decides their bytes
    write_json(out, result)


def weights(params: dict, kind: str, out: str) -> None:
    """Download a standard metric network's weights (params metrics.<kind>.url), verified against its sha256."""
    from ..evaluation import metric_weights

    spec = params["metrics"].get(kind) if kind in metric_weights.KINDS else None
    if spec is None or "url" not in spec:
        raise ParamsError(f"params key 'metrics.{kind}' has no url to download (kinds with one: "
                          f"{', '.join(downloaded_weights(params)) or 'none'})")
    metric_weights.fetch(kind, spec, out)
