"""Where the evaluated artefacts live. Snakemake builds its targets from here; dvc.yaml spells the same templates.

Paths name their wildcards: dataset, model, method, variant (e.g. alpha-0.25_noise-identity), task. The original model is
method `original`, variant `base`, so reconstructions and metrics of every model share one layout.
"""

from __future__ import annotations

from typing import Any

from .config import unlearn_runs

ORIGINAL = ("original", "base")
SETS = ("forget", "retain")


def recon_dir(ds: str, model: str, method: str, variant: str, task: str) -> str:
    return f"results/{ds}/recon/{model}/{method}/{variant}/{task}"


def metrics_file(ds: str, model: str, method: str, variant: str, task: str) -> str:
    return f"results/{ds}/metrics/{model}/{method}/{variant}/{task}.json"


def report_dir(ds: str) -> str:
    return f"results/{ds}/report"


def evaluated_models(params: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(model, method, variant) of the original models and of every unlearning run."""
    out = [(m, *ORIGINAL) for m in params["models"]]
    return out + [(r["model"], r["method"], r["variant"]) for r in unlearn_runs(params)]


def all_metrics(params: dict[str, Any]) -> list[str]:
    ds = params["dataset"]
    return [metrics_file(ds, *m, t) for m in evaluated_models(params) for t in params["tasks"]]


def all_recon(params: dict[str, Any]) -> list[str]:
    ds = params["dataset"]
    return [recon_dir(ds, *m, t) for m in evaluated_models(params) for t in params["tasks"]]


def noise_file(ds: str, kind: str) -> str:
    return f"data/{ds}/noise/{kind}.safetensors"
