"""What one image costs a model family at params' architecture: FLOPs of a training step and of one full
reconstruction (the whole sampling chain), parameter count and the activations a training step keeps.

Counted by torch's `FlopCounterMode` on a model built on the meta device, so a ViT-L at 224 px or a Palette
U-Net at 256 px is counted in seconds without memory. The families choose which patches or tokens to keep
from the mask (boolean indexing, `.item()` checks), which meta tensors cannot do: the mask stays a real CPU
tensor, and `_MetaBesideRealMasks` gives mixed operations meta results, with the shape a boolean index
really selects. FLOPs are torch's count (2 per multiply-add) of the matmuls and convolutions; elementwise
work is not counted. A reconstruction by an iterative sampler is counted as its steps times one network pass
(a 2000-step chain traced op by op would take minutes even on meta tensors).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FamilyCost:
    #: FLOPs of one training step per image (forward and backward)
    train_flops: float
    #: FLOPs of one reconstruction per image (every step of the family's sampler)
    infer_flops: float
    #: FLOPs of one encoder pass per image (probe features, membership scores)
    encode_flops: float
    #: trainable parameters
    params: int
    #: all parameters (frozen parts included)
    all_params: int
    #: bytes autograd keeps for the backward pass, per image of a training step
    activation_bytes: float


def _mode():
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten, tree_map

    class _MetaBesideRealMasks(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            if not any(t.is_meta for t in tensors) or all(t.is_meta for t in tensors):
                return func(*args, **kwargs)
            if func is torch.ops.aten.index.Tensor and args[0].is_meta:
                src, index = args[0], args[1]
                if len(index) == 1 and index[0] is not None and index[0].dtype == torch.bool:
                    kept = int(index[0].sum())  # the rows a real boolean index selects
                    return torch.empty((kept, *src.shape[index[0].dim():]), dtype=src.dtype, device="meta")
            if func is torch.ops.aten.index_put_.default:
                return args[0]
            if func is torch.ops.aten.index_put.default:
                return torch.empty_like(args[0])
            meta = lambda t: t.to("meta") if isinstance(t, torch.Tensor) and not t.is_meta else t  # noqa: E731
            return func(*tree_map(meta, args), **tree_map(meta, kwargs))

    return _MetaBesideRealMasks()


@functools.lru_cache(maxsize=64)
def _family_cost(family: str, arch_json: str, image_size: int, chans: int, mask_json: str,
                 sampling_json: str) -> FamilyCost:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..models import build_model
    from ..training.loaders import mask_sampler

    batch = 2
    with torch.device("meta"):
        net = build_model(family, json.loads(arch_json), image_size, chans)
    sampling = json.loads(sampling_json)
    mask = mask_sampler(json.loads(mask_json), image_size, net.mask_granularity,
                        torch.Generator().manual_seed(0))(batch)
    x = torch.zeros(batch, chans, image_size, image_size, device="meta")
    saved = [0]

    def keep(t):
        saved[0] += t.numel() * t.element_size()
        return t

    net.train()
    with FlopCounterMode(display=False) as train, _mode():
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            loss = net.training_loss(x, mask)
        loss = loss["loss"] if isinstance(loss, dict) else loss
        loss.backward()
    net.eval()
    with FlopCounterMode(display=False) as one, _mode(), torch.no_grad():
        net.output(x, mask)
    infer_flops = one.get_total_flops() / batch * chain_length(net, sampling)
    with FlopCounterMode(display=False) as encode, _mode(), torch.no_grad():
        net.encode(x, mask)
    return FamilyCost(train.get_total_flops() / batch, infer_flops,
                      encode.get_total_flops() / batch,
                      sum(p.numel() for p in net.parameters() if p.requires_grad),
                      sum(p.numel() for p in net.parameters()), saved[0] / batch)


def chain_length(net, sampling: dict[str, Any]) -> int:
    """Network passes of one reconstruction: 1 for a one-pass family, else the sampler's steps (params'
    `sampling.steps`, or the family's default). A pass is counted as the family's one-step `output`, so a
    VQ-GAN step also counts its tokenizer's encoding and decoding (an over-count of a few per cent)."""
    if net.trainable_reconstruct:
        return 1
    return int(sampling.get("steps") or getattr(net, "sample_steps", None) or getattr(net, "steps", None) or 1)


