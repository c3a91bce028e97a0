"""The CPU kernels are pinned, so a stage's bytes do not depend on the x86-64 machine: a training stage and a
sampling stage, run on this machine as it is and on this machine made to look like an AVX2-only one (each
library's ISA capped through the environment), give identical files. Real stage CLI runs in subprocesses."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import DEBIAN_DIR, REPO_ROOT
from pipeline_lib.runtime import kernels

#: what a machine without AVX-512 looks like to the three libraries
AVX2_MACHINE = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_pin_caps_each_library_and_keeps_a_lower_cap():
    env = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AVX512"}
    pinned = kernels.pin(env)
    assert pinned == {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2",
                      "MKL_ENABLE_INSTRUCTIONS": "AVX2", "MKL_CBWR": "AVX2"}
    assert env["ATEN_CPU_CAPABILITY"] == "default"  # a machine (or a test) asking for less keeps it
    assert kernels.pin({kernels.SWITCH: "native"}) == {}


def test_this_process_runs_pinned_kernels():
    force = kernels.in_force()
    assert force["mode"] == "pinned" and force["aten_capability"] in ("AVX2", "DEFAULT")
    assert kernels.fingerprint()["numerics"]["caps"]["MKL_CBWR"] == "AVX2"


def _stage(tmp: Path, name: str, env: dict[str, str], *args: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in kernels.CAPS and k != kernels.SWITCH}
    subprocess.run([sys.executable, "-m", "pipeline_lib", *args, "--params", str(tmp / "params.yaml"),
                    "--log", str(tmp / f"{name}.log")], cwd=tmp, env={**clean, **env}, check=True,
                   capture_output=True)
    return name


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kernels")
    params = yaml.safe_load((REPO_ROOT / "presets/smoke.yaml").read_text())
    params["model"]["diffusion"]["pretrain"].update(subset=128, batch_size=64)  # convolutions (oneDNN), matmuls (MKL)
    params["splits"].update(unlearn_per_class=4, eval_per_class=4)
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp


def _pretrain(project: Path, name: str, env: dict[str, str]) -> Path:
    out = project / name
    _stage(project, f"{name}-pretrain", env, "pretrain", "--model", "diffusion", "--data-dir", str(DEBIAN_DIR),
           "--out", str(out / "model.safetensors"))
    return out


def test_training_and_sampling_give_the_same_bytes_on_an_avx2_machine(project):
    """The U-Net pre-trained and then sampled, here and on a simulated AVX2 machine: the same files."""
    _stage(project, "splits", {}, "splits", "--data-dir", str(DEBIAN_DIR), "--out", str(project / "splits.json"))
    files = {}
    for machine, env in (("here", {}), ("avx2", AVX2_MACHINE)):
        out = _pretrain(project, machine, env)
        _stage(project, f"{machine}-generate", env, "generate", "--checkpoint", str(out / "model.safetensors"),
               "--data-dir", str(DEBIAN_DIR), "--splits", str(project / "splits.json"), "--task", "center",
               "--out", str(out / "recon"))
        files[machine] = (_md5(out / "model.safetensors"), _md5(out / "recon" / "forget.safetensors"))
    assert files["here"] == files["avx2"]


def test_unpinned_kernels_differ_on_an_avx512_machine(project):
    """Without the pin (PIPELINE_CPU_KERNELS=native) the same training differs from the AVX2 machine's, so the
    test above can tell a pinned run from an unpinned one."""
    if "avx512f" not in kernels.in_force()["isa"]:
        pytest.skip("this machine has no AVX-512: its native kernels are the AVX2 ones")
    native = _pretrain(project, "native", {kernels.SWITCH: "native"})
    avx2 = project / "avx2" / "model.safetensors"
    if not avx2.is_file():  # run alone: make the AVX2 machine's file here
        avx2 = _pretrain(project, "avx2", AVX2_MACHINE) / "model.safetensors"
    assert _md5(native / "model.safetensors") != _md5(avx2)
