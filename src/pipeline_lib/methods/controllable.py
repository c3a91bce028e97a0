"""ε-constrained controllable unlearning (paper 3, Algorithm 1, Sec. 4.2–4.4, 5.4).

f1 (unlearning completeness, forget set) and f2 (model utility, retain set), Algorithm 1 lines 5–6:
    f1 = ‖I_θ(T(x_f)) − I_θ0(T(n))‖,   f2 = ‖I_θ(T(x_r)) − I_θ0(T(x_r))‖,   n the batch's Gaussian noise.
`space="encoder"` uses the encoder features instead (l2n's two terms, encoder-only training);
`forget_target="noise"` compares the output on T(x_f) with n itself (Sec. 4.1's N(0, Σ)) instead of the
original model's output on T(n). `region` and `norm` are as for the output-space baselines.

Each step solves the dual of the QP of Eq. 7 in closed form (Algorithm 1 lines 8–9):
    η = max((ψ − ∇f2·∇f1) / (‖∇f1‖² + ϖ), 0),   g = ∇f2 + η ∇f1,   ϖ = 1e-7,
and the optimizer steps along g (Algorithm 1 uses plain gradient steps θ ← θ − μ g; the trainer's optimizer,
Adam by default, gets g as the gradient). The control function ψ picks the phase:
- "highest" (Phase I, Eq. 8): ψ = α‖∇f1‖^δ, α > 0, δ ≥ 1 (δ = 2 converges best, Sec. 5.4): min f2 s.t. f1 at
  its infimum → the Pareto end with the highest unlearning completeness, θ1*.
- "lowest" (Phase I with f1 and f2 exchanged): ψ = α‖∇f2‖^δ, η = max((ψ − ∇f1·∇f2)/(‖∇f2‖² + ϖ), 0),
  g = ∇f1 + η∇f2: min f1 s.t. f2 at its infimum → the end with the lowest completeness, θ2*.
- "epsilon" (Phase II, Eq. 9): ψ = β (f1 − ε)^δ ‖∇f1‖², the scaled form Sec. 5.4 trains with (δ = 1 best);
  `scaled=False` gives Sec. 4.3's ψ = β (f1 − ε)^δ. The paper keeps sign(ψ) = sign(f1 − ε) by requiring an
  odd integer δ; here the power is signed, sign(f1 − ε)·|f1 − ε|^δ, which is the same for odd δ and keeps the
  sign condition for any δ > 0. When f1 < ε, ψ < 0 and f1 may rise again (η is clipped at 0), so θ settles
  where f1 = ε. `epsilon_levels` turns the two Phase I values into ε's.
f1 in ψ is the current batch's value (the paper's f1(θ_t)).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from ..models import I2IModel
from .base import (
    REGIONS,
    UnlearningMethod,
    distance,
    loss_gradients,
    model_output,
    output_distance,
    select_parameters,
    set_gradients,
)

VARPI = 1e-7
MODES = ("highest", "lowest", "epsilon")
SPACES = ("output", "encoder")
FORGET_TARGETS = ("teacher", "noise")
DEFAULT_DELTA = {"highest": 2.0, "lowest": 2.0, "epsilon": 1.0}


def sqp_direction(grad_obj: torch.Tensor, grad_con: torch.Tensor, psi: float | torch.Tensor,
                  varpi: float = VARPI, eta_max: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1 lines 8–9 on flat vectors: (g, η) for min obj s.t. ∇con·g ≥ ψ; η ≥ 0 always, and
    η ≤ eta_max when given (the bound sup η_t < ∞ that the paper's Phase II convergence result assumes)."""
    eta = ((psi - grad_obj @ grad_con) / (grad_con @ grad_con + varpi)).clamp(0.0, eta_max)
    return grad_obj + eta * grad_con, eta