def family_cost(params: dict[str, Any], family: str) -> FamilyCost:
    """The family's cost at params' architecture, image size, pre-training mask and sampling settings."""
    from ..params import dataset
    from ..params.grid import family_arch

    cfg = params["model"][family]
    mask = (cfg.get("pretrain") or {}).get("mask", params["unlearn"]["mask"])
    return _family_cost(family, json.dumps(family_arch(params, family), sort_keys=True),
                        dataset.image_size(params, family), dataset.channels(params),
                        json.dumps(mask, sort_keys=True), json.dumps(cfg.get("sampling") or {}, sort_keys=True))


@functools.lru_cache(maxsize=8)
def _part_cost(family: str, part: str, arch_json: str, image_size: int, chans: int) -> FamilyCost:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..models import FAMILIES

    batch = 2
    with torch.device("meta"):
        module = FAMILIES[family].build_part(part, json.loads(arch_json), image_size, chans)
    x = torch.zeros(batch, chans, image_size, image_size, device="meta")
    saved = [0]

    def keep(t):
        saved[0] += t.numel() * t.element_size()
        return t

    with FlopCounterMode(display=False) as train, _mode():
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            loss = module.training_loss(x)["loss"]
        loss.backward()
    n = sum(p.numel() for p in module.parameters())
    return FamilyCost(train.get_total_flops() / batch, train.get_total_flops() / batch / 3,
                      train.get_total_flops() / batch / 3, n, n, saved[0] / batch)


def part_cost(params: dict[str, Any], family: str, part: str) -> FamilyCost:
    """A frozen part's pre-training cost (VQ-GAN's tokenizer)."""
    from ..params import dataset

    return _part_cost(family, part, json.dumps(params["model"][family][part]["arch"], sort_keys=True),
                      dataset.image_size(params, family), dataset.channels(params))


@functools.lru_cache(maxsize=4)
def _extractor_cost(chans: int, classes: int, feature_dim: int, image_size: int) -> FamilyCost:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..evaluation.extractor import Classifier

    with torch.device("meta"):
        net = Classifier(chans, classes, feature_dim)
    x = torch.zeros(2, chans, image_size, image_size, device="meta")
    saved = [0]

    def keep(t):
        saved[0] += t.numel() * t.element_size()
        return t

    with FlopCounterMode(display=False) as train:
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            loss = net(x).sum()
        loss.backward()
    n = sum(p.numel() for p in net.parameters())
    fwd = train.get_total_flops() / 2 / 3
    return FamilyCost(train.get_total_flops() / 2, fwd, fwd, n, n, saved[0] / 2)


def extractor_cost(params: dict[str, Any], classes: int) -> FamilyCost:
    """The pipeline's feature extractor (a small classifier) at data.image_size."""
    from ..params import dataset

    return _extractor_cost(dataset.channels(params), classes, params["extractor"]["feature_dim"],
                           dataset.image_size(params))


@functools.lru_cache(maxsize=None)
def metric_network_flops(kind: str, arch: str | None = None) -> int:
    """FLOPs of one image through a standard metric network at its own input size, counted on the meta device
    (no weights, no memory): torch-fidelity's Inception-v3 by torchvision's, which has its layer shapes (the
    rehearsal counts torch-fidelity's own and agrees to four digits), CLIP by its open_clip architecture at its
    preprocessing size, ResNet-50-Places365 at its 224 px. On the meta device torch's attention takes its
    unfused path, whose projections the counter sees (the CPU's fused `nn.MultiheadAttention` fast path hides
    them from it)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..evaluation import standard_extractors as std

    with torch.device("meta"):
        if kind == "inception":
            import torchvision

            net, size = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False), 299
        elif kind == "clip":
            import open_clip

            net = open_clip.create_model(arch, pretrained=None, device="meta")
            size = open_clip.get_model_preprocess_cfg(net)["size"]
            net = net.encode_image
        elif kind == "places":
            import torchvision

            net, size = torchvision.models.resnet50(num_classes=std.PLACES_CLASSES), std.PLACES_SIZE
        else:
            raise ValueError(f"no standard metric network '{kind}'")
        size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        with FlopCounterMode(display=False) as counter:
            net(torch.empty(1, 3, *size))
    return counter.get_total_flops()


#: how many images of a scored pair each standard network sees: FID/KID and CLIP compare a reconstruction with
#: its ground truth; the Places365 classifier scores the reconstruction alone (its Inception Score)
METRIC_PASSES = {"inception": 2, "clip": 2, "places": 1}
