"""A family's own image size on a class-folder tree (`model.<family>.image_size`): the presets run the MAE at
its native 224 px beside MAGE and Palette at 256. One split serves every size (images are resized and
centre-cropped when decoded); holes are read at each family's size; the pipeline extractor sees every
reconstruction at data.image_size. Fashion-MNIST keeps its one size."""

from __future__ import annotations

import pytest
import torch

from folder_tree import IMAGENET_FORGET, IMAGENET_PROXY, IMAGENET_RETAIN, make_tree, tiny_folder_params
from helpers import base_params
from pipeline_lib.params import grid as config
from pipeline_lib.params import load
from pipeline_lib.data import datasets, image_folder, masks
from pipeline_lib.engines import dvc_yaml as dvc_stages
from pipeline_lib.noise import targets as noise_targets
from pipeline_lib import stages
import pipeline_lib.stages.common  # noqa: F401
import pipeline_lib.stages.data  # noqa: F401
import pipeline_lib.stages.evaluate  # noqa: F401
import pipeline_lib.stages.models  # noqa: F401
from pipeline_lib.noise.covariance import Covariance
from pipeline_lib.runtime.errors import ParamsError
from pipeline_lib.params import dataset


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("tree"), IMAGENET_FORGET + IMAGENET_RETAIN + IMAGENET_PROXY, train=6,
                     val=3)


@pytest.fixture(scope="module")
def raw(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("raw")
    image_folder.record(str(tree), out)
    return out


def _params(tree) -> dict:
    """The tiny 64 px tree run, the MAE (8 px patches) at its own 48 px."""
    params = tiny_folder_params(tree, IMAGENET_FORGET, IMAGENET_RETAIN)
    params["model"]["mae"]["image_size"] = 48
    return params


def _message(params: dict) -> str:
    with pytest.raises(ParamsError) as info:
        load.validate_params(params)
    return str(info.value)


def test_each_family_decodes_the_one_split_at_its_own_size(tree, raw):
    params = load.validate_params(_params(tree))
    assert {m: dataset.image_size(params, m) for m in params["models"]} == {"mae": 48, "vqgan": 64, "diffusion": 64}
    assert dataset.image_size(params) == 64  # stages without a family: extractor, reference, noise
    for family, size in (("mae", 48), ("vqgan", 64), (None, 64)):
        codec = stages.common.image_codec(params, family)
        x, labels = stages.common.load_images(params, str(raw), [0, 1], False, codec)
        assert codec.image_size == size and x.shape == (2, 3, size, size) and len(labels) == 2
    assert stages.common.data_reader(params, str(raw), "mae").images([0], True)[0].shape == (3, 48, 48)


def test_fashion_mnist_refuses_a_family_size_naming_the_key():
    params = base_params()
    params["model"]["mae"]["image_size"] = 64
    msg = _message(params)
    assert "'model.mae.image_size' = 64" in msg and "image_folder" in msg
    params["model"]["mae"]["image_size"] = params["data"]["image_size"]  # the same size says nothing new
    load.validate_params(params)


def test_holes_are_read_at_each_family_size_as_paper_one_did():
    """Paper 1: 16 px patches for every model, 8x8 of them = 128 px, the MAE at 224 and VQ-GAN at 256;
    a ratio hides the same fraction of each family's image instead."""
    def side(spec, size):
        hole = masks.geometric_mask(spec, size, 16)[0, 0]
        rows = hole.any(dim=1).nonzero().flatten()
        return int(rows.min()), len(rows)

    patches = {"kind": "center", "grid": 8, "patch": 16}
    assert side(patches, 224) == (48, 128) and side(patches, 256) == (64, 128)  # 8x8 of 14x14 / of 16x16
    assert side({"kind": "center", "size": 128}, 224) == (48, 128)
    fraction = {"kind": "center", "ratio": 0.25}
    # 7x7 of 14x14 patches (its corner floored onto the patch grid: 3 patches before it, 4 after) / 8x8 of 16x16
    assert side(fraction, 224) == (48, 112) and side(fraction, 256) == (64, 128)


@pytest.mark.parametrize("where, spec, said", [
    ("task.center", {"kind": "random", "ratio": 0.5, "patch": 32}, "patch 32 px does not tile the 48 px image"),
    ("task.center", {"kind": "center", "size": 48}, "center size 48 px must be smaller than the 48 px image"),
    ("unlearn.mask", {"kind": "random", "ratio": 0.5, "patch": 32}, "(model mae)"),
])
def test_a_hole_off_a_family_grid_at_its_size_names_the_keys(tree, where, spec, said):
    params = _params(tree)
    section, key = where.split(".")
    params[section][key] = spec
    msg = _message(params)
    assert f"params key '{where}" in msg and "model.mae.image_size = 48 px" in msg and said in msg, msg
    params["model"]["mae"]["image_size"] = 64  # the same hole on the data's own size is sound
    load.validate_params(params)


def test_a_family_size_off_its_patch_grid_names_the_keys(tree):
    params = _params(tree)
    params["model"]["mae"]["image_size"] = 52  # 8 px patches
    msg = _message(params)
    assert "'task.center'" in msg and "model.mae.image_size = 52 px" in msg and "8 px mask granularity" in msg


def test_an_estimated_covariance_is_refused_for_a_family_at_another_size(tree):
    params = _params(tree)
    params["data"].update({"mean": 0.5, "std": 0.5})
    params["methods"]["l2n"]["noise"] = ["diagonal"]
    msg = _message(params)
    assert "'methods.l2n.noise'" in msg and "model.mae.image_size is 48" in msg
    params["methods"]["l2n"]["noise"] = ["identity", "uniform"]
    load.validate_params(params)


def test_identity_noise_is_drawn_at_the_family_size(tmp_path):
    """The noise stage records Σ = I at data.image_size; a family at another size draws N(0, I) at its own."""
    path = tmp_path / "identity.safetensors"
    Covariance.identity((3, 64, 64)).save(path)
    codec = datasets.ImageCodec(48, 0.5, 0.5)
    sampler = noise_targets.sampler("identity", path, codec)
    noise = sampler(torch.zeros(2, 3, 48, 48), torch.Generator().manual_seed(3))
    assert torch.equal(noise, torch.randn((2, 3, 48, 48), generator=torch.Generator().manual_seed(3)))


def test_the_pipeline_extractor_sees_reconstructions_at_the_data_size():
    made = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8)
    seen, entry = stages.evaluate._pipeline_input(made, "classifier.safetensors", 64)
    assert seen.shape == (2, 3, 64, 64) and seen.dtype == torch.uint8
    assert entry["resized"] == {"from": 48, "to": 64} and "resized from the model's 48 px" in entry["note"]
    same, entry = stages.evaluate._pipeline_input(made, "classifier.safetensors", 48)
    assert same is made and "resized" not in entry


