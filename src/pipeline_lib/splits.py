"""Forget / retain / proxy class splits and the image indices each stage uses.

The split file is small JSON (class names plus image indices into the official train and test files), so
it is versioned with the code and two researchers reading it see the same experiment.
"""

from __future__ import annotations

from typing import Any

import torch

from .datasets import CLASSES
from .errors import ParamsError


def _resolve_list(key: str, spec: Any, taken: set[int], seed: int) -> list[int]:
    if isinstance(spec, dict):
        free = [c for c in range(len(CLASSES)) if c not in taken]
        if spec["count"] > len(free):
            raise ParamsError(f"params key 'splits.{key}.count' = {spec['count']} but only {len(free)} classes are free")
        g = torch.Generator().manual_seed(spec.get("seed", seed))
        order = torch.randperm(len(free), generator=g).tolist()
        return sorted(free[i] for i in order[: spec["count"]])
    out = []
    for i, item in enumerate(spec):
        if isinstance(item, int):
            if not 0 <= item < len(CLASSES):
                raise ParamsError(f"params key 'splits.{key}[{i}]': class index {item} is not in 0..{len(CLASSES) - 1}")
            out.append(item)
        elif item in CLASSES:
            out.append(CLASSES.index(item))
        else:
            raise ParamsError(f"params key 'splits.{key}[{i}]': unknown class '{item}'; known: {', '.join(CLASSES)}")
    if len(set(out)) != len(out):
        raise ParamsError(f"params key 'splits.{key}' lists a class twice")
    return out


def resolve_classes(params: dict[str, Any]) -> dict[str, list[int]]:
    """Class indices of the forget, retain and proxy sets; forget and retain must be disjoint and non-empty."""
    s, seed = params["splits"], params["seed"]
    if isinstance(s["forget"], dict) and not isinstance(s["retain"], dict):
        # listed classes are fixed first; a drawn set only takes from the rest
        retain = _resolve_list("retain", s["retain"], set(), seed)
        forget = _resolve_list("forget", s["forget"], set(retain), seed)
    else:
        forget = _resolve_list("forget", s["forget"], set(), seed)
        retain = _resolve_list("retain", s["retain"], set(forget), seed)
    overlap = sorted(set(forget) & set(retain))
    if overlap:
        names = ", ".join(CLASSES[c] for c in overlap)
        raise ParamsError(f"params keys 'splits.forget' and 'splits.retain' overlap in: {names}")
    if not forget or not retain:
        raise ParamsError(f"params key 'splits.{'forget' if not forget else 'retain'}' selects no class")
    proxy = [c for c in range(len(CLASSES)) if c not in forget and c not in retain]
    return {"forget": forget, "retain": retain, "proxy": proxy}


def _per_class(labels: torch.Tensor, classes: list[int], n: int, g: torch.Generator, where: str) -> list[int]:
    picked = []
    for c in classes:
        idx = (labels == c).nonzero().flatten()
        if len(idx) < n:
            raise ParamsError(f"params key '{where}' = {n} but class '{CLASSES[c]}' has only {len(idx)} images")
        picked += idx[torch.randperm(len(idx), generator=g)[:n]].sort().values.tolist()
    return picked


def make_splits(params: dict[str, Any], train_labels: torch.Tensor, test_labels: torch.Tensor) -> dict[str, Any]:
    classes = resolve_classes(params)
    s = params["splits"]
    g = torch.Generator().manual_seed(params["seed"])
    unlearn = {k: _per_class(train_labels, v, s["unlearn_per_class"], g, "splits.unlearn_per_class")
               for k, v in classes.items()}
    evaluation = {k: _per_class(test_labels, classes[k], s["eval_per_class"], g, "splits.eval_per_class")
                  for k in ("forget", "retain")}
    return {
        "dataset": params["dataset"],
        "classes": {k: [CLASSES[c] for c in v] for k, v in classes.items()},
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
        for c in split["class_indices"]["retain"]:
            idx = retain[labels[retain] == c]
            if len(idx) < limited_per_class:
                raise ParamsError(f"params key 'unlearn.limited_per_class' = {limited_per_class} but class "
                                  f"'{CLASSES[c]}' has only {len(idx)} unlearning images")
            picked += idx[torch.randperm(len(idx), generator=g)[:limited_per_class]].sort().values.tolist()
        return picked
    raise ParamsError(f"unknown retain kind '{kind}': expected real, proxy or limited")
