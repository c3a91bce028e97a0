"""Team stages: dvc.yaml from params, and the hand-over between the engines (record / adopt)."""

from __future__ import annotations

import logging

LOG = logging.getLogger(__name__)


def dvc_yaml(params: dict, out: str | None = None) -> None:
    """Write dvc.yaml for the experiment in params (run after changing which runs exist)."""
    from ..engines import dvc_yaml as dvc_stages

    dvc_stages.write(params, out or "dvc.yaml")
    LOG.info("wrote %s", out or "dvc.yaml")


def record(params: dict, accept_machine: bool = False) -> None:
    """Snakemake → DVC: record a finished Snakemake run's outputs in dvc.lock and the DVC cache (no recompute);
    refuses numbers computed under other numerics than the committed ones unless --accept-machine."""
    from ..engines import sharing

    sharing.record(accept_machine)


def adopt(params: dict) -> None:
    """DVC → Snakemake: after `dvc pull` (or `dvc repro`), make Snakemake accept the outputs as current."""
    from ..engines import sharing

    sharing.adopt()


def pretrain_spread(params: dict, seeds: list[str], workdir: str | None = None) -> None:
    """Re-run the experiment with other pre-training seeds (copies, Snakemake) and write each summary number's
    spread over the seeds beside the summary (metrics/<dataset>/<task>.pretrain-seeds.json)."""
    import tempfile
    from pathlib import Path

    from ..engines import pretrain_spread

    pretrain_spread.main(params, [int(s) for s in seeds], Path(workdir or tempfile.mkdtemp(prefix="pretrain-seeds-")))
