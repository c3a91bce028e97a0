"""One result, two engines: hand a finished run from Snakemake to DVC and back without recomputing it.

A team computes with Snakemake (locally or on SLURM) and shares through DVC (a remote, `dvc push`/`pull`,
`dvc metrics diff`). The two keep their own records: DVC's dvc.lock (hashes of every dependency, param and
output of each stage) and Snakemake's file times and `.snakemake/metadata`. These two commands make one
engine's finished work current for the other, and check provenance before they do:

- `record` (Snakemake → DVC): Snakemake must have nothing left to run (its rerun triggers cover times,
  params, inputs, code); then `dvc commit` writes the hashes into dvc.lock and the outputs into the cache,
  ready for `git commit` and `dvc push`. Nothing is recomputed. It also writes the machine the run's numbers
  were computed on (`metrics/machine.json`), and refuses a run whose numerics (kernels, threads, library
  versions: `runtime.kernels.fingerprint`) differ from the committed file's unless told to
  (`--accept-machine`), so a teammate never silently replaces the team's numbers with their machine's.
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
from pathlib import Path

from ..runtime.errors import PipelineError

LOG = logging.getLogger(__name__)
#: Snakemake's local profile carries the rerun triggers the checks must use
PROFILE = "profiles/local"
#: the machine the committed numbers were computed on, committed beside them
MACHINE_FILE = Path("metrics/machine.json")


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
    """`dvc status --json`: the stages whose dependencies, params or outputs differ from dvc.lock. A stage that
    is always changed (a class-folder tree's data stage, which re-lists the tree on every repro) is not a
    change: DVC reports it so whatever its outputs."""
    out = _run("dvc", "status", "--json")
    changed = json.loads(out[out.index("{"):]) if "{" in out else {}
    return {stage: why for stage, why in changed.items() if why != ["always changed"]}


class OtherMachine(PipelineError):
    """The run's numbers were computed under other numerics than the committed ones."""


def run_machines(results: Path = Path("results")) -> list[dict]:
    """The distinct `machine` blocks of the run's metrics files (one, when one machine computed them all)."""
    found: list[dict] = []
    for path in sorted(results.glob("**/metrics/**/*.json")):
        machine = json.loads(path.read_text()).get("machine")
        if machine is not None and all(m["numerics"] != machine["numerics"] for m in found):
            found.append(machine)
    return found


def _differences(a: dict, b: dict) -> list[str]:
    return [f"{k}: {a.get(k)} here, {b.get(k)} committed" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def check_machine(accept: bool, committed: Path = MACHINE_FILE, results: Path = Path("results")) -> dict | None:
    """The machine block to commit beside the run's numbers; raises OtherMachine when the run's numerics differ
    from the committed file's (or among the run's own metrics files) and `accept` is False."""
    machines = run_machines(results)
    if not machines:
        return None  # no metrics yet: nothing to compare
    if len(machines) > 1 and not accept:
        raise OtherMachine(f"the run's metrics files were computed under {len(machines)} different numerics "
                           f"(first difference: {_differences(machines[0]['numerics'], machines[1]['numerics'])[0]})"
                           "; recompute them on one machine, or pass --accept-machine")
    here = machines[0]
    if committed.is_file() and not accept:
        before = json.loads(committed.read_text())
        diff = _differences(here["numerics"], before["numerics"])
        if diff:
            raise OtherMachine(f"these numbers were computed under other numerics than the committed ones "
                               f"({committed}): {'; '.join(diff)}. Recording them would replace the team's "
                               "numbers with this machine's; recompute where the committed ones were computed, or "
                               "pass --accept-machine to make this machine's the team's numbers")
    return here


def record(accept_machine: bool = False) -> None:
    machine = check_machine(accept_machine)
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
    if machine is not None:
        from ..runtime.atomic import write_json

        write_json(MACHINE_FILE, machine)
    LOG.info("recorded every stage's outputs in dvc.lock and the DVC cache, the machine in %s; now `git add "
             "dvc.lock metrics && git commit` and `dvc push`", MACHINE_FILE)


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
