"""The stage functions behind the new DAG nodes, on real Fashion-MNIST with tiny models: the tokenizer's own
stage feeding VQ-GAN pre-training, retrain without the forget classes, proxy/limited retain sets, and the
controllable method's Phase II reading its ε range from the two Phase I runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import DEBIAN_DIR, base_params, fashion
from pipeline_lib import stages
import pipeline_lib.stages.data  # noqa: F401
import pipeline_lib.stages.evaluate  # noqa: F401
import pipeline_lib.stages.generate  # noqa: F401
import pipeline_lib.stages.models  # noqa: F401
import pipeline_lib.stages.noise  # noqa: F401
import pipeline_lib.stages.unlearn  # noqa: F401
from pipeline_lib.params.grid import unlearn_runs
from pipeline_lib.params.load import validate_params
from pipeline_lib.data.datasets import CLASSES
from pipeline_lib.runtime.errors import DataError, ParamsError
from pipeline_lib.models import load_model
from pipeline_lib.models.base import read_meta
from pipeline_lib.models.vqgan import VQTokenizer
from pipeline_lib.data.splits import retain_indices

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_TRAINING = {"epochs": 1, "subset": 256, "max_steps": 2, "batch_size": 64,
                 "optimizer": {"name": "adam", "lr": 1e-3}, "mask": {"kind": "mixed", "ratio": 0.75, "size": 16}}


def tiny_params() -> dict:
    p = base_params()
    p["splits"].update(unlearn_per_class=20, eval_per_class=8)
    p["model"]["mae"]["arch"].update(embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1)
    p["model"]["vqgan"]["arch"].update(embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=16, decoder_depth=1)
    p["model"]["vqgan"]["tokenizer"]["arch"].update(codebook_size=16, code_dim=4, tokenizer_dim=8)
    for m in ("mae", "vqgan"):
        p["model"][m]["pretrain"] = dict(TINY_TRAINING)
    p["model"]["vqgan"]["tokenizer"]["pretrain"] = {k: v for k, v in TINY_TRAINING.items() if k != "mask"}
    p["unlearn"]["training"].update(epochs=1, max_steps=3, batch_size=8)
    p["unlearn"]["limited_per_class"] = 3
    return validate_params(p)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    params = tiny_params()
    stages.data.splits(params, str(DEBIAN_DIR), str(root / "splits.json"))
    stages.noise.noise(params, "identity", str(DEBIAN_DIR), str(root / "splits.json"), str(root / "identity.safetensors"))
    stages.models.pretrain(params, "mae", str(DEBIAN_DIR), str(root / "mae.safetensors"))
    return root, params


def test_tokenizer_stage_feeds_vqgan_pretraining_frozen(tmp_path):
    params = tiny_params()
    tok_path, model_path = tmp_path / "tokenizer.safetensors", tmp_path / "vqgan.safetensors"
    stages.models.pretrain_part(params, "vqgan", "tokenizer", str(DEBIAN_DIR), str(tok_path))
    tokenizer = VQTokenizer.load(tok_path)
    assert tokenizer.arch()["codebook_size"] == 16
    with pytest.raises(DataError, match="needs the pre-trained part"):
        stages.models.pretrain(params, "vqgan", str(DEBIAN_DIR), str(model_path))
    stages.models.pretrain(params, "vqgan", str(DEBIAN_DIR), str(model_path), tokenizer=str(tok_path))
    model = load_model(model_path)
    for name, value in tokenizer.state_dict().items():  # the tokenizer was frozen during pre-training
        assert torch.equal(model.tokenizer.state_dict()[name], value), name
    assert read_meta(model_path)["parts"] == {"tokenizer": str(tok_path)}


def test_sampling_settings_apply_at_generation_and_are_checked():
    params = tiny_params()
    from pipeline_lib.models import build_model

    net = build_model("vqgan", {**params["model"]["vqgan"]["tokenizer"]["arch"], **params["model"]["vqgan"]["arch"]},
                      32, 1)
    net.configure_sampling(steps=3, temperature=0.0)
    assert (net.steps, net.temperature) == (3, 0.0) and net.arch()["steps"] == 3
    with pytest.raises(ValueError, match="no sampling option"):
        net.configure_sampling(sample_steps=4)


def test_retrain_leaves_out_the_forget_classes(workspace, tmp_path, caplog):
    root, params = workspace
    out = tmp_path / "retrain.safetensors"
    with caplog.at_level("INFO"):
        stages.models.retrain(params, "mae", str(DEBIAN_DIR), str(root / "splits.json"), str(out))
    n_forget = sum(int((fashion(True)[1] == CLASSES.index(c)).sum()) for c in params["splits"]["forget"])
    assert f"on {60000 - n_forget} of 60000 training images" in caplog.text
    assert read_meta(out)["source"].startswith("retrained")


def test_proxy_and_limited_retain_draw_from_the_right_classes(workspace):
    root, params = workspace
    split = json.loads((root / "splits.json").read_text())
    labels = fashion(True)[1]
    proxy = retain_indices(split, "proxy", labels, None, 0)
    assert len(proxy) == len(split["unlearn"]["forget"])
    assert set(labels[proxy].tolist()) <= set(split["class_indices"]["proxy"])
    limited = retain_indices(split, "limited", labels, 3, 0)
    counts = torch.bincount(labels[limited], minlength=10)
    assert all(counts[c] == 3 for c in split["class_indices"]["retain"]) and len(limited) == 3 * 4
    assert set(limited) <= set(split["unlearn"]["retain"])
    assert retain_indices(split, "real", labels, None, 0) == split["unlearn"]["retain"]
    with pytest.raises(ParamsError, match="limited_per_class"):
        retain_indices(split, "limited", labels, None, 0)
    with pytest.raises(ParamsError, match="proxy pool"):
        retain_indices({**split, "unlearn": {**split["unlearn"], "proxy": proxy[:5]}}, "proxy", labels, None, 0)


def _unlearn(root: Path, params: dict, method: str, variant: str, anchors=None) -> Path:
    out = root / method / variant / "model.safetensors"
    stages.unlearn.unlearn(params, "mae", method, variant, str(root / "mae.safetensors"), str(DEBIAN_DIR),
                   str(root / "splits.json"), str(root / "identity.safetensors"), str(out), anchors=anchors)
    return out


def test_unlearn_records_its_retain_set_and_objectives(workspace):
    root, params = workspace
    params = {**params, "methods": {"l2n": {"alpha": [0.25], "retain": ["proxy"]}}}
    meta = read_meta(_unlearn(root, params, "l2n", "alpha-0.25_retain-proxy"))
    assert meta["retain"] == "proxy" and meta["retain_images"] == meta["forget_images"] == 40
    assert set(meta["objectives"]) >= {"loss", "forget", "retain"}


def _default_l2n(params: dict) -> str:
    """The MAE's l2n run of params.yaml (its α is whatever the tuning rule chose)."""
    return next(r["variant"] for r in unlearn_runs(params) if r["model"] == "mae" and r["method"] == "l2n")


