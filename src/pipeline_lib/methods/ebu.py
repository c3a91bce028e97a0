"""EBU (paper 2): saliency-selected parameters, partial EWC alignment and gradient modulation (Alg. 1, Eq. 8–13).

Per step t, with L_f the forget loss and L_r the retain loss:
- L_f pushes the model's output on T(x_f) to the "mandatory distribution" N(0, I): the batch's noise n is the
  target (Eq. 6 with the KL surrogate of paper 1: a distance to a Gaussian sample).
- L_r matches the original model's output on T(x_r) (Eq. 7: replay of the retain data).
- θ_f = top-σ of |∇L_f|, θ_r = top-σ of |∇L_r| (Eq. 10), over all trained elements together; an element with a
  zero gradient is never selected (Eq. 10 multiplies by O(top-σ(∇)), which is 0 where the gradient is 0).
- On the overlap θ_f ∩ θ_r the forget gradient becomes α∇L_r + (1−α)∇L_f (Eq. 11).
- L_r^c = L_r + γ/2 Σ_i F_i (θ_i − θ0_i)² over the retain-only elements θ_r \\ θ_f (Eq. 8–9).
- The step direction is ∇(L_f + L_r^c) + ∇_{θ_f} L_f (Eq. 12–13): the plain gradient of both losses on every
  parameter, plus the forget gradient once more on θ_f, with its modulated value (Eq. 11) on the overlap.

Choices where the paper is silent or inconsistent:
- Eq. 11 (text) puts α on ∇L_r; Algorithm 1 line 7 swaps the roles (α on ∇L_f). The equation is followed.
- Algorithm 1 line 8 writes the extra term as ∇_{θ_t} L_f (every parameter), Eq. 12 as ∇_{θ_f^t} L_f (the
  selected ones); Eq. 12 is followed, otherwise the selection would not matter.
- The overlap's modulated value replaces ∇L_f only in that extra term; the first term stays the ordinary
  gradient of L_f + L_r^c (the reading in which Eq. 12's two terms are different symbols).
- The prose says unrelated parameters stay unchanged, the equations do not (∇(L_f + L_r^c) reaches every
  parameter). The equations are the default; `freeze_unselected=True` zeroes the direction outside θ_f ∪ θ_r.
- F is "the diagonal of the Fisher information calculated on θ" (the original parameters). The retain loss
  L_r has a zero gradient at θ (the student equals the teacher), so F is the empirical Fisher of the retain
  data's likelihood: the mean over retain samples of the squared per-sample gradient of the family's own
  training loss, at the original (teacher) parameters, from the first `fisher_batches` steps' retain batches.
  It is then kept fixed. The paper gives no γ. Raw squared gradients are tiny (~1e-6 for a mean-reduced loss),
  so by default (`fisher_norm="mean"`) F is divided by its mean over all trained elements: γ is then in units
  of the mean Fisher. As F is fixed, this is only a rescaling of γ (γ_paper = γ / mean F); "none" keeps the raw
  F, "max" divides by its largest element.
- The paper selects by the t-th step's gradients of the whole model; selection here is over the trained
  parameters (`scope`), exactly k = floor(σ·N + 0.5) elements by |gradient| (ties broken by torch.topk).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..models import I2IModel
from .base import (
    REGIONS,
    UnlearningMethod,
    loss_gradients,
    model_output,
    output_distance,
    select_parameters,
    set_gradients,
)


FISHER_NORMS = ("mean", "max", "none")


@dataclass
class SaliencyMasks:
    """Boolean masks, one per parameter tensor: θ_f, θ_r, θ_f ∩ θ_r and θ_r \\ θ_f (Eq. 8, 10)."""

    forget: list[torch.Tensor]
    retain: list[torch.Tensor]
    overlap: list[torch.Tensor]
    retain_only: list[torch.Tensor]

    def counts(self) -> dict[str, int]:
        return {k: int(sum(int(m.sum()) for m in getattr(self, k)))
                for k in ("forget", "retain", "overlap", "retain_only")}


def top_fraction_mask(grads: list[torch.Tensor], sigma: float) -> list[torch.Tensor]:
    """Eq. 10's O(top-σ(∇)): the k = floor(σ·N + 0.5) largest |g| over all tensors together, N = all elements.

    Elements whose gradient is exactly zero are dropped from the selection (O(·) maps zeros to 0).
    """
    if not 0.0 <= sigma <= 1.0:
        raise ValueError(f"sigma must be a fraction in [0, 1], got {sigma}")
    flat = torch.cat([g.detach().abs().flatten().float() for g in grads]) if grads else torch.zeros(0)
    k = min(len(flat), int(math.floor(sigma * len(flat) + 0.5)))
    selected = torch.zeros(len(flat), dtype=torch.bool, device=flat.device)
    if k > 0:
        selected[torch.topk(flat, k, sorted=False).indices] = True
    selected &= flat > 0
    return [m.view_as(g) for m, g in zip(selected.split([g.numel() for g in grads]), grads)]


def saliency_masks(grads_f: list[torch.Tensor], grads_r: list[torch.Tensor], sigma: float) -> SaliencyMasks:
    forget = top_fraction_mask(grads_f, sigma)
    retain = top_fraction_mask(grads_r, sigma)
    overlap = [f & r for f, r in zip(forget, retain)]
    retain_only = [r & ~f for f, r in zip(forget, retain)]
    return SaliencyMasks(forget, retain, overlap, retain_only)


def modulated_forget_gradient(grads_f: list[torch.Tensor], grads_r: list[torch.Tensor], masks: SaliencyMasks,
                              alpha: float) -> list[torch.Tensor]:
    """∇_{θ_f} L_f with Eq. 11 applied: α∇L_r + (1−α)∇L_f on the overlap, ∇L_f on the rest of θ_f, 0 elsewhere."""
    out = []
    for gf, gr, f, o in zip(grads_f, grads_r, masks.forget, masks.overlap):
        mixed = torch.where(o, alpha * gr + (1.0 - alpha) * gf, gf)
        out.append(torch.where(f, mixed, torch.zeros_like(mixed)))
    return out


def ewc_gradient(params: list[torch.Tensor], originals: list[torch.Tensor], fisher: list[torch.Tensor],
                 masks: SaliencyMasks, gamma: float) -> list[torch.Tensor]:
    """∇ of γ/2 Σ F_i (θ_i − θ0_i)² over the retain-only elements (Eq. 9): γ F (θ − θ0) there, 0 elsewhere."""
    out = []
    for p, p0, f, m in zip(params, originals, fisher, masks.retain_only):
        pull = gamma * f * (p.detach().float() - p0.detach().float())
        out.append(torch.where(m, pull, torch.zeros_like(pull)))
    return out


def ewc_penalty(params: list[torch.Tensor], originals: list[torch.Tensor], fisher: list[torch.Tensor],
                masks: SaliencyMasks, gamma: float) -> torch.Tensor:
    terms = [torch.where(m, f * (p.detach().float() - p0.detach().float()).pow(2), torch.zeros_like(f)).sum()
             for p, p0, f, m in zip(params, originals, fisher, masks.retain_only)]
    return 0.5 * gamma * (torch.stack(terms).sum() if terms else torch.zeros(()))


def ebu_direction(grads_f: list[torch.Tensor], grads_r: list[torch.Tensor], params: list[torch.Tensor],
                  originals: list[torch.Tensor], fisher: list[torch.Tensor], sigma: float, alpha: float,
                  gamma: float, freeze_unselected: bool = False) -> tuple[list[torch.Tensor], SaliencyMasks]:
    """Eq. 12: ∇L_f + ∇L_r + ∇(EWC on θ_r \\ θ_f) + ∇_{θ_f} L_f (modulated on the overlap), per tensor."""
    masks = saliency_masks(grads_f, grads_r, sigma)
    extra = modulated_forget_gradient(grads_f, grads_r, masks, alpha)
    ewc = ewc_gradient(params, originals, fisher, masks, gamma)
    direction = [gf + gr + e + x for gf, gr, e, x in zip(grads_f, grads_r, ewc, extra)]
    if freeze_unselected:
        direction = [torch.where(f | r, d, torch.zeros_like(d))
                     for d, f, r in zip(direction, masks.forget, masks.retain)]
    return direction, masks


class EBU(UnlearningMethod):
    """EBU on an I2I model. Options: sigma (selected fraction, paper 0.5), alpha (overlap trade-off, paper 0.6),
    gamma (EWC weight), region (output pixels compared), fisher_batches, fisher_norm, freeze_unselected, scope."""

    name = "ebu"

    def __init__(self, model: I2IModel, teacher: I2IModel | None = None, alpha: float = 0.6, norm: str = "l2",
                 sigma: float = 0.5, gamma: float = 1.0, region: str = "hidden", fisher_batches: int = 1,
                 fisher_norm: str = "mean", freeze_unselected: bool = False, scope: str = "model"):
        if not 0.0 <= sigma <= 1.0:
            raise ValueError(f"EBU: sigma must be a fraction in [0, 1], got {sigma}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"EBU: alpha must be in [0, 1], got {alpha}")
        if gamma < 0:
            raise ValueError(f"EBU: gamma must be >= 0, got {gamma}")
        if fisher_batches < 1:
            raise ValueError(f"EBU: fisher_batches must be >= 1, got {fisher_batches}")
        if region not in REGIONS:
            raise ValueError(f"unknown output region '{region}': expected one of {', '.join(REGIONS)}")
        if fisher_norm not in FISHER_NORMS:
            raise ValueError(f"EBU: unknown fisher_norm '{fisher_norm}': expected one of {', '.join(FISHER_NORMS)}")
        super().__init__(model, teacher, alpha=alpha, norm=norm)
        self.sigma, self.gamma, self.region, self.scope = sigma, gamma, region, scope
        self.fisher_batches, self.fisher_norm, self.freeze_unselected = fisher_batches, fisher_norm, freeze_unselected
        self._names = {id(p): n for n, p in self.model.named_parameters()}
        self._teacher_params = dict(self.teacher.named_parameters())
        self._fisher: dict[str, torch.Tensor] = {}
        self._fisher_samples = 0
        self._fisher_seen = 0
        self._pending_retain: tuple[torch.Tensor, torch.Tensor] | None = None
        self.last_masks: SaliencyMasks | None = None

    def trainable_parameters(self) -> list[nn.Parameter]:
        return select_parameters(self.model, self.scope)

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            target_r = model_output(self.teacher, batch["x_r"], batch["mask_r"], self.region)
        out_r = model_output(self.model, batch["x_r"], batch["mask_r"], self.region)
        retain = output_distance(out_r, target_r, batch["mask_r"], self.norm, self.region)
        out_f = model_output(self.model, batch["x_f"], batch["mask_f"], self.region)
        forget = output_distance(out_f, batch["noise"], batch["mask_f"], self.norm, self.region)
        self._pending_retain = (batch["x_r"], batch["mask_r"])
        return {"loss": forget + retain, "retain": retain, "forget": forget}

    # --- the Fisher of the original model on retain data ----------------------------------------------------
    def _original(self, p: nn.Parameter) -> torch.Tensor:
        name = self._names.get(id(p))
        if name is None or name not in self._teacher_params:
            raise KeyError(f"EBU: trained parameter {name or '?'} has no counterpart in the teacher "
                           f"(the teacher must be the original model, with the same parameter names)")
        return self._teacher_params[name]

    def _accumulate_fisher(self, params: list[nn.Parameter]) -> None:
        x, mask = self._pending_retain
        originals = [self._original(p) for p in params]
        flags = [t.requires_grad for t in originals]
        sums = [torch.zeros_like(t, dtype=torch.float32) for t in originals]
        try:
            for t in originals:
                t.requires_grad_(True)
            with torch.enable_grad():
                for i in range(len(x)):
                    nll = self.teacher.training_loss(x[i: i + 1], mask[i: i + 1])
                    grads = torch.autograd.grad(nll, originals, allow_unused=True)
                    for s, g in zip(sums, grads):
                        if g is not None:
                            s.add_(g.detach().float().pow(2))
        finally:
            for t, flag in zip(originals, flags):
                t.requires_grad_(flag)
        n_old, n_new = self._fisher_samples, len(x)
        for p, s in zip(params, sums):
            name = self._names[id(p)]
            old = self._fisher.get(name, torch.zeros_like(s))
            self._fisher[name] = (old * n_old + s) / (n_old + n_new)
        self._fisher_samples += n_new
        self._fisher_seen += 1

    def fisher(self, params: list[nn.Parameter]) -> list[torch.Tensor]:
        """The diagonal Fisher per parameter as the EWC pull uses it (normalised by `fisher_norm`; zeros before
        the first training step has estimated it)."""
        raw = [self._fisher.get(self._names[id(p)], torch.zeros_like(p, dtype=torch.float32)) for p in params]
        if self.fisher_norm == "none" or not raw:
            return raw
        flat = torch.cat([f.flatten() for f in raw])
        scale = flat.mean() if self.fisher_norm == "mean" else flat.max()
        if float(scale) <= 0:
            return raw
        return [f / scale for f in raw]

    # --- the gradient transform ---------------------------------------------------------------------------
    def backward(self, losses: dict[str, torch.Tensor], params: list[nn.Parameter]) -> None:
        if self._fisher_seen < self.fisher_batches and self._pending_retain is not None:
            self._accumulate_fisher(params)
        self._pending_retain = None
        grads_f = loss_gradients(losses["forget"], params, retain_graph=True)
        grads_r = loss_gradients(losses["retain"], params, retain_graph=False)
        originals = [self._original(p) for p in params]
        fisher = self.fisher(params)
        direction, masks = ebu_direction(grads_f, grads_r, list(params), originals, fisher, self.sigma, self.alpha,
                                         self.gamma, self.freeze_unselected)
        set_gradients(params, direction)
        self.last_masks = masks
        counts = masks.counts()
        total = max(1, sum(p.numel() for p in params))
        # diagnostics, recorded by the trainer with the step's losses
        losses["ewc"] = ewc_penalty(list(params), originals, fisher, masks, self.gamma)
        losses["overlap"] = torch.tensor(counts["overlap"] / total)
