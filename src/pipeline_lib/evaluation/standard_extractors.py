"""Standard metric networks (Inception-v3, CLIP, ResNet-50-Places365), run from a weights file on disk.

Published FID/IS/KID use torch-fidelity's `inception-v3-compat`, papers report CLIP embedding cosines, and
paper 1 scores Places reconstructions' IS with the Places365 ResNet-50. The file comes from the `weights`
stage (downloaded and verified, `pipeline_lib.evaluation.metric_weights`) or from a configured local path; with neither
present `available` says, in one line, what is missing and that the pipeline's extractor is used.

Spec: {"kind": "inception" | "places", "weights": path} or {"kind": "clip", "arch": open_clip name,
"weights": path}; an Inception path may be the weights file or the directory holding INCEPTION_FILE.
"""

from __future__ import annotations

import contextlib
import importlib.util
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import scores as evaluate
from ..data.datasets import FAMILY_NORMALISATION
from ..runtime.errors import DataError

INCEPTION_NAME = "inception-v3-compat"  # torch-fidelity's registry name, the extractor of published FIDs
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_FEATURES = ["2048", "logits_unbiased"]  # FID/KID pool features, IS logits (torch-fidelity defaults)
FALLBACK = "using the pipeline's extractor"
PLACES_FILE = "resnet50_places365.pth.tar"  # CSAIL's file name
PLACES_CLASSES = 365
PLACES_SIZE = 224  # the Places365 demo's input size
_LOAD_ERRORS = (RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError)


def inception_weights(path: str | Path) -> Path:
    """The weights file a configured path names: the path itself, or INCEPTION_FILE inside a directory."""
    path = Path(path)
    return path / INCEPTION_FILE if path.is_dir() else path


def available(spec: dict) -> tuple[bool, str]:
    """(usable, one-line reason); ValueError only for a malformed spec, never for missing files."""
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind not in ("inception", "clip", "places"):
        raise ValueError(f"standard extractor kind must be 'inception', 'clip' or 'places', got {kind!r}")
    if "weights" not in spec:
        raise ValueError(f"standard extractor '{kind}' needs a 'weights' path (null to disable)")
    if kind == "inception":
        if spec["weights"] is None:
            return False, f"Inception-v3 weights not configured: {FALLBACK}"
        path = inception_weights(spec["weights"])
        if not path.is_file():
            return False, (f"Inception-v3 weights not found at {path}: {FALLBACK} "
                           f"(put {INCEPTION_FILE} there to enable)")
        return True, f"Inception-v3 weights at {path}"
    if kind == "places":
        return _places_available(spec["weights"])
    arch = spec.get("arch")
    if not isinstance(arch, str) or not arch:
        raise ValueError(f"standard extractor 'clip' needs an open_clip 'arch' name, got {arch!r}")
    if importlib.util.find_spec("open_clip") is None:
        return False, f"open_clip is not installed: {FALLBACK} (install the 'clip' extra to enable)"
    import open_clip

    if arch not in open_clip.list_models():
        raise ValueError(f"open_clip has no model '{arch}' (see open_clip.list_models())")
    if spec["weights"] is None:
        return False, f"CLIP {arch} weights not configured: {FALLBACK}"
    path = Path(spec["weights"])
    if not path.is_file():
        return False, (f"CLIP {arch} weights not found at {path}: {FALLBACK} "
                       f"(put an open_clip {arch} checkpoint there to enable)")
    return True, f"CLIP {arch} weights at {path}"


def inception_scores(recon_u8: torch.Tensor, gt_u8: torch.Tensor, weights_path: str | Path, batch_size: int,
                     seed: int, device: str | torch.device = "cpu") -> dict[str, Any]:
    """FID, IS and KID of reconstructions against ground truth with torch-fidelity's Inception-v3."""
    _check_pair(recon_u8, gt_u8)
    ok, reason = available({"kind": "inception", "weights": weights_path})
    if not ok:
        raise DataError(reason)
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    path = inception_weights(weights_path)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    with torch.cuda.device(dev) if cuda else contextlib.nullcontext():
        try:
            fe = create_feature_extractor(INCEPTION_NAME, INCEPTION_FEATURES, cuda=cuda,
                                          feature_extractor_weights_path=str(path), verbose=False)
        except _LOAD_ERRORS as exc:
            raise DataError(f"Inception-v3 weights at {path} could not be loaded: {_first_line(exc)}") from None
        recon, gt = (get_featuresdict_from_dataset(evaluate.Uint8Images(x), fe, batch_size, cuda=cuda,
                                                   save_cpu_ram=True, verbose=False) for x in (recon_u8, gt_u8))
    is_mean, is_std = evaluate.inception_score(recon["logits_unbiased"], seed)
    kid_mean, kid_std = evaluate.kid(recon["2048"], gt["2048"], seed)
    return {"fid": evaluate.fid(recon["2048"], gt["2048"]), "is": is_mean, "is_std": is_std,
            "kid": kid_mean, "kid_std": kid_std, "images": len(recon_u8)}


