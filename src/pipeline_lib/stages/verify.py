"""The verification stages: one per check and evaluated model, each reading a checkpoint and writing one JSON.

`python -m pipeline_lib verify-<check>`; Snakemake (workflow/rules/verify.smk) and DVC
(`engines.dvc_yaml.verify_stages`) call them with the same arguments. Every draw (images, masks, K subsets) comes
from params' seed, so the original, each run and retrain see the same images and holes.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from ..runtime.atomic import write_json
from ..params.dataset import image_size
from ..runtime.errors import DataError
from ..models.base import I2IModel
from ..runtime.devices import seed_everything
from .common import image_codec, stage_device, load_images, data_reader, read_splits, sampling_model
from ..params.verify import settings, task_name

LOG = logging.getLogger(__name__)


def _pick(labels: torch.Tensor, classes: list[int], n: int | None, seed: int, limit: int | None = None) -> list[int]:
    """Indices of `classes` (among the first `limit` images), in one seeded order; the first n of it."""
    idx = torch.isin(labels, torch.tensor(classes)).nonzero().flatten()
    if limit is not None:
        idx = idx[idx < limit]
    idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))]
    return idx[:n].tolist() if n is not None else idx.tolist()


def _per_class(labels: torch.Tensor, n: int, seed: int) -> list[int]:
    return [i for c in labels.unique().tolist() for i in _pick(labels, [c], n, seed + c)]


def _mask(params: dict, spec: dict, n: int, net, seed: int) -> torch.Tensor:
    from ..verify.common import masks_for

    return masks_for(spec, n, image_size(params, net.family), net.mask_granularity, seed,
                     params["generate"]["batch_size"])


def _write(out: str, result: dict[str, Any], start: float, checkpoint: str, check: str) -> None:
    result.update({"check": check, "checkpoint": checkpoint, "wall_time_s": round(time.perf_counter() - start, 3)})
    write_json(out, result)
    LOG.info("%s written to %s (%.1f s)", check, out, result["wall_time_s"])


def _start(params: dict, checkpoint: str, splits_path: str, check: str):
    """What every check starts from: the clock, the seed, the split, the model, its codec and its settings."""
    start, seed = time.perf_counter(), params["seed"]
    seed_everything(seed)
    split = read_splits(splits_path)
    net = sampling_model(params, checkpoint, stage_device(params))
    return start, seed, split, net, image_codec(params, net.family), settings(params, net.family, check)


def verify_probe(params: dict, checkpoint: str, data_dir: str, splits_path: str, out: str) -> None:
    """Linear probe on the frozen encoder: forget-class recall and AUROC beside the retain classes'."""
    from ..verify.probe import linear_probe

    start, seed, split, net, codec, cfg = _start(params, checkpoint, splits_path, "probe")
    task = task_name(params)
    train_labels, test_labels = _labels(params, data_dir)
    x, y = load_images(params, data_dir, _per_class(train_labels, cfg["train_per_class"], seed), True, codec)
    xt, yt = load_images(params, data_dir, _per_class(test_labels, cfg["test_per_class"], seed), False, codec)
    spec = params["task"][task]
    result = linear_probe(net, x, y, xt, yt, _mask(params, spec, len(x), net, seed), _mask(params, spec, len(xt), net, seed + 1),
                          split["class_indices"]["forget"], split["class_indices"]["retain"], cfg["C"], cfg["max_dim"],
                          seed, cfg["batch_size"], cfg["sketch_dim"])
    LOG.info("probe: forget recall %.3f (AUROC %.3f), retain recall %.3f", result["forget_recall"],
             result["forget_auroc"], result["retain_recall"])
    _write(out, {"task": task, "settings": cfg, **result}, start, checkpoint, "probe")


