"""Model stages: the original model (a published checkpoint or pre-trained here), its frozen parts, the
retrain reference and the metric extractor, each by the one training loop."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..runtime import backends, distributed
from ..data import streaming
from ..params import dataset
from ..params.runtime import numerics
from ..models.checkpoints import load_checkpoint_file, load_official, obtain_checkpoint
from ..params.grid import family_arch, pretrain_seed
from ..runtime.errors import DataError
from ..training.loaders import ImageLoader, mask_sampler
from ..models import FAMILIES, build_model, save_model
from ..models.base import FamilyObjective, PartObjective
from ..models.maskgit_vqgan import MaskGITVQGAN
from ..runtime.devices import seed_everything
from ..training.trainer import fit
from .common import data_reader, image_codec, read_splits, stage_backend

LOG = logging.getLogger(__name__)


def _checkpoint_model(params: dict, model: str, out: str) -> None:
    """Obtain, verify and convert a published checkpoint named in params (a download is removed afterwards)."""
    cfg, codec = params["model"][model], image_codec(params, model)
    ckpt = cfg["checkpoint"]
    key = f"model.{model}.checkpoint"
    context: dict[str, Any] = {"image_size": codec.image_size}
    files: list[tuple[Path, bool]] = []
    try:
        tok_spec = (cfg.get("tokenizer") or {}).get("checkpoint")
        if tok_spec is not None:  # MaskGIT's VQGAN as its own file (MAGE's vqgan_jax_strongaug.ckpt)
            files.append(obtain_checkpoint(tok_spec, Path(out).with_name("official_tokenizer.pth"),
                                           f"model.{model}.tokenizer.checkpoint"))
            context["tokenizer"] = MaskGITVQGAN.from_official(load_checkpoint_file(files[-1][0]))
        files.append(obtain_checkpoint(ckpt, Path(out).with_name("official.pth"), key))
        net = load_official(model, files[-1][0], cfg["arch"], **context)
    finally:
        for path, downloaded in files:
            if downloaded:
                path.unlink(missing_ok=True)
    source = ckpt.get("url") or str(ckpt["path"])
    chans = dataset.channels(params)
    if (net.image_size, net.in_chans) != (codec.image_size, chans):
        given = ("RGB class folders (data.kind image_folder)" if chans == 3 else
                 f"{'grey ' if chans == 1 else ''}images (data.kind {dataset.kind(params)})")
        size_key = f"model.{model}.image_size" if "image_size" in cfg else "data.image_size"
        raise DataError(f"params {key}: checkpoint {source} expects {net.in_chans}x{net.image_size}px images, "
                        f"the dataset gives {chans}x{codec.image_size}px: {given} at {size_key} "
                        f"{codec.image_size}")
    converted_on = backends.record(backends.configure(torch.device("cpu"), **numerics(params)))  # converted on the CPU
    save_model(net, out, {"source": source, "sha256": ckpt["sha256"], **getattr(net, "official_meta", {}),
                          "runtime": converted_on})


def _train_images(reader, indices: torch.Tensor, training: dict):
    """The training images a recipe sees (the first `subset` of `indices`), streamed or in memory."""
    return reader.images(indices[: training["subset"]] if training.get("subset") else indices, True)


def _train_model(params: dict, model: str, reader, indices: torch.Tensor, parts: dict[str, str], out: str,
                 source: str, desc: str) -> None:
    """The family's own recipe from scratch: pre-training, and the retrain reference on fewer classes."""
    cfg, codec = params["model"][model], image_codec(params, model)
    g = seed_everything(pretrain_seed(params))
    backend = stage_backend(params)
    device = backend.device
    training = cfg["pretrain"]
    net = build_model(model, family_arch(params, model), codec.image_size, in_chans=reader.channels)
    for part, path in parts.items():
        net.attach_pretrained(part, path)
    net = backends.prepare(net.to(device), backend, net.convolutional)
    mask_fn = mask_sampler(training["mask"], codec.image_size, net.mask_granularity, g)
    # the loader draws the global batch (per-GPU batch x processes); each process trains on its share
    loader = ImageLoader(_train_images(reader, indices, training), training["batch_size"] * distributed.world()[1], g,
                         mask_fn=mask_fn, transform=codec.encode)
    stats = fit(FamilyObjective(net), loader, training, device, backend.amp, desc=desc,
                batch_key=f"model.{model}.pretrain.batch_size")
    if distributed.is_main():
        save_model(net.cpu(), out, {"source": source, "parts": parts, "training": stats,
                                    "processes": distributed.world()[1], "runtime": backends.record(backend)})


