"""One function per pipeline stage: read inputs, call the library, write outputs atomically.

The CLI (`python -m pipeline_lib <stage>`) maps arguments onto these; Snakemake and DVC call the CLI.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch

from . import datasets, noise_targets, paths
from .atomic import atomic_path, write_json
from .checkpoints import fetch_checkpoint, load_official
from .config import parse_variant
from .errors import DataError
from .loaders import BalancedLoader, ImageLoader, mask_sampler
from .masks import sample_mask
from .methods import build_method
from .models import build_model, load_model, save_model
from .models.base import FamilyObjective, read_meta
from .runtime import progress, resolve_device, seed_everything
from .splits import make_splits
from .trainer import fit

LOG = logging.getLogger(__name__)


def _device(params: dict) -> torch.device:
    return resolve_device(params["runtime"]["device"])


def _read_splits(path: str | Path) -> dict[str, Any]:
    if not Path(path).is_file():
        raise DataError(f"split file {path} is missing: run the splits stage")
    return json.loads(Path(path).read_text())


def _images(data_dir: str, indices: list[int], train: bool, codec: datasets.ImageCodec):
    images, labels = datasets.load_split(data_dir, train)
    idx = torch.tensor(indices, dtype=torch.long)
    return codec.encode(images[idx]), labels[idx]


def data(params: dict, out: str) -> None:
    d = params["data"]
    with atomic_path(out, directory=True) as tmp:
        source = datasets.acquire(tmp, d["root"], d["download"])
        write_json(tmp / "SOURCE.json", {"source": source, "md5": datasets.FILES})


def splits(params: dict, data_dir: str, out: str) -> None:
    _, train_labels = datasets.load_split(data_dir, train=True)
    _, test_labels = datasets.load_split(data_dir, train=False)
    result = make_splits(params, train_labels, test_labels)
    for part in ("unlearn", "eval"):
        for name, idx in result[part].items():
            LOG.info("%s/%s: %d images of %s", part, name, len(idx), ", ".join(result["classes"][name]))
    write_json(out, result)


def pretrain(params: dict, model: str, data_dir: str, out: str) -> None:
    """The original model: a verified published checkpoint when params name one, else trained here."""
    cfg, codec = params["model"][model], datasets.ImageCodec.from_params(params)
    g = seed_everything(params["seed"])
    ckpt = cfg["checkpoint"]
    if ckpt is not None:
        download = Path(out).with_name("official.pth")
        fetch_checkpoint(ckpt["url"], ckpt["sha256"], download)
        try:
            net = load_official(model, download, cfg["arch"])
        finally:
            download.unlink(missing_ok=True)
        if (net.image_size, net.in_chans) != (codec.image_size, 1):
            raise DataError(f"checkpoint {ckpt['url']} expects {net.in_chans}x{net.image_size}px images, "
                            f"the dataset gives 1x{codec.image_size}px")
        save_model(net, out, {"source": ckpt["url"], "sha256": ckpt["sha256"]})
        return
    device = _device(params)
    images, _ = datasets.load_split(data_dir, train=True)
    training = cfg["pretrain"]
    if training.get("subset"):
        images = images[: training["subset"]]
    net = build_model(model, cfg["arch"], codec.image_size, in_chans=1).to(device)
    mask_fn = mask_sampler(training["mask"], codec.image_size, net.mask_granularity, g)
    loader = ImageLoader(codec.encode(images), training["batch_size"], g, mask_fn=mask_fn)
    stats = fit(FamilyObjective(net), loader, training, device, params["runtime"]["amp"], desc=f"pretrain {model}")
    save_model(net.cpu(), out, {"source": "pretrained here on all classes", "training": stats})


def train_extractor(params: dict, data_dir: str, out: str) -> None:
    from . import extractor  # torch-fidelity loads only in the stages that use it

    cfg, codec = params["extractor"], datasets.ImageCodec.from_params(params)
    g = seed_everything(params["seed"])
    device = _device(params)
    images, labels = datasets.load_split(data_dir, train=True)
    training = cfg["training"]
    if training.get("subset"):
        images, labels = images[: training["subset"]], labels[: training["subset"]]
    net = extractor.Classifier(1, len(datasets.CLASSES), cfg["feature_dim"]).to(device)
    loader = ImageLoader(codec.encode(images), training["batch_size"], g, labels=labels)
    stats = fit(extractor.ClassifierObjective(net), loader, training, device, params["runtime"]["amp"], desc="extractor")
    test_x, test_y = datasets.load_split(data_dir, train=False)
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(codec.encode(b).to(device)).argmax(1).cpu() for b in test_x.split(1000)])
    stats["test_accuracy"] = float((pred == test_y).float().mean())
    LOG.info("extractor test accuracy %.4f", stats["test_accuracy"])
    extractor.save_extractor(net.cpu(), out, codec.mean, codec.std, stats)


def _eval_uint8(params: dict, data_dir: str, split: dict, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    codec = datasets.ImageCodec.from_params(params)
    x, labels = _images(data_dir, split["eval"][which], False, codec)
    return codec.to_uint8(x), labels


def reference(params: dict, data_dir: str, splits_path: str, extractor_path: str, out: str) -> None:
    """Ground-truth features of each evaluation set, extracted once for every model's metrics."""
    from . import evaluate

    split = _read_splits(splits_path)
    with atomic_path(out, directory=True) as tmp:
        for which in paths.SETS:
            gt, _ = _eval_uint8(params, data_dir, split, which)
            feats = evaluate.extract_features(gt, extractor_path, params["metrics"]["batch_size"])
            evaluate.save_features(feats, tmp / f"{which}.safetensors")


