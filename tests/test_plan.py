"""`python -m pipeline_lib plan`: the run plan's estimates against a real run, its SLURM resources, every preset.

The SLURM side (the local cluster receives the planned resources) is checked in
tests/test_slurm.py::test_one_family_runs_on_a_real_slurm_cluster_as_it_runs_locally, which already submits a
real DAG.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO_ROOT
from pipeline_lib.engines import plan
from pipeline_lib.params.load import load_params
from pipeline_lib.report.timings import timing_table

#: the smoke run's rules with a Snakemake benchmark file (each job's wall and CPU seconds, from its start); the
#: cached model rules (pretrain, pretrain_part, extractor) write none, and their log spans leave out the start-up
COMPARED = {"data", "splits", "noise", "reference", "unlearn", "generate", "metrics", "aggregate"}


@pytest.mark.engine
def test_the_plans_cpu_estimates_lie_within_2x_of_the_smoke_runs_job_times(smoke_runs):
    """Per benchmarked rule, summed over its jobs: the CPU plan's estimate against the CPU seconds Snakemake's
    benchmark measured in the session's smoke run. CPU seconds, not wall: the smoke run shares two cores with the
    DVC run beside it (and whatever else the machine runs), so its wall times mostly measure waiting, while the
    plan estimates a job on cores of its own (as SLURM allocates them), where wall equals CPU time for these
    one-core-busy stages. The plan's constants are params defaults measured on the quiet default run
    (docs/experiments/feedback-loops.md), not fitted to this run."""
    root = smoke_runs["smk"]
    planned = plan.plan_jobs(load_params(root / "params.yaml"), "cpu", root)
    table = timing_table(root / "benchmarks", root / "logs")
    table = table[table["stage"].isin(COMPARED)]
    assert set(table["stage"]) == COMPARED
    # a job too short for the benchmark's first sample has no CPU time: its wall time stands in
    measured = table["cpu s"].fillna(table["wall s"]).groupby(table["stage"]).sum()
    jobs = table.groupby("stage").size()
    estimated = {r["rule"]: r for r in plan.rule_table(planned)}
    report = {rule: (round(estimated[rule]["seconds"], 1), round(float(measured[rule]), 1)) for rule in COMPARED}
    assert {rule: estimated[rule]["jobs"] for rule in COMPARED} == jobs.to_dict()  # the plan's DAG is the run's
    # the whole run and each rule within x2 (a job's CPU seconds would also count its threads' spinning while
    # the session's other workers hold the cores; tests/conftest.py keeps that spin short)
    total_estimated, total_measured = sum(v[0] for v in report.values()), sum(v[1] for v in report.values())
    assert total_estimated / 2 <= total_measured <= total_estimated * 2, report
    outside = {rule: v for rule, v in report.items() if not v[0] / 2 <= v[1] <= v[0] * 2}
    assert outside == {}, f"(estimated s, measured CPU s) per rule: {report}"


def _class_folder_root(params: dict, tmp_path: Path) -> str:
    """An empty class-folder tree with the classes params name (what the params checks look for)."""
    root = tmp_path / "tree"
    s = params["splits"]
    named = [c for key in ("forget", "retain", "proxy") if isinstance(s.get(key), list) for c in s[key]]
    for c in named:
        for part in ("train", "val"):
            (root / part / c).mkdir(parents=True, exist_ok=True)
    return str(root)


def test_every_preset_has_a_plan_and_no_job_asks_for_a_gpu_it_does_not_use(tmp_path):
    """Each preset through the params checks and the plan (class-folder presets on an empty tree of their
    classes): every rule of its DAG gets a row and resources, a job that runs no network (or downloads a
    published checkpoint) asks no GPU, a network job asks its family's GPU count, and every runtime covers the
    estimate with the margin."""
    presets = sorted((REPO_ROOT / "presets").glob("*.yaml"))
    assert len(presets) >= 9
    for preset in presets:
        params = yaml.safe_load(preset.read_text())
        if params["data"].get("kind") == "image_folder":
            params["data"]["root"] = _class_folder_root(params, tmp_path)
        path = tmp_path / f"{preset.stem}.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        params = load_params(path)
        planned = plan.plan_jobs(params, None, REPO_ROOT)
        text = plan.render(planned)
        rules = {job.rule for job in planned["jobs"]}
        assert all(f"| {rule} |" in text for rule in rules), preset.stem
        assert "GPU-hours" in text
        written = yaml.safe_load(plan.write_resources(params, planned, tmp_path / f"{preset.stem}-res.yaml").read_text())
        assert written["params_sha256"] == plan.params_digest(params)
        assert set(written["resources"]) == rules
        for job in planned["jobs"]:
            asked = written["resources"][job.rule][job.family if job.family and job.rule not in ("metrics", "reference")
                                                   else "_"]
            if job.rule == "metrics":  # a GPU for the standard networks (Inception, CLIP, Places365) only
                assert asked["gpu"] == int(job.metric_flops > 0 and planned["device"] == "gpu"), (preset.stem, job.name)
            elif job.rule not in plan.NETWORK_RULES or (job.rule == "pretrain" and params["model"][job.family]["checkpoint"]):
                assert asked["gpu"] == 0, (preset.stem, job.name)
            elif job.rule != "extractor":
                assert asked["gpu"] == params["model"][job.family].get("gpus", 1), (preset.stem, job.name)
            assert asked["runtime"] * 60 >= planned["settings"]["margin"] * job.seconds
            assert asked["mem_mb"] >= job.host_mb
    # the paper presets run networks on GPUs: their plan has GPU-hours and GPU memory
    paper = load_params(tmp_path / "places365.yaml")
    planned = plan.plan_jobs(paper, None, REPO_ROOT)
    assert plan.totals(planned)["gpu_hours"] > 0
    # their metrics jobs run Inception, CLIP ViT-H and the Places365 ResNet-50 on a GPU each
    metrics = [job for job in planned["jobs"] if job.rule == "metrics"]
    assert metrics and all(job.gpus == 1 and job.metric_flops > 100e9 * job.images for job in metrics)
    assert max(job.device_mb for job in planned["jobs"]) > 10 * 1024  # Palette's 256 px U-Net: GiBs a GPU


def test_the_plans_metric_networks_are_counted_as_the_rehearsal_counted_the_real_ones():
    """The plan counts torch-fidelity's Inception-v3 by torchvision's layer shapes and the Places365 ResNet-50
    on the meta device; the rehearsal counted the real networks (torch-fidelity's own Inception) on real
    tensors. Both must agree, or the plan's metrics time is another network's."""
    from pipeline_lib.engines.flops import metric_network_flops

    counted = json.loads((REPO_ROOT / "bench/rehearsal/places365.json").read_text())["flops_detail"]["metric_networks"]
    for kind in ("inception", "places"):
        assert metric_network_flops(kind) == pytest.approx(counted[kind], rel=1e-3), kind


def test_the_plan_command_prints_the_table_and_writes_what_the_workflow_reads(tmp_path):
    """The CLI on the smoke preset with the CPU as device, and `--device` refusing a typo by naming the key."""
    params = tmp_path / "params.yaml"
    params.write_text((REPO_ROOT / "presets/smoke.yaml").read_text())
    out = tmp_path / "planned.yaml"
    done = subprocess.run([sys.executable, "-m", "pipeline_lib", "plan", "--params", str(params), "--device", "cpu",
                           "--out", str(out)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| unlearn | 4 |" in done.stdout and "2-core" in done.stdout
    assert all(r["gpu"] == 0 for entries in yaml.safe_load(out.read_text())["resources"].values()
               for r in entries.values())
    bad = subprocess.run([sys.executable, "-m", "pipeline_lib", "plan", "--params", str(params), "--device", "tpu",
                          "--out", str(out)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert bad.returncode == 1 and "plan.device" in bad.stderr


def test_a_rehearsals_measured_throughput_replaces_the_flop_estimate(tmp_path):
    """With `plan.rehearsal` naming a measured run (bench/rehearsal.py's json), a rule it measured is estimated
    from its images/s (its family's where recorded) and its peak memory; a `--tiny` rehearsal (small models at
    32 px) is ignored, and a CPU rehearsal does not stand for GPU jobs."""
    params = yaml.safe_load((REPO_ROOT / "presets/smoke.yaml").read_text())
    measured = {"machine": {"device": "cuda", "gpu": "NVIDIA H200"}, "tiny": False,
                "stages": {"unlearn": {"jobs": 3, "wall_s": 600.0, "images_per_s": 10.0, "max_rss_mb": 5000.0,
                                       "models": {"mae": {"jobs": 1, "wall_s": 100.0, "images_per_s": 40.0}}}}}
    file = tmp_path / "rehearsal.json"
    file.write_text(json.dumps(measured))
    params["plan"] = {"rehearsal": str(file)}
    planned = plan.plan_jobs(params, "gpu", REPO_ROOT)
    startup = planned["settings"]["startup_s"]
    unlearn = [j for j in planned["jobs"] if j.rule == "unlearn"]
    for job in unlearn:
        rate = 40.0 if job.family == "mae" else 10.0
        assert job.seconds == pytest.approx(startup + job.images / rate)
        assert job.host_mb >= 5000.0
    assert "rehearsal.json" in planned["device_name"]
    # jobs too short for their rate to be more than their start-up (under ten start-ups each) measure nothing
    short = {**measured, "stages": {"unlearn": {**measured["stages"]["unlearn"], "wall_s": 3 * 9 * startup,
                                                "models": {"mae": {"jobs": 1, "wall_s": 9 * startup,
                                                                   "images_per_s": 40.0}}}}}
    for changed in ({"tiny": True}, {"machine": {"device": "cpu"}}, short):
        file.write_text(json.dumps({**measured, **changed}))
        again = {j.name: j.seconds for j in plan.plan_jobs(params, "gpu", REPO_ROOT)["jobs"]}
        assert all(again[j.name] < startup + j.images / 40.0 for j in unlearn)