def clip_cosine(recon_u8: torch.Tensor, gt_u8: torch.Tensor, arch: str, weights_path: str | Path, batch_size: int,
                device: str | torch.device = "cpu") -> float:
    """Mean cosine between the CLIP image embeddings of each reconstruction and its own ground truth."""
    _check_pair(recon_u8, gt_u8)
    ok, reason = available({"kind": "clip", "arch": arch, "weights": weights_path})
    if not ok:
        raise DataError(reason)
    import open_clip

    try:
        model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=str(weights_path), device=device)
    except _LOAD_ERRORS as exc:
        raise DataError(f"CLIP {arch} weights at {weights_path} could not be loaded: {_first_line(exc)}") from None
    model.eval()
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg["size"] if isinstance(cfg["size"], (tuple, list)) else (cfg["size"], cfg["size"])
    mean = torch.tensor(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN), device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", open_clip.OPENAI_DATASET_STD), device=device).view(1, 3, 1, 1)
    mode = cfg.get("interpolation") if cfg.get("interpolation") in ("bilinear", "bicubic") else "bicubic"

    def embed(images: torch.Tensor) -> torch.Tensor:
        x = images.to(device).float().div(255.0).expand(-1, 3, -1, -1)
        # the images are square: resizing to the model's input is its resize-and-centre-crop
        x = F.interpolate(x, size=tuple(size), mode=mode, align_corners=False, antialias=True).clamp(0.0, 1.0)
        return model.encode_image((x - mean) / std).double()

    cosines = []
    with torch.inference_mode():
        for r, g in zip(recon_u8.split(batch_size), gt_u8.split(batch_size)):
            cosines.append(F.cosine_similarity(embed(r), embed(g), dim=1, eps=1e-8).cpu())
    return float(torch.cat(cosines).mean())


def _places_available(weights: str | Path | None) -> tuple[bool, str]:
    if weights is None:
        return False, f"ResNet-50-Places365 weights not configured: {FALLBACK}"
    if not Path(weights).is_file():
        return False, (f"ResNet-50-Places365 weights not found at {weights}: {FALLBACK} "
                       f"(put {PLACES_FILE} there to enable)")
    return True, f"ResNet-50-Places365 weights at {weights}"


def load_places_resnet(path: str | Path) -> torch.nn.Module:
    """torchvision's ResNet-50 with 365 outputs from the CSAIL file (`{'state_dict': {'module.…': …}, 'epoch',
    'arch', 'best_prec1'}`, saved from DataParallel) or a bare state dict, read weights-only."""
    from torchvision.models import resnet50

    from ..models.checkpoints import load_checkpoint_file

    checkpoint = load_checkpoint_file(path)
    state = checkpoint.get("state_dict", checkpoint)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = resnet50(num_classes=PLACES_CLASSES)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"ResNet-50-Places365 weights at {path} could not be loaded: {_first_line(exc)}") from None
    return model.eval()


def places_scores(recon_u8: torch.Tensor, weights_path: str | Path, batch_size: int, seed: int,
                  device: str | torch.device = "cpu") -> dict[str, float]:
    """IS of the reconstructions from the Places365 classifier's softmax (paper 1's IS for Places): images
    resized to 224 px and ImageNet-normalised as the Places365 demo does; torch-fidelity's IS on the logits."""
    _check_pair(recon_u8, recon_u8)
    ok, reason = _places_available(weights_path)
    if not ok:
        raise DataError(reason)
    model = load_places_resnet(weights_path).to(device)
    imagenet = FAMILY_NORMALISATION["mae"]  # ImageNet's mean and std, as torchvision's classifiers expect
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in imagenet)
    logits = []
    with torch.inference_mode():
        for batch in recon_u8.split(batch_size):
            x = batch.to(device).float().div(255.0).expand(-1, 3, -1, -1)
            x = F.interpolate(x, size=(PLACES_SIZE, PLACES_SIZE), mode="bilinear", align_corners=False,
                              antialias=True).clamp(0.0, 1.0)
            logits.append(model((x - mean) / std).double().cpu())
    is_mean, is_std = evaluate.inception_score(torch.cat(logits), seed)
    return {"places_is": is_mean, "places_is_std": is_std}


def _check_pair(recon_u8: torch.Tensor, gt_u8: torch.Tensor) -> None:
    for name, x in (("reconstructions", recon_u8), ("ground truth", gt_u8)):
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] not in (1, 3):
            raise DataError(f"{name} must be uint8 [N, 1 or 3, H, W], got {x.dtype} {tuple(x.shape)}")
    if recon_u8.shape != gt_u8.shape:
        raise DataError(f"reconstructions {tuple(recon_u8.shape)} and ground truth {tuple(gt_u8.shape)} "
                        "differ in shape")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
