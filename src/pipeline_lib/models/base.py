"""The one interface every I2I family implements, and the checkpoint format every stage reads.

Methods, the trainer, generation and metrics see only this interface; none of them branches on a family.
Checkpoints are safetensors (weights) plus a JSON sidecar (family, architecture, provenance), so loading
never unpickles code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..runtime.atomic import atomic_path, write_json
from ..runtime.errors import DataError


class I2IModel(nn.Module):
    """h = D ∘ E: reconstruct a full image from a partial input T(x) described by a pixel mask."""

    family: str = ""
    #: masks are applied on this pixel granularity (the patch size for ViT families)
    mask_granularity: int = 1

    #: parameter-name prefixes of the encoder E (what encoder-only methods may train)
    encoder_prefixes: tuple[str, ...] = ()

    #: params `sampling` keys -> attributes read at generation time (changing them needs no retraining)
    sampling_keys: dict[str, str] = {}

    #: whether `reconstruct` is one differentiable network pass that output-space losses can train through
    #: (region "hidden"); iterative samplers (VQ decoding, a diffusion sampler) use `output` (region "full")
    trainable_reconstruct: bool = True

    #: frozen components pre-trained in their own stage before the model (VQ-GAN's tokenizer)
    pretrained_parts: tuple[str, ...] = ()

    #: whether the model is mostly convolutions (channels-last memory helps them on CUDA: `backends.prepare`)
    convolutional: bool = False

    #: the constructor keyword that sets `mask_granularity` (None: the class default)
    granularity_key: str | None = None

    @classmethod
    def granularity_for(cls, arch: dict[str, Any]) -> int:
        """The mask granularity a model built from `arch` will have, without building it (params checks)."""
        if cls.granularity_key is None:
            return cls.mask_granularity
        import inspect

        default = inspect.signature(cls.__init__).parameters[cls.granularity_key].default
        return int(arch.get(cls.granularity_key, default))

    @classmethod
    def build_part(cls, part: str, arch: dict[str, Any], image_size: int, in_chans: int) -> nn.Module:
        """A fresh pre-trainable part; it has `training_loss(x) -> {"loss": ...}` and `save(path, meta)`."""
        raise ValueError(f"model family '{cls.family}' has no part '{part}' (it has: {', '.join(cls.pretrained_parts) or 'none'})")

    def attach_pretrained(self, part: str, path: str | Path) -> None:
        """Load a part written by its stage into this model (and freeze it)."""
        raise ValueError(f"model family '{self.family}' has no part '{part}'")

    def configure_sampling(self, **options: Any) -> None:
        """Apply params' generation-time settings (e.g. decoding steps); unknown keys are an error."""
        unknown = sorted(set(options) - set(self.sampling_keys))
        if unknown:
            raise ValueError(f"model family '{self.family}' has no sampling option(s) {', '.join(unknown)}; "
                             f"it has: {', '.join(self.sampling_keys) or 'none'}")
        for key, value in options.items():
            setattr(self, self.sampling_keys[key], value)
            self._arch[self.sampling_keys[key]] = value

    def arch(self) -> dict[str, Any]:
        """Constructor keywords (besides image_size and in_chans) that rebuild this model."""
        return dict(self._arch)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The parameters encoder-only methods (l2n) may train."""
        return [p for n, p in self.named_parameters() if n.startswith(self.encoder_prefixes) and p.requires_grad]

    def encoding_state(self, x: torch.Tensor, seed: int) -> dict[str, Any]:
        """Random inputs of `encode` besides the image (diffusion: timestep and noise), drawn from `seed` so a
        student and its teacher can be given the same ones. Deterministic families have none."""
        return {}

    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encoder features of the partial input, flattened to [B, D]: what l2n matches."""
        raise NotImplementedError

    def encode_noise_target(self, n: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
                            **state: Any) -> torch.Tensor:
        """l2n's forget target E_θ0(T(n)) for the forget images `x` (paper 1, Eq. 10).

        By default the noise simply replaces the image; families whose encoder also sees a condition
        (diffusion, Eq. C.25) keep the forget image's condition and put the noise where the image goes.
        `state` is what `encoding_state` drew for this batch.
        """
        return self.encode(n, mask, **state)

    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The full image; pixels outside the mask are returned as given."""
        raise NotImplementedError

    def skip_sampling(self, mask: torch.Tensor) -> None:
        """Advance torch's global generator as `reconstruct(x, mask)` without a generator would, without
        reconstructing: data-parallel generation (`stages._fill`) skips the global batches of other processes so
        that every batch sees the random numbers it sees in one process. Families whose `reconstruct` draws
        nothing from the global generator (deterministic, or seeded per call) do nothing."""

    def output(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The model's full output image h(T(x)), visible pixels predicted too (no pasting of the input).

        Output-space unlearning losses use it when they compare every pixel (paper 1, Eq. C.28).
        """
        raise NotImplementedError

    def training_loss(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The family's own training objective (pre-training and output-space baselines use it)."""
        raise NotImplementedError

    def sample_losses(self, x: torch.Tensor, mask: torch.Tensor, t: int | None = None) -> torch.Tensor:
        """[B] per-image training loss with every random draw fixed: the membership-inference score.

        By default one `training_loss` call per image (deterministic for the MAE and VQ-GAN); families whose
        loss draws a timestep and noise (diffusion) override it to use timestep `t` and a fixed noise.
        """
        return torch.stack([self.training_loss(x[i:i + 1], mask[i:i + 1]).float() for i in range(len(x))])


class FamilyObjective:
    """Pre-training (and retraining) objective: the family's own loss on masked inputs."""

    def __init__(self, model: I2IModel):
        self.model = model

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def train_mode(self) -> None:
        self.model.train()

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"loss": self.model.training_loss(batch["x"], batch["mask"])}


