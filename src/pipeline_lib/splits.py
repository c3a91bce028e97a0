"""Forget / retain / proxy class splits and the image indices each stage uses.

The split file is small JSON (class names plus image indices into the official train and test files), so
it is versioned with the code and two researchers reading it see the same experiment.

`splits` holds one forget/retain set (`forget`, `retain`) or several named ones (`sets.<name>`), a grid axis:
every stage that depends on the split runs once per set (`set_names`), so a setting is judged on more than
the class pair it was tuned on. The single set has no name, which keeps its paths as they always were.
"""

from __future__ import annotations

from typing import Any

import torch

from .datasets import CLASSES
from .errors import ParamsError


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


def _per_class(labels: torch.Tensor, classes: list[int], n: int, g: torch.Generator, where: str,
               names: list[str]) -> list[int]:
    picked = []
    for c in classes:
        idx = (labels == c).nonzero().flatten()
        if len(idx) < n:
            raise ParamsError(f"params key '{where}' = {n} but class '{names[c]}' has only {len(idx)} images")
        picked += idx[torch.randperm(len(idx), generator=g)[:n]].sort().values.tolist()
    return picked


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
    """One set's classes and image indices. The images of a class are drawn with params' seed, whatever the
    set, so a class is evaluated on the same test images in every set that holds it. `names`: the data set's
    classes (default Fashion-MNIST's)."""
    names = CLASSES if names is None else names
    classes = resolve_classes(params, name, names)
    s = params["splits"]
    g = torch.Generator().manual_seed(params["seed"])
    unlearn = {k: _per_class(train_labels, v, s["unlearn_per_class"], g, "splits.unlearn_per_class", names)
               for k, v in classes.items()}
    evaluation = {k: _per_class(test_labels, classes[k], s["eval_per_class"], g, "splits.eval_per_class", names)
                  for k in ("forget", "retain")}
    return {
        "dataset": params["dataset"],
        **({} if name is None else {"set": name}),
        "classes": {k: [names[c] for c in v] for k, v in classes.items()},
        "class_indices": classes,
        "unlearn": unlearn,  # indices into the official train file
        "eval": evaluation,  # indices into the official test file
    }


def retain_indices(split: dict[str, Any], kind: str, labels: torch.Tensor, limited_per_class: int | None,
                   seed: int) -> list[int]:
    """Train-file indices of the retain set a method sees (paper 1 Sec. 5: real, proxy or limited retain).

    `labels` are the official train labels. proxy: as many images as the forget set, drawn from the proxy
    pool (classes in neither split); limited: `limited_per_class` images of each retain class.
    """
    g = torch.Generator().manual_seed(seed)
    if kind == "real":
        return list(split["unlearn"]["retain"])
    if kind == "proxy":
        pool, n = split["unlearn"].get("proxy", []), len(split["unlearn"]["forget"])
        if len(pool) < n:
            raise ParamsError(f"retain 'proxy' needs {n} images (the forget set's size) from classes in neither "
                              f"split, but the proxy pool holds {len(pool)}: free some classes from splits.retain")
        return sorted(pool[i] for i in torch.randperm(len(pool), generator=g)[:n].tolist())
    if kind == "limited":
        if limited_per_class is None:
            raise ParamsError("retain 'limited' needs params key 'unlearn.limited_per_class'")
        retain = torch.tensor(split["unlearn"]["retain"], dtype=torch.long)
        picked = []
        for c, name in zip(split["class_indices"]["retain"], split["classes"]["retain"]):
            idx = retain[labels[retain] == c]
            if len(idx) < limited_per_class:
                raise ParamsError(f"params key 'unlearn.limited_per_class' = {limited_per_class} but class "
                                  f"'{name}' has only {len(idx)} unlearning images")
            picked += idx[torch.randperm(len(idx), generator=g)[:limited_per_class]].sort().values.tolist()
        return picked
    raise ParamsError(f"unknown retain kind '{kind}': expected real, proxy or limited")
