"""One result, two engines: hand a finished run from Snakemake to DVC and back without recomputing it.

A team computes with Snakemake (locally or on SLURM) and shares through DVC (a remote, `dvc push`/`pull`,
`dvc metrics diff`). The two keep their own records: DVC's dvc.lock (hashes of every dependency, param and
output of each stage) and Snakemake's file times and `.snakemake/metadata`. These two commands make one
engine's finished work current for the other, and check provenance before they do:

- `record` (Snakemake → DVC): Snakemake must have nothing left to run (its rerun triggers cover times,
  params, inputs, code); then `dvc commit` writes the hashes into dvc.lock and the outputs into the cache,
  ready for `git commit` and `dvc push`. Nothing is recomputed.
- `adopt` (DVC → Snakemake, e.g. after `dvc pull`): DVC must report every stage up to date (the outputs are
  exactly what dvc.lock records for these params and this code); then `snakemake --touch --forceall` orders
  the file times along the DAG and writes Snakemake's provenance record of every job, so Snakemake accepts
  the pulled outputs instead of planning every job again, and still re-runs what a later change feeds.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from ..runtime.errors import PipelineError

LOG = logging.getLogger(__name__)
#: Snakemake's local profile carries the rerun triggers the checks must use
PROFILE = "profiles/local"


class NotCurrent(PipelineError):
    """One engine still has work to do: handing its outputs over would share a stale result."""


def _run(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise PipelineError(f"`{' '.join(args)}` failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout + proc.stderr


def snakemake_pending() -> list[str]:
    """Jobs Snakemake would run now, as `rule: reason` lines (empty when everything is current)."""
    out = _run("snakemake", "--profile", PROFILE, "--dry-run", "--quiet", "rules")
    if "Nothing to be done" in out:
        return []
    return [line.strip() for line in out.splitlines() if line.strip() and not line.startswith(("Building", "Job stats"))]


def dvc_changed() -> dict:
    """`dvc status --json`: the stages whose dependencies, params or outputs differ from dvc.lock."""
    out = _run("dvc", "status", "--json")
    return json.loads(out[out.index("{"):]) if "{" in out else {}


def record() -> None:
    pending = snakemake_pending()
    if pending:
        raise NotCurrent("Snakemake still has jobs to run, so its outputs are not the result of this params.yaml "
                         "and code; run `snakemake --profile profiles/local` (or profiles/slurm) first. Pending:\n  "
                         + "\n  ".join(pending[:20]))
    _run("dvc", "commit", "--force", "--quiet")
    changed = dvc_changed()
    if changed:
        raise NotCurrent(f"after dvc commit, DVC still sees changes in {', '.join(sorted(changed))}: is dvc.yaml "
                         "current? (python -m pipeline_lib dvc-yaml)")
    LOG.info("recorded every stage's outputs in dvc.lock and the DVC cache; now `git add dvc.lock metrics "
             "&& git commit` and `dvc push`")


def adopt() -> None:
    changed = dvc_changed()
    if changed:
        raise NotCurrent("DVC reports stages that are not up to date, so these outputs are not the recorded "
                         f"result of this params.yaml and code: {', '.join(sorted(changed)[:20])}. Run `dvc pull` "
                         "(or `dvc repro`) first.")
    # every job, not only those whose times are out of order: each then gets Snakemake's provenance record
    # (params, code, inputs), so a later change of params still triggers exactly the jobs it feeds
    _run("snakemake", "--profile", PROFILE, "--touch", "--forceall", "--cores", "1", "--quiet", "all")
    pending = snakemake_pending()
    if pending:
        raise NotCurrent("after touching the outputs Snakemake still plans jobs:\n  " + "\n  ".join(pending[:20]))
    LOG.info("Snakemake accepts the DVC outputs as current: `snakemake -n` has nothing to do")
