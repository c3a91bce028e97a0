"""Both engines on the smoke preset: the same commands, the same outputs, the same numbers, and after an
α change both re-run only what α feeds. Real Snakemake, real `dvc repro` in a temporary git repository."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from helpers import copy_run, init_dvc_repo, make_project, run

ALPHA_FED = {"unlearn", "generate", "metrics", "summary", "aggregate"}

pytestmark = pytest.mark.engine


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


@pytest.fixture
def engines(smoke_runs):
    """The session's smoke runs (conftest.smoke_runs), read-only here."""
    return smoke_runs


@pytest.mark.parametrize("preset, jobs", [
    # data, splits, tokenizer, 3 pretrain, extractor, reference, noise, 3 unlearn, 6 generate, 6 metrics, summary,
    # aggregate, + probe and sweep on the 3 originals and 3 l2n runs
    ("params.yaml", 38),
    # + 48 unlearn runs (Phase II after Phase I), 3 retrain, 54 generate and 54 metrics
    ("presets/full.yaml", 170),
    # 3 tokenizer/pretrain + 3 unlearn; 6 models x 7 tasks generate, 6 crossval, 48 metrics
    ("presets/tasks.yaml", 110),
    # data, tokenizer, 3 pretrain, extractor, summary, aggregate; per forget set (7): splits, reference, noise,
    # 3 retrain, 3 unlearn, 9 generate, 9 metrics
    ("presets/robustness.yaml", 8 + 7 * 27),
    # data, tokenizer, 3 pretrain, extractor, summary, aggregate; per tuning set (3): splits, reference, noise,
    # 7 unlearn (MAE 2, VQ-GAN 2, U-Net 3 alphas), 10 generate, 10 metrics
    ("presets/tuning.yaml", 8 + 3 * 30),
    # the full preset with l2n at one alpha: 3 pretrain parts, 3 pretrain, 3 retrain, 36 unlearn, 39 generate,
    # 39 metrics, data, splits, extractor, reference, noise, summary, aggregate; + 4 checks on all 39 models;
    # less Phase II's two outer epsilons per family (6 runs, each unlearned, generated, scored, checked 4 times);
    # three seeds: 2 x 27 more unlearning runs, the same 7 jobs each
    ("presets/verify.yaml", 281 - 6 * 7 + 2 * 27 * (3 + 4)),
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
    from pipeline_lib.params.load import load_params
    from pipeline_lib.engines.dvc_yaml import check_current_stage, render
    from pipeline_lib.runtime.errors import ParamsError

    repo = Path(__file__).resolve().parents[1]
    params = load_params(repo / "params.yaml")
    (tmp_path / "dvc.yaml").write_text(render(params))
    env = {"DVC_ROOT": str(tmp_path)}
    stage = "unlearn-mae-l2n-alpha-0.5_noise-identity"
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
    from pipeline_lib.params.load import load_params
    from pipeline_lib.engines.dvc_yaml import render

    repo = Path(__file__).resolve().parents[1]
    assert (repo / "dvc.yaml").read_text() == render(load_params(repo / "params.yaml")), \
        "dvc.yaml is stale: run `python -m pipeline_lib dvc-yaml`"


def test_both_engines_run_the_same_commands(engines):
    smk_cmds = snakemake_commands(engines["smk_log"])
    # smoke: 3 families, a second noise target on the MAE only: 4 unlearn runs, 7 generate and 7 metrics
    assert len(smk_cmds) == 30
    assert smk_cmds == dvc_commands(engines["dvc"])


def test_both_engines_produce_the_same_outputs_and_scores(engines):
    smk, dvc = engines["smk"], engines["dvc"]
    assert outputs(smk) == outputs(dvc)
    assert "results/fashion_mnist/report/table_center.md" in outputs(smk)
    assert "results/fashion_mnist/report/grid_center.png" in outputs(smk)
    ablation = (smk / "results/fashion_mnist/report/table_noise_center.csv").read_text()
    assert "lowrank" in ablation and "identity" in ablation
    floor = pd.read_csv(smk / "results/fashion_mnist/report/table_border_center.csv")
    assert list(floor["images"]) == ["forget", "retain"] and floor["black"].between(0, 1).all()
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
    from pipeline_lib.report.timings import timing_table

    table = timing_table(engines["smk"] / "benchmarks", engines["smk"] / "logs")
    stages = set(table["stage"])
    assert stages == {"data", "splits", "pretrain_part", "pretrain", "extractor", "reference", "noise", "unlearn", "generate",
                      "metrics", "summary", "aggregate", "total"}
    assert (table["wall s"] > 0).all()


def test_dvc_metrics_are_the_numeric_summary(engines):
    """`dvc metrics show` reads one numeric summary per task (no notes, no per-variant files)."""
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], engines["dvc"]))
    (workspace,) = shown.values()  # keyed by revision; the workspace's key is ""
    files = workspace["data"]
    assert list(files) == ["metrics/fashion_mnist/center.json"]
    summary = files["metrics/fashion_mnist/center.json"]["data"]
    run_ = summary["mae"]["l2n"]["noise-lowrank"]
    assert run_["alpha"] == 0.25 and run_["F"]["fid"] > 0 and 0 <= run_["F"]["accuracy"] <= 1

    def leaves(node):
        for v in node.values():
            yield from leaves(v) if isinstance(v, dict) else [v]

    assert all(isinstance(v, (int, float)) for v in leaves(summary))


