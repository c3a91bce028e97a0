"""Both engines on the smoke preset: the same commands, the same outputs, the same numbers, and after an
α change both re-run only what α feeds. Real Snakemake, real `dvc repro` in a temporary git repository."""

from __future__ import annotations

import concurrent.futures
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers import make_project, run

ALPHA_FED = {"unlearn", "generate", "metrics", "aggregate"}

pytestmark = pytest.mark.engine


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
    dvc = make_project(base / "dvc")
    init_dvc_repo(dvc)
    # the two engines run side by side (each job's thread count is fixed by params, so results do not
    # depend on it): their start-up and I/O overlap, which saves minutes of the suite
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        smk_log = pool.submit(run, ["snakemake", "--profile", "profiles/local"], smk)
        dvc_log = pool.submit(run, ["dvc", "repro"], dvc)
        return {"smk": smk, "smk_log": smk_log.result(), "dvc": dvc, "dvc_log": dvc_log.result()}


@pytest.mark.parametrize("preset, jobs", [
    # data, splits, tokenizer, 3 pretrain, extractor, reference, noise, 3 unlearn, 6 generate, 6 metrics, aggregate
    ("params.yaml", 25),
    # + 48 unlearn runs (Phase II after Phase I), 3 retrain, 54 generate and 54 metrics
    ("presets/full.yaml", 169),
    # 3 tokenizer/pretrain + 3 unlearn; 6 models x 7 tasks generate, 6 crossval, 48 metrics
    ("presets/tasks.yaml", 109),
])
def test_planned_runs_give_both_engines_the_same_commands(tmp_path, preset, jobs):
    """The default experiment and the full preset, planned (not run) by both engines: the same commands."""
    root = make_project(tmp_path / "project", preset=preset)
    planned = run(["snakemake", "--profile", "profiles/local", "-n", "--forceall"], root)
    init_dvc_repo(root)
    dry = run(["dvc", "repro", "--dry", "--force"], root)
    dvc_cmds = {" ".join(line[2:].split()) for line in dry.splitlines() if line.startswith("> python -m pipeline_lib")}
    assert snakemake_commands(planned) == dvc_cmds
    assert len(dvc_cmds) == jobs
    if preset == "presets/full.yaml":  # Phase II runs after, and reads, both Phase I runs
        phase_two = [c for c in dvc_cmds if "psi-epsilon_eps-0.5 " in c and " unlearn " in c and "--model vqgan" in c]
        assert len(phase_two) == 1 and "psi-highest/model.safetensors" in phase_two[0]
        assert "psi-lowest/model.safetensors" in phase_two[0]
        order = [line for line in dry.splitlines() if line.startswith("Running stage 'unlearn-vqgan-controllable")]
        assert "psi-epsilon" in order[-1] and "psi-epsilon" not in order[0]


def test_a_stale_dvc_stage_refuses_to_run(tmp_path):
    """Under DVC (DVC_STAGE/DVC_ROOT set) a stage whose dvc.yaml entry no longer matches params.yaml, or a
    report stage with any stale entry, fails naming the fix; outside DVC nothing is checked."""
    from pipeline_lib.config import load_params
    from pipeline_lib.dvc_stages import check_current_stage, render
    from pipeline_lib.errors import ParamsError

    repo = Path(__file__).resolve().parents[1]
    params = load_params(repo / "params.yaml")
    (tmp_path / "dvc.yaml").write_text(render(params))
    env = {"DVC_ROOT": str(tmp_path)}
    stage = "unlearn-mae-l2n-alpha-0.25_noise-identity"
    for name in (stage, "aggregate"):
        check_current_stage(params, {**env, "DVC_STAGE": name})
    params["methods"]["l2n"]["per_model"]["mae"] = {"training": {"epochs": 9}}
    for name in (stage, "aggregate"):
        with pytest.raises(ParamsError, match="dvc.yaml is stale.*python -m pipeline_lib dvc-yaml"):
            check_current_stage(params, {**env, "DVC_STAGE": name})
    check_current_stage(params, {**env, "DVC_STAGE": "unlearn-vqgan-l2n-alpha-1.0_noise-identity"})  # unchanged
    check_current_stage(params, {})  # Snakemake or a hand-run stage


def test_committed_dvc_yaml_matches_params():
    """dvc.yaml is written from params.yaml; the committed pair must agree."""
    from pipeline_lib.config import load_params
    from pipeline_lib.dvc_stages import render

    repo = Path(__file__).resolve().parents[1]
    assert (repo / "dvc.yaml").read_text() == render(load_params(repo / "params.yaml")), \
        "dvc.yaml is stale: run `python -m pipeline_lib dvc-yaml`"


