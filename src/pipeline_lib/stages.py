"""One function per pipeline stage: read inputs, call the library, write outputs atomically.

The CLI (`python -m pipeline_lib <stage>`) maps arguments onto these; Snakemake and DVC call the CLI.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from pathlib import Path
from typing import Any, Iterator

import torch

from . import backends, datasets, distributed, noise_targets, paths, streaming
from .atomic import atomic_path, write_json
from .checkpoints import load_checkpoint_file, load_official, obtain_checkpoint
from .config import (OPTION_AXES, PHASE_I, family_arch, parse_variant, run_seed, run_settings, unlearn_runs,
                     variant_name)
from .errors import DataError, ParamsError, ResourceError
from .loaders import BalancedLoader, ImageLoader, mask_sampler
from .masks import sample_mask
from .methods import build_method, epsilon_levels
from .models import FAMILIES, build_model, load_model, save_model
from .models.base import FamilyObjective, PartObjective, read_meta
from .models.maskgit_vqgan import MaskGITVQGAN
from .runtime import progress, resolve_device, seed_everything
from .splits import make_splits, retain_indices, set_names
from .trainer import evaluate_objective, fit

LOG = logging.getLogger(__name__)


def _device(params: dict) -> torch.device:
    return resolve_device(params["runtime"]["device"])


def _backend(params: dict) -> backends.Settings:
    """The device with its numerics set from params (`backends`): every stage that trains or samples."""
    return backends.configure(params, _device(params))


def _read_splits(path: str | Path) -> dict[str, Any]:
    if not Path(path).is_file():
        raise DataError(f"split file {path} is missing: run the splits stage")
    return json.loads(Path(path).read_text())


def _reader(params: dict, data_dir: str, family: str | None = None):
    """The data set's reader at `family`'s image size (`datasets.image_size`); streamed sets decode with
    `runtime.loader_workers` DataLoader workers."""
    streaming.configure(params["runtime"].get("loader_workers"))
    return datasets.reader(params, data_dir, datasets.image_size(params, family))


def _images(params: dict, data_dir: str, indices: list[int], train: bool, codec: datasets.ImageCodec):
    """A (small) subset in memory, normalised, decoded at the codec's size: evaluation sets."""
    streaming.configure(params["runtime"].get("loader_workers"))
    reader = datasets.reader(params, data_dir, codec.image_size)
    idx = torch.tensor(indices, dtype=torch.long)
    return codec.encode(streaming.materialise(reader.images(idx, train))), reader.labels(train)[idx]


def _codec(params: dict, family: str | None = None) -> datasets.ImageCodec:
    return datasets.ImageCodec.from_params(params, family)


def data(params: dict, out: str) -> None:
    """Fashion-MNIST: verified copies of the idx files; a class-folder tree: its file list, nothing copied."""
    d = params["data"]
    with atomic_path(out, directory=True) as tmp:
        if datasets.kind(params) == "image_folder":
            from .image_folder import record

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
    reader = _reader(params, data_dir)
    result = make_splits(params, reader.labels(True), reader.labels(False), set_name, reader.classes)
    for part in ("unlearn", "eval"):
        for name, idx in result[part].items():
            LOG.info("%s/%s: %d images of %s", part, name, len(idx), ", ".join(result["classes"][name]))
    write_json(out, result)


def _checkpoint_model(params: dict, model: str, out: str) -> None:
    """Obtain, verify and convert a published checkpoint named in params (a download is removed afterwards)."""
    cfg, codec = params["model"][model], _codec(params, model)
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
    chans = datasets.channels(params)
    if (net.image_size, net.in_chans) != (codec.image_size, chans):
        given = ("RGB class folders (data.kind image_folder)" if chans == 3 else
                 f"{'grey ' if chans == 1 else ''}images (data.kind {datasets.kind(params)})")
        size_key = f"model.{model}.image_size" if "image_size" in cfg else "data.image_size"
        raise DataError(f"params {key}: checkpoint {source} expects {net.in_chans}x{net.image_size}px images, "
                        f"the dataset gives {chans}x{codec.image_size}px: {given} at {size_key} "
                        f"{codec.image_size}")
    converted_on = backends.record(backends.configure(params, torch.device("cpu")))  # converted on the CPU
    save_model(net, out, {"source": source, "sha256": ckpt["sha256"], **getattr(net, "official_meta", {}),
                          "runtime": converted_on})


