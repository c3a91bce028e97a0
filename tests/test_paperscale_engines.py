"""Paper-scale presets on a generated class-folder tree: both engines plan them (same commands, the
presets' GPU counts as the gpu resource), and a tiny 64 px version of the whole DAG runs end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from folder_tree import (IMAGENET_FORGET, IMAGENET_PROXY, IMAGENET_RETAIN, PLACES_FORGET, PLACES_PROXY,
                         PLACES_RETAIN, folder_params, make_tree, tiny_folder_params)
from helpers import copy_run, init_dvc_repo, make_project, run
from test_engines import dvc_commands, scores, snakemake_commands

pytestmark = pytest.mark.engine

TREES = {
    "imagenet": (IMAGENET_FORGET, IMAGENET_RETAIN, IMAGENET_PROXY),
    "places365": (PLACES_FORGET, PLACES_RETAIN, PLACES_PROXY),
}


def _project(base: Path, preset: str, params: dict) -> Path:
    root = make_project(base / "project", preset=f"presets/{preset}.yaml", dvc_yaml=False)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["python", "-m", "pipeline_lib", "dvc-yaml"], root)
    return root


@pytest.mark.parametrize("preset, jobs, gpus", [
    # from the official checkpoints (no tokenizer stage: MAGE's file holds its tokenizer): data, splits,
    # 2 pretrain, extractor, reference, noise, 2 unlearn, 4 generate, 4 metrics, summary, aggregate,
    # + 2 weights (Inception-v3, CLIP)
    ("imagenet", 21, {"pretrain": {4}, "unlearn": {4}, "generate": {4}}),
    # data, splits, 3 pretrain, extractor, reference, noise, 3 unlearn, 6 generate, 6 metrics, summary, aggregate,
    # + 3 weights (Inception-v3, CLIP, ResNet-50-Places365)
    ("places365", 28, {"pretrain": {4, 8}, "unlearn": {4, 8}, "generate": {4, 8}}),
])
def test_presets_are_planned_by_both_engines_with_their_gpu_counts(tmp_path, preset, jobs, gpus):
    forget, retain, proxy = TREES[preset]
    tree = make_tree(tmp_path / "tree", forget + retain + proxy, train=2, val=1)
    root = _project(tmp_path, preset, folder_params(preset, tree, forget, retain))
    # a node with 8 GPUs (profiles/local caps the gpu resource at 1, and Snakemake shows the capped value)
    planned = run(["snakemake", "--profile", "profiles/local", "-n", "--forceall", "--resources", "gpu=8"], root)
    for rule, counts in gpus.items():  # every job of the rule (one per model family)
        blocks = re.findall(rf"^(?:local)?rule {rule}:\n(?:    .*\n)*?    resources: (.*)$", planned, flags=re.M)
        assert {int(re.search(r"gpu=(\d+)", b).group(1)) for b in blocks} == counts, (rule, blocks)
    init_dvc_repo(root)
    dry = run(["dvc", "repro", "--dry", "--force"], root)
    dvc_cmds = {" ".join(line[2:].split()) for line in dry.splitlines() if line.startswith("> python -m pipeline_lib")}
    assert snakemake_commands(planned) == dvc_cmds
    assert len(dvc_cmds) == jobs, sorted(c.split(" --")[0] for c in dvc_cmds)
    assert not any(" pretrain-part " in c or " --tokenizer " in c for c in dvc_cmds)  # official files hold it
    kinds = {"inception", "clip"} | ({"places"} if preset == "places365" else set())
    assert {re.search(r" --kind (\w+) ", c).group(1) for c in dvc_cmds if " weights " in c} == kinds
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    assert stages["data"].get("always_changed") is True  # re-lists the tree every repro; unchanged list, no re-run


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("tree"), IMAGENET_FORGET + IMAGENET_RETAIN + IMAGENET_PROXY, train=6, val=3)


@pytest.fixture(scope="module")
def tree_run(tmp_path_factory, tree):
    """Tiny MAE, VQ-GAN and U-Net on the generated ImageNet-named tree, every stage through Snakemake, once for
    this module: RGB at 64 px, the MAE at its own 48 px (as the presets run it at 224 beside MAGE's 256) and
    the cross-validation check on every model."""
    params = tiny_folder_params(tree, IMAGENET_FORGET, IMAGENET_RETAIN)
    params["model"]["mae"]["image_size"] = 48
    params["task"]["outpaint"] = {"kind": "outpaint", "size": 32}
    params["crossval"] = {"inpaint": "center", "outpaint": "outpaint"}
    smk = _project(tmp_path_factory.mktemp("tree_run"), "imagenet", params)
    return smk, run(["snakemake", "--profile", "profiles/local"], smk)


@pytest.mark.slow
def test_a_generated_tree_runs_the_whole_dag_at_64px_through_snakemake(tree_run):
    smk, _ = tree_run
    report = smk / "results" / "imagenet" / "report"
    assert (report / "table_center.csv").is_file() and (report / "grid_center.png").is_file()
    split = json.loads((smk / "data" / "imagenet" / "splits.json").read_text())
    assert split["classes"]["forget"] == IMAGENET_FORGET and split["classes"]["proxy"] == IMAGENET_PROXY
    raw = smk / "data" / "imagenet" / "raw"
    assert sorted(p.name for p in raw.iterdir() if not p.name.startswith(".")) == ["SOURCE.json", "files.tsv"]
    from PIL import Image
    from safetensors.torch import load_file

    recon = smk / "results" / "imagenet" / "recon"
    for model, size in (("mae", 48), ("vqgan", 64), ("diffusion", 64)):
        for task in ("center", "xval"):
            tensors = load_file(str(recon / model / "original" / "base" / task / "forget.safetensors"))
            assert tensors["recon"].shape[1:] == tensors["gt"].shape[1:] == (3, size, size), (model, task)
        with Image.open(next((recon / model / "original" / "base" / "center" / "png" / "forget").iterdir())) as img:
            assert img.mode == "RGB" and img.size == (size, size)
    assert len(scores(smk)) == 12  # 6 models x (center, cross-validation)
    for path in (smk / "results").rglob("metrics/**/*.json"):
        pipeline = json.loads(path.read_text())["extractors"]["pipeline"]
        assert pipeline.get("resized") == ({"from": 48, "to": 64} if "/mae/" in str(path) else None), path
    assert json.loads((smk / "data" / "imagenet" / "models" / "mae" / "original" / "base" / "model.json")
                      .read_text())["image_size"] == 48


@pytest.mark.slow
def test_a_generated_tree_under_dvc_relists_the_tree_and_reuses_everything_else(tree_run, tmp_path):
    """The tree's run handed to DVC (`record`, no recompute; the engines test runs `dvc repro` itself on the
    smoke preset): the data stage re-lists the tree on every repro, and an unchanged file list leaves every
    later stage cached. DVC plans the same commands as Snakemake."""
    root = copy_run(tree_run[0], tmp_path / "project")
    init_dvc_repo(root)
    run(["python", "-m", "pipeline_lib", "record"], root)
    again = run(["dvc", "repro"], root)
    assert "Running stage 'data'" in again and "Running stage 'splits'" not in again
    assert re.findall(r"Running stage '([^']+)'", again) == ["data"]
    assert dvc_commands(root) == snakemake_commands(tree_run[1])
