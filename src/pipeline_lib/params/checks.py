"""Checks of params.yaml that used to fail only inside a job: said before any job starts, naming the key.

- the classes: overlapping, unknown or empty lists; for a class-folder tree, `data.root` unset or any named
  class absent (all missing names in one message);
- `splits.eval_per_class` / `splits.unlearn_per_class` larger than a class holds (known counts for
  Fashion-MNIST; a class-folder tree is checked against its recorded file list when the data stage ran);
- a transformer's `num_heads` (or `decoder_num_heads`) that does not divide its embedding width, and a
  U-Net's `norm_num_groups` that does not divide its channels;
- `metrics.<kind>` with both or neither of `url` and `weights`, or a url without a `sha256` key;
- `model.<family>.image_size` on Fashion-MNIST (one size: its 28 px are padded to data.image_size), and an
  estimated Σ (diagonal, lowrank) for a family at another size than the data's, where it was estimated;
- `model.diffusion.sampling.schedule` without Palette's checkpoint (the pipeline-trained U-Net samples over its
  training β's), a schedule with beta_start > beta_end, or `sampling.steps` beyond the schedule's levels;
- a `runtime.device` torch does not know. Only the spelling is checked: Snakemake validates on a login
  node that may have no GPU, so whether the device is present is the job's question.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..runtime.errors import ParamsError

#: images per class in the official Fashion-MNIST files
FASHION_PER_CLASS = {"unlearn_per_class": 6000, "eval_per_class": 1000}
DEVICE_TYPES = ("cpu", "cuda", "mps")
#: (width key, heads key) pairs of the transformer families' arch
HEAD_PAIRS = (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads"))


def check_device(params: dict[str, Any]) -> None:
    import torch

    name = params["runtime"]["device"]
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ParamsError(f"params key 'runtime.device' is '{name}': expected auto, cpu, cuda, cuda:N or mps")


def check_heads(params: dict[str, Any]) -> None:
    for model in params["models"]:
        arch = params["model"][model].get("arch", {})
        for width_key, heads_key in HEAD_PAIRS:
            if width_key in arch and heads_key in arch and arch[width_key] % arch[heads_key]:
                raise ParamsError(f"params key 'model.{model}.arch.{heads_key}' = {arch[heads_key]} does not divide "
                                  f"'model.{model}.arch.{width_key}' = {arch[width_key]}")
        groups = arch.get("norm_num_groups")
        for i, ch in enumerate(arch.get("block_out_channels", [])):
            if groups and ch % groups:
                raise ParamsError(f"params key 'model.{model}.arch.norm_num_groups' = {groups} does not divide "
                                  f"'model.{model}.arch.block_out_channels[{i}]' = {ch}")


def check_sampling_schedule(params: dict[str, Any]) -> None:
    """Palette's sampling schedule (``model.diffusion.sampling.schedule``) applies to its checkpoint only."""
    if "diffusion" not in params["models"]:
        return
    cfg = params["model"]["diffusion"]
    sampling = cfg.get("sampling") or {}
    schedule = sampling.get("schedule")
    if schedule is None:
        return
    key = "model.diffusion.sampling.schedule"
    if cfg.get("checkpoint") is None:
        raise ParamsError(f"params key '{key}' applies to Palette's checkpoint only (model.diffusion.checkpoint is "
                          "null: the U-Net trained here samples over its own training β's); drop the key")
    if isinstance(schedule, dict):
        if schedule["beta_start"] > schedule["beta_end"]:
            raise ParamsError(f"params key '{key}': beta_start {schedule['beta_start']} is above beta_end "
                              f"{schedule['beta_end']}")
        steps = sampling.get("steps")
        if steps is not None and steps > schedule["timesteps"]:
            raise ParamsError(f"params key 'model.diffusion.sampling.steps' = {steps} exceeds the "
                              f"{schedule['timesteps']} levels of '{key}'")


