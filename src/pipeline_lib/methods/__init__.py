"""Unlearning methods: each is a loss over balanced retain/forget batches, trained by `trainer.fit`.

Methods differ by their loss and, for EBU and the ε-constrained method, by a gradient transform (their
`backward(losses, params)` hook); they all run through the one training loop.
"""

from __future__ import annotations

import inspect
from typing import Any

from .base import UnlearningMethod, distance, masked_distance, output_distance
from .baselines import MaxLoss, NoisyLabel, RandomEncoder, RetainLabel
from .controllable import ControllableUnlearning, epsilon_levels
from .ebu import EBU
from .l2n import L2N

METHODS: dict[str, type[UnlearningMethod]] = {
    "l2n": L2N,
    "max_loss": MaxLoss,
    "noisy_label": NoisyLabel,
    "retain_label": RetainLabel,
    "random_encoder": RandomEncoder,
    "ebu": EBU,
    "controllable": ControllableUnlearning,
}


def option_defaults(name: str) -> dict[str, Any]:
    """Keywords a method takes besides model, teacher, alpha and norm (what params `options` may set), with
    their defaults."""
    params = inspect.signature(METHODS[name].__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "model", "teacher", "alpha", "norm")}


def build_method(name: str, model, teacher, alpha: float, norm: str, **options: Any) -> UnlearningMethod:
    """Build a registered method; `options` are the method's own keywords (e.g. sigma/gamma for EBU).

    An option the method does not take raises a TypeError naming it.
    """
    if name not in METHODS:
        raise KeyError(f"unknown unlearning method '{name}'; known: {', '.join(METHODS)}")
    accepted = ["alpha", "norm", *option_defaults(name)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"unlearning method '{name}' does not take the option(s) {', '.join(unknown)}; "
                        f"it takes {', '.join(accepted)}")
    return METHODS[name](model, teacher, alpha=alpha, norm=norm, **options)


__all__ = ["METHODS", "EBU", "L2N", "ControllableUnlearning", "MaxLoss", "NoisyLabel", "RandomEncoder",
           "RetainLabel", "UnlearningMethod", "build_method", "distance", "epsilon_levels", "masked_distance",
           "option_defaults", "output_distance"]
