"""The SLURM profile plans the default DAG with GPUs on model stages only (a dry run; no cluster needed), and
the SLURM plugin turns a multi-GPU job into one sbatch allocation of that many GPUs on one node."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from helpers import make_project

REPO = Path(__file__).resolve().parents[1]
MODEL_RULES = {"pretrain_part", "pretrain", "retrain", "extractor", "unlearn", "generate"}
#: the rules whose `gpu` resource is the family's `gpus` (torchrun inside one job)
MULTI_GPU_RULES = {"pretrain", "retrain", "unlearn", "generate", "crossval"}


@pytest.fixture(scope="module")
def full_project(tmp_path_factory) -> Path:
    """The full preset (every model stage kind appears in it), as a project's params.yaml."""
    return make_project(tmp_path_factory.mktemp("profiles") / "full", preset="presets/full.yaml", dvc_yaml=False)


def planned_resources(root: Path, profile: str) -> dict[str, str]:
    proc = subprocess.run(["snakemake", "--profile", profile, "-n", "--forceall"], cwd=root,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout):
        rule = re.match(r"(?:local)?rule (\w+):", block.strip())
        res = re.search(r"resources: (.*)", block)
        if rule and res:
            out[rule.group(1)] = res.group(1)
    return out


def test_slurm_profile_requests_gpus_for_model_stages_only(full_project):
    resources = planned_resources(full_project, "profiles/slurm")
    assert MODEL_RULES <= set(resources)
    for rule, res in resources.items():
        if rule in MODEL_RULES:
            assert "gpu=1" in res, (rule, res)
        elif rule == "metrics":  # a GPU only where the plan gives its standard networks one (tests/test_plan.py)
            assert "gpu=0" in res, (rule, res)
        else:
            assert "gpu=" not in res, (rule, res)
        # as shipped: the cluster's default partition and account, no placeholder that fails on submission
        assert "slurm_account=" not in res and "slurm_partition=" not in res, (rule, res)
        assert "runtime=" in res and "mem_mb=" in res


def test_local_profile_caps_gpu_jobs(full_project):
    import yaml

    profile = yaml.safe_load((REPO / "profiles/local/config.yaml").read_text())
    assert profile["resources"]["gpu"] == 1
    assert MODEL_RULES <= set(planned_resources(full_project, "profiles/local"))


def _resource_dict(line: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in line.split(", "):
        key, value = item.split("=", 1)
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


def sbatch_line(rule: str, resources: str, threads: int = 2) -> str:
    """What snakemake-executor-plugin-slurm would submit for a job of `rule` with the planned `resources`
    (its own functions: the submit command plus its GPU string), account and partition left to the cluster."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    job = SimpleNamespace(resources=Resources(_resource_dict(resources)), threads=threads, name=rule)
    params = {"run_uuid": "uuid", "slurm_logfile": "log", "comment_str": f"rule_{rule}", "account": "",
              "partition": "", "workdir": None}
    return get_submit_command(job, params) + set_gres_string(job)


def test_a_multi_gpu_job_asks_slurm_for_its_gpus_on_one_node(tmp_path, full_project):
    """presets/imagenet.yaml's pretrain (MAE, 4 GPUs): --nodes=1 --gpus=4, a process plus 8 DataLoader workers
    and 8000 MB per GPU; the Fashion-MNIST preset's jobs keep one GPU, --cpus-per-task=<threads> and their memory."""
    import yaml

    from folder_tree import IMAGENET_FORGET, IMAGENET_PROXY, IMAGENET_RETAIN, folder_params, make_tree

    tree = make_tree(tmp_path / "tree", IMAGENET_FORGET + IMAGENET_RETAIN + IMAGENET_PROXY, train=1, val=1)
    params = folder_params("imagenet", tree, IMAGENET_FORGET, IMAGENET_RETAIN)
    params["runtime"]["loader_workers"] = None  # the preset's own: up to 8 per process
    root = make_project(tmp_path / "imagenet", preset="presets/imagenet.yaml", dvc_yaml=False)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    planned = planned_resources(root, "profiles/slurm")
    line = sbatch_line("pretrain", planned["pretrain"])
    assert " --nodes=1" in line and " --gpus=4" in line and " --cpus-per-gpu=9" in line, line
    assert " --mem 32000" in line, line  # 8000 MB per process
    assert "--ntasks" not in line and "--cpus-per-task" not in line, line  # one task: torchrun starts the 4
    small = planned_resources(full_project, "profiles/slurm")
    for rule in MULTI_GPU_RULES & set(small):
        line = sbatch_line(rule, small[rule])
        assert " --gpus=1" in line and " --cpus-per-task=2" in line and "--cpus-per-gpu" not in line, line
        assert re.search(r" --mem (8000|4000) ", line), line  # as before