def check_classes(params: dict[str, Any]) -> None:
    from .sets import check_sets, resolve_classes, set_key, set_names, set_spec

    if params["data"].get("kind", "fashion_mnist") != "image_folder":
        check_sets(params)  # overlapping, unknown or empty class lists, or two identical sets
        return
    from ..data.image_folder import check_classes as check_tree

    for name in set_names(params):
        spec, key = set_spec(params, name), set_key(name)
        named = {k: [c for c in spec[k] if isinstance(c, str)] for k in ("forget", "retain") if isinstance(spec[k], list)}
        for k, names in named.items():
            check_tree(params["data"]["root"], names, f"{key}.{k}")
        if len(named) == 2 and all(len(v) == len(spec[k]) for k, v in named.items()):
            resolve_classes(params, name, sorted({*named["forget"], *named["retain"]}))  # overlap, duplicates


def check_image_sizes(params: dict[str, Any]) -> None:
    """A family's own image size needs images resized when decoded (a class-folder tree); Fashion-MNIST's
    28 px images are zero-padded to the one data.image_size, which every stage shares."""
    if params["data"].get("kind", "fashion_mnist") == "image_folder":
        return
    for model in params["models"]:
        own = params["model"][model].get("image_size")
        if own is not None and own != params["data"]["image_size"]:
            raise ParamsError(f"params key 'model.{model}.image_size' = {own}: a per-family image size needs "
                              f"data.kind image_folder (images resized when decoded); Fashion-MNIST runs every "
                              f"family at data.image_size = {params['data']['image_size']}, so drop the key")


def _noise_kinds(grid: dict[str, Any]) -> set[str]:
    return set(grid.get("noise", [])) | {k for own in grid.get("per_model", {}).values() for k in own.get("noise", [])}


def check_noise(params: dict[str, Any]) -> None:
    """Σ and batch statistics live in one normalised space: with per-family preprocessing there is none. An
    estimated Σ is estimated once, at data.image_size: a family at another size cannot use it."""
    from .grid import method_grid
    from .dataset import image_size

    if params["data"].get("mean") is None:
        for method, grid in params["methods"].items():
            bad = sorted(_noise_kinds(grid) & {"diagonal", "lowrank", "batch_stats"})
            if bad:
                raise ParamsError(f"params key 'methods.{method}.noise' asks for {', '.join(bad)}, which need one "
                                  "normalisation for every family: set data.mean and data.std, or use identity/uniform")
    for model in params["models"]:
        size = image_size(params, model)
        if size == params["data"]["image_size"]:
            continue
        for method in params["methods"]:
            bad = sorted(set(method_grid(params, method, model).get("noise", [])) & {"diagonal", "lowrank"})
            if bad:
                raise ParamsError(f"params key 'methods.{method}.noise' asks for {', '.join(bad)} on model {model}: "
                                  f"a Σ estimated at data.image_size {params['data']['image_size']}, but "
                                  f"model.{model}.image_size is {size}; use identity, uniform or batch_stats")


def _recorded_counts(params: dict[str, Any]) -> dict[str, int] | None:
    """The fewest images per class in the tree's record, if the data stage has run for this root."""
    path = Path("data") / params["dataset"] / "raw" / "SOURCE.json"
    if not path.is_file():
        return None
    source = json.loads(path.read_text())
    root = params["data"].get("root")
    if source.get("kind") != "image_folder" or not root or Path(root).resolve() != Path(source["root"]):
        return None
    return {"unlearn_per_class": min(source["per_class"]["train"].values()),
            "eval_per_class": min(source["per_class"]["val"].values())}


def check_per_class(params: dict[str, Any], available: dict[str, int] | None = None) -> None:
    """`available`: the fewest images any class holds, per key (default: Fashion-MNIST's known counts, or a
    tree's recorded counts)."""
    if available is None:
        folder = params["data"].get("kind", "fashion_mnist") == "image_folder"
        available = _recorded_counts(params) if folder else FASHION_PER_CLASS
        if available is None:
            return
    for key, most in available.items():
        asked = params["splits"][key]
        if asked > most:
            raise ParamsError(f"params key 'splits.{key}' = {asked} but the data set holds only {most} images "
                              f"per class there")


def check_all(params: dict[str, Any]) -> None:
    from .weights import check as check_metric_weights

    check_device(params)
    check_metric_weights(params)
    check_heads(params)
    check_sampling_schedule(params)
    check_classes(params)
    check_noise(params)
    check_per_class(params)
