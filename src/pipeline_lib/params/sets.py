"""Forget sets as params state them: their names, class lists and settings, resolved to class indices.

`splits` holds one forget/retain set (`forget`, `retain`) or several named ones (`sets.<name>`), a grid axis:
every stage that depends on the split runs once per set (`set_names`), so a setting is judged on more than
the class pair it was tuned on. The single set has no name, which keeps its paths as they always were.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..data.classes import CLASSES
from ..runtime.errors import ParamsError

if TYPE_CHECKING:
    import torch


def set_names(params: dict[str, Any]) -> list[str | None]:
    """The forget sets of the experiment: [None] for the single unnamed set, else the names under splits.sets."""
    sets = params["splits"].get("sets")
    return [None] if sets is None else list(sets)


def set_key(name: str | None) -> str:
    """The params key holding a set's class lists (named in errors)."""
    return "splits" if name is None else f"splits.sets.{name}"


def set_spec(params: dict[str, Any], name: str | None) -> dict[str, Any]:
    """{forget, retain} (and `role`, if given) of one set."""
    s = params["splits"]
    return {k: s[k] for k in ("forget", "retain")} if name is None else s["sets"][name]


def set_settings(params: dict[str, Any], name: str | None) -> dict[str, Any]:
    """Everything the splits stage of one set reads: the engines re-run a set's jobs only when this changes
    (its `role` only sorts it into the report's tuning or held-out tables)."""
    s = params["splits"]
    shared = {k: v for k, v in s.items() if k != "sets"}
    if name is None:
        return shared
    return {**shared, **{k: v for k, v in s["sets"][name].items() if k in ("forget", "retain")}}


def _resolve_list(key: str, spec: Any, taken: set[int], seed: int, classes: list[str]) -> list[int]:
    if isinstance(spec, dict):
        free = [c for c in range(len(classes)) if c not in taken]
        if spec["count"] > len(free):
            raise ParamsError(f"params key '{key}.count' = {spec['count']} but only {len(free)} classes are free")
        import torch  # only for a drawn list: the workflow's parse of named lists stays free of torch

        g = torch.Generator().manual_seed(spec.get("seed", seed))
        order = torch.randperm(len(free), generator=g).tolist()
        return sorted(free[i] for i in order[: spec["count"]])
    out, index = [], {c: i for i, c in enumerate(classes)}
    missing = [item for item in spec if isinstance(item, str) and item not in index]
    if len(missing) > 1:  # a tree lacking classes: name them all at once
        raise ParamsError(f"params key '{key}' names {len(missing)} classes the data set lacks: {', '.join(missing)}")
    for i, item in enumerate(spec):
        if isinstance(item, int):
            if not 0 <= item < len(classes):
                raise ParamsError(f"params key '{key}[{i}]': class index {item} is not in 0..{len(classes) - 1}")
            out.append(item)
        elif item in index:
            out.append(index[item])
        else:
            known = ", ".join(classes) if len(classes) <= 20 else f"{len(classes)} classes in the data set"
            raise ParamsError(f"params key '{key}[{i}]': unknown class '{item}'; known: {known}")
    if len(set(out)) != len(out):
        raise ParamsError(f"params key '{key}' lists a class twice")
    return out


def resolve_classes(params: dict[str, Any], name: str | None = None,
                    classes: list[str] | None = None) -> dict[str, list[int]]:
    """Class indices (into `classes`, default Fashion-MNIST's) of one set's forget, retain and proxy classes;
    forget and retain must be disjoint and non-empty. A `{count: N}` draw uses its own `seed`, else params'."""
    s, seed, key = set_spec(params, name), params["seed"], set_key(name)
    classes = CLASSES if classes is None else classes
    if isinstance(s["forget"], dict) and not isinstance(s["retain"], dict):
        # listed classes are fixed first; a drawn set only takes from the rest
        retain = _resolve_list(f"{key}.retain", s["retain"], set(), seed, classes)
        forget = _resolve_list(f"{key}.forget", s["forget"], set(retain), seed, classes)
    else:
        forget = _resolve_list(f"{key}.forget", s["forget"], set(), seed, classes)
        retain = _resolve_list(f"{key}.retain", s["retain"], set(forget), seed, classes)
    overlap = sorted(set(forget) & set(retain))
    if overlap:
        names = ", ".join(classes[c] for c in overlap)
        raise ParamsError(f"params keys '{key}.forget' and '{key}.retain' overlap in: {names}")
    if not forget or not retain:
        raise ParamsError(f"params key '{key}.{'forget' if not forget else 'retain'}' selects no class")
    proxy = [c for c in range(len(classes)) if c not in forget and c not in retain]
    return {"forget": forget, "retain": retain, "proxy": proxy}


def check_sets(params: dict[str, Any]) -> None:
    """Each set resolves (known, disjoint, non-empty classes) and no two sets are the same experiment."""
    s = params["splits"]
    if "sets" in s and ("forget" in s or "retain" in s):
        raise ParamsError("params key 'splits': give either 'forget' and 'retain' (one set) or 'sets' (several "
                          "named sets), not both")
    if "sets" not in s and not ("forget" in s and "retain" in s):
        raise ParamsError("params key 'splits': needs 'forget' and 'retain', or 'sets'")
    seen: dict[tuple, str] = {}
    for name in set_names(params):
        classes = resolve_classes(params, name)
        same = (tuple(classes["forget"]), tuple(classes["retain"]))
        if same in seen:
            raise ParamsError(f"params key '{set_key(name)}' selects the same forget and retain classes as "
                              f"'{set_key(seen[same])}' (give a {{count: N}} draw its own seed)")
        seen[same] = name


def make_splits(params: dict[str, Any], train_labels: torch.Tensor, test_labels: torch.Tensor,
                name: str | None = None, names: list[str] | None = None) -> dict[str, Any]:
    """One set's classes (resolved from params) and image indices (`splits.draw_splits` with params' seed).
    `names`: the data set's classes (default Fashion-MNIST's)."""
    from ..data.splits import draw_splits

    names = CLASSES if names is None else names
    s = params["splits"]
    return draw_splits(resolve_classes(params, name, names), names, train_labels, test_labels,
                       s["unlearn_per_class"], s["eval_per_class"], params["seed"], params["dataset"], name)
