"""l2n (paper 1, Eq. 10 / Algorithm 1): encoder-only unlearning toward the embedding of noise.

loss = ‖E_θ(T(x_r)) − E_θ0(T(x_r))‖ + α ‖E_θ(T(x_f)) − E_θ0(T(n))‖, n ~ N(0, Σ); the decoder stays frozen.

Where the noise goes (option `noise_input`) matters only for families whose encoder also sees a condition:
"target" (paper 1, Eq. C.25) puts n in place of the diffusion model's noisy target and keeps the forget
image's condition T(x_f); "image" (Eq. 10 / Algorithm 1 read literally) replaces the forget image by n
everywhere, condition included, so the teacher's features carry no trace of the forget class at any noise
level. For the MAE and the VQ-GAN both are the same E_θ0(T(n)).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import UnlearningMethod, distance


NOISE_INPUTS = ("target", "image")


class L2N(UnlearningMethod):
    name = "l2n"
    option_choices = {"noise_input": NOISE_INPUTS}  # checked at params validation

    def __init__(self, model, teacher=None, alpha: float = 0.25, norm: str = "l2", noise_input: str = "target"):
        if noise_input not in NOISE_INPUTS:
            raise ValueError(f"unknown l2n noise_input '{noise_input}': expected one of {', '.join(NOISE_INPUTS)}")
        super().__init__(model, teacher, alpha=alpha, norm=norm)
        self.noise_input = noise_input

    def _noise_target(self, batch: dict[str, Any], state: dict[str, Any]) -> torch.Tensor:
        if self.noise_input == "image":
            return self.teacher.encode(batch["noise"], batch["mask_f"], **state)
        return self.teacher.encode_noise_target(batch["noise"], batch["x_f"], batch["mask_f"], **state)

    def trainable_parameters(self) -> list[nn.Parameter]:
        encoder = {id(p) for p in self.model.encoder_parameters()}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in encoder)
        return self.model.encoder_parameters()

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        # a stochastic encoder (diffusion's t and γ) gets the same draw in the student and the teacher
        seed = batch.get("seed")
        state_r = self.model.encoding_state(batch["x_r"], seed) if seed is not None else {}
        state_f = self.model.encoding_state(batch["x_f"], seed + 1) if seed is not None else {}
        with torch.no_grad():
            target_r = self.teacher.encode(batch["x_r"], batch["mask_r"], **state_r)
            target_f = self._noise_target(batch, state_f)
        retain = distance(self.model.encode(batch["x_r"], batch["mask_r"], **state_r), target_r, self.norm)
        forget = distance(self.model.encode(batch["x_f"], batch["mask_f"], **state_f), target_f, self.norm)
        return {"loss": retain + self.alpha * forget, "retain": retain, "forget": forget}
