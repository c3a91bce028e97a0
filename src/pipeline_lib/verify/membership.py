"""Membership inference: can the model still tell the forget images it was trained on from unseen ones?

Population loss attack (SalUn's SVC_MIA, open-unlearning's mia_loss): score = minus the model's own
per-image loss (`I2IModel.sample_losses`: MAE / VQ-GAN over a fixed set of masks, diffusion the
noise-prediction error at fixed timesteps); members = forget-class images the original was trained on,
non-members = forget-class test images. AUC and TPR at 1 % FPR. The Mann-Whitney z of the AUC says whether
the attack has any power: when the original model itself is near chance the check is inconclusive (a test
with no power is not a pass).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .common import masks_for


@torch.no_grad()
def loss_scores(net, x: torch.Tensor, masks: list[torch.Tensor], timesteps: list[int] | None,
                batch_size: int) -> np.ndarray:
    """[N] mean per-image loss over `masks` (each [1, 1, S, S], the same for every image) and timesteps."""
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    total = torch.zeros(len(x), dtype=torch.float64)
    ts = timesteps or [None]
    for m in masks:
        for t in ts:
            parts = []
            for xb in x.split(batch_size):
                mb = m.expand(len(xb), -1, -1, -1).to(device)
                parts.append(net.sample_losses(xb.to(device), mb, t=t).double().cpu())
            total += torch.cat(parts)
    net.train(was_training)
    return (total / (len(masks) * len(ts))).numpy()


def auc_z(auc: float, n_members: int, n_non: int) -> float:
    """Standard score of an AUC against chance (Mann-Whitney null variance)."""
    return (auc - 0.5) / math.sqrt((n_members + n_non + 1) / (12.0 * n_members * n_non))


def attack(member_loss: np.ndarray, non_member_loss: np.ndarray, z: float = 1.645) -> dict[str, Any]:
    """AUC and TPR at 1 % FPR of the loss attack (lower loss = member); `powered` when AUC's z >= `z`."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.r_[np.ones(len(member_loss)), np.zeros(len(non_member_loss))]
    s = -np.r_[member_loss, non_member_loss]
    auc = float(roc_auc_score(y, s))
    fpr, tpr, _ = roc_curve(y, s)
    tpr_1 = float(tpr[fpr <= 0.01].max()) if (fpr <= 0.01).any() else 0.0
    zs = auc_z(auc, len(member_loss), len(non_member_loss))
    return {"auc": auc, "tpr_at_1fpr": tpr_1, "z": zs, "powered": bool(zs >= z), "members": len(member_loss),
            "non_members": len(non_member_loss), "member_loss": float(member_loss.mean()),
            "non_member_loss": float(non_member_loss.mean())}


def membership(net, members: torch.Tensor, non_members: torch.Tensor, mask_spec: dict, n_masks: int,
               timesteps: list[int] | None, image_size: int, seed: int = 0, batch_size: int = 256,
               z: float = 1.645) -> dict[str, Any]:
    """The loss attack on `net` over `n_masks` masks of `mask_spec` drawn from `seed`."""
    g_masks = masks_for(mask_spec, n_masks, image_size, net.mask_granularity, seed, 1)
    masks = [g_masks[i:i + 1] for i in range(n_masks)]
    out = attack(loss_scores(net, members, masks, timesteps, batch_size),
                 loss_scores(net, non_members, masks, timesteps, batch_size), z)
    out.update({"masks": n_masks, "timesteps": timesteps})
    return out
