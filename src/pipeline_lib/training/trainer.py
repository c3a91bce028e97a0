"""The one training loop. Pre-training, the metric extractor and every unlearning method run through it.

An objective supplies the parameters to train and a loss per batch; the trainer owns the optimizer, the
device and autocast, logging and the progress bar, the non-finite-loss guard, and the timing that ends
up in each checkpoint's metadata.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Iterable, Protocol

import torch
from torch import nn

from ..runtime import distributed
from ..runtime.errors import NonFiniteLossError, ResourceError
from ..runtime.devices import progress

LOG = logging.getLogger(__name__)


class Objective(Protocol):
    def trainable_parameters(self) -> list[nn.Parameter]: ...

    def train_mode(self) -> None:
        """Put trained modules in train mode and frozen ones (teachers) in eval mode."""

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Must return the scalar to minimise under "loss"; other entries are logged."""

    # Optional: `backward(losses, params)` sets `p.grad` for every trained parameter instead of the default
    # `losses["loss"].backward()`; methods that combine per-loss gradients (EBU, controllable) use it.
    # Optional: `divergence_hint`, what to change when the loss turns non-finite (default: the learning rate).


def build_optimizer(params: list[nn.Parameter], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    kwargs = {"lr": cfg["lr"], "weight_decay": cfg.get("weight_decay", 0.0)}
    if "betas" in cfg:
        kwargs["betas"] = tuple(cfg["betas"])
    if cfg["name"] == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    if cfg["name"] == "adam":
        return torch.optim.Adam(params, **kwargs)
    if cfg["name"] == "sgd":  # plain gradient steps, as the controllable method's Algorithm 1 takes them
        if "betas" in kwargs:
            raise ValueError("optimizer 'sgd' takes no betas")
        return torch.optim.SGD(params, **kwargs)
    raise ValueError(f"unknown optimizer '{cfg['name']}'")


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch on `device`. For CUDA the host tensors are page-locked first, so the copies run asynchronously
    (the caching host allocator reuses the pinned buffers; streamed batches arrive pinned by their DataLoader)."""
    if device.type != "cuda":
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    return {k: _pinned(v).to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _pinned(t: torch.Tensor) -> torch.Tensor:
    return t if t.device.type != "cpu" or t.is_pinned() else t.pin_memory()


def fit(objective: Objective, loader: Iterable[dict[str, Any]], training: dict[str, Any], device: torch.device,
        amp: bool = False, desc: str = "train", batch_key: str = "the batch size",
        callback: Callable[[int], bool | None] | None = None) -> dict[str, Any]:
    """Run `training.epochs` passes (or `training.max_steps` steps); return timing and loss statistics.

    Under torchrun every process takes its share of each batch and gradients are averaged (`distributed`);
    running out of device memory names `batch_key`, the params key to lower. `callback(step)` runs after
    every step (the relearning check scores the model there); when it returns True training stops early. It
    must leave the modules in the mode it found them (`objective.train_mode()`).
    """
    params = objective.trainable_parameters()
    if not params:
        raise ValueError(f"{desc}: the objective has no trainable parameters")
    if distributed.world()[1] > 1 and getattr(objective, "backward", None) is not None:
        raise ValueError(f"{desc}: this method transforms gradients itself and runs on one process only: set "
                         "the family's gpus to 1")
    optimizer = build_optimizer(params, training["optimizer"])
    steps_per_epoch = len(loader)  # type: ignore[arg-type]
    total = training["epochs"] * steps_per_epoch
    if training.get("max_steps"):
        total = min(total, training["max_steps"])
    use_amp = amp and device.type == "cuda"
    objective.train_mode()
    step, images, history = 0, 0, []
    start = time.perf_counter()
    bar = progress(total=total, desc=desc, unit="step")
    while step < total:
        for batch in loader:
            if step >= total:
                break
            images += batch.get("n", 0)
            batch, weight = distributed.shard(batch)
            batch = _to(batch, device)
            try:
                losses = _step(objective, optimizer, batch, params, device, use_amp, weight, desc, step)
            except torch.OutOfMemoryError:
                raise ResourceError(f"{desc}: out of memory on {device} at step {step + 1}; lower params key "
                                    f"'{batch_key}' (now {training['batch_size']})") from None
            step += 1
            record = distributed.average_losses({k: float(v.detach()) for k, v in losses.items()}, weight)
            history.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
            if step % max(1, steps_per_epoch) == 0 or step == total:
                LOG.info("%s: step %d/%d loss %.5f", desc, step, total, record["loss"])
            if callback is not None and callback(step):
                total = step
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - start
    tail = history[-max(1, min(len(history), steps_per_epoch)):]
    final = {k: sum(r[k] for r in tail) / len(tail) for k in tail[0]}
    return {
        "steps": step,
        "epochs": step / max(1, steps_per_epoch),
        "images_seen": images,
        "wall_time_s": round(wall, 3),
        "images_per_s": round(images / wall, 2) if wall > 0 else math.inf,
        "device": str(device),
        "amp": use_amp,
        "first_loss": history[0]["loss"],
        "final_losses": final,
    }


def _step(objective: Objective, optimizer: torch.optim.Optimizer, batch: dict[str, Any], params: list[nn.Parameter],
          device: torch.device, use_amp: bool, weight: float, desc: str, step: int) -> dict[str, torch.Tensor]:
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
        losses = objective.loss(batch)
    loss = losses["loss"]
    if not torch.isfinite(loss):
        parts = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
        hint = getattr(objective, "divergence_hint", None) or "lower the learning rate or check the inputs"
        raise NonFiniteLossError(f"{desc}: non-finite loss at step {step + 1} ({parts}); {hint}")
    optimizer.zero_grad(set_to_none=True)
    backward = getattr(objective, "backward", None)
    if backward is not None:
        backward(losses, params)  # gradient-transform methods (EBU, ε-constrained) fill .grad themselves
    else:
        loss.backward()
        distributed.average_gradients(params, weight)
    optimizer.step()
    return losses


def evaluate_objective(objective: Objective, loader: Iterable[dict[str, Any]], device: torch.device) -> dict[str, float]:
    """Mean of each loss entry over one pass of `loader` without training: the final f1/f2 of a run.

    The controllable method's Phase II reads its ε range from these values of the Phase I runs, and the
    Pareto plot puts every run at them; give every run the same seeded loader so the values compare.
    """
    totals: dict[str, float] = {}
    batches = 0
    with torch.no_grad():
        for batch in loader:
            losses = objective.loss(_to(batch, device))
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + float(v)
            batches += 1
    if not batches:
        raise ValueError("evaluate_objective: the loader yielded no batch")
    return {k: v / batches for k, v in totals.items()}