def test_each_seed_of_the_seeds_axis_trains_its_own_run(workspace):
    """A run on the `seeds` axis trains with its seed; the run without one with params' seed, so `seeds: [0]`
    at seed 0 reproduces it."""
    root, params = workspace
    runs, default = {}, _default_l2n(params)
    for variant, seeds in ((default, None), (f"{default}_seed-0", [0, 1]), (f"{default}_seed-1", [0, 1])):
        runs[variant] = load_model(_unlearn(root, {**params, **({"seeds": seeds} if seeds else {})}, "l2n", variant))
    unseeded, zero, one = (r.state_dict() for r in runs.values())
    assert all(torch.equal(unseeded[k], zero[k]) for k in unseeded)
    assert not all(torch.equal(unseeded[k], one[k]) for k in unseeded)


def test_unlearn_refuses_a_run_params_do_not_plan(workspace):
    root, params = workspace
    with pytest.raises(ParamsError, match="dvc-yaml"):
        _unlearn(root, params, "l2n", "alpha-0.75_noise-identity")


def test_phase_two_takes_epsilon_between_the_phase_one_runs(workspace):
    root, params = workspace
    params = {**params, "methods": {"controllable": {
        "alpha": [10.0], "eps": [0.5], "training": {**params["unlearn"]["training"], "max_steps": 6,
                                                   "optimizer": {"name": "sgd", "lr": 0.00001}}}}}
    high = _unlearn(root, params, "controllable", "alpha-10.0_psi-highest")
    low = _unlearn(root, params, "controllable", "alpha-10.0_psi-lowest")
    f1_high, f1_low = (read_meta(p)["objectives"]["forget"] for p in (high, low))
    assert f1_high < f1_low  # highest completeness pushes the forget loss down further
    with pytest.raises(DataError, match="Phase I"):
        _unlearn(root, params, "controllable", "alpha-10.0_psi-epsilon_eps-0.5", anchors=[str(high)])
    mid = read_meta(_unlearn(root, params, "controllable", "alpha-10.0_psi-epsilon_eps-0.5", anchors=[str(high), str(low)]))
    assert mid["options"]["epsilon"] == pytest.approx(f1_high + 0.5 * (f1_low - f1_high))
    assert mid["psi"] == "epsilon" and mid["eps"] == 0.5