def commit_all(root: Path, message: str) -> None:
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", message], root)


def test_a_snakemake_run_is_recorded_pushed_pulled_and_accepted_back(engines, tmp_path):
    """Snakemake computes; `record` puts its outputs into dvc.lock without recomputing; `dvc push`; a second
    clone `dvc pull`s, and after `adopt` Snakemake has nothing to do there. The README's sharing commands."""
    smk = engines["smk"]
    init_dvc_repo(smk)
    run(["python", "-m", "pipeline_lib", "record"], smk)
    assert "Data and pipelines are up to date" in run(["dvc", "status"], smk)
    assert dvc_ran(run(["dvc", "repro"], smk)) == set()  # nothing recomputed
    run(["dvc", "remote", "add", "-d", "team", str(tmp_path / "remote")], smk)
    commit_all(smk, "default run")
    run(["dvc", "push"], smk)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(smk), str(clone)], tmp_path)
    run(["dvc", "pull"], clone)
    assert "Data and pipelines are up to date" in run(["dvc", "status"], clone)
    run(["python", "-m", "pipeline_lib", "adopt"], clone)
    planned = run(["snakemake", "--profile", "profiles/local", "-n"], clone)
    assert "Nothing to be done" in planned and "missing provenance" not in planned
    set_alpha(clone, 0.5)  # Snakemake's provenance records came along: a change re-runs exactly what it feeds
    assert snakemake_jobs(run(["snakemake", "--profile", "profiles/local", "-n"], clone)) == ALPHA_FED
    assert outputs(clone) == outputs(smk)
    assert scores(clone) == scores(smk)


