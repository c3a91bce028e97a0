"""Model families behind one interface (`I2IModel`); stages look families up by name here."""

from __future__ import annotations

from .base import I2IModel, load_model, save_model
from .diffusion import PaletteDiffusion
from .mae import MAE
from .vqgan import MaskedTokenModel

FAMILIES: dict[str, type[I2IModel]] = {"mae": MAE, "vqgan": MaskedTokenModel, "diffusion": PaletteDiffusion}


def build_model(family: str, arch: dict, image_size: int, in_chans: int) -> I2IModel:
    if family not in FAMILIES:
        raise KeyError(f"unknown model family '{family}'; known: {', '.join(FAMILIES)}")
    return FAMILIES[family](image_size=image_size, in_chans=in_chans, **arch)


__all__ = ["FAMILIES", "I2IModel", "MAE", "MaskedTokenModel", "PaletteDiffusion", "build_model", "load_model", "save_model"]
