"""params `verify`: which checks run on which models, each family's settings, and where the results live.

Validated with the rest of params (`load.validate_params`), so a bad key fails before any job starts,
naming it. `verify.per_model.<family>` is merged key by key over the shared settings (a U-Net samples
slowly, so it may get fewer images or relearning steps than the MAE).
"""

from __future__ import annotations

import copy
import numbers
from typing import Any

from ..runtime.errors import ParamsError

CHECKS = ("probe", "sweep", "relearn", "membership")

#: every key a check reads, with its default (params may leave any out)
DEFAULTS: dict[str, dict[str, Any]] = {
    "probe": {"train_per_class": 200, "test_per_class": 100, "C": 1.0, "max_dim": 256, "sketch_dim": 4096,
              "batch_size": 256},
    "sweep": {"images": 100, "seeds": [0],
              "masks": [{"kind": "center", "size": 8}, {"kind": "center", "size": 16},
                        {"kind": "random", "ratio": 0.5, "patch": 4}, {"kind": "extend", "side": "right", "ratio": 0.5}]},
    "relearn": {"K": [10, 100], "max_steps": 100, "every": 10, "batch_size": 10, "images": 100,
                "metric": "accuracy", "tolerance": 0.1,
                "optimizer": {"name": "adam", "lr": 1.0e-4}},
    "membership": {"members": 200, "masks": 4, "timesteps": [100, 500], "z": 1.645},
    "verdict": {"band": 0.5, "min_gap": 0.02, "retain_tolerance": 0.1},
}
TOP_KEYS = {"checks", "methods", "task", "per_model", *DEFAULTS}
METRICS = ("accuracy", "fid")
INT_KEYS = ("train_per_class", "test_per_class", "max_dim", "sketch_dim", "batch_size", "images", "max_steps", "every", "members")


def enabled(params: dict[str, Any]) -> bool:
    """Whether any check runs (on every forget set: each set's models are checked against its own retrain)."""
    return bool(params.get("verify")) and bool(params["verify"].get("checks"))


def task_name(params: dict[str, Any]) -> str:
    """The hole the probe, relearning and membership checks use (default: the first of `tasks`)."""
    return params["verify"].get("task") or params["tasks"][0]


def settings(params: dict[str, Any], model: str, check: str) -> dict[str, Any]:
    """One check's settings on one family: the defaults, `verify.<check>`, then `verify.per_model.<model>.<check>`."""
    v = params.get("verify") or {}
    out = copy.deepcopy(DEFAULTS[check])
    out.update(copy.deepcopy(v.get(check) or {}))
    out.update(copy.deepcopy(((v.get("per_model") or {}).get(model) or {}).get(check) or {}))
    return out


