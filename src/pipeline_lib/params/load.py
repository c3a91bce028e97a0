"""params.yaml: loaded once, checked against the schema and for meaning, before any stage does work.

Schema errors name the offending key path (`splits.forget[1]`); semantic errors (overlapping or unknown
classes, tasks without a definition) do the same. Snakemake calls `load_params` when it builds the DAG,
and every stage CLI calls it on start-up, so a bad experiment fails before any job runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ..runtime.errors import ParamsError
from .checks import check_all, check_image_sizes
from .grid import OPTION_AXES, REFERENCE_METHODS, check_mask_on_grids, mask_grids, run_settings
from .verify import validate as validate_verify

REPO_ROOT = Path(__file__).resolve().parents[3]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "params.schema.yaml"


def read_yaml(text: str) -> Any:
    """YAML through libyaml when PyYAML has it (the workflow's parse reads params and the schema on every
    Snakemake call; the pure-Python loader took a second of a no-op `snakemake -n`)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _key_path(error: jsonschema.ValidationError) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def validate_params(params: dict[str, Any]) -> dict[str, Any]:
    """Raise ParamsError naming the first bad key; return the params unchanged when they are sound."""
    if not SCHEMA_PATH.exists():
        raise ParamsError(f"schema {SCHEMA_PATH} is missing: install the package editable from its checkout")
    schema = read_yaml(SCHEMA_PATH.read_text())
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
    check_image_sizes(params)  # before the masks, which are read at each family's size
    _check_masks(params)
    crossval = params.get("crossval")
    for role, name in (crossval or {}).items():
        if name not in params["task"]:
            raise ParamsError(f"params key 'crossval.{role}' names task '{name}' but 'task.{name}' is not defined")
    _check_methods(params)
    validate_verify(params)
    check_all(params)  # classes and sets (a class-folder tree: every named class present), counts, heads, device
    return params


def _check_methods(params: dict[str, Any]) -> None:
    from ..methods import METHODS, option_defaults

    for method, grid in params["methods"].items():
        if method in REFERENCE_METHODS:
            continue
        allowed = set(option_defaults(method)) - {*OPTION_AXES, "epsilon"}  # set by the grid, not by options
        scopes = [(f"methods.{method}", grid)]
        for model, own in grid.get("per_model", {}).items():
            if model not in params["model"]:  # a defined family left out of `models` keeps its settings
                raise ParamsError(f"params key 'methods.{method}.per_model.{model}': '{model}' is not a model "
                                  f"defined under 'model' ({', '.join(params['model'])})")
            scopes.append((f"methods.{method}.per_model.{model}", own))
        for where, scope in scopes:
            for key in scope.get("options", {}):
                if key not in allowed:
                    raise ParamsError(f"params key '{where}.options.{key}': {method} takes no option '{key}'"
                                      f" (it takes: {', '.join(sorted(allowed)) or 'none'})")
                choices = METHODS[method].option_choices.get(key)
                if choices and scope["options"][key] not in choices:
                    raise ParamsError(f"params key '{where}.options.{key}' is '{scope['options'][key]}': expected "
                                      f"one of {', '.join(choices)}")
        _check_output_region(params, method)
        if "limited" in grid.get("retain", []) and "limited_per_class" not in params["unlearn"]:
            raise ParamsError(f"params key 'methods.{method}.retain' asks for 'limited' but "
                              "'unlearn.limited_per_class' is not set")


def _check_output_region(params: dict[str, Any], method: str) -> None:
    """An output-space loss on the hidden region trains through `reconstruct`; a family whose reconstruct is
    a sampler needs region "full" (its one-pass `output`). Said here, not after the first training step."""
    from ..methods import option_defaults
    from ..models import FAMILIES

    defaults = option_defaults(method)
    if "region" not in defaults:
        return
    for model in params["models"]:
        _, options = run_settings(params, method, model)
        settings = {**defaults, **options}
        if settings.get("space", "output") != "output" or settings["region"] != "hidden":
            continue
        if not FAMILIES[model].trainable_reconstruct:
            raise ParamsError(
                f"params key 'methods.{method}': on model '{model}' its output-space loss (region 'hidden') would "
                f"train through {model}'s reconstruct, an iterative sampler; set 'methods.{method}.per_model."
                f"{model}.options.region: full' (the model's one-pass output)")


def _check_masks(params: dict[str, Any]) -> None:
    """Every task gives the families at one image size the same hole; training masks suit each model they train."""
    grids = mask_grids(params)
    for name, spec in params["task"].items():
        try:
            check_mask_on_grids(spec, params, grids)
        except ValueError as exc:
            raise ParamsError(f"params key 'task.{name}': {exc}") from None
    masks = [("unlearn.mask", params["unlearn"]["mask"], list(params["models"]))]
    masks += [(f"model.{m}.pretrain.mask", params["model"][m]["pretrain"]["mask"], [m])
              for m in params["models"] if "mask" in params["model"][m]["pretrain"]]
    for where, spec, models in masks:
        for m in models:
            try:
                check_mask_on_grids(spec, params, mask_grids(params, [m]))
            except ValueError as exc:
                raise ParamsError(f"params key '{where}' (model {m}): {exc}") from None


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"params file {path} does not exist")
    try:
        params = read_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"params file {path} is not valid YAML: {exc}") from None
    if not isinstance(params, dict):
        raise ParamsError(f"params file {path} must hold a mapping of keys")
    return validate_params(params)


#: grid axes a method may have, in the order they appear in a variant name. `psi`/`eps` are the controllable
#: method's phases (highest | lowest | epsilon, and the ε fraction); `retain` the retain set it sees; `seed`
