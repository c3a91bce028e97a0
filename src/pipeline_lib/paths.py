"""Where the evaluated artefacts live. Snakemake builds its targets from here; dvc.yaml spells the same templates.

Paths name their wildcards: dataset, model, method, variant (e.g. alpha-0.25_noise-identity), task. The original model is
method `original`, variant `base`, so reconstructions and metrics of every model share one layout.
"""

from __future__ import annotations

from typing import Any

from .config import REFERENCE_METHODS, parse_variant, phase_one_anchors, unlearn_runs

ORIGINAL = ("original", "base")
SETS = ("forget", "retain")
#: the pseudo-task of the cross-validation check (params `crossval`): inpainting, then the original outpaints
XVAL = "xval"


def eval_tasks(params: dict[str, Any]) -> list[str]:
    """Every task a model is scored on: params' tasks, plus the cross-validation check when asked for."""
    return list(params["tasks"]) + ([XVAL] if params.get("crossval") else [])


def model_file(ds: str, model: str, method: str, variant: str) -> str:
    return f"data/{ds}/models/{model}/{method}/{variant}/model.safetensors"


def part_file(ds: str, model: str, part: str) -> str:
    """A frozen component pre-trained in its own stage (VQ-GAN's tokenizer)."""
    return f"data/{ds}/models/{model}/{part}/model.safetensors"


def recon_dir(ds: str, model: str, method: str, variant: str, task: str) -> str:
    return f"results/{ds}/recon/{model}/{method}/{variant}/{task}"


def metrics_file(ds: str, model: str, method: str, variant: str, task: str) -> str:
    return f"results/{ds}/metrics/{model}/{method}/{variant}/{task}.json"


def report_dir(ds: str) -> str:
    return f"results/{ds}/report"


def evaluated_models(params: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(model, method, variant) of the original models, every unlearning run and the retrain references."""
    out = [(m, *ORIGINAL) for m in params["models"]]
    out += [(r["model"], r["method"], r["variant"]) for r in unlearn_runs(params)]
    return out + [(m, ref, "base") for m in params["models"] for ref in REFERENCE_METHODS if ref in params["methods"]]


def all_metrics(params: dict[str, Any]) -> list[str]:
    ds = params["dataset"]
    return [metrics_file(ds, *m, t) for m in evaluated_models(params) for t in eval_tasks(params)]


def all_recon(params: dict[str, Any]) -> list[str]:
    ds = params["dataset"]
    return [recon_dir(ds, *m, t) for m in evaluated_models(params) for t in eval_tasks(params)]


def noise_file(ds: str, kind: str) -> str:
    return f"data/{ds}/noise/{kind}.safetensors"


def part_files(ds: str, model: str) -> dict[str, str]:
    """The frozen parts a family pre-trains first (VQ-GAN: its tokenizer), by part name."""
    from .models import FAMILIES

    return {part: part_file(ds, model, part) for part in FAMILIES[model].pretrained_parts}


def part_args(ds: str, model: str) -> str:
    """Command-line flags handing those parts to pretrain/retrain: "" or " --tokenizer <path>"."""
    return "".join(f" --{part} {path}" for part, path in part_files(ds, model).items())


def anchor_files(ds: str, model: str, method: str, variant: str) -> list[str]:
    """The Phase I checkpoints a controllable Phase II run reads its ε range from (none for other runs)."""
    return [model_file(ds, model, method, a) for a in phase_one_anchors(parse_variant(variant))]


def anchor_args(ds: str, model: str, method: str, variant: str) -> str:
    files = anchor_files(ds, model, method, variant)
    return (" --anchors " + " ".join(files)) if files else ""


def noise_kind(variant: str) -> str:
    return parse_variant(variant).get("noise", "identity")