def test_crossval_outpaints_the_models_inpainting_with_the_original(workspace, tmp_path):
    """Paper 1 App. E.2: the visible centre of the second reconstruction is the first model's inpainting."""
    from safetensors.torch import load_file

    root, params = workspace
    params = {**params, "task": {"center": {"kind": "center", "size": 16}, "outpaint": {"kind": "outpaint", "size": 16}},
              "tasks": ["center", "outpaint"], "crossval": {"inpaint": "center", "outpaint": "outpaint"}}
    params = validate_params(params)
    unlearned = _unlearn(root, params, "l2n", _default_l2n(params))
    stages.generate.generate(params, str(unlearned), str(DEBIAN_DIR), str(root / "splits.json"), "center", str(tmp_path / "center"))
    stages.generate.crossval(params, str(unlearned), str(root / "mae.safetensors"), str(DEBIAN_DIR), str(root / "splits.json"),
                    str(tmp_path / "xval"))
    for which in ("forget", "retain"):
        first = load_file(str(tmp_path / "center" / f"{which}.safetensors"))
        second = load_file(str(tmp_path / "xval" / f"{which}.safetensors"))
        assert torch.equal(second["gt"], first["gt"])
        visible = ~second["mask"].bool()
        assert visible.sum() == len(visible) * 16 * 16  # the outpainting task shows only the centre
        assert torch.equal(second["recon"][visible], first["recon"][visible])
        assert not torch.equal(second["recon"], first["recon"])  # the border is the original model's


def test_metrics_file_names_every_extractor(workspace, tmp_path):
    root, params = workspace
    params = {**params, "extractor": {**params["extractor"], "training": {**params["extractor"]["training"],
                                                                          "subset": 512, "max_steps": 2}}}
    params["metrics"] = {**params["metrics"], "inception": {"weights": str(tmp_path / "absent.pth")}}
    extractor = tmp_path / "extractor.safetensors"
    stages.models.train_extractor(params, str(DEBIAN_DIR), str(extractor))
    stages.evaluate.reference(params, str(DEBIAN_DIR), str(root / "splits.json"), str(extractor), str(tmp_path / "reference"))
    stages.generate.generate(params, str(root / "mae.safetensors"), str(DEBIAN_DIR), str(root / "splits.json"), "center",
                    str(tmp_path / "recon"))
    out = tmp_path / "center.json"
    stages.evaluate.metrics(params, str(tmp_path / "recon"), str(tmp_path / "reference"), str(extractor),
                   str(root / "mae.safetensors"), str(out))
    result = json.loads(out.read_text())
    assert result["extractor"] == "i2i-unlearning-classifier"
    assert result["extractors"]["pipeline"]["used"] is True
    assert result["extractors"]["inception"]["used"] is False
    assert "absent.pth" in result["extractors"]["inception"]["note"]
    for which in ("forget", "retain"):
        assert {"fid", "is", "kid", "cosine", "accuracy"} <= set(result[which])
        assert "inception" not in result[which]


def test_checkpoints_record_the_runtime_they_were_trained_with(workspace):
    """Each trained checkpoint's sidecar carries a `runtime` block; on the CPU it says amp did not apply."""
    root, params = workspace
    params = {**params, "methods": {"l2n": {"alpha": [0.25], "retain": ["proxy"]}},
              "runtime": {**params["runtime"], "amp": True}}
    for meta in (read_meta(root / "mae.safetensors"), read_meta(_unlearn(root, params, "l2n", "alpha-0.25_retain-proxy"))):
        block = meta["runtime"]
        assert block["device"] == "cpu" and block["amp_dtype"] is None and block["world_size"] == 1
        assert {"torch", "cuda", "cudnn", "channels_last"} <= set(block)
