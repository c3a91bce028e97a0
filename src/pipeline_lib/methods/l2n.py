"""l2n (paper 1, Eq. 10 / Algorithm 1): encoder-only unlearning toward the embedding of noise.

loss = ‖E_θ(T(x_r)) − E_θ0(T(x_r))‖ + α ‖E_θ(T(x_f)) − E_θ0(T(n))‖, n ~ N(0, Σ); the decoder stays frozen.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import UnlearningMethod, distance


class L2N(UnlearningMethod):
    name = "l2n"

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
            target_f = self.teacher.encode_noise_target(batch["noise"], batch["x_f"], batch["mask_f"], **state_f)
        retain = distance(self.model.encode(batch["x_r"], batch["mask_r"], **state_r), target_r, self.norm)
        forget = distance(self.model.encode(batch["x_f"], batch["mask_f"], **state_f), target_f, self.norm)
        return {"loss": retain + self.alpha * forget, "retain": retain, "forget": forget}