def control_psi(mode: str, f1: float | torch.Tensor, grad_f1: torch.Tensor, grad_f2: torch.Tensor,
                alpha: float = 1.0, beta: float = 1.0, delta: float | None = None, epsilon: float | None = None,
                scaled: bool = True) -> torch.Tensor:
    """The control function ψ(θ_t) of the chosen phase (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"unknown control mode '{mode}': expected one of {', '.join(MODES)}")
    delta = DEFAULT_DELTA[mode] if delta is None else delta
    if mode == "highest":
        return alpha * grad_f1.norm() ** delta
    if mode == "lowest":
        return alpha * grad_f2.norm() ** delta
    if epsilon is None:
        raise ValueError("control mode 'epsilon' needs a value for epsilon")
    gap = torch.as_tensor(f1, dtype=grad_f1.dtype, device=grad_f1.device) - epsilon
    psi = beta * torch.sign(gap) * gap.abs() ** delta
    return psi * (grad_f1 @ grad_f1) if scaled else psi


def controllable_update(grad_f1: torch.Tensor, grad_f2: torch.Tensor, f1: float | torch.Tensor, mode: str,
                        alpha: float = 1.0, beta: float = 1.0, delta: float | None = None,
                        epsilon: float | None = None, scaled: bool = True, varpi: float = VARPI,
                        eta_max: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The update direction g of one step from flat gradients of f1 and f2: returns (g, η, ψ)."""
    psi = control_psi(mode, f1, grad_f1, grad_f2, alpha, beta, delta, epsilon, scaled)
    if mode == "lowest":
        g, eta = sqp_direction(grad_f1, grad_f2, psi, varpi, eta_max)
    else:
        g, eta = sqp_direction(grad_f2, grad_f1, psi, varpi, eta_max)
    return g, eta, psi


def epsilon_levels(f1_high: float, f1_low: float, fractions: Iterable[float]) -> list[float]:
    """Phase II ε's: ε = f1(θ1*) + frac·(f1(θ2*) − f1(θ1*)), frac in [0, 1] (Sec. 5.3 uses 0.25, 0.5, 0.75).

    f1_high = f1 at the highest-completeness end θ1*, f1_low = f1 at the lowest-completeness end θ2*.
    """
    if f1_high > f1_low:
        raise ValueError(f"f1 of the highest-completeness solution ({f1_high:.6g}) exceeds that of the lowest "
                         f"({f1_low:.6g}): the Phase I boundaries are inconsistent")
    levels = []
    for frac in fractions:
        if not 0.0 <= frac <= 1.0:
            raise ValueError(f"epsilon fractions must lie in [0, 1], got {frac}")
        levels.append(f1_high + frac * (f1_low - f1_high))
    return levels


def _flat(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads])


def _unflat(vector: torch.Tensor, like: list[nn.Parameter]) -> list[torch.Tensor]:
    return [v.view_as(p) for v, p in zip(vector.split([p.numel() for p in like]), like)]


