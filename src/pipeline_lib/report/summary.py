"""The numeric summary per dataset and task: what `dvc metrics diff` and `dvc exp show` compare.

The per-run metrics files hold notes (which extractor, where) and are named by grid point, so a change of α
renames them and no row could show a score moving. The summary keeps only numbers, keyed by what stays put
between commits: model → method → run, where a run is named by its string axes (noise kind, retain set, ψ
phase, forget set, seed, ...) and its numeric axes (α, σ, γ, ε fraction) are values in the row. With one
value per numeric axis the key never changes, so `dvc metrics diff` shows both the α that moved and the FID
that followed it. Several values of the same axis get `~1`, `~2`, ... in grid order.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..params import paths
from ..runtime.atomic import write_json
from ..params.grid import FLOAT_AXES, parse_variant
from ..params.sets import set_names

#: scores per set, as named in the per-run metrics files
SCORES = ("fid", "is", "kid", "cosine", "accuracy")
#: standard extractors' scores at a set's top level (Inception-v3's FID/IS/KID sit under "inception")
STANDARD_SCORES = ("clip_cosine", "places_is")
SETS = {"retain": "R", "forget": "F"}


def summary_file(ds: str, task: str) -> str:
    """Committed with the code (git, not the DVC cache): the file `dvc metrics diff` reads."""
    return f"metrics/{ds}/{task}.json"


def summary_files(params: dict[str, Any]) -> list[str]:
    return [summary_file(params["dataset"], t) for t in paths.eval_tasks(params)]


def run_key(variant: str) -> str:
    """`alpha-0.25_noise-identity` → `noise-identity`; `base` (or only numeric axes) → `base`."""
    point = parse_variant(variant)
    named = [f"{axis}-{value}" for axis, value in point.items() if axis not in FLOAT_AXES]
    return "_".join(named) or "base"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return round(float(value), 6)


def _numbers(source: dict[str, Any], keys: tuple[str, ...]) -> dict[str, float]:
    out = {k: _number(source.get(k)) for k in keys}
    return {k: v for k, v in out.items() if v is not None}


def run_row(metrics: dict[str, Any], variant: str) -> dict[str, Any]:
    """Numbers only: the numeric grid axes, R and F scores (standard extractors' too), f1/f2, training time."""
    row: dict[str, Any] = {axis: v for axis, v in parse_variant(variant).items() if axis in FLOAT_AXES}
    for which, short in SETS.items():
        scores = metrics.get(which, {})
        numbers = _numbers(scores, SCORES)
        inception = scores.get("inception") or {}
        numbers.update({f"inception_{k}": v for k, v in _numbers(inception, ("fid", "is", "kid")).items()})
        numbers.update(_numbers(scores, STANDARD_SCORES))
        row[short] = numbers
    objectives = metrics.get("objectives") or {}
    row.update({name: v for name, v in (("f1", _number(objectives.get("forget"))),
                                        ("f2", _number(objectives.get("retain")))) if v is not None})
    seconds = _number((metrics.get("training") or {}).get("wall_time_s"))
    if seconds is not None:
        row["train_s"] = seconds
    return row


def summarise(params: dict[str, Any], task: str) -> dict[str, Any]:
    """model → method → run; with named forget sets, set name → model → ... (the unnamed set's as before)."""
    by_set = {name: _summarise_set(paths.set_root(params["dataset"], name), params, task)
              for name in set_names(params)}
    return by_set[None] if None in by_set else by_set


def _summarise_set(root: str, params: dict[str, Any], task: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model, method, variant in paths.evaluated_models(params):
        runs = out.setdefault(model, {}).setdefault(method, {})
        key = base = run_key(variant)
        n = 1
        while key in runs:
            key, n = f"{base}~{n}", n + 1
        runs[key] = run_row(read_run_metrics(root, model, method, variant, task), variant)
    return out


def write_summaries(params: dict[str, Any]) -> list[str]:
    """One numeric summary per task of the dataset; the per-run files must all exist."""
    written = []
    for task in paths.eval_tasks(params):
        out = summary_file(params["dataset"], task)
        write_json(out, summarise(params, task))
        written.append(out)
    return written


def read_run_metrics(root: str, model: str, method: str, variant: str, task: str) -> dict[str, Any]:
    """One run's metrics file, read by the summary and the report; a missing file is an error naming the fix."""
    from ..runtime.errors import DataError

    path = Path(paths.metrics_file(root, model, method, variant, task))
    if not path.is_file():
        raise DataError(f"metrics file {path} is missing: run the metrics stage for it (with DVC, "
                        "regenerate dvc.yaml after changing the runs: python -m pipeline_lib dvc-yaml)")
    return json.loads(path.read_text())