class PartObjective:
    """Pre-training objective of a frozen part (the VQ tokenizer): its own loss on whole images."""

    def __init__(self, part: nn.Module):
        self.part = part

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.part.parameters())

    def train_mode(self) -> None:
        self.part.train()

    def loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.part.training_loss(batch["x"])


def load_state_exactly(module: nn.Module, state: dict[str, torch.Tensor], what: str,
                       names: Mapping[str, str] | None = None) -> None:
    """Load a converted official state dict, every key and shape accounted for; DataError naming the first few
    wrong (with both shapes), missing and unexpected keys otherwise (load_state_dict's own message names torch
    internals). `names` maps a converted key to the checkpoint's own key, so the message names what the user's
    file holds, not what the conversion called it."""
    own = module.state_dict()
    label = (lambda k: names.get(k, k)) if names else (lambda k: k)
    wrong = [f"{label(k)} {list(v.shape)} (expected {list(own[k].shape)})" for k, v in state.items()
             if k in own and v.shape != own[k].shape]
    missing = sorted(label(k) for k in set(own) - set(state))
    unexpected = sorted(label(k) for k in set(state) - set(own))
    if wrong or missing or unexpected:
        raise DataError(f"{what} does not match the inferred architecture: wrong shapes {wrong[:5]}, "
                        f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def official_shape(state: Mapping[str, Any], key: str, ndim: int, what: str) -> tuple[int, ...]:
    """The shape of checkpoint tensor `key`, which must have `ndim` dimensions: architectures are read from such
    shapes, so a malformed tensor is named (with its shape) instead of misread or failing in an unpacking."""
    value = state.get(key)
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{what} lacks '{key}'")
    if value.dim() != ndim:
        raise DataError(f"{what}: '{key}' has shape {list(value.shape)}, expected {ndim} dimensions")
    return tuple(value.shape)


def check_stated_arch(family: str, stated: Mapping[str, Any], implied: Mapping[str, tuple[Any, str]],
                      what: str) -> None:
    """DataError when params state an architecture value (``model.<family>.arch.<key>``, not None) that the
    checkpoint's tensors contradict; `implied` maps key -> (value, the tensors that imply it). Every conflict is
    named with both values: a file missing a block must not load as a shallower network."""
    bad = []
    for key, (value, evidence) in implied.items():
        given = stated.get(key)
        if given is None:
            continue
        if isinstance(value, float) or isinstance(given, float):
            same = math.isclose(float(given), float(value), rel_tol=1e-3)
        elif isinstance(value, (list, tuple)):
            same = isinstance(given, (list, tuple)) and list(given) == list(value)
        else:
            same = given == value
        if not same:
            bad.append(f"params model.{family}.arch.{key} is {given!r}, the checkpoint's tensors imply {value!r} "
                       f"({evidence})")
    if bad:
        raise DataError(f"{what} does not match the architecture params state: " + "; ".join(bad))


def check_heads_divide(family: str, key: str, heads: int, width: int, evidence: str, what: str) -> None:
    """The head count (params ``model.<family>.arch.<key>``; weights do not tell it) must divide the width."""
    if heads < 1 or width % heads:
        raise DataError(f"{what}: params model.{family}.arch.{key} = {heads} does not divide the checkpoint's "
                        f"width {width} ({evidence})")


def save_model(model: I2IModel, path: str | Path, meta: dict[str, Any] | None = None) -> None:
    """Write `path` (safetensors) and `path.json` (family, arch, meta), each atomically."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    sidecar = {"family": model.family, "image_size": model.image_size, "in_chans": model.in_chans,
               "arch": model.arch(), "meta": meta or {}}
    write_json(path.with_suffix(".json"), sidecar)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> I2IModel:
    from . import build_model

    path = Path(path)
    sidecar_path = path.with_suffix(".json")
    for p in (path, sidecar_path):
        if not p.is_file():
            raise DataError(f"checkpoint file {p} is missing")
    sidecar = json.loads(sidecar_path.read_text())
    model = build_model(sidecar["family"], sidecar["arch"], sidecar["image_size"], sidecar["in_chans"])
    model.load_state_dict(load_file(str(path), device=str(map_location)))
    return model.to(map_location)


def read_meta(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).with_suffix(".json").read_text())["meta"]


def save_weights(module: nn.Module, path: str | Path, sidecar: dict[str, Any]) -> None:
    """Write any module's state dict (safetensors) and a JSON sidecar, each atomically (for non-I2I parts)."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    write_json(path.with_suffix(".json"), sidecar)


def read_weights(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, sidecar) written by `save_weights`; DataError if either file is missing."""
    path = Path(path)
    sidecar_path = path.with_suffix(".json")
    for p in (path, sidecar_path):
        if not p.is_file():
            raise DataError(f"weights file {p} is missing")
    return load_file(str(path), device=str(map_location)), json.loads(sidecar_path.read_text())