def verified_models(params: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(model, method, variant) of every model checked: originals, the runs of `verify.methods`, retrain."""
    from . import paths

    if not enabled(params):
        return []
    wanted = params["verify"].get("methods")
    return [m for m in paths.evaluated_models(params)
            if m[1] in ("original", "retrain") or wanted is None or m[1] in wanted]


def verify_file(root: str, model: str, method: str, variant: str, check: str) -> str:
    return f"results/{root}/verify/{model}/{method}/{variant}/{check}.json"


def all_verify(params: dict[str, Any]) -> list[str]:
    """Every check's result file, per forget set root (`paths.set_roots`)."""
    from . import paths

    if not enabled(params):
        return []
    return [verify_file(root, *m, c) for root in paths.set_roots(params) for m in verified_models(params)
            for c in params["verify"]["checks"]]


# --- validation -------------------------------------------------------------------------------------------------

def _err(key: str, why: str) -> ParamsError:
    return ParamsError(f"params key 'verify.{key}': {why}")


def _positive_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def _positive(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value > 0


def _check_block(params: dict[str, Any], where: str, check: str, block: Any, grids: dict[int, dict[str, int]]) -> None:
    """`grids`: the families the block applies to, by image size (`config.mask_grids`)."""
    from .grid import check_mask_on_grids

    if block is None:
        return
    if not isinstance(block, dict):
        raise _err(where, f"must be a mapping of {check} settings")
    unknown = sorted(set(block) - set(DEFAULTS[check]))
    if unknown:
        raise _err(f"{where}.{unknown[0]}", f"{check} has no setting '{unknown[0]}' "
                                            f"(it has: {', '.join(DEFAULTS[check])})")
    for key, value in block.items():
        k = f"{where}.{key}"
        if key in INT_KEYS or (key, check) == ("masks", "membership"):
            if not _positive_int(value):
                raise _err(k, f"must be a positive integer, got {value!r}")
        elif key in ("C", "tolerance", "band", "z", "retain_tolerance") and not _positive(value):
            raise _err(k, f"must be a positive number, got {value!r}")
        elif key == "min_gap" and not (isinstance(value, numbers.Real) and value >= 0):
            raise _err(k, f"must be a number >= 0, got {value!r}")
        elif key in ("K", "seeds", "timesteps"):
            ok = _positive_int if key == "K" else (lambda v: isinstance(v, numbers.Integral) and v >= 0)
            if not isinstance(value, list) or not value or not all(ok(v) for v in value):
                raise _err(k, f"must be a non-empty list of {'positive' if key == 'K' else 'non-negative'} "
                              f"integers, got {value!r}")
        elif key == "metric" and value not in METRICS:
            raise _err(k, f"is '{value}': expected one of {', '.join(METRICS)}")
        elif key == "optimizer":
            if not isinstance(value, dict) or value.get("name") not in ("adam", "adamw", "sgd") \
                    or not _positive(value.get("lr")):
                raise _err(k, "must be {name: adam|adamw|sgd, lr: <positive>} (optional betas, weight_decay)")
        elif key == "masks" and check == "sweep":
            if not isinstance(value, list) or not value:
                raise _err(k, "must be a non-empty list of mask specs (like the entries of 'task')")
            for i, spec in enumerate(value):
                try:
                    check_mask_on_grids(spec, params, grids)
                except ValueError as exc:
                    raise _err(f"{k}[{i}]", str(exc)) from None


def validate(params: dict[str, Any]) -> None:
    """Raise ParamsError naming the first bad `verify` key (called from load.validate_params)."""
    from .grid import mask_grids
    from ..models import FAMILIES

    v = params.get("verify")
    if v is None:
        return
    if not isinstance(v, dict):
        raise ParamsError("params key 'verify' must be a mapping (or null)")
    unknown = sorted(set(v) - TOP_KEYS)
    if unknown:
        raise _err(unknown[0], f"unknown key (verify takes: {', '.join(sorted(TOP_KEYS))})")
    checks = v.get("checks", [])
    if not isinstance(checks, list) or any(c not in CHECKS for c in checks) or len(set(checks)) != len(checks):
        raise _err("checks", f"must list distinct checks among {', '.join(CHECKS)}, got {checks!r}")
    methods = v.get("methods")
    if methods is not None:
        if not isinstance(methods, list) or any(m not in params["methods"] for m in methods):
            raise _err("methods", f"must list methods defined under 'methods' ({', '.join(params['methods'])}), "
                                  f"got {methods!r}")
    if v.get("task") is not None and v["task"] not in params["task"]:
        raise _err("task", f"names task '{v['task']}' but 'task.{v['task']}' is not defined")
    grids = mask_grids(params)
    for check in DEFAULTS:
        _check_block(params, check, check, v.get(check), grids)
    per_model = v.get("per_model") or {}
    if not isinstance(per_model, dict):
        raise _err("per_model", "must map model families to their settings")
    for model, own in per_model.items():
        if model not in params["model"]:
            raise _err(f"per_model.{model}", f"'{model}' is not a model defined under 'model'")
        if not isinstance(own, dict):
            raise _err(f"per_model.{model}", "must be a mapping of check settings")
        for check, block in own.items():
            if check not in DEFAULTS:
                raise _err(f"per_model.{model}.{check}", f"unknown section (expected one of {', '.join(DEFAULTS)})")
            g = mask_grids(params, [model]) if model in FAMILIES else grids
            _check_block(params, f"per_model.{model}.{check}", check, block, g)
    for model in params["models"]:
        s = settings(params, model, "relearn")
        if s["every"] > s["max_steps"]:
            raise _err("relearn.every", f"{s['every']} is more than relearn.max_steps ({s['max_steps']}) "
                                        f"on model '{model}'")
