"""The experiment's grid read from params: variant names, grid points per method and family, run seeds and
settings, each family's architecture and mask granularity. Pure functions of the params dict."""

from __future__ import annotations

import itertools
import re
from typing import Any

from ..runtime.errors import ParamsError


def family_arch(params: dict[str, Any], model: str) -> dict[str, Any]:
    """Constructor keywords of `model`: its frozen parts' arch (VQ-GAN's tokenizer) merged with its own."""
    from ..models import FAMILIES

    cfg = params["model"][model]
    parts = {k: v for part in FAMILIES[model].pretrained_parts for k, v in cfg[part]["arch"].items()}
    return parts | cfg["arch"]


def mask_grids(params: dict[str, Any], models: list[str] | None = None) -> dict[int, dict[str, int]]:
    """{image size: {family: mask granularity}} of `models` (default: params' models), each at its own
    `model.<family>.image_size` (default data.image_size)."""
    from .dataset import image_size
    from ..models import FAMILIES

    grids: dict[int, dict[str, int]] = {}
    for m in params["models"] if models is None else models:
        grids.setdefault(image_size(params, m), {})[m] = FAMILIES[m].granularity_for(family_arch(params, m))
    return grids


def check_mask_on_grids(spec: dict[str, Any], params: dict[str, Any], grids: dict[int, dict[str, int]]) -> None:
    """Raise ValueError unless `spec` is a sound hole for every family, read at each family's own image size.

    A spec is read the same way at every size (paper 1, App. "Patch Size": 16 px patches for every model,
    "cropping 8x8 patches means removing 128x128 pixels", the MAE at 224 px and VQ-GAN at 256): `size` and
    `grid` are pixels / patches of the image the family sees, so the hole is as large at 224 as at 256 px;
    `ratio` is a fraction of that image (`ratio: 0.25` → 112 px at 224, 128 px at 256). Families at one size
    must see the very same hole; a family at another size than data.image_size is named in the message."""
    from ..data.masks import check_task

    for size, grans in sorted(grids.items()):
        try:
            check_task(spec, size, sorted(set(grans.values())))
        except ValueError as exc:
            if size == params["data"]["image_size"]:
                raise
            at = ", ".join(f"model.{m}.image_size" for m in grans)
            raise ValueError(f"at {at} = {size} px: {exc}") from None


#: the unlearning seed, an axis of every run when params list `seeds` (`run_seeds`).
GRID_AXES = ("alpha", "noise", "sigma", "gamma", "psi", "eps", "retain", "seed")
FLOAT_AXES = ("alpha", "sigma", "gamma", "eps")
INT_AXES = ("seed",)
#: methods whose model is trained from scratch (the pre-training recipe), not unlearned from the original
REFERENCE_METHODS = ("retrain",)
PHASE_I = ("highest", "lowest")
#: grid axes handed to the method as keywords of the same name (Phase II also gets `epsilon`, from `eps`)
OPTION_AXES = ("sigma", "gamma", "psi")


def variant_name(point: dict[str, Any]) -> str:
    """The path component of one grid point, e.g. alpha-0.25_noise-identity; shared by both engines.

    Values are rendered with `str`, which is how DVC renders them in dvc.yaml templates.
    """
    return "_".join(f"{axis}-{point[axis]}" for axis in GRID_AXES if axis in point) or "base"


def parse_variant(variant: str) -> dict[str, Any]:
    if variant == "base":
        return {}
    point: dict[str, Any] = {}
    # split only before an axis name, so values may contain "_" (noise-batch_stats)
    for part in re.split(r"_(?=(?:%s)-)" % "|".join(GRID_AXES), variant):
        axis, _, value = part.partition("-")
        if axis not in GRID_AXES or not value:
            raise ParamsError(f"unknown variant '{variant}': expected parts like "
                              + "_".join(f"{a}-<value>" for a in GRID_AXES))
        point[axis] = float(value) if axis in FLOAT_AXES else int(value) if axis in INT_AXES else value
    return point


def _grid_points(grid: dict[str, Any]) -> list[dict[str, Any]]:
    axes = [a for a in GRID_AXES if a in grid and a not in ("eps", "seed")]
    return [dict(zip(axes, values)) for values in itertools.product(*(grid[a] for a in axes))]


def method_points(method: str, grid: dict[str, Any]) -> list[dict[str, Any]]:
    """Grid points of one method. The controllable method expands each point into its Phase I boundary
    runs (psi highest, lowest) and one Phase II run per ε fraction, in that order."""
    points = _grid_points(grid)
    if method != "controllable":
        return points
    out = []
    for base in points:
        out += [{**base, "psi": psi} for psi in PHASE_I]
        out += [{**base, "psi": "epsilon", "eps": frac} for frac in grid.get("eps", [])]
    return out


