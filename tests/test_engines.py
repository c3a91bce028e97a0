"""Both engines on the smoke preset: the same commands, the same outputs, the same numbers, and after an
α change both re-run only what α feeds. Real Snakemake, real `dvc repro` in a temporary git repository."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["Snakefile", "dvc.yaml", "workflow", "profiles", "src", "pyproject.toml", ".gitignore"]
ALPHA_FED = {"unlearn", "generate", "metrics", "aggregate"}

pytestmark = pytest.mark.engine


def run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-4000:]}"
    return out


def make_project(root: Path, preset: str = "presets/smoke.yaml") -> Path:
    root.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, root / name)
    shutil.copy(REPO / preset, root / "params.yaml")
    return root


def init_dvc_repo(root: Path) -> None:
    run(["git", "init", "-q"], root)
    run(["git", "config", "user.email", "test@example.com"], root)
    run(["git", "config", "user.name", "test"], root)
    run(["dvc", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "project"], root)


def set_alpha(root: Path, alpha: float) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["methods"]["l2n"]["alpha"] = [alpha]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def snakemake_commands(log: str) -> set[str]:
    found = re.findall(r"^(?:Shell command:)?\s*(python -m pipeline_lib .*)$", log, flags=re.M)
    return {" ".join(cmd.split()) for cmd in found}


def dvc_commands(root: Path) -> set[str]:
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return {" ".join(stage["cmd"].split()) for stage in lock["stages"].values()}


def dvc_ran(log: str) -> set[str]:
    return {re.sub(r"[-@].*", "", m) for m in re.findall(r"Running stage '([^']+)'", log)}


def snakemake_jobs(log: str) -> set[str]:
    return {m for m in re.findall(r"^(?:local)?rule (\w+):", log, flags=re.M)} - {"all"}


def outputs(root: Path) -> set[str]:
    files = set()
    for top in ("data", "results"):
        for p in (root / top).rglob("*"):
            if p.is_file() and p.name not in (".gitignore", ".snakemake_timestamp"):
                files.add(str(p.relative_to(root)))
    return files


def scores(root: Path) -> dict[str, dict]:
    out = {}
    for p in sorted((root / "results").rglob("metrics/**/*.json")):
        m = json.loads(p.read_text())
        out[str(p.relative_to(root))] = {k: m[k] for k in ("forget", "retain")}
    return out


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    base = tmp_path_factory.mktemp("engines")
    smk = make_project(base / "snakemake")
    smk_log = run(["snakemake", "--profile", "profiles/local"], smk)

    dvc = make_project(base / "dvc")
    init_dvc_repo(dvc)
    dvc_log = run(["dvc", "repro"], dvc)
    return {"smk": smk, "smk_log": smk_log, "dvc": dvc, "dvc_log": dvc_log}


def test_default_params_give_both_engines_the_same_commands(tmp_path):
    """The default experiment, planned (not run) by both engines: the same set of stage commands."""
    root = make_project(tmp_path / "default", preset="params.yaml")
    planned = run(["snakemake", "--profile", "profiles/local", "-n", "--forceall"], root)
    init_dvc_repo(root)
    dry = run(["dvc", "repro", "--dry", "--force"], root)
    dvc_cmds = {" ".join(line[2:].split()) for line in dry.splitlines() if line.startswith("> python -m pipeline_lib")}
    assert snakemake_commands(planned) == dvc_cmds
    assert len(dvc_cmds) == 12  # data, splits, pretrain, extractor, reference, noise, unlearn, 2 generate, 2 metrics, aggregate


def test_both_engines_run_the_same_commands(engines):
    smk_cmds = snakemake_commands(engines["smk_log"])
    assert len(smk_cmds) == 16  # smoke: 2 noise targets, so 2 unlearn runs, 3 generate and 3 metrics
    assert smk_cmds == dvc_commands(engines["dvc"])


def test_both_engines_produce_the_same_outputs_and_scores(engines):
    smk, dvc = engines["smk"], engines["dvc"]
    assert outputs(smk) == outputs(dvc)
    assert "results/fashion_mnist/report/table_center.md" in outputs(smk)
    assert "results/fashion_mnist/report/grid_center.png" in outputs(smk)
    ablation = (smk / "results/fashion_mnist/report/table_noise_center.csv").read_text()
    assert "lowrank" in ablation and "identity" in ablation
    smk_scores, dvc_scores = scores(smk), scores(dvc)
    assert len(smk_scores) == 3
    assert smk_scores == dvc_scores  # deterministic CPU results: identical numbers from both engines


def test_snakemake_benchmarks_give_a_timing_table(engines):
    from pipeline_lib.timings import timing_table

    table = timing_table(engines["smk"] / "benchmarks")
    stages = set(table["stage"])
    assert stages == {"data", "splits", "pretrain", "extractor", "reference", "noise", "unlearn", "generate",
                      "metrics", "aggregate", "total"}
    assert (table["wall s"] > 0).all()


def test_dvc_metrics_are_declared(engines):
    shown = run(["dvc", "metrics", "show", "--json"], engines["dvc"])
    assert "metrics/mae/l2n/alpha-0.25_noise-lowrank/center.json" in shown
    assert '"fid"' in shown


def test_changing_alpha_reruns_only_what_alpha_feeds(engines):
    smk, dvc = engines["smk"], engines["dvc"]
    set_alpha(smk, 0.5)
    dry = run(["snakemake", "--profile", "profiles/local", "-n"], smk)
    assert snakemake_jobs(dry) == ALPHA_FED
    rerun = run(["snakemake", "--profile", "profiles/local"], smk)
    assert snakemake_jobs(rerun) == ALPHA_FED
    assert (smk / "results/fashion_mnist/metrics/mae/l2n/alpha-0.5_noise-lowrank/center.json").is_file()

    set_alpha(dvc, 0.5)
    log = run(["dvc", "repro"], dvc)
    assert dvc_ran(log) == ALPHA_FED
    assert (dvc / "results/fashion_mnist/metrics/mae/l2n/alpha-0.5_noise-lowrank/center.json").is_file()
    table = (dvc / "results/fashion_mnist/report/table_center.csv").read_text()
    assert "alpha-0.5" in table and "alpha-0.25" not in table
    for noise in ("identity", "lowrank"):
        new = f"results/fashion_mnist/metrics/mae/l2n/alpha-0.5_noise-{noise}/center.json"
        assert scores(smk)[new] == scores(dvc)[new]
