"""The unlearning stage: one method at one grid point on one model (Phase II after its Phase I runs)."""

from __future__ import annotations

import logging
import copy
from typing import Any

import torch

from ..runtime import backends, distributed
from ..noise import targets as noise_targets
from ..params import paths
from ..params.grid import OPTION_AXES, PHASE_I, parse_variant, run_seed, run_settings, unlearn_runs, variant_name
from ..runtime.errors import DataError, ParamsError
from ..training.loaders import BalancedLoader, mask_sampler
from ..methods import build_method, epsilon_levels
from ..models import FAMILIES, load_model, save_model
from ..models.base import read_meta
from ..runtime.devices import seed_everything
from ..data.splits import retain_indices
from ..training.trainer import evaluate_objective, fit
from .common import data_reader, image_codec, read_splits, stage_backend

LOG = logging.getLogger(__name__)


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
    backend = stage_backend(params)
    device = backend.device
    codec, split = image_codec(params, model), read_splits(splits_path)
    training, fixed = run_settings(params, method, model)
    retain_kind = point.get("retain", "real")
    reader = data_reader(params, data_dir, model)
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
