"""Checks of params.yaml that used to fail only inside a job: said before any job starts, naming the key.

- `splits.eval_per_class` / `splits.unlearn_per_class` larger than a class holds (known counts for
  Fashion-MNIST; a class-folder tree is checked against its recorded file list when the data stage ran);
- a transformer's `num_heads` (or `decoder_num_heads`) that does not divide its embedding width, and a
  U-Net's `norm_num_groups` that does not divide its channels;
- a `runtime.device` torch does not know. Only the spelling is checked: Snakemake validates on a login
  node that may have no GPU, so whether the device is present is the job's question.
"""

from __future__ import annotations

from typing import Any

from .errors import ParamsError

#: images per class in the official Fashion-MNIST files
FASHION_PER_CLASS = {"unlearn_per_class": 6000, "eval_per_class": 1000}
DEVICE_TYPES = ("cpu", "cuda", "mps")
#: (width key, heads key) pairs of the transformer families' arch
HEAD_PAIRS = (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads"))


def check_device(params: dict[str, Any]) -> None:
    import torch

    name = params["runtime"]["device"]
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ParamsError(f"params key 'runtime.device' is '{name}': expected auto, cpu, cuda, cuda:N or mps")


def check_heads(params: dict[str, Any]) -> None:
    for model in params["models"]:
        arch = params["model"][model].get("arch", {})
        for width_key, heads_key in HEAD_PAIRS:
            if width_key in arch and heads_key in arch and arch[width_key] % arch[heads_key]:
                raise ParamsError(f"params key 'model.{model}.arch.{heads_key}' = {arch[heads_key]} does not divide "
                                  f"'model.{model}.arch.{width_key}' = {arch[width_key]}")
        groups = arch.get("norm_num_groups")
        for i, ch in enumerate(arch.get("block_out_channels", [])):
            if groups and ch % groups:
                raise ParamsError(f"params key 'model.{model}.arch.norm_num_groups' = {groups} does not divide "
                                  f"'model.{model}.arch.block_out_channels[{i}]' = {ch}")


def check_per_class(params: dict[str, Any], available: dict[str, int] | None = None) -> None:
    """`available`: the fewest images any class holds, per key (default: Fashion-MNIST's known counts)."""
    if available is None:
        if params["dataset"] != "fashion_mnist":
            return
        available = FASHION_PER_CLASS
    for key, most in available.items():
        asked = params["splits"][key]
        if asked > most:
            raise ParamsError(f"params key 'splits.{key}' = {asked} but the data set holds only {most} images "
                              f"per class there")


def check_all(params: dict[str, Any]) -> None:
    check_device(params)
    check_heads(params)
    check_per_class(params)