def phase_one_anchors(point: dict[str, Any]) -> list[str]:
    """Variants of the two Phase I runs a Phase II (psi epsilon) run takes its ε range from."""
    if point.get("psi") != "epsilon":
        return []
    base = {k: v for k, v in point.items() if k not in ("psi", "eps")}
    return [variant_name({**base, "psi": psi}) for psi in PHASE_I]


def _per_model(params: dict[str, Any], method: str, model: str | None) -> dict[str, Any]:
    """`methods.<method>.per_model.<model>`, or {} when the family has no entry."""
    return params["methods"][method].get("per_model", {}).get(model, {})


def method_grid(params: dict[str, Any], method: str, model: str) -> dict[str, Any]:
    """`method`'s grid on `model`: the method's axes, each replaced by `per_model.<model>.<axis>` if given
    (paper 1 tunes α per family; the variant names say which values each family ran)."""
    own = _per_model(params, method, model)
    return {**params["methods"][method], **{axis: own[axis] for axis in GRID_AXES if axis in own}}


def run_seeds(params: dict[str, Any]) -> list[dict[str, int]]:
    """The seed axis: one point per entry of `seeds`, or a single point without a seed (the run uses params'
    `seed` and its name stays as it was) when params list none. Adding a seed never renames a run."""
    return [{"seed": seed} for seed in params["seeds"]] if "seeds" in params else [{}]


def run_seed(params: dict[str, Any], point: dict[str, Any]) -> int:
    """The seed one unlearning run trains with."""
    return point.get("seed", params["seed"])


def pretrain_seed(params: dict[str, Any]) -> int:
    """The seed of every pre-training recipe (the originals, their frozen parts, retrain): `pretrain_seed` when
    params set it, else `seed`. Varying it alone re-trains the models on the same sets, which is how the
    spread of the results over pre-training is measured (`python -m pipeline_lib pretrain-spread`)."""
    return params.get("pretrain_seed", params["seed"])


def unlearn_runs(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (model, method, grid point, seed) the experiment unlearns, in a stable order (not the
    references). The same list for every forget set: the set is the run's scope (`paths.set_root`)."""
    runs = []
    for model in params["models"]:
        for method, grid in params["methods"].items():
            if method in REFERENCE_METHODS:
                continue
            for point in method_points(method, method_grid(params, method, model)):
                for seed in run_seeds(params):
                    full = {**point, **seed}
                    runs.append({"model": model, "method": method, "variant": variant_name(full), **full})
    return runs


def training_keys(params: dict[str, Any], model: str) -> dict[str, Any]:
    """The settings of `model` that its (re)training reads: generation-time `sampling` is left out."""
    return {k: v for k, v in params["model"][model].items() if k != "sampling"}


def part_keys(params: dict[str, Any], model: str, part: str) -> dict[str, Any]:
    """The settings a frozen part's pre-training reads (VQ-GAN's tokenizer): its own section, and the family's
    image size when `model.<family>.image_size` is set (absent otherwise, so nothing re-runs)."""
    cfg = params["model"][model]
    return {**cfg[part], **({"image_size": cfg["image_size"]} if "image_size" in cfg else {})}


def method_settings(params: dict[str, Any], method: str, model: str | None = None) -> dict[str, Any]:
    """A method's fixed settings (training override, options) and `model`'s `per_model` entry: what the runs
    of `method` on `model` read besides the grid (the engines re-run exactly those runs when they change)."""
    out = {k: v for k, v in params["methods"][method].items() if k in ("training", "options")}
    own = _fixed(_per_model(params, method, model))
    return {**out, "per_model": own} if own else out


def _fixed(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry without its grid axes: the variant name already says which point a run is, so editing the list
    of α (adding or dropping points) must not re-run the points that stay."""
    return {k: v for k, v in entry.items() if k not in GRID_AXES}


def method_setting_keys(params: dict[str, Any], method: str, model: str) -> list[str]:
    """The params keys (dotted) of `method_settings`, for DVC's per-stage params."""
    settings = method_settings(params, method, model)
    own = [f"methods.{method}.per_model.{model}.{k}" for k in settings.pop("per_model", {})]
    return [f"methods.{method}.{k}" for k in settings] + own


def run_settings(params: dict[str, Any], method: str, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training, options) of `method`'s runs on `model`.

    Training: `unlearn.training`, replaced by `methods.<method>.training`, then updated key by key by
    `methods.<method>.per_model.<model>.training`; options: the method's, updated by the per-model ones.
    Families differ in scale (a small diffusion U-Net needs more steps than a ViT to move its encoder), so
    one experiment can tune each family (its grid axes too: `method_grid`).
    """
    grid, own = params["methods"][method], _per_model(params, method, model)
    training = {**grid.get("training", params["unlearn"]["training"]), **own.get("training", {})}
    return training, {**grid.get("options", {}), **own.get("options", {})}
