"""The spread over pre-training seeds: `pretrain_seed` re-trains the models alone, `pretrain-spread` reuses the
data stages in its copies, and the README's spread table is what the committed spread file gives."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import yaml

from helpers import DEBIAN_DIR
from test_runs import tiny_params
from pipeline_lib import stages
import pipeline_lib.stages.models  # noqa: F401
from pipeline_lib.engines import pretrain_spread
from pipeline_lib.engines.dvc_yaml import stages as dvc_stages
from pipeline_lib.report import docs
from pipeline_lib.runtime.errors import DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO_ROOT = Path(__file__).resolve().parents[1]


def _pretrained(tmp_path: Path, name: str, **extra) -> bytes:
    params = {**tiny_params(), **extra}
    out = tmp_path / f"{name}.safetensors"
    stages.models.pretrain(params, "mae", str(DEBIAN_DIR), str(out))
    return out.read_bytes()


def test_pretrain_seed_retrains_the_model_and_defaults_to_seed(tmp_path):
    plain = _pretrained(tmp_path, "plain")
    assert _pretrained(tmp_path, "same", pretrain_seed=tiny_params()["seed"]) == plain
    assert _pretrained(tmp_path, "other", pretrain_seed=7) != plain


def test_pretrain_seed_is_a_dvc_param_of_the_pretraining_stages_only():
    params = {**yaml.safe_load((REPO_ROOT / "params.yaml").read_text()), "pretrain_seed": 1}
    with_seed = {s.name for s in dvc_stages(params) if "pretrain_seed" in s.params}
    assert with_seed == {"pretrain-mae", "pretrain-vqgan", "pretrain-diffusion", "pretrain_part-vqgan-tokenizer"}
    # absent, it is not declared: the committed dvc.yaml stays as it was
    assert not any("pretrain_seed" in s.params for s in dvc_stages(yaml.safe_load((REPO_ROOT / "params.yaml").read_text())))


def test_a_copy_reuses_the_data_stages_and_changes_only_the_seed(tmp_path):
    project = tmp_path / "project"
    data = project / "data" / "fashion_mnist"
    for d in ("raw", "extractor", "models/mae/original/base", "reference"):
        (data / d).mkdir(parents=True)
        (data / d / "f").write_text(d)
    (data / "splits.json").write_text("{}")
    (project / "results").mkdir()
    (project / "src").mkdir()
    (project / "params.yaml").write_text("seed: 0\ndataset: fashion_mnist\n")
    dest = pretrain_spread.prepare(project, tmp_path / "copy", {"seed": 0, "dataset": "fashion_mnist"}, 3)
    copied = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert copied == {"params.yaml", "data/fashion_mnist/splits.json", "data/fashion_mnist/raw/f",
                      "data/fashion_mnist/extractor/f", "data/fashion_mnist/reference/f"}
    assert yaml.safe_load((dest / "params.yaml").read_text()) == {"seed": 0, "dataset": "fashion_mnist",
                                                                   "pretrain_seed": 3}
    with pytest.raises(DataError, match="pretrain_seed"):
        pretrain_spread.prepare(project, tmp_path / "again", {"seed": 0, "pretrain_seed": 1}, 3)


def test_spread_gives_each_number_over_the_seeds_and_leaves_out_wall_times():
    run = {"R": {"fid": 10.0}, "F": {"fid": 20.0}, "train_s": 5.0}
    other = copy.deepcopy(run)
    other["R"]["fid"], other["train_s"] = 14.0, 9.0
    out = pretrain_spread.spread({0: {"mae": {"original": {"base": run}}}, 1: {"mae": {"original": {"base": other}}}})
    fid = out["numbers"]["mae"]["original"]["base"]["R"]["fid"]
    assert out["seeds"] == [0, 1] and fid["values"] == [10.0, 14.0] and fid["mean"] == 12.0
    assert math.isclose(fid["sd"], 2 ** 0.5 * 2) and (fid["min"], fid["max"]) == (10.0, 14.0)
    assert out["numbers"]["mae"]["original"]["base"]["F"]["fid"]["sd"] == 0.0
    assert "train_s" not in out["numbers"]["mae"]["original"]["base"]


def test_the_readme_spread_table_counts_the_seeds_in_which_a_run_forgets():
    path = REPO_ROOT / pretrain_spread.spread_file("fashion_mnist", "center")
    spread = json.loads(path.read_text())
    table, seeds = docs.spread_table(spread, ["mae", "vqgan", "diffusion"])
    assert len(seeds) >= 3 and list(table["method"])[:3] == ["original"] * 3
    # recount from the per-seed summaries: a run forgets in a seed when its flag there says so
    for row in table[table["method"] != "original"].itertuples():
        flags = [docs.headline_table(docs._seed_summary(spread["numbers"], i))
                 .set_index(["model", "method"]).loc[(row.model, row.method), "forgets"] for i in range(len(seeds))]
        assert row.forgets == f"{sum(f.startswith('yes') for f in flags)}/{len(seeds)}"
    assert "<!-- generated: seed-spread fashion_mnist center -->" in (REPO_ROOT / "README.md").read_text()
