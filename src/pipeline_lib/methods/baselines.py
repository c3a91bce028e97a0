"""The four baselines of paper 1 (Appendix C.6), for any I2I family through the `I2IModel` interface.

Every baseline keeps a retain term and weights its forget term by α; a forget target is only ever applied to
forget samples (the official code's baseline loss weighted the forget term by (1 + label), which also applied
it to retain samples; that bug is not reproduced). `norm` picks the per-sample L2 norm of the paper or the MSE
of the official code (see `distance`).

Output-space baselines (Max Loss, Noisy Label, Retain Label) compare the model's reconstruction with a pixel
target. `region` says which pixels count:
- "hidden" (default): only the pixels the mask hides, i.e. the pixels the model generates. Visible pixels of
  `reconstruct` are copied from the input, and an MAE's predictions there were never trained, so they carry no
  information about forgetting. With norm "mse" and the image as target this is exactly the MAE's own
  training loss, so the retain term is "the family's loss".
- "full": the full decoder output `model.output` against the whole target image, as Eq. C.28/C.31/C.34
  write it for the MAE (‖D∘E(T(x)) − target‖₂ over every pixel).

Trainable parameters: the whole model for the three output-space baselines, the encoder only for Random
Encoder (Eq. C.36 optimises θ, the encoder; the decoder stays bitwise unchanged).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models import I2IModel
from .base import REGIONS, UnlearningMethod, distance, model_output, output_distance, select_parameters


class OutputSpaceBaseline(UnlearningMethod):
    """Shared part of the output-space baselines: whole-model training and the reconstruction distance.

    loss = d(h(T(x_r)), x_r) + forget_sign · α · d(h(T(x_f)), batch[forget_target]); the subclasses only
    choose the forget target and the sign.
    """

    #: batch key of the image the forget reconstructions are compared with
    forget_target = ""
    #: +1 pulls forget reconstructions toward the target, −1 pushes them away (Max Loss)
    forget_sign = 1.0

    def __init__(self, model: I2IModel, teacher: I2IModel | None = None, alpha: float = 0.25, norm: str = "l2",
                 region: str = "hidden"):
        if region not in REGIONS:
            raise ValueError(f"unknown output region '{region}': expected one of {', '.join(REGIONS)}")
        super().__init__(model, teacher, alpha=alpha, norm=norm)
        self.region = region

    def trainable_parameters(self) -> list[nn.Parameter]:
        return select_parameters(self.model, "model")

    def recon_distance(self, x: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """d(h(T(x)), target) on the configured region; `mask` is the mask of the input x."""
        return output_distance(model_output(self.model, x, mask, self.region), target, mask, self.norm, self.region)

    def retain_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """The unmodified training loss on the retain set: reconstruct x_r from T(x_r)."""
        return self.recon_distance(batch["x_r"], batch["mask_r"], batch["x_r"])

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        retain = self.retain_loss(batch)
        forget = self.recon_distance(batch["x_f"], batch["mask_f"], batch[self.forget_target])
        return {"loss": retain + self.forget_sign * self.alpha * forget, "retain": retain, "forget": forget}


class MaxLoss(OutputSpaceBaseline):
    """Eq. C.28: ‖h(T(x_r)) − x_r‖ − α ‖h(T(x_f)) − x_f‖ (maximise the training loss on the forget set).

    The forget term is unbounded, so the loss can go negative and keeps falling; that is the method.
    """

    name = "max_loss"
    forget_target = "x_f"
    forget_sign = -1.0


class NoisyLabel(OutputSpaceBaseline):
    """Eq. C.34: ‖h(T(x_r)) − x_r‖ + α ‖h(T(x_f)) − n‖, n the batch's Gaussian noise (the forget "label")."""

    name = "noisy_label"
    forget_target = "noise"


class RetainLabel(OutputSpaceBaseline):
    """‖h(T(x_r)) − x_r‖ + α ‖h(T(x_f)) − x_r‖: forget inputs are trained toward retain images.

    The text of C.6.2 (and the diffusion/VQ-GAN forms C.29/C.30) replace the forget target by the retain
    sample; the MAE line (C.31) prints n, a copy-paste of C.34, so the text is followed. The i-th forget sample
    of a batch is paired with its i-th retain sample (balanced batches).
    """

    name = "retain_label"
    forget_target = "x_r"


class RandomEncoder(UnlearningMethod):
    """Eq. C.36: ‖E_θ(T(x_r)) − E_θ0(T(x_r))‖ + α ‖E_θ(T(x_f)) − n‖, encoder only.

    Unlike l2n, the forget target is Gaussian noise directly in feature space, n ~ N(0, I) with the shape of
    the encoder features, not the teacher's embedding of noise. The feature noise is drawn on the CPU from the
    method's own generator (`seed`), so a run is repeatable on any device; the batch's image-space `noise`
    has the wrong shape and is not used.
    """

    name = "random_encoder"

    def __init__(self, model: I2IModel, teacher: I2IModel | None = None, alpha: float = 0.25, norm: str = "l2",
                 seed: int = 0):
        super().__init__(model, teacher, alpha=alpha, norm=norm)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return select_parameters(self.model, "encoder")

    def feature_noise(self, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=self.generator).to(device=like.device, dtype=torch.float32)

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            target_r = self.teacher.encode(batch["x_r"], batch["mask_r"])
        retain = distance(self.model.encode(batch["x_r"], batch["mask_r"]), target_r, self.norm)
        features_f = self.model.encode(batch["x_f"], batch["mask_f"])
        forget = distance(features_f, self.feature_noise(features_f), self.norm)
        return {"loss": retain + self.alpha * forget, "retain": retain, "forget": forget}