def test_dvc_tracks_a_family_size_only_where_params_set_one(tree):
    def params_of(params):
        return {s.name: s.params for s in dvc_stages.stages(params)}

    sized = params_of(_params(tree))
    assert "model.mae.image_size" in sized["pretrain-mae"]
    assert not any("image_size" in str(p) for p in sized["pretrain-vqgan"] + sized["pretrain_part-vqgan-tokenizer"])
    assert not any("image_size" in str(p) for p in params_of(base_params()).values())
    assert config.part_keys(_params(tree), "vqgan", "tokenizer") == _params(tree)["model"]["vqgan"]["tokenizer"]
    params = _params(tree)
    params["model"]["vqgan"]["image_size"] = 32
    assert config.part_keys(params, "vqgan", "tokenizer")["image_size"] == 32
    assert "model.vqgan.image_size" in params_of(params)["pretrain_part-vqgan-tokenizer"]


def test_the_verify_checks_run_a_family_at_its_own_size(tree, raw, tmp_path):
    """Probe, sweep, relearn and membership of a 48 px MAE on the 64 px tree: its images and holes at 48 px,
    the extractor's scores on them resized to 64."""
    import json

    from helpers import torch_threads
    from pipeline_lib.models import build_model, save_model
    from pipeline_lib.stages import verify as vstages

    params = _params(tree)
    params["verify"] = {"checks": ["probe", "sweep", "relearn", "membership"],
                        "probe": {"train_per_class": 3, "test_per_class": 2},
                        "sweep": {"images": 4, "seeds": [0], "masks": [{"kind": "random", "ratio": 0.5, "patch": 8}]},
                        "relearn": {"K": [2], "max_steps": 2, "every": 1, "batch_size": 2, "images": 4},
                        "membership": {"members": 4, "masks": 1}}
    load.validate_params(params)
    split, ext = str(tmp_path / "splits.json"), str(tmp_path / "extractor.safetensors")
    ckpts = [str(tmp_path / f"mae{seed}.safetensors") for seed in (0, 1)]
    with torch_threads(1):
        stages.data.splits(params, str(raw), split)
        stages.models.train_extractor(params, str(raw), ext)
        for seed, path in zip((0, 1), ckpts):
            torch.manual_seed(seed)
            save_model(build_model("mae", config.family_arch(params, "mae"), 48, 3), path)
        vstages.verify_probe(params, ckpts[1], str(raw), split, str(tmp_path / "probe.json"))
        vstages.verify_sweep(params, ckpts[1], str(raw), split, ext, str(tmp_path / "sweep.json"))
        vstages.verify_relearn(params, ckpts[1], ckpts[0], str(raw), split, ext, str(tmp_path / "relearn.json"))
        vstages.verify_membership(params, ckpts[1], str(raw), split, str(tmp_path / "membership.json"))
    for check in ("probe", "sweep", "relearn", "membership"):
        assert json.loads((tmp_path / f"{check}.json").read_text())["check"] == check