def _train_images(reader, indices: torch.Tensor, training: dict):
    """The training images a recipe sees (the first `subset` of `indices`), streamed or in memory."""
    return reader.images(indices[: training["subset"]] if training.get("subset") else indices, True)


def _train_model(params: dict, model: str, reader, indices: torch.Tensor, parts: dict[str, str], out: str,
                 source: str, desc: str) -> None:
    """The family's own recipe from scratch: pre-training, and the retrain reference on fewer classes."""
    cfg, codec = params["model"][model], _codec(params, model)
    g = seed_everything(params["seed"])
    backend = _backend(params)
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
    reader = _reader(params, data_dir, model)
    everything = torch.arange(len(reader.labels(True)))
    _train_model(params, model, reader, everything, _parts(model, tokenizer), out, "pretrained here on all classes",
                 f"pretrain {model}")


def retrain(params: dict, model: str, data_dir: str, splits_path: str, out: str, tokenizer: str | None = None) -> None:
    """Exact unlearning's reference: the pre-training recipe on every class except the forget classes.

    A frozen part (VQ-GAN's tokenizer) is shared with the original model, as a fixed component would be.
    """
    split = _read_splits(splits_path)
    reader = _reader(params, data_dir, model)
    labels = reader.labels(True)
    keep = ~torch.isin(labels, torch.tensor(split["class_indices"]["forget"]))
    LOG.info("retraining %s on %d of %d training images (forget classes %s left out)", model, int(keep.sum()),
             len(labels), ", ".join(split["classes"]["forget"]))
    _train_model(params, model, reader, keep.nonzero().flatten(), _parts(model, tokenizer), out,
                 "retrained here without the forget classes", f"retrain {model}")


def pretrain_part(params: dict, model: str, part: str, data_dir: str, out: str) -> None:
    """A frozen component pre-trained before its model (VQ-GAN's tokenizer), on all training images."""
    cfg, codec = params["model"][model][part], _codec(params, model)
    g = seed_everything(params["seed"])
    backend = _backend(params)
    device = backend.device
    reader = _reader(params, data_dir, model)
    module = FAMILIES[model].build_part(part, cfg["arch"], codec.image_size, reader.channels).to(device)
    module = backends.prepare(module, backend, FAMILIES[model].convolutional)
    images = _train_images(reader, torch.arange(len(reader.labels(True))), cfg["pretrain"])
    loader = ImageLoader(images, cfg["pretrain"]["batch_size"], g, transform=codec.encode)
    stats = fit(PartObjective(module), loader, cfg["pretrain"], device, backend.amp,
                desc=f"pretrain {model} {part}", batch_key=f"model.{model}.{part}.pretrain.batch_size")
    module.cpu().save(out, {"source": "pretrained here on all classes", "training": stats,
                            "runtime": backends.record(backend)})


def train_extractor(params: dict, data_dir: str, out: str) -> None:
    from . import extractor  # torch-fidelity loads only in the stages that use it

    cfg, codec = params["extractor"], _codec(params)
    g = seed_everything(params["seed"])
    backend = _backend(params)
    device = backend.device
    reader = _reader(params, data_dir)
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


