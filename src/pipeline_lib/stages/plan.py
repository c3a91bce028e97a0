"""The run plan stage: print what params will cost and write the SLURM resources that follow from it."""

from __future__ import annotations

import logging

LOG = logging.getLogger(__name__)


def plan(params: dict, device: str | None = None, out: str | None = None) -> None:
    """Per rule: jobs, images, FLOPs, estimated time and peak memory; GPU-hours and wall time; writes each rule's
    SLURM resources (runtime, mem_mb, gpu) to profiles/slurm/planned-resources.yaml (or --out)."""
    from ..engines import plan as run_plan

    planned = run_plan.plan_jobs(params, device)
    print(run_plan.render(planned), end="", flush=True)
    path = run_plan.write_resources(params, planned, out or run_plan.RESOURCES_FILE)
    LOG.info("wrote %s", path)
