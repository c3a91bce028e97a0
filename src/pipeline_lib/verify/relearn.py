"""Relearning attack: how many fine-tuning steps bring the forgotten class back?

A copy of the model is fine-tuned with its family's own training loss (`FamilyObjective`, the pre-training
recipe's masks) on K forget-class training images, with a fixed optimiser and learning rate, up to a step
cap; every `every` steps the held-out forget evaluation set (never shown during fine-tuning, so re-memorised
images do not count) is reconstructed and scored. The relearn time is the first step at which the score is
back within `tolerance` (relative) of the original model's; a run that never gets there is marked capped.
A hidden class comes back in a few steps; a model that never saw it (retrain) needs many more.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch

from ..training.loaders import ImageLoader, mask_sampler
from ..models.base import FamilyObjective
from ..training.trainer import fit


def reached(score: float, target: float, tolerance: float, higher_is_better: bool) -> bool:
    """Whether `score` is back within `tolerance` (relative) of the original's `target`."""
    if higher_is_better:
        return score >= target * (1 - tolerance)
    return score <= target * (1 + tolerance)


def relearn(net, x_k: torch.Tensor, score: Callable[[Any], float], target: float, *, train_mask: dict,
            image_size: int, optimizer: dict, batch_size: int, max_steps: int, every: int, tolerance: float,
            higher_is_better: bool = True, seed: int = 0, device: torch.device | None = None,
            stop_when_reached: bool = True) -> dict[str, Any]:
    """Fine-tune a copy of `net` on `x_k`; `score(model)` is called at step 0 and every `every` steps.

    Returns the curve [(step, score)], `relearn_steps` (None when capped), `capped`, and the target.
    """
    device = device or next(net.parameters()).device
    student = copy.deepcopy(net).to(device)
    g = torch.Generator().manual_seed(seed)
    loader = ImageLoader(x_k, batch_size, g, mask_fn=mask_sampler(train_mask, image_size, student.mask_granularity, g))
    objective = FamilyObjective(student)
    curve: list[tuple[int, float]] = []
    state: dict[str, Any] = {"steps": None}

    def evaluate(step: int) -> bool:
        value = float(score(student))
        objective.train_mode()
        curve.append((step, value))
        if state["steps"] is None and reached(value, target, tolerance, higher_is_better):
            state["steps"] = step
        return stop_when_reached and state["steps"] is not None

    stats: dict[str, Any] = {"steps": 0}
    if not evaluate(0):
        training = {"epochs": math.ceil(max_steps / len(loader)), "max_steps": max_steps, "batch_size": batch_size,
                    "optimizer": optimizer}
        stats = fit(objective, loader, training, device, desc=f"relearn K={len(x_k)}",
                    callback=lambda step: evaluate(step) if step % every == 0 or step == max_steps else False)
    return {"K": len(x_k), "curve": curve, "relearn_steps": state["steps"], "capped": state["steps"] is None,
            "max_steps": max_steps, "every": every, "target": target, "tolerance": tolerance,
            "higher_is_better": higher_is_better, "start": curve[0][1], "trained_steps": stats["steps"],
            "wall_time_s": stats.get("wall_time_s", 0.0)}


def effective_steps(result: dict[str, Any]) -> int:
    """Relearn time for comparisons: the cap stands in for a capped run (a lower bound, marked in tables)."""
    return result["max_steps"] if result["capped"] else result["relearn_steps"]