def _parts(model: str, tokenizer: str | None) -> dict[str, str]:
    given = {"tokenizer": tokenizer} if tokenizer else {}
    needed = FAMILIES[model].pretrained_parts
    if sorted(given) != sorted(needed):
        raise DataError(f"model '{model}' needs the pre-trained part(s) [{', '.join(needed)}], "
                        f"got [{', '.join(given)}]")
    return given


def pretrain(params: dict, model: str, data_dir: str, out: str, tokenizer: str | None = None) -> None:
    """The original model: a verified published checkpoint when params name one, else trained here."""
    if params["model"][model]["checkpoint"] is not None:
        _checkpoint_model(params, model, out)
        return
    reader = data_reader(params, data_dir, model)
    everything = torch.arange(len(reader.labels(True)))
    _train_model(params, model, reader, everything, _parts(model, tokenizer), out, "pretrained here on all classes",
                 f"pretrain {model}")


def retrain(params: dict, model: str, data_dir: str, splits_path: str, out: str, tokenizer: str | None = None) -> None:
    """Exact unlearning's reference: the pre-training recipe on every class except the forget classes.

    A frozen part (VQ-GAN's tokenizer) is shared with the original model, as a fixed component would be.
    """
    split = read_splits(splits_path)
    reader = data_reader(params, data_dir, model)
    labels = reader.labels(True)
    keep = ~torch.isin(labels, torch.tensor(split["class_indices"]["forget"]))
    LOG.info("retraining %s on %d of %d training images (forget classes %s left out)", model, int(keep.sum()),
             len(labels), ", ".join(split["classes"]["forget"]))
    _train_model(params, model, reader, keep.nonzero().flatten(), _parts(model, tokenizer), out,
                 "retrained here without the forget classes", f"retrain {model}")


def pretrain_part(params: dict, model: str, part: str, data_dir: str, out: str) -> None:
    """A frozen component pre-trained before its model (VQ-GAN's tokenizer), on all training images."""
    cfg, codec = params["model"][model][part], image_codec(params, model)
    g = seed_everything(pretrain_seed(params))
    backend = stage_backend(params)
    device = backend.device
    reader = data_reader(params, data_dir, model)
    module = FAMILIES[model].build_part(part, cfg["arch"], codec.image_size, reader.channels).to(device)
    module = backends.prepare(module, backend, FAMILIES[model].convolutional)
    images = _train_images(reader, torch.arange(len(reader.labels(True))), cfg["pretrain"])
    loader = ImageLoader(images, cfg["pretrain"]["batch_size"], g, transform=codec.encode)
    stats = fit(PartObjective(module), loader, cfg["pretrain"], device, backend.amp,
                desc=f"pretrain {model} {part}", batch_key=f"model.{model}.{part}.pretrain.batch_size")
    module.cpu().save(out, {"source": "pretrained here on all classes", "training": stats,
                            "runtime": backends.record(backend)})


def train_extractor(params: dict, data_dir: str, out: str) -> None:
    from ..evaluation import extractor  # torch-fidelity loads only in the stages that use it

    cfg, codec = params["extractor"], image_codec(params)
    g = seed_everything(params["seed"])
    backend = stage_backend(params)
    device = backend.device
    reader = data_reader(params, data_dir)
    training = cfg["training"]
    labels = reader.labels(True)
    everything = torch.arange(len(labels))
    if training.get("subset"):
        everything, labels = everything[: training["subset"]], labels[: training["subset"]]
    net = extractor.Classifier(reader.channels, len(reader.classes), cfg["feature_dim"]).to(device)
    loader = ImageLoader(reader.images(everything, True), training["batch_size"], g, labels=labels,
                         transform=codec.encode)
    stats = fit(extractor.ClassifierObjective(net), loader, training, device, backend.amp, desc="extractor",
                batch_key="extractor.training.batch_size")
    test_y = reader.labels(False)
    test_x = reader.images(torch.arange(len(test_y)), False)
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(codec.encode(b).to(device)).argmax(1).cpu()
                          for b in streaming.batches(test_x, list(torch.arange(len(test_y)).split(1000)))])
    stats["test_accuracy"] = float((pred == test_y).float().mean())
    LOG.info("extractor test accuracy %.4f", stats["test_accuracy"])
    stats["runtime"] = backends.record(backend)
    extractor.save_extractor(net.cpu(), out, codec.mean, codec.std, stats)