def _eval_uint8(params: dict, data_dir: str, split: dict, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    codec = _codec(params)
    x, labels = _images(params, data_dir, split["eval"][which], False, codec)
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
    codec, split = _codec(params), _read_splits(splits_path)
    if kind in noise_targets.ESTIMATED_KINDS:
        x_f, _ = _images(params, data_dir, split["unlearn"]["forget"], True, codec)
    else:  # the image shape is all these kinds record
        x_f = torch.empty(0, datasets.channels(params), codec.image_size, codec.image_size)
    noise_targets.prepare(kind, x_f, params["noise"]["rank"], out)


def _method_options(method: str, point: dict, fixed: dict, anchors: list[str]) -> dict[str, Any]:
    """build_method keywords of one grid point: its axes, the fixed options and, in Phase II, ε."""
    options = dict(fixed)
    options.update({k: point[k] for k in OPTION_AXES if k in point})
    if point.get("psi") == "epsilon":
        f1 = {}
        for path in anchors:
            meta = read_meta(path)
            f1[meta["psi"]] = meta["objectives"]["forget"]
        if sorted(f1) != sorted(PHASE_I):
            raise DataError(f"Phase II ({method} {variant_name(point)}) needs the Phase I runs "
                            f"{', '.join(PHASE_I)}; got {', '.join(f1) or 'none'}")
        try:
            (options["epsilon"],) = epsilon_levels(f1["highest"], f1["lowest"], [point["eps"]])
        except ValueError as exc:
            raise DataError(f"{exc}; train Phase I longer or raise its alpha") from None
        LOG.info("Phase II: f1 highest %.5f, lowest %.5f -> epsilon %.5f at fraction %s",
                 f1["highest"], f1["lowest"], options["epsilon"], point["eps"])
    return options


def unlearn(params: dict, model: str, method: str, variant: str, original: str, data_dir: str,
            splits_path: str, noise: str, out: str, anchors: list[str] | None = None) -> None:
    planned = [r["variant"] for r in unlearn_runs(params) if (r["model"], r["method"]) == (model, method)]
    if variant not in planned:
        raise ParamsError(f"run {model}/{method}/{variant} is not in params.yaml's grid (planned: "
                          f"{', '.join(planned) or 'none'}); with DVC, regenerate dvc.yaml: python -m pipeline_lib dvc-yaml")
    cfg, point = params["unlearn"], parse_variant(variant)
    seed = run_seed(params, point)  # the run's own seed on the `seeds` axis, else params' seed
    g = seed_everything(seed)
    backend = _backend(params)
    device = backend.device
    codec, split = _codec(params, model), _read_splits(splits_path)
    training, fixed = run_settings(params, method, model)
    retain_kind = point.get("retain", "real")
    reader = _reader(params, data_dir, model)
    retain = retain_indices(split, retain_kind, reader.labels(True), cfg.get("limited_per_class"), seed)
    x_f, x_r = reader.images(split["unlearn"]["forget"], True), reader.images(retain, True)
    teacher = backends.prepare(load_model(original, device), backend, FAMILIES[model].convolutional)
    student = copy.deepcopy(teacher)
    options = _method_options(method, point, fixed, anchors or [])
    objective = build_method(method, student, teacher, alpha=point["alpha"], norm=cfg["norm"], **options)
    sampler = noise_targets.sampler(paths.noise_kind(variant), noise, codec)

    def loader(gen: torch.Generator) -> BalancedLoader:
        mask_fn = mask_sampler(cfg["mask"], codec.image_size, student.mask_granularity, gen)
        return BalancedLoader(x_r, x_f, training["batch_size"] * distributed.world()[1], gen, mask_fn, sampler,
                              transform=codec.encode)

    stats = fit(objective, loader(g), training, device, backend.amp, desc=f"{method} {variant} {model}",
                batch_key=_unlearn_batch_key(params, method, model))
    # f1/f2 after training on one fixed pass (same batches for every run of this retain set, whatever its seed)
    objectives = evaluate_objective(objective, loader(torch.Generator().manual_seed(params["seed"] + 1)), device)
    LOG.info("objectives after training: %s", objectives)
    meta = {"method": method, "variant": variant, **point, "options": options, "noise_file": noise,
            "original": original, "training": stats, "objectives": objectives, "retain": retain_kind,
            "retain_images": len(x_r), "forget_images": len(x_f), "processes": distributed.world()[1],
            "runtime": backends.record(backend)}
    if distributed.is_main():
        save_model(student.cpu(), out, meta)


def _unlearn_batch_key(params: dict, method: str, model: str) -> str:
    """The params key that sets this run's batch size (per_model over the method's over unlearn's)."""
    grid = params["methods"][method]
    if "batch_size" in grid.get("per_model", {}).get(model, {}).get("training", {}):
        return f"methods.{method}.per_model.{model}.training.batch_size"
    if "training" in grid:
        return f"methods.{method}.training.batch_size"
    return "unlearn.training.batch_size"


def _save_pngs(images: torch.Tensor, directory: Path) -> None:
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        if img.shape[0] == 1:
            Image.fromarray(img[0].numpy(), mode="L").save(directory / f"{i:04d}.png")
        else:
            Image.fromarray(img.permute(1, 2, 0).contiguous().numpy(), mode="RGB").save(directory / f"{i:04d}.png")


def _sampling_model(params: dict, checkpoint: str, device: torch.device):
    """The checkpoint's model ready to sample on `device`, with params' backend settings (`backends`)."""
    backend = backends.configure(params, device)
    net = load_model(checkpoint, device).eval()
    net = backends.prepare(net, backend, net.convolutional)
    net.configure_sampling(**params["model"][net.family].get("sampling", {}))
    return net


def _fill(params: dict, net, x: torch.Tensor, task: str, desc: str) -> tuple[torch.Tensor, torch.Tensor, range]:
    """This process's reconstructions of `x` for one task, the masks of all of `x`, and the rows it did.

    Masks come from the seed, so every model sees the same. `x` is cut into global batches of
    `generate.batch_size`; under torchrun each process reconstructs a contiguous share of whole batches
    (`distributed.share`) and skips the others' random draws (`skip_sampling`), so every batch is
    reconstructed from the same inputs and random numbers whatever the number of processes."""
    codec, spec, bs = _codec(params, net.family), params["task"][task], params["generate"]["batch_size"]
    device = next(net.parameters()).device
    g = torch.Generator().manual_seed(params["seed"])
    mask = torch.cat([sample_mask(spec, len(b), codec.image_size, net.mask_granularity, g) for b in x.split(bs)])
    batches = list(zip(x.split(bs), mask.split(bs)))
    mine = distributed.share(len(batches))
    recon, bar = [], progress(total=len(mine), desc=desc)
    with torch.no_grad():
        for i, (xb, mb) in enumerate(batches):
            if i not in mine:
                net.skip_sampling(mb.to(device))
                continue
            try:
                recon.append(net.reconstruct(xb.to(device), mb.to(device)).float().cpu())
            except torch.OutOfMemoryError:
                raise ResourceError(f"{desc}: out of memory on {device}; lower params key 'generate.batch_size' "
                                    f"(now {bs})") from None
            bar.update(1)
    bar.close()
    rows = range(mine.start * bs, min(len(x), mine.stop * bs))
    return torch.cat(recon) if recon else x[:0].float(), mask, rows


def _write_recon(params: dict, family: str, out: Path | None, which: str, x: torch.Tensor, recon: torch.Tensor,
                 mask: torch.Tensor, labels: torch.Tensor) -> None:
    """Gather every process's reconstructions (uint8: a quarter of the float traffic) and, on the main process,
    write the set's tensor file and PNGs into `out` (None on the other processes)."""
    from safetensors.torch import save_file

    codec = _codec(params, family)
    gathered = distributed.gather_to_main([codec.to_uint8(recon)])
    if out is None:
        return
    (recon_u8,) = gathered
    tensors = {"recon": recon_u8, "gt": codec.to_uint8(x), "mask": mask.to(torch.uint8), "labels": labels}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / f"{which}.safetensors"))
    _save_pngs(recon_u8, out / "png" / which)


