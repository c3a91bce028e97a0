"""Where the evaluated artefacts live. Snakemake builds its targets from here; dvc.yaml spells the same templates.

Paths name their wildcards: dataset, model, method, variant (e.g. alpha-0.25_noise-identity), task. The original model is
method `original`, variant `base`, so reconstructions and metrics of every model share one layout.

Everything that depends on the forget set (split file, noise, reference features, retrain, unlearning,
reconstructions, metrics) lives under the set's root, `set_root`: the dataset itself for the single unnamed set
(today's layout), `<dataset>/sets/<name>` for a named one. Raw data, pre-trained models and the extractor stay
under the dataset and are shared by every set. Functions taking `root` take a set root (a dataset name is one).
"""

from __future__ import annotations

from typing import Any

from .grid import REFERENCE_METHODS, parse_variant, phase_one_anchors, unlearn_runs
from .sets import set_names

ORIGINAL = ("original", "base")
SETS = ("forget", "retain")
#: the pseudo-task of the cross-validation check (params `crossval`): inpainting, then the original outpaints
XVAL = "xval"


def eval_tasks(params: dict[str, Any]) -> list[str]:
    """Every task a model is scored on: params' tasks, plus the cross-validation check when asked for."""
    return list(params["tasks"]) + ([XVAL] if params.get("crossval") else [])


def scope(name: str | None) -> str:
    """The path part a forget set adds after the dataset: "" for the unnamed set, "/sets/<name>" otherwise."""
    return "" if name is None else f"/sets/{name}"


def set_of(scope_part: str) -> str | None:
    """The set a scope names (the inverse of `scope`; Snakemake's {scope} wildcard)."""
    return scope_part.removeprefix("/sets/") or None


def set_arg(name: str | None) -> str:
    """The splits stage's flag naming its set: "" for the unnamed one."""
    return "" if name is None else f" --set {name}"


def set_root(ds: str, name: str | None) -> str:
    return ds + scope(name)


def set_roots(params: dict[str, Any]) -> list[str]:
    return [set_root(params["dataset"], name) for name in set_names(params)]


def splits_file(root: str) -> str:
    return f"data/{root}/splits.json"


def reference_dir(root: str) -> str:
    return f"data/{root}/reference"


def model_file(root: str, model: str, method: str, variant: str) -> str:
    return f"data/{root}/models/{model}/{method}/{variant}/model.safetensors"


def checkpoint_file(ds: str, root: str, model: str, method: str, variant: str) -> str:
    """The checkpoint a set's evaluation reads: the shared original model, or the set's own run."""
    return model_file(ds if (method, variant) == ORIGINAL else root, model, method, variant)


def part_file(ds: str, model: str, part: str) -> str:
    """A frozen component pre-trained in its own stage (VQ-GAN's tokenizer)."""
    return f"data/{ds}/models/{model}/{part}/model.safetensors"


def recon_dir(root: str, model: str, method: str, variant: str, task: str) -> str:
    return f"results/{root}/recon/{model}/{method}/{variant}/{task}"


def metrics_file(root: str, model: str, method: str, variant: str, task: str) -> str:
    return f"results/{root}/metrics/{model}/{method}/{variant}/{task}.json"


def extractor_file(ds: str) -> str:
    """The pipeline's metric classifier, trained once per dataset."""
    return f"data/{ds}/extractor/classifier.safetensors"


def report_dir(ds: str) -> str:
    return f"results/{ds}/report"


def evaluated_models(params: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(model, method, variant) of the original models, every unlearning run and the retrain references."""
    out = [(m, *ORIGINAL) for m in params["models"]]
    out += [(r["model"], r["method"], r["variant"]) for r in unlearn_runs(params)]
    return out + [(m, ref, "base") for m in params["models"] for ref in REFERENCE_METHODS if ref in params["methods"]]


def all_metrics(params: dict[str, Any]) -> list[str]:
    return [metrics_file(r, *m, t) for r in set_roots(params) for m in evaluated_models(params)
            for t in eval_tasks(params)]


def all_recon(params: dict[str, Any]) -> list[str]:
    return [recon_dir(r, *m, t) for r in set_roots(params) for m in evaluated_models(params)
            for t in eval_tasks(params)]


def noise_file(root: str, kind: str) -> str:
    return f"data/{root}/noise/{kind}.safetensors"


def part_files(ds: str, model: str) -> dict[str, str]:
    """The frozen parts a family pre-trains first (VQ-GAN: its tokenizer), by part name."""
    from ..models import FAMILIES

    return {part: part_file(ds, model, part) for part in FAMILIES[model].pretrained_parts}


def part_args(ds: str, model: str) -> str:
    """Command-line flags handing those parts to pretrain/retrain: "" or " --tokenizer <path>"."""
    return "".join(f" --{part} {path}" for part, path in part_files(ds, model).items())


def pretrain_part_files(params: dict[str, Any], model: str) -> dict[str, str]:
    """The parts the pretrain stage reads: none when params name a published checkpoint (it holds them)."""
    return {} if params["model"][model]["checkpoint"] is not None else part_files(params["dataset"], model)


def pretrain_part_args(params: dict[str, Any], model: str) -> str:
    return "".join(f" --{part} {path}" for part, path in pretrain_part_files(params, model).items())


def parts_needed(params: dict[str, Any], model: str) -> bool:
    """Whether any stage reads `model`'s pre-trained parts: pre-training from scratch, or a retrain reference."""
    return bool(pretrain_part_files(params, model)) or any(ref in params["methods"] for ref in REFERENCE_METHODS)


def anchor_files(root: str, model: str, method: str, variant: str) -> list[str]:
    """The Phase I checkpoints a controllable Phase II run reads its ε range from (none for other runs)."""
    return [model_file(root, model, method, a) for a in phase_one_anchors(parse_variant(variant))]


def anchor_args(root: str, model: str, method: str, variant: str) -> str:
    files = anchor_files(root, model, method, variant)
    return (" --anchors " + " ".join(files)) if files else ""


def noise_kind(variant: str) -> str:
    return parse_variant(variant).get("noise", "identity")