def noise(params: dict, kind: str, data_dir: str, splits_path: str, out: str) -> None:
    """Σ (or nothing, for uniform and batch_stats) of the forget set, for l2n's noise targets."""
    seed_everything(params["seed"])
    codec, split = datasets.ImageCodec.from_params(params), _read_splits(splits_path)
    x_f, _ = _images(data_dir, split["unlearn"]["forget"], True, codec)
    noise_targets.prepare(kind, x_f, params["noise"]["rank"], out)


def unlearn(params: dict, model: str, method: str, variant: str, original: str, data_dir: str,
            splits_path: str, noise: str, out: str) -> None:
    g = seed_everything(params["seed"])
    device = _device(params)
    codec, split = datasets.ImageCodec.from_params(params), _read_splits(splits_path)
    cfg = params["unlearn"]
    x_f, _ = _images(data_dir, split["unlearn"]["forget"], True, codec)
    x_r, _ = _images(data_dir, split["unlearn"]["retain"], True, codec)
    teacher = load_model(original, device)
    student = copy.deepcopy(teacher)
    point = parse_variant(variant)
    objective = build_method(method, student, teacher, alpha=point["alpha"], norm=cfg["norm"])
    mask_fn = mask_sampler(cfg["mask"], codec.image_size, student.mask_granularity, g)
    sampler = noise_targets.sampler(point.get("noise", "identity"), noise, codec)
    loader = BalancedLoader(x_r, x_f, cfg["training"]["batch_size"], g, mask_fn, sampler)
    stats = fit(objective, loader, cfg["training"], device, params["runtime"]["amp"], desc=f"{method} {variant} {model}")
    meta = {"method": method, "variant": variant, **point, "noise_file": noise, "original": original,
            "training": stats, "retain_images": len(x_r), "forget_images": len(x_f)}
    save_model(student.cpu(), out, meta)


def _save_pngs(images: torch.Tensor, directory: Path) -> None:
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img[0].numpy(), mode="L").save(directory / f"{i:04d}.png")


def generate(params: dict, checkpoint: str, data_dir: str, splits_path: str, task: str, out: str) -> None:
    """Reconstructions of both evaluation sets: a tensor file per set plus one PNG per image."""
    from safetensors.torch import save_file

    seed_everything(params["seed"])
    device = _device(params)
    codec, split = datasets.ImageCodec.from_params(params), _read_splits(splits_path)
    net = load_model(checkpoint, device).eval()
    spec, bs = params["task"][task], params["generate"]["batch_size"]
    with atomic_path(out, directory=True) as tmp:
        for which in paths.SETS:
            x, labels = _images(data_dir, split["eval"][which], False, codec)
            g = torch.Generator().manual_seed(params["seed"])  # same masks for every model
            mask = torch.cat([sample_mask(spec, len(b), codec.image_size, net.mask_granularity, g) for b in x.split(bs)])
            recon = []
            with torch.no_grad():
                for xb, mb in progress(list(zip(x.split(bs), mask.split(bs))), desc=f"generate {which}"):
                    recon.append(net.reconstruct(xb.to(device), mb.to(device)).float().cpu())
            recon_u8 = codec.to_uint8(torch.cat(recon))
            tensors = {"recon": recon_u8, "gt": codec.to_uint8(x), "mask": mask.to(torch.uint8), "labels": labels}
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / f"{which}.safetensors"))
            _save_pngs(recon_u8, tmp / "png" / which)
    LOG.info("reconstructions written to %s", out)


def metrics(params: dict, recon: str, reference_dir: str, extractor_path: str, checkpoint: str, out: str) -> None:
    from . import evaluate, extractor

    from safetensors.torch import load_file

    seed_everything(params["seed"])
    result: dict[str, Any] = {"extractor": extractor.EXTRACTOR_NAME, "recon": recon}
    for which in paths.SETS:
        tensors = load_file(str(Path(recon) / f"{which}.safetensors"))
        feats = evaluate.extract_features(tensors["recon"], extractor_path, params["metrics"]["batch_size"])
        ref = evaluate.load_features(Path(reference_dir) / f"{which}.safetensors")
        result[which] = evaluate.score(feats, ref, tensors["labels"], params["seed"])
        LOG.info("%s: %s", which, result[which])
    training = read_meta(checkpoint).get("training", {})
    result["training"] = {k: training[k] for k in ("wall_time_s", "images_per_s", "steps") if k in training}
    write_json(out, result)


def aggregate(params: dict, out: str) -> None:
    from .report import write_report

    write_report(params, out)