@contextlib.contextmanager
def _main_output(out: str) -> Iterator[Path | None]:
    """The atomic temporary directory of `out` on the main process; None on the others, which write nothing."""
    if not distributed.is_main():
        yield None
        return
    with atomic_path(out, directory=True) as tmp:
        yield tmp


def generate(params: dict, checkpoint: str, data_dir: str, splits_path: str, task: str, out: str) -> None:
    """Reconstructions of both evaluation sets: a tensor file per set plus one PNG per image."""
    seed_everything(params["seed"])
    split = _read_splits(splits_path)
    net = _sampling_model(params, checkpoint, _device(params))
    codec = _codec(params, net.family)
    with _main_output(out) as tmp:
        for which in paths.SETS:
            x, labels = _images(params, data_dir, split["eval"][which], False, codec)
            recon, mask, _ = _fill(params, net, x, task, f"generate {which}")
            _write_recon(params, net.family, tmp, which, x, recon, mask, labels)
    if distributed.is_main():
        LOG.info("reconstructions written to %s", out)


def crossval(params: dict, checkpoint: str, original: str, data_dir: str, splits_path: str, out: str) -> None:
    """Paper 1 App. E.2: the model's inpainting, outpainted by the original model, then scored like a task.

    Forgetting that only hides the forget classes (rather than removing them) would show up here: the
    original model would restore them from what the unlearned model left around the hole.
    """
    seed_everything(params["seed"])
    split = _read_splits(splits_path)
    cfg, device = params["crossval"], _device(params)
    first, second = _sampling_model(params, checkpoint, device), _sampling_model(params, original, device)
    codec = _codec(params, first.family)
    with _main_output(out) as tmp:
        for which in paths.SETS:
            x, labels = _images(params, data_dir, split["eval"][which], False, codec)
            inpainted, _, rows = _fill(params, first, x, cfg["inpaint"], f"inpaint {which}")
            staged = x.clone()  # the same global batches again: only this process's rows are read
            staged[rows.start:rows.stop] = inpainted
            outpainted, mask, _ = _fill(params, second, staged, cfg["outpaint"], f"outpaint {which} (original)")
            _write_recon(params, first.family, tmp, which, x, outpainted, mask, labels)
    if distributed.is_main():
        LOG.info("cross-validation reconstructions written to %s", out)