class ControllableUnlearning(UnlearningMethod):
    """Options: psi ("highest" | "lowest" | "epsilon"), alpha (Phase I ψ coefficient), delta (ψ exponent;
    default 2 in Phase I, 1 in Phase II), beta and epsilon (Phase II), scaled (Phase II ψ × ‖∇f1‖²), space
    ("output" | "encoder"), forget_target ("teacher" | "noise"), region ("hidden" | "full"), scope (trained
    parameters; default the whole model for space "output", the encoder for space "encoder"), eta_max (an
    upper bound on η; default none, as Algorithm 1: Phase II's η ≈ β·(f1 − ε) has no bound of its own, and
    the paper's Phase II convergence result assumes one, sup η_t = η_max < ∞)."""

    name = "controllable"

    def __init__(self, model: I2IModel, teacher: I2IModel | None = None, alpha: float = 1.0, norm: str = "l2",
                 psi: str = "highest", delta: float | None = None, beta: float = 1.0, epsilon: float | None = None,
                 scaled: bool = True, space: str = "output", forget_target: str = "teacher",
                 region: str = "hidden", scope: str | None = None, eta_max: float | None = None):
        if psi not in MODES:
            raise ValueError(f"unknown control mode '{psi}': expected one of {', '.join(MODES)}")
        if space not in SPACES:
            raise ValueError(f"unknown space '{space}': expected one of {', '.join(SPACES)}")
        if forget_target not in FORGET_TARGETS:
            raise ValueError(f"unknown forget target '{forget_target}': expected one of {', '.join(FORGET_TARGETS)}")
        if space == "encoder" and forget_target == "noise":
            raise ValueError("forget_target 'noise' is an image-space target; with space 'encoder' use 'teacher' "
                             "(the original encoder's features of the noise)")
        if region not in REGIONS:
            raise ValueError(f"unknown output region '{region}': expected one of {', '.join(REGIONS)}")
        delta = DEFAULT_DELTA[psi] if delta is None else float(delta)
        if psi in ("highest", "lowest") and (alpha <= 0 or delta < 1):
            raise ValueError(f"Phase I needs alpha > 0 and delta >= 1 (got alpha={alpha}, delta={delta})")
        if psi == "epsilon":
            if epsilon is None:
                raise ValueError("control mode 'epsilon' needs a value for epsilon (see epsilon_levels)")
            if beta <= 0 or delta <= 0:
                raise ValueError(f"Phase II needs beta > 0 and delta > 0 (got beta={beta}, delta={delta})")
        if eta_max is not None and not eta_max > 0:
            raise ValueError(f"eta_max must be > 0 (got {eta_max})")
        super().__init__(model, teacher, alpha=alpha, norm=norm)
        self.eta_max = None if eta_max is None else float(eta_max)
        self.psi, self.delta, self.beta, self.epsilon, self.scaled = psi, delta, beta, epsilon, scaled
        self.space, self.forget_target, self.region = space, forget_target, region
        self.scope = scope or ("encoder" if space == "encoder" else "model")

    def trainable_parameters(self) -> list[nn.Parameter]:
        return select_parameters(self.model, self.scope)

    @property
    def divergence_hint(self) -> str | None:
        """Phase II's η ≈ β·(f1 − ε) grows with f1, so one noisy batch can feed the next: β is the first knob."""
        if self.psi != "epsilon":
            return None
        return (f"Phase II's step grows with beta * (f1 - epsilon) (beta = {self.beta:g}): lower 'beta' in the "
                f"method's options (e.g. methods.controllable.per_model.<family>.options.beta), bound the step "
                f"with 'eta_max' there, or lower the learning rate")

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if self.space == "encoder":
            with torch.no_grad():
                target_r = self.teacher.encode(batch["x_r"], batch["mask_r"])
                target_f = self.teacher.encode(batch["noise"], batch["mask_f"])
            f2 = distance(self.model.encode(batch["x_r"], batch["mask_r"]), target_r, self.norm)
            f1 = distance(self.model.encode(batch["x_f"], batch["mask_f"]), target_f, self.norm)
        else:
            with torch.no_grad():
                target_r = model_output(self.teacher, batch["x_r"], batch["mask_r"], self.region)
                target_f = (model_output(self.teacher, batch["noise"], batch["mask_f"], self.region)
                            if self.forget_target == "teacher" else batch["noise"])
            out_r = model_output(self.model, batch["x_r"], batch["mask_r"], self.region)
            out_f = model_output(self.model, batch["x_f"], batch["mask_f"], self.region)
            f2 = output_distance(out_r, target_r, batch["mask_r"], self.norm, self.region)
            f1 = output_distance(out_f, target_f, batch["mask_f"], self.norm, self.region)
        # "loss" is logged (and checked for finiteness) only: the step direction comes from `backward`
        return {"loss": f1 + f2, "forget": f1, "retain": f2}

    def backward(self, losses: dict[str, torch.Tensor], params: list[nn.Parameter]) -> None:
        grad_f1 = _flat(loss_gradients(losses["forget"], params, retain_graph=True))
        grad_f2 = _flat(loss_gradients(losses["retain"], params, retain_graph=False))
        g, eta, psi = controllable_update(grad_f1, grad_f2, losses["forget"].detach().float(), self.psi,
                                          alpha=self.alpha, beta=self.beta, delta=self.delta,
                                          epsilon=self.epsilon, scaled=self.scaled, eta_max=self.eta_max)
        set_gradients(params, _unflat(g, params))
        # diagnostics, recorded by the trainer with the step's losses
        losses["eta"] = eta.detach()
        losses["psi"] = psi.detach()
