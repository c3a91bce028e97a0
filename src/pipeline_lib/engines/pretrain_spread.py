"""The run-to-run spread of the headline numbers over pre-training seeds.

A reader of the results table must tell a real change from noise. The largest source of noise in this pipeline
is pre-training: the same recipe with another seed gives another original, and every number downstream moves
with it. So the experiment is run again with only `pretrain_seed` changed (the data, splits, extractor,
reference features and noise targets are reused; every model and result is recomputed), and each number of
the summary is reported over the seeds (`spread_file`; the README shows it, `python -m pipeline_lib docs`): mean, sample standard deviation, min and max.

Each seed runs in a copy of the project under Snakemake with the copy's own code, one after the other. The
params' own seed is the workspace's finished run, which is not recomputed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any


from ..report.summary import summary_files
from ..runtime.atomic import write_text
from ..runtime.errors import DataError

LOG = logging.getLogger(__name__)

#: what a copy leaves behind: outputs (re-made), engine state, caches
_NOT_COPIED = {".git", ".dvc", ".snakemake", ".venv", "data", "results", "metrics", "logs", "benchmarks"}
#: the data stages that pre-training does not feed, reused from the workspace
_REUSED = ("raw", "splits.json", "sets", "extractor", "reference", "noise")


def spread_file(dataset: str, task: str) -> Path:
    """Where the spread of `metrics/<dataset>/<task>.json` is kept: beside it, in a folder of its own (it is not
    a DVC output, and not a summary)."""
    return Path("metrics") / dataset / "pretrain-seeds" / f"{task}.json"


def prepare(project: Path, dest: Path, params: dict[str, Any], seed: int) -> Path:
    """A copy of `project` whose params differ only in `pretrain_seed`, with the data that pre-training does not
    feed copied over (times kept, so Snakemake sees it as current)."""
    if "pretrain_seed" in params:
        raise DataError("params.yaml already sets `pretrain_seed`; the spread varies it: remove the key first")
    shutil.copytree(project, dest, ignore=lambda d, names: [n for n in names if Path(d) == project and n in _NOT_COPIED])
    data = project / "data" / params["dataset"]
    for name in _REUSED:
        if (data / name).is_dir():
            shutil.copytree(data / name, dest / "data" / params["dataset"] / name)
        elif (data / name).is_file():
            (dest / "data" / params["dataset"]).mkdir(parents=True, exist_ok=True)
            shutil.copy2(data / name, dest / "data" / params["dataset"] / name)
    text = (project / "params.yaml").read_text()
    (dest / "params.yaml").write_text(f"{text.rstrip()}\npretrain_seed: {seed}  # pretrain-spread\n")
    return dest


def run_copy(dest: Path, targets: list[str]) -> None:
    """Snakemake on the copy, with the copy's code, up to `targets` (the summaries: the verification checks
    and the report are not part of the spread); its log is kept in the copy."""
    env = {**os.environ, "PYTHONPATH": str(dest / "src")}
    log = dest / "pretrain-spread.log"
    with log.open("a") as out:
        done = subprocess.run([shutil.which("snakemake") or "snakemake", "--profile", "profiles/local", *targets],
                              cwd=dest, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        raise DataError(f"the run with pretrain_seed in {dest} failed; see {log}")


def leaves(summary: dict, prefix: tuple = ()) -> dict[tuple, float]:
    """The summary's numbers by their path (model, method, variant, set, score)."""
    out = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            out.update(leaves(value, (*prefix, key)))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[(*prefix, key)] = float(value)
    return out


def spread(summaries: dict[int, dict]) -> dict:
    """Per number of the summary: its value under each seed, mean, sample standard deviation, min and max.
    Training wall times are left out (they measure the machine, not the model)."""
    seeds = sorted(summaries)
    flat = {seed: leaves(summaries[seed]) for seed in seeds}
    common = sorted(set.intersection(*(set(f) for f in flat.values())) if flat else set())
    numbers = {}
    for path in common:
        if path[-1] == "train_s":
            continue
        values = [flat[seed][path] for seed in seeds]
        node = numbers
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = {"values": values, "mean": statistics.fmean(values),
                          "sd": statistics.stdev(values) if len(values) > 1 else float("nan"),
                          "min": min(values), "max": max(values)}
    return {"seeds": seeds, "numbers": numbers}


def main(params: dict[str, Any], seeds: list[int], workdir: Path, project: Path = Path(".")) -> Path:
    """Run every seed but the params' own in a copy, then write the spread of each task's summary."""
    project = project.resolve()
    own = params["seed"]
    summaries: dict[str, dict[int, dict]] = {}
    for task in params["tasks"]:
        committed = project / "metrics" / params["dataset"] / f"{task}.json"
        if not committed.is_file():
            raise DataError(f"{committed} is missing: run the experiment first (`make run`), then the spread")
        summaries[task] = {own: json.loads(committed.read_text())}
    for seed in seeds:
        if seed == own:
            continue
        dest = workdir / f"pretrain_seed-{seed}"
        if not dest.exists():  # an existing copy is resumed: Snakemake runs only what it lacks
            prepare(project, dest, params, seed)
        LOG.info("pretrain_seed %d: running the experiment in %s", seed, dest)
        run_copy(dest, summary_files(params))
        for task in params["tasks"]:
            summaries[task][seed] = json.loads((dest / "metrics" / params["dataset"] / f"{task}.json").read_text())
    written = None
    for task, by_seed in summaries.items():
        out = project / spread_file(params["dataset"], task)
        result = {"command": f"python -m pipeline_lib pretrain-spread --seeds {' '.join(map(str, seeds))}",
                  **spread(by_seed)}
        write_text(out, json.dumps(result, indent=1, sort_keys=True) + "\n")
        LOG.info("wrote %s (seeds %s)", out, result["seeds"])
        written = out
    return written
