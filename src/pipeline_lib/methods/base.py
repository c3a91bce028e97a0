"""What every unlearning method shares: a student, a frozen teacher (the original model) and α.

Also the shared pieces of the losses: `distance` (per-sample L2 norm or MSE), `output_distance` (a model's
reconstruction against a pixel-space target, on the hidden region or the full output), parameter scopes
(whole model or encoder only), and the gradient plumbing of the methods that define `backward`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..models import I2IModel


def distance(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """Batch mean of the per-sample distance: the paper's L2 norm, or the official code's MSE."""
    diff = (a - b).flatten(1).float()
    if norm == "l2":
        return diff.norm(dim=1).mean()
    if norm == "mse":
        return diff.pow(2).mean()
    raise ValueError(f"unknown norm '{norm}': expected l2 or mse")


REGIONS = ("hidden", "full")
SCOPES = ("model", "encoder")


def masked_distance(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, norm: str) -> torch.Tensor:
    """`distance` restricted to the pixels where `mask` is True (the pixels the model has to fill in).

    "l2": batch mean of the per-sample L2 norm over the hidden pixels; "mse": mean squared error over the
    hidden pixels only (so for the MAE, with the image as target, it equals the family's own training loss).
    """
    hidden = mask.expand_as(a)
    diff = torch.where(hidden, (a - b).float(), torch.zeros((), dtype=torch.float32, device=a.device))
    if norm == "l2":
        return diff.flatten(1).norm(dim=1).mean()
    if norm == "mse":
        return diff.pow(2).sum() / hidden.sum().clamp_min(1)
    raise ValueError(f"unknown norm '{norm}': expected l2 or mse")


def model_output(model: I2IModel, x: torch.Tensor, mask: torch.Tensor, region: str) -> torch.Tensor:
    """What the output-space losses compare: `reconstruct` (region "hidden") or the full `output`."""
    if region == "hidden":
        return model.reconstruct(x, mask)
    if region == "full":
        return model.output(x, mask)
    raise ValueError(f"unknown output region '{region}': expected one of {', '.join(REGIONS)}")


def output_distance(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm: str,
                    region: str) -> torch.Tensor:
    """Distance between a model output (from `model_output`) and a pixel-space target.

    region "hidden": only the hidden pixels count (visible ones are copied from the input and carry no
    gradient); region "full": every pixel of the full decoder output (paper 1, Eq. C.28 for the MAE).
    """
    if region == "hidden":
        return masked_distance(output, target, mask, norm)
    if region == "full":
        return distance(output, target, norm)
    raise ValueError(f"unknown output region '{region}': expected one of {', '.join(REGIONS)}")


def select_parameters(model: I2IModel, scope: str) -> list[nn.Parameter]:
    """The parameters a method trains: every trainable one ("model"), or the encoder's only ("encoder").

    With "encoder" the other parameters get requires_grad=False, so they stay bitwise unchanged whatever the
    optimizer (weight decay included). Fixed tables (requires_grad=False from the start) are never trained.
    """
    if scope == "model":
        return [p for p in model.parameters() if p.requires_grad]
    if scope == "encoder":
        encoder = model.encoder_parameters()
        ids = {id(p) for p in encoder}
        for p in model.parameters():
            if id(p) not in ids:
                p.requires_grad_(False)
        return encoder
    raise ValueError(f"unknown parameter scope '{scope}': expected one of {', '.join(SCOPES)}")


def loss_gradients(loss: torch.Tensor, params: list[nn.Parameter], retain_graph: bool) -> list[torch.Tensor]:
    """d loss / d p for each p (zeros for a parameter the loss does not reach), in float32."""
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(p, dtype=torch.float32) if g is None else g.float() for p, g in zip(params, grads)]


def set_gradients(params: list[nn.Parameter], grads: list[torch.Tensor]) -> None:
    """Write the combined direction into p.grad, as the trainer's `backward` hook requires."""
    for p, g in zip(params, grads):
        p.grad = g.detach().to(dtype=p.dtype).reshape(p.shape)


class UnlearningMethod:
    """Base objective: subclasses define which parameters move and the loss of one balanced batch."""

    name = ""
    #: allowed values of options that take one of a few words (params validation names the bad key)
    option_choices: dict[str, tuple[str, ...]] = {}

    def __init__(self, model: I2IModel, teacher: I2IModel | None = None, alpha: float = 0.25, norm: str = "l2"):
        self.model = model
        self.teacher = teacher if teacher is not None else copy.deepcopy(model)
        self.teacher.requires_grad_(False)
        self.alpha, self.norm = alpha, norm

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def train_mode(self) -> None:
        self.model.train()
        self.teacher.eval()

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError
