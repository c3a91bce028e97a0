"""Why SLURM ended a job, said as the fix: which resource key of which rule to raise.

When SLURM kills a job for outliving its time limit or outgrowing its memory, the SLURM executor plugin
reports only SLURM's word for it ("SLURM-job '123' failed, SLURM status is: 'TIMEOUT'"), or not even that:
a cluster that enforces memory by polling (JobAcctGatherParams=OverMemoryKill) ends such a job as FAILED, and
only the job's SLURM log says "exceeded memory limit". The Snakefile's `onerror` handler calls `explain` with
Snakemake's log; for each rule whose SLURM job was killed over a resource, it names the rule's resource key to
raise (`runtime` in minutes, `mem_mb` in MB), where to raise it, and what the job had. A run that used no
SLURM, or failed for another reason, gets no message from here.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

PROFILE_CONFIG = "profiles/slurm/config.yaml"

#: SLURM's end states that a resource key fixes: (resource key, its unit, what SLURM did)
RESOURCE_STATES = {
    "TIMEOUT": ("runtime", "minutes", "it ran past its time limit"),
    "OUT_OF_MEMORY": ("mem_mb", "MB", "it used more memory than it asked for"),
}

#: how slurmstepd words these kills in the job's SLURM log, for clusters whose end state does not say it
LOG_SIGNS = {
    "TIMEOUT": re.compile(r"DUE TO TIME LIMIT"),
    "OUT_OF_MEMORY": re.compile(r"exceeded memory limit|Exceeded job memory limit|oom[-_ ]kill", re.IGNORECASE),
}

_ERROR = re.compile(r"^Error in rule (\S+):\s*$")
_EXTERNAL_ID = re.compile(r"^\s+external_jobid:\s*(\d+)")
_STATUS = re.compile(r"SLURM status is: '(\w+)'")
_SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: ([^)]+)\)")


@dataclass
class FailedJob:
    rule: str
    slurm_id: str
    status: str | None  # SLURM's end state as the plugin reported it
    slurm_log: Path | None


def failed_jobs(log_text: str) -> list[FailedJob]:
    """The SLURM jobs a Snakemake log reports as failed ("Error in rule ..." blocks with an external_jobid)."""
    logs = {job_id: Path(path) for job_id, path in _SUBMITTED.findall(log_text)}
    out: list[FailedJob] = []
    lines = log_text.splitlines()
    for i, line in enumerate(lines):
        start = _ERROR.match(line)
        if not start:
            continue
        block = []
        for following in lines[i + 1:]:
            if following and not following[0].isspace():
                break
            block.append(following)
        ids = [m.group(1) for m in map(_EXTERNAL_ID.match, block) if m]
        if not ids:
            continue  # a local job
        status = _STATUS.search("\n".join(block))
        out.append(FailedJob(start.group(1), ids[0], status.group(1) if status else None, logs.get(ids[0])))
    return out


def _scontrol(slurm_id: str) -> dict[str, str]:
    """`scontrol show job` as key=value pairs (empty once SLURM has forgotten the job, after MinJobAge)."""
    try:
        proc = subprocess.run(["scontrol", "-o", "show", "job", slurm_id], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return dict(re.findall(r"(\w+)=(\S*)", proc.stdout)) if proc.returncode == 0 else {}


def resource_state(job: FailedJob, shown: dict[str, str]) -> str | None:
    """TIMEOUT or OUT_OF_MEMORY when SLURM ended the job over a resource, by its end state (the plugin's or
    scontrol's) or else by what slurmstepd wrote in the job's log; None for any other failure."""
    for state in (job.status, shown.get("JobState")):
        if state in RESOURCE_STATES:
            return state
    if job.slurm_log is not None and job.slurm_log.is_file():
        text = job.slurm_log.read_text(errors="replace")
        for state, sign in LOG_SIGNS.items():
            if sign.search(text):
                return state
    return None


def _minutes(limit: str) -> int | None:
    """SLURM's [days-]hours:minutes:seconds as whole minutes."""
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", limit)
    if not m:
        return None
    days, hours, minutes, seconds = (int(x or 0) for x in m.groups())
    return days * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def _megabytes(memory: str) -> int | None:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", memory)
    if not m:
        return None
    scale = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[m.group(2)]
    return round(float(m.group(1)) * scale)


def requested(cause: str, shown: dict[str, str]) -> int | None:
    """What the job asked SLURM for: its time limit in minutes, or its memory in MB (None when unknown)."""
    if cause == "TIMEOUT":
        return _minutes(shown.get("TimeLimit", ""))
    return _megabytes(shown.get("MinMemoryNode") or shown.get("MinMemoryCPU") or "")


def message(rule: str, cause: str, ended: dict[str, str], asked: int | None) -> str:
    """`ended`: each SLURM job id with the end state SLURM gave it (FAILED, not OUT_OF_MEMORY, where memory is
    enforced by polling)."""
    key, unit, what = RESOURCE_STATES[cause]
    jobs = ", ".join(f"{job_id} with {state or 'an unknown state'}" for job_id, state in ended.items())
    had = f" ({key} {asked})" if asked else ""
    example = asked * 2 if asked else "N"
    return (f"rule {rule}: SLURM ended job {jobs}: {what}{had}. Raise the rule's `{key}` ({unit}) under "
            f"set-resources in {PROFILE_CONFIG} (set-resources: {{{rule}: {{{key}: {example}}}}}), or for one "
            f"run: snakemake --profile profiles/slurm --set-resources {rule}:{key}={example}")


def explain(log: str | Path | list | tuple | None) -> list[str]:
    """One message per rule and resource for the SLURM jobs killed over a resource in Snakemake's log(s)
    (`log`: what Snakemake hands an `onerror` handler, a path or a list of paths)."""
    paths = [log] if isinstance(log, (str, Path)) else list(log or [])
    text = "\n".join(Path(p).read_text(errors="replace") for p in paths if p and Path(p).is_file())
    found: dict[tuple[str, str], tuple[dict[str, str], int | None]] = {}
    for job in failed_jobs(text):
        shown = _scontrol(job.slurm_id)
        cause = resource_state(job, shown)
        if cause is None:
            continue
        ended, asked = found.get((job.rule, cause), ({}, None))
        ended[job.slurm_id] = job.status or shown.get("JobState", "")
        found[(job.rule, cause)] = (ended, asked or requested(cause, shown))
    return [message(rule, cause, ended, asked) for (rule, cause), (ended, asked) in found.items()]
