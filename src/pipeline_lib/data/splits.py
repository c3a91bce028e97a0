"""Forget / retain / proxy class splits and the image indices each stage uses.

The split file is small JSON (class names plus image indices into the official train and test files), so
it is versioned with the code and two researchers reading it see the same experiment.

Which classes a set holds is read from params by `params.sets`; this module draws the images.
"""

from __future__ import annotations

from typing import Any

import torch

from ..runtime.errors import ParamsError


def _per_class(labels: torch.Tensor, classes: list[int], n: int, g: torch.Generator, where: str,
               names: list[str]) -> list[int]:
    picked = []
    for c in classes:
        idx = (labels == c).nonzero().flatten()
        if len(idx) < n:
            raise ParamsError(f"params key '{where}' = {n} but class '{names[c]}' has only {len(idx)} images")
        picked += idx[torch.randperm(len(idx), generator=g)[:n]].sort().values.tolist()
    return picked


def draw_splits(classes: dict[str, list[int]], names: list[str], train_labels: torch.Tensor,
                test_labels: torch.Tensor, unlearn_per_class: int, eval_per_class: int, seed: int, dataset: str,
                set_name: str | None = None) -> dict[str, Any]:
    """One set's classes and image indices. `classes`: forget, retain and proxy class indices into `names`,
    the data set's classes. The images of a class are drawn with `seed`, whatever the set, so a class is
    evaluated on the same test images in every set that holds it."""
    g = torch.Generator().manual_seed(seed)
    unlearn = {k: _per_class(train_labels, v, unlearn_per_class, g, "splits.unlearn_per_class", names)
               for k, v in classes.items()}
    evaluation = {k: _per_class(test_labels, classes[k], eval_per_class, g, "splits.eval_per_class", names)
                  for k in ("forget", "retain")}
    return {
        "dataset": dataset,
        **({} if set_name is None else {"set": set_name}),
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
