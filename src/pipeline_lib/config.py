"""params.yaml: loaded once, checked against the schema and for meaning, before any stage does work.

Schema errors name the offending key path (`splits.forget[1]`); semantic errors (overlapping or unknown
classes, tasks without a definition) do the same. Snakemake calls `load_params` when it builds the DAG,
and every stage CLI calls it on start-up, so a bad experiment fails before any job runs.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import ParamsError

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "params.schema.yaml"


def _key_path(error: jsonschema.ValidationError) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def validate_params(params: dict[str, Any]) -> dict[str, Any]:
    """Raise ParamsError naming the first bad key; return the params unchanged when they are sound."""
    if not SCHEMA_PATH.exists():
        raise ParamsError(f"schema {SCHEMA_PATH} is missing: install the package editable from its checkout")
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(params))
    if error is not None:
        raise ParamsError(f"params key '{_key_path(error)}': {error.message}")
    for name in params["models"]:
        if name not in params["model"]:
            raise ParamsError(f"params key 'models' lists '{name}' but 'model.{name}' is not defined")
    for name in params["tasks"]:
        if name not in params["task"]:
            raise ParamsError(f"params key 'tasks' lists '{name}' but 'task.{name}' is not defined")
    for where, spec in [*((f"task.{k}", v) for k, v in params["task"].items()), ("unlearn.mask", params["unlearn"]["mask"])]:
        _check_mask(where, spec, params["data"]["image_size"])
    from .splits import resolve_classes

    resolve_classes(params)  # overlapping, unknown or empty class lists fail here
    return params


def _check_mask(where: str, spec: dict, image_size: int) -> None:
    if spec["kind"] in ("center", "mixed") and "size" not in spec:
        raise ParamsError(f"params key '{where}.size' is required for kind '{spec['kind']}'")
    if spec["kind"] in ("random", "mixed") and "ratio" not in spec:
        raise ParamsError(f"params key '{where}.ratio' is required for kind '{spec['kind']}'")
    if "size" in spec and spec["size"] >= image_size:
        raise ParamsError(f"params key '{where}.size' = {spec['size']} leaves nothing visible in {image_size} px images")


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"params file {path} does not exist")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"params file {path} is not valid YAML: {exc}") from None
    if not isinstance(params, dict):
        raise ParamsError(f"params file {path} must hold a mapping of keys")
    return validate_params(params)


#: grid axes a method may have, in the order they appear in a variant name
GRID_AXES = ("alpha", "noise")


def variant_name(point: dict[str, Any]) -> str:
    """The path component of one grid point, e.g. alpha-0.25_noise-identity; shared by both engines.

    Values are rendered with `str`, which is how DVC renders them in dvc.yaml templates.
    """
    return "_".join(f"{axis}-{point[axis]}" for axis in GRID_AXES if axis in point)


def parse_variant(variant: str) -> dict[str, Any]:
    point: dict[str, Any] = {}
    # split only before an axis name, so values may contain "_" (noise-batch_stats)
    for part in re.split(r"_(?=(?:%s)-)" % "|".join(GRID_AXES), variant):
        axis, _, value = part.partition("-")
        if axis not in GRID_AXES or not value:
            raise ParamsError(f"unknown variant '{variant}': expected parts like "
                              + "_".join(f"{a}-<value>" for a in GRID_AXES))
        point[axis] = float(value) if axis == "alpha" else value
    return point


def unlearn_runs(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (model, method, grid point) the experiment trains, in a stable order."""
    runs = []
    for model in params["models"]:
        for method, grid in params["methods"].items():
            axes = [a for a in GRID_AXES if a in grid]
            for values in itertools.product(*(grid[a] for a in axes)):
                point = dict(zip(axes, values))
                runs.append({"model": model, "method": method, "variant": variant_name(point), **point})
    return runs
