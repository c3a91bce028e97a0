"""The SLURM profile plans the default DAG with GPUs on model stages only (a dry run; no cluster needed)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from helpers import make_project

REPO = Path(__file__).resolve().parents[1]
MODEL_RULES = {"pretrain_part", "pretrain", "retrain", "extractor", "unlearn", "generate"}


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