def _labels(params: dict, data_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) labels of the data set, from its reader (Fashion-MNIST or a class-folder tree)."""
    reader = data_reader(params, data_dir)
    return reader.labels(True), reader.labels(False)


def _eval_scorer(params: dict, data_dir: str, split: dict, extractor: str, which: str, n: int, family: str):
    """Evaluation images in the family's normalisation and size, and a scorer that decodes reconstructions the
    same way (and brings them to data.image_size, the extractor's)."""
    from ..verify.common import ExtractorScorer

    codec = image_codec(params, family)
    x, labels = load_images(params, data_dir, split["eval"][which][:n], False, codec)
    return x, ExtractorScorer(extractor, codec, x, labels, params["metrics"]["batch_size"], params["data"]["image_size"])


def verify_sweep(params: dict, checkpoint: str, data_dir: str, splits_path: str, extractor_path: str, out: str) -> None:
    """Worst case over the hole grid: the highest forget accuracy and lowest forget FID, beside the mean."""
    from ..verify.sweep import sweep

    start, _, split, net, _, cfg = _start(params, checkpoint, splits_path, "sweep")
    x_f, score_f = _eval_scorer(params, data_dir, split, extractor_path, "forget", cfg["images"], net.family)
    x_r, score_r = _eval_scorer(params, data_dir, split, extractor_path, "retain", cfg["images"], net.family)
    result = sweep(net, x_f, score_f, cfg["masks"], cfg["seeds"], image_size(params, net.family),
                   params["generate"]["batch_size"], retain=(x_r, score_r))
    LOG.info("sweep: worst forget accuracy %.3f (mean %.3f), lowest forget FID %.1f (mean %.1f)",
             result["worst"]["accuracy"], result["mean"]["accuracy"], result["worst"]["fid"], result["mean"]["fid"])
    _write(out, {"settings": cfg, **result}, start, checkpoint, "sweep")


def _train_mask(params: dict, family: str) -> dict:
    """The masks the family was (pre-)trained with: what its own training loss sees."""
    return params["model"][family]["pretrain"].get("mask", params["unlearn"]["mask"])


def verify_relearn(params: dict, checkpoint: str, original: str, data_dir: str, splits_path: str, extractor_path: str,
                   out: str) -> None:
    """Relearning attack: steps of the family's own training loss on K forget images until the held-out forget
    score is back within tolerance of the original's, per K."""
    from ..verify.common import reconstruct
    from ..verify.relearn import relearn

    start, seed, split, net, codec, cfg = _start(params, checkpoint, splits_path, "relearn")
    device, task = stage_device(params), task_name(params)
    x_eval, scorer = _eval_scorer(params, data_dir, split, extractor_path, "forget", cfg["images"], net.family)
    mask = _mask(params, params["task"][task], len(x_eval), net, seed)
    bs = params["generate"]["batch_size"]

    def score(model) -> float:
        return scorer(reconstruct(model, x_eval, mask, bs))[cfg["metric"]]

    target = score(sampling_model(params, original, device))
    train_labels, _ = _labels(params, data_dir)
    order = _pick(train_labels, split["class_indices"]["forget"], max(cfg["K"]), seed)
    runs = []
    for k in cfg["K"]:
        x_k, _ = load_images(params, data_dir, order[:k], True, codec)
        run = relearn(net, x_k, score, target, train_mask=_train_mask(params, net.family),
                      image_size=image_size(params, net.family), optimizer=cfg["optimizer"],
                      batch_size=min(cfg["batch_size"], k), max_steps=cfg["max_steps"], every=cfg["every"],
                      tolerance=cfg["tolerance"], higher_is_better=cfg["metric"] == "accuracy", seed=seed, device=device)
        LOG.info("relearn K=%d: %s steps (start %.3f, target %.3f)", k,
                 f">{cfg['max_steps']} (capped)" if run["capped"] else run["relearn_steps"], run["start"], target)
        runs.append(run)
    _write(out, {"task": task, "metric": cfg["metric"], "settings": cfg, "target": target, "runs": runs}, start,
           checkpoint, "relearn")


def verify_membership(params: dict, checkpoint: str, data_dir: str, splits_path: str, out: str) -> None:
    """Loss-based membership inference: forget images the original trained on vs forget test images."""
    from ..verify.membership import membership

    start, seed, split, net, codec, cfg = _start(params, checkpoint, splits_path, "membership")
    forget = split["class_indices"]["forget"]
    train_labels, test_labels = _labels(params, data_dir)
    # the original was pre-trained on the first `subset` training images (all when unset)
    members_idx = _pick(train_labels, forget, cfg["members"], seed, params["model"][net.family]["pretrain"].get("subset"))
    non_idx = _pick(test_labels, forget, len(members_idx), seed)
    if len(members_idx) < 2 or len(non_idx) < 2:
        raise DataError(f"membership needs at least 2 members and non-members, got {len(members_idx)} and {len(non_idx)}")
    members, _ = load_images(params, data_dir, members_idx, True, codec)
    non_members, _ = load_images(params, data_dir, non_idx, False, codec)
    timed = type(net).sample_losses is not I2IModel.sample_losses  # only families whose loss draws a timestep
    result = membership(net, members, non_members, _train_mask(params, net.family), cfg["masks"],
                        cfg["timesteps"] if timed else None, image_size(params, net.family), seed,
                        params["generate"]["batch_size"], cfg["z"])
    LOG.info("membership: AUC %.3f, TPR@1%%FPR %.3f, z %.2f (%s)", result["auc"], result["tpr_at_1fpr"], result["z"],
             "powered" if result["powered"] else "no power")
    _write(out, {"settings": cfg, **result}, start, checkpoint, "membership")
