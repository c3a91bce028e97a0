"""What every unlearning method shares: a student, a frozen teacher (the original model) and α."""

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


class UnlearningMethod:
    """Base objective: subclasses define which parameters move and the loss of one balanced batch."""

    name = ""

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