def test_both_engines_run_the_same_commands(engines):
    smk_cmds = snakemake_commands(engines["smk_log"])
    # smoke: 3 families, a second noise target on the MAE only: 4 unlearn runs, 7 generate and 7 metrics
    assert len(smk_cmds) == 29
    assert smk_cmds == dvc_commands(engines["dvc"])


def test_both_engines_produce_the_same_outputs_and_scores(engines):
    smk, dvc = engines["smk"], engines["dvc"]
    assert outputs(smk) == outputs(dvc)
    assert "results/fashion_mnist/report/table_center.md" in outputs(smk)
    assert "results/fashion_mnist/report/grid_center.png" in outputs(smk)
    ablation = (smk / "results/fashion_mnist/report/table_noise_center.csv").read_text()
    assert "lowrank" in ablation and "identity" in ablation
    smk_scores, dvc_scores = scores(smk), scores(dvc)
    assert len(smk_scores) == 7
    assert smk_scores == dvc_scores  # deterministic CPU results: identical numbers from both engines


def test_snakemake_report_holds_every_table_and_figure(engines):
    smk = engines["smk"]
    run(["snakemake", "--profile", "profiles/local", "--report", "report.html"], smk)
    html = (smk / "report.html").read_text(errors="replace")
    for name in ("table_methods_center.html", "table_alpha_center.html", "table_epsilon_center.html",
                 "table_noise_center.html", "table_retain_center.html", "alpha_center.png", "pareto_center.png",
                 "grid_center.png", "tsne_mae_center.png", "tsne_vqgan_center.png", "tsne_diffusion_center.png"):
        assert name in html, name


def test_metrics_files_name_their_extractors(engines):
    for path in (engines["smk"] / "results").rglob("metrics/**/*.json"):
        m = json.loads(path.read_text())
        assert m["extractor"] == "i2i-unlearning-classifier"
        assert m["extractors"]["pipeline"]["used"] and not m["extractors"]["inception"]["used"]


def test_snakemake_benchmarks_give_a_timing_table(engines):
    from pipeline_lib.timings import timing_table

    table = timing_table(engines["smk"] / "benchmarks")
    stages = set(table["stage"])
    assert stages == {"data", "splits", "pretrain_part", "pretrain", "extractor", "reference", "noise", "unlearn", "generate",
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
    # dvc.yaml still names the old grid point: the report stage fails, saying how to fix it
    stale = subprocess.run(["dvc", "repro"], cwd=dvc, capture_output=True, text=True)
    assert stale.returncode != 0 and "python -m pipeline_lib dvc-yaml" in stale.stdout + stale.stderr
    run(["python", "-m", "pipeline_lib", "dvc-yaml"], dvc)
    log = run(["dvc", "repro"], dvc)
    assert dvc_ran(log) == ALPHA_FED
    assert (dvc / "results/fashion_mnist/metrics/mae/l2n/alpha-0.5_noise-lowrank/center.json").is_file()
    table = (dvc / "results/fashion_mnist/report/table_center.csv").read_text()
    assert "alpha-0.5" in table and "alpha-0.25" not in table
    for noise in ("identity", "lowrank"):
        new = f"results/fashion_mnist/metrics/mae/l2n/alpha-0.5_noise-{noise}/center.json"
        assert scores(smk)[new] == scores(dvc)[new]


def test_a_per_model_setting_reruns_only_that_family(engines):
    """A new `methods.l2n.per_model.mae` entry re-runs the MAE's l2n runs and what they feed, nothing else;
    with a dvc.yaml not regenerated after adding the key, `dvc repro` fails in the report stage (which tracks
    all of params.yaml) instead of leaving the old results looking current."""
    smk, dvc = engines["smk"], engines["dvc"]
    for root in (smk, dvc):
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["methods"]["l2n"]["per_model"]["mae"] = {"training": {"epochs": 2}}
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dry = run(["snakemake", "--profile", "profiles/local", "-n"], smk)
    assert snakemake_jobs(dry) == ALPHA_FED
    model_cmds = [c for c in snakemake_commands(dry) if " aggregate " not in c]
    assert model_cmds and all("mae/l2n/" in c for c in model_cmds)

    stale = subprocess.run(["dvc", "repro"], cwd=dvc, capture_output=True, text=True)
    assert stale.returncode != 0 and "dvc.yaml is stale" in stale.stdout + stale.stderr
    assert dvc_ran(stale.stdout) == {"aggregate"}
    run(["python", "-m", "pipeline_lib", "dvc-yaml"], dvc)
    planned = run(["dvc", "repro", "--dry"], dvc)  # a dry run lists the stages whose own deps changed
    stages = re.findall(r"Running stage '([^']+)'", planned)
    assert dvc_ran(planned) == {"unlearn", "aggregate"}
    assert all("-mae-" in name for name in stages if name != "aggregate")