def _standard_extractors(params: dict, result: dict) -> dict[str, dict]:
    """The standard extractors whose weights are on disk (checked once per job): kind -> {file, arch?}. Each
    configured one is named in `result["extractors"]`: used or not and why, its file, and its sha256 and url
    when known, so a metrics file says which bytes produced its numbers."""
    from . import metric_weights
    from . import standard_extractors as std

    usable = {}
    for kind, spec in metric_weights.specs(params).items():
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
    from . import standard_extractors as std

    bs, device, seed, out = params["metrics"]["batch_size"], _device(params), params["seed"], {}
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
    from . import evaluate, extractor

    entry: dict[str, Any] = {"used": True, "file": extractor_path,
                             "note": f"{extractor.EXTRACTOR_NAME} at {extractor_path}"}
    made = recon.shape[-1]
    if made != size:
        entry["resized"] = {"from": made, "to": size}
        entry["note"] += f"; reconstructions resized from the model's {made} px to data.image_size {size} px"
    return evaluate.at_size(recon, size), entry


def metrics(params: dict, recon: str, reference_dir: str, extractor_path: str, checkpoint: str, out: str) -> None:
    """Scores of one reconstruction directory; the file names every extractor that produced them."""
    from . import evaluate, extractor

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
    write_json(out, result)


def weights(params: dict, kind: str, out: str) -> None:
    """Download a standard metric network's weights (params metrics.<kind>.url), verified against its sha256."""
    from . import metric_weights

    metric_weights.fetch(params, kind, out)


def dvc_yaml(params: dict, out: str | None = None) -> None:
    """Write dvc.yaml for the experiment in params (run after changing which runs exist)."""
    from . import dvc_stages

    dvc_stages.write(params, out or "dvc.yaml")
    LOG.info("wrote %s", out or "dvc.yaml")


def summary(params: dict) -> None:
    """The numeric summary per task (metrics/<dataset>/<task>.json) that DVC diffs between commits."""
    from .summary import write_summaries

    for path in write_summaries(params):
        LOG.info("wrote %s", path)


def record(params: dict) -> None:
    """Snakemake → DVC: record a finished Snakemake run's outputs in dvc.lock and the DVC cache (no recompute)."""
    from . import sharing

    sharing.record()


def adopt(params: dict) -> None:
    """DVC → Snakemake: after `dvc pull` (or `dvc repro`), make Snakemake accept the outputs as current."""
    from . import sharing

    sharing.adopt()


def aggregate(params: dict, extractor_path: str, reference_dir: list[str], out: str) -> None:
    """Tables, figures, image grids and t-SNE maps of every task (and the cross-validation check), per forget
    set (one reference directory each, in params' order), and their spread over sets and seeds."""
    from .report import write_report

    roots = paths.set_roots(params)
    if len(reference_dir) != len(roots):
        raise ParamsError(f"aggregate got {len(reference_dir)} reference directories for {len(roots)} forget sets "
                          "(one per set, in the order of params key 'splits.sets')")
    write_report(params, out, extractor_path, dict(zip(roots, reference_dir)))