def test_record_refuses_while_snakemake_has_work(engines, tmp_path):
    root = make_project(tmp_path / "fresh")
    init_dvc_repo(root)
    proc = subprocess.run(["python", "-m", "pipeline_lib", "record"], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 1 and "Snakemake still has jobs to run" in proc.stderr
    proc = subprocess.run(["python", "-m", "pipeline_lib", "adopt"], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 1 and "DVC reports stages that are not up to date" in proc.stderr


def test_two_checkouts_compute_the_model_rules_once_through_snakemakes_cache(tmp_path):
    """`--cache` with SNAKEMAKE_OUTPUT_CACHE: the second checkout takes the models the first one trained."""
    env = {**os.environ, "SNAKEMAKE_OUTPUT_CACHE": str(tmp_path / "cache")}
    (tmp_path / "cache").mkdir()  # Snakemake needs it to exist
    targets = ["data/fashion_mnist/models/mae/original/base/model.safetensors",
               "data/fashion_mnist/extractor/classifier.safetensors"]
    logs = {}
    for name in ("first", "second"):
        root = make_project(tmp_path / name, dvc_yaml=False)
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["models"] = ["mae"]
        params["model"]["mae"]["pretrain"]["subset"] = 128  # the cache is under test, not the models: a few steps
        params["extractor"]["training"]["subset"] = 256
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        # the targets before --cache, which would take them as its rule names
        logs[name] = run(["snakemake", *targets, "--profile", "profiles/local", "--cache"], root, env=env)
    first, second = tmp_path / "first", tmp_path / "second"
    assert {"pretrain", "extractor"} <= snakemake_jobs(logs["first"])
    for log in ("logs/pretrain/fashion_mnist/mae.log", "logs/extractor/fashion_mnist.log"):
        assert "done" in (first / log).read_text()
        ran = second / log  # taken from the cache: the stage never started there
        assert not ran.exists() or "stage" not in ran.read_text()
    assert "Moving output file data/fashion_mnist/models/mae/original/base/model.safetensors to cache" in logs["first"]
    assert "output file data/fashion_mnist/models/mae/original/base/model.safetensors from cache" in logs["second"]
    for target in targets:
        assert (first / target).read_bytes() == (second / target).read_bytes()


def test_an_experiment_run_with_a_changed_value_shows_its_metrics(engines, tmp_path):
    """`dvc exp run -S key=value` for a value inside the existing runs; `dvc exp show` lists its scores."""
    dvc = copy_run(engines["dvc"], tmp_path / "dvc")
    commit_all(dvc, "default run")
    log = run(["dvc", "exp", "run", "-n", "cold", "-S", "model.vqgan.sampling.temperature=0.5"], dvc)
    assert dvc_ran(log) == {"generate", "metrics", "summary", "aggregate"}
    assert all("vqgan" in name for name in re.findall(r"Running stage '((?:generate|metrics)[^']+)'", log))
    shown = run(["dvc", "exp", "show", "--json"], dvc)
    assert '"cold"' in shown and "metrics/fashion_mnist/center.json" in shown
    exps = json.loads(shown)
    found = [e for commit in exps for e in (commit.get("experiments") or []) if e.get("name") == "cold"]
    assert found, shown[:2000]
    revs = found[0]["revs"][0]["data"]
    assert revs["params"]["params.yaml"]["data"]["model"]["vqgan"]["sampling"]["temperature"] == 0.5
    assert revs["metrics"]["metrics/fashion_mnist/center.json"]["data"]["vqgan"]["l2n"]


def _alpha_rerun_by_snakemake(smk: Path) -> None:
    set_alpha(smk, 0.5)
    dry = run(["snakemake", "--profile", "profiles/local", "-n"], smk)
    assert snakemake_jobs(dry) == ALPHA_FED
    rerun = run(["snakemake", "--profile", "profiles/local"], smk)
    assert snakemake_jobs(rerun) == ALPHA_FED
    # the shared α feeds the MAE only (the smoke preset's other families state their own)
    assert all("/mae/" in c for c in snakemake_commands(rerun) if " summary " not in c and " aggregate " not in c)
    assert (smk / "results/fashion_mnist/metrics/mae/l2n/alpha-0.5_noise-lowrank/center.json").is_file()


def _alpha_rerun_by_dvc(dvc: Path) -> None:
    set_alpha(dvc, 0.5)
    # dvc.yaml still names the old grid point: the report stage fails, saying how to fix it
    stale = subprocess.run(["dvc", "repro"], cwd=dvc, capture_output=True, text=True)
    assert stale.returncode != 0 and "python -m pipeline_lib dvc-yaml" in stale.stdout + stale.stderr
    run(["python", "-m", "pipeline_lib", "dvc-yaml"], dvc)
    log = run(["dvc", "repro"], dvc)
    assert dvc_ran(log) == ALPHA_FED
    assert (dvc / "results/fashion_mnist/metrics/mae/l2n/alpha-0.5_noise-lowrank/center.json").is_file()


def test_changing_alpha_reruns_only_what_alpha_feeds(engines, tmp_path):
    """Both engines re-run α's jobs, side by side (each job's threads are fixed by params, so running them
    at once changes no byte), and agree on the new scores; `dvc metrics diff` shows α and its scores moving."""
    smk, dvc = copy_run(engines["smk"], tmp_path / "smk"), copy_run(engines["dvc"], tmp_path / "dvc")
    commit_all(dvc, "default run")  # its lock and summary, for the metrics diff below
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(_alpha_rerun_by_snakemake, smk), pool.submit(_alpha_rerun_by_dvc, dvc)]:
            done.result()
    table = (dvc / "results/fashion_mnist/report/table_center.csv").read_text()
    assert "alpha-0.5" in table and "alpha-0.25_noise-lowrank" not in table
    for noise in ("identity", "lowrank"):
        new = f"results/fashion_mnist/metrics/mae/l2n/alpha-0.5_noise-{noise}/center.json"
        assert scores(smk)[new] == scores(dvc)[new]
    # the commit before (α 0.25) against the workspace: the same rows, α and the scores moving
    diff = json.loads(run(["dvc", "metrics", "diff", "HEAD", "--json"], dvc))["metrics/fashion_mnist/center.json"]
    assert diff["mae.l2n.noise-lowrank.alpha"] == {"old": 0.25, "new": 0.5, "diff": 0.25}
    moved = diff["mae.l2n.noise-lowrank.F.fid"]
    assert moved["old"] != moved["new"]
    assert abs(moved["new"] - scores(dvc)[new]["forget"]["fid"]) < 1e-5
    assert not any(key.startswith(("mae.original.", "vqgan.", "diffusion.")) for key in diff)  # nothing else moved


def test_a_per_model_setting_reruns_only_that_family(engines, tmp_path):
    """A new `methods.l2n.per_model.mae` entry re-runs the MAE's l2n runs and what they feed, nothing else;
    with a dvc.yaml not regenerated after adding the key, `dvc repro` fails in the report stage (which tracks
    all of params.yaml) instead of leaving the old results looking current."""
    smk, dvc = copy_run(engines["smk"], tmp_path / "smk"), copy_run(engines["dvc"], tmp_path / "dvc")
    for root in (smk, dvc):
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["methods"]["l2n"]["per_model"]["mae"] = {"training": {"epochs": 2}}
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dry = run(["snakemake", "--profile", "profiles/local", "-n"], smk)
    assert snakemake_jobs(dry) == ALPHA_FED
    model_cmds = [c for c in snakemake_commands(dry) if " aggregate " not in c and " summary " not in c]
    assert model_cmds and all("mae/l2n/" in c for c in model_cmds)

    stale = subprocess.run(["dvc", "repro"], cwd=dvc, capture_output=True, text=True)
    assert stale.returncode != 0 and "dvc.yaml is stale" in stale.stdout + stale.stderr
    assert dvc_ran(stale.stdout) <= {"summary", "aggregate"} and "aggregate" in dvc_ran(stale.stdout)
    run(["python", "-m", "pipeline_lib", "dvc-yaml"], dvc)
    planned = run(["dvc", "repro", "--dry"], dvc)  # a dry run lists the stages whose own deps changed
    stages = re.findall(r"Running stage '([^']+)'", planned)
    # summary is listed only if the failed repro above did not get to run it (it sits beside aggregate)
    assert dvc_ran(planned) - {"summary"} == {"unlearn", "aggregate"}
    assert all("-mae-" in name for name in stages if name not in ("summary", "aggregate"))
