"""Official checkpoints through params: {url, sha256} or {path, sha256}; an unpinned hash is refused with
the file's actual one; the pretrain stage converts Palette's and MAGE's formats."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import serve_directory
from pipeline_lib.models import checkpoints
from pipeline_lib.params import load
from pipeline_lib.runtime.errors import DataError, ParamsError
from helpers import base_params
import pipeline_lib.stages.data  # noqa: F401
import pipeline_lib.stages.models  # noqa: F401

FIXTURES = Path(__file__).parent / "fixtures" / "official"


def _file(tmp_path) -> tuple[Path, str]:
    path = tmp_path / "srv" / "ckpt.pth"
    path.parent.mkdir()
    torch.save({"model": {"a": torch.zeros(3)}}, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_local_path_is_verified_and_used_in_place(tmp_path):
    path, sha = _file(tmp_path)
    got, downloaded = checkpoints.obtain_checkpoint({"path": str(path), "sha256": sha}, tmp_path / "dl.pth", "model.x.checkpoint")
    assert got == path and not downloaded and not (tmp_path / "dl.pth").exists()
    with pytest.raises(DataError, match=f"sha256 {sha}, expected {'0' * 64}"):
        checkpoints.obtain_checkpoint({"path": str(path), "sha256": "0" * 64}, tmp_path / "dl.pth", "model.x.checkpoint")
    with pytest.raises(DataError, match="model.x.checkpoint.path: no file"):
        checkpoints.obtain_checkpoint({"path": str(tmp_path / "nope"), "sha256": sha}, tmp_path / "dl.pth", "model.x.checkpoint")


def test_null_sha256_is_refused_with_the_actual_hash(tmp_path):
    path, sha = _file(tmp_path)
    with pytest.raises(DataError, match=f"model.x.checkpoint.sha256 is null: .* has sha256 {sha}"):
        checkpoints.obtain_checkpoint({"path": str(path), "sha256": None}, tmp_path / "dl.pth", "model.x.checkpoint")
    dest = tmp_path / "dl" / "official.pth"
    with serve_directory(path.parent) as url, \
            pytest.raises(DataError, match=f"model.x.checkpoint.sha256 is null: .* has sha256 {sha}"):
        checkpoints.obtain_checkpoint({"url": url + "ckpt.pth", "sha256": None}, dest, "model.x.checkpoint")
    assert list(dest.parent.iterdir()) == []  # nothing kept from an unpinned download


def test_schema_takes_path_and_null_hash():
    for spec in ({"path": "/x/16_Network.pth", "sha256": None}, {"url": "https://h/x", "sha256": "a" * 64}):
        params = base_params()
        params["model"]["diffusion"]["checkpoint"] = spec
        load.validate_params(params)
    params = base_params()
    params["model"]["diffusion"]["checkpoint"] = {"path": "/x", "url": "https://h/x", "sha256": None}
    with pytest.raises(ParamsError, match="model.diffusion.checkpoint"):
        load.validate_params(params)


def test_load_official_passes_arch_and_context(tmp_path):
    fixture = load_file(str(FIXTURES / "palette_unet.safetensors"))
    path = tmp_path / "16_Network.pth"
    torch.save({k[5:]: v.float() for k, v in fixture.items() if k.startswith("ckpt.")}, path)
    net = checkpoints.load_official("diffusion", path, {"attention_head_dim": 8, "block_out_channels": [32, 32]},
                                    image_size=16)
    assert net.layout == "palette" and net.arch()["attention_head_dim"] == 8 and net.image_size == 16
    with pytest.raises(DataError, match=r"block_out_channels is \[16, 32\], the checkpoint's tensors imply \[32, 32\]"):
        checkpoints.load_official("diffusion", path, {"attention_head_dim": 8, "block_out_channels": [16, 32]},
                                  image_size=16)


def test_pretrain_stage_converts_palette_from_a_local_path(tmp_path):
    from helpers import DEBIAN_DIR
    from pipeline_lib import stages

    fixture = load_file(str(FIXTURES / "palette_unet.safetensors"))
    path = tmp_path / "16_Network.pth"
    torch.save({k[5:]: v.float() for k, v in fixture.items() if k.startswith("ckpt.")}, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    out = tmp_path / "models" / "model.safetensors"
    params = base_params()
    params["model"]["diffusion"]["arch"] = {"attention_head_dim": 8}
    for pinned, message in ((None, f"sha256 is null: .* has sha256 {sha}"), (sha, "params model.diffusion.checkpoint: .* expects 3x32px images, the dataset gives 1x32px: grey images "
                                                  r"\(data.kind fashion_mnist\)")):
        params["model"]["diffusion"]["checkpoint"] = {"path": str(path), "sha256": pinned}
        with pytest.raises(DataError, match=message):  # converted, then refused for the grey default data
            stages.models.pretrain(load.validate_params(params), "diffusion", str(DEBIAN_DIR), str(out))
    assert path.is_file() and not out.exists()  # a user's file is never deleted


def test_pretrain_stage_takes_the_mage_tokenizer_as_its_own_file(tmp_path):
    from helpers import DEBIAN_DIR
    from pipeline_lib import stages

    vq = load_file(str(FIXTURES / "maskgit_vqgan.safetensors"))
    mage = load_file(str(FIXTURES / "mage_vit.safetensors"))
    tok, net = tmp_path / "vqgan_jax_strongaug.ckpt", tmp_path / "mage-vitb-1600.pth"
    torch.save({"state_dict": {k[5:]: v.float() for k, v in vq.items() if k.startswith("ckpt.")}}, tok)
    torch.save({"model": {k[5:]: v.float() for k, v in mage.items() if k.startswith("ckpt.")}}, net)
    params = base_params()
    params["model"]["vqgan"]["arch"] = {"num_heads": 4, "decoder_num_heads": 4}
    params["model"]["vqgan"]["checkpoint"] = {"path": str(net), "sha256": hashlib.sha256(net.read_bytes()).hexdigest()}
    params["model"]["vqgan"]["tokenizer"]["checkpoint"] = {"path": str(tok), "sha256": None}
    with pytest.raises(DataError, match="tokenizer.checkpoint.sha256 is null"):
        stages.models.pretrain(load.validate_params(params), "vqgan", str(DEBIAN_DIR), str(tmp_path / "m.safetensors"))
    params["model"]["vqgan"]["tokenizer"]["checkpoint"]["sha256"] = hashlib.sha256(tok.read_bytes()).hexdigest()
    with pytest.raises(DataError, match="expects 3x32px images"):  # converted with MaskGIT's VQGAN, RGB
        stages.models.pretrain(load.validate_params(params), "vqgan", str(DEBIAN_DIR), str(tmp_path / "m.safetensors"))


# --- the pretrain stage on an RGB class-folder tree -----------------------------------------------------

def _official_files(tmp_path) -> dict[str, tuple[Path, dict]]:
    """Small random-weight checkpoints in the official layouts, and the arch keys the weights cannot tell."""
    def ckpt(name):
        return {k[5:]: v.float() for k, v in load_file(str(FIXTURES / f"{name}.safetensors")).items()
                if k.startswith("ckpt.")}

    files = {"mae": (tmp_path / "mae_visualize_vit_large_ganloss.pth", {"model": ckpt("mae_vit")},
                     {"num_heads": 4, "decoder_num_heads": 4}),
             "vqgan": (tmp_path / "mage-vitb-1600.pth",
                       {"model": {**ckpt("mage_vit"), **{"vqgan." + k: v for k, v in ckpt("maskgit_vqgan").items()}}},
                       {"num_heads": 4, "decoder_num_heads": 4}),
             "diffusion": (tmp_path / "16_Network.pth", ckpt("palette_unet"), {"attention_head_dim": 8})}
    out = {}
    for model, (path, state, arch) in files.items():
        torch.save(state, path)
        out[model] = (path, arch)
    return out


@pytest.fixture(scope="module")
def rgb_tree(tmp_path_factory):
    from folder_tree import IMAGENET_FORGET, IMAGENET_RETAIN, make_tree

    return make_tree(tmp_path_factory.mktemp("tree"), IMAGENET_FORGET + IMAGENET_RETAIN, train=1, val=1)


def _folder_params(tree, model: str, path: Path, arch: dict, sha256: str | None, image_size: int = 32,
                   own_size: int | None = None) -> dict:
    """`own_size`: the family's own `model.<family>.image_size` (none by default)."""
    from folder_tree import IMAGENET_FORGET, IMAGENET_RETAIN, tiny_folder_params

    params = tiny_folder_params(tree, IMAGENET_FORGET, IMAGENET_RETAIN)
    params["data"]["image_size"] = image_size
    if own_size is not None:
        params["model"][model]["image_size"] = own_size
    params["task"]["center"] = {"kind": "center", "size": 16}
    params["models"] = [model]
    params["model"][model]["arch"] = arch
    params["model"][model]["checkpoint"] = {"path": str(path), "sha256": sha256}
    return load.validate_params(params)


@pytest.mark.parametrize("model", ["mae", "vqgan", "diffusion"])
def test_pretrain_on_an_rgb_tree_takes_the_official_checkpoint_without_training(tmp_path, rgb_tree, model):
    from pipeline_lib import stages
    from pipeline_lib.models import load_model
    from pipeline_lib.models.base import read_meta

    path, arch = _official_files(tmp_path)[model]
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    raw = tmp_path / "raw"
    stages.data.data(_folder_params(rgb_tree, model, path, arch, sha), str(raw))
    out = tmp_path / "original" / "model.safetensors"
    with pytest.raises(DataError, match=f"model.{model}.checkpoint.sha256 is null: .* has sha256 {sha}"):
        stages.models.pretrain(_folder_params(rgb_tree, model, path, arch, None), model, str(raw), str(out))
    stages.models.pretrain(_folder_params(rgb_tree, model, path, arch, sha), model, str(raw), str(out))
    meta = read_meta(out)
    assert meta["sha256"] == sha and meta["source"] == str(path) and "training" not in meta
    net = load_model(out)
    assert (net.image_size, net.in_chans) == (32, 3)
    direct = checkpoints.load_official(model, path, arch, image_size=32)
    for k, v in direct.state_dict().items():  # the file's weights, untouched by any training
        assert torch.equal(net.state_dict()[k], v), k


def test_pretrain_on_an_rgb_tree_refuses_a_checkpoint_of_another_size_naming_the_keys(tmp_path, rgb_tree):
    from pipeline_lib import stages

    path, arch = _official_files(tmp_path)["vqgan"]
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    raw = tmp_path / "raw"
    params = _folder_params(rgb_tree, "vqgan", path, arch, sha, image_size=64)
    stages.data.data(params, str(raw))
    out = tmp_path / "original" / "model.safetensors"
    with pytest.raises(DataError, match=r"params model.vqgan.checkpoint: checkpoint .* expects 3x32px images, the "
                                        r"dataset gives 3x64px: RGB class folders .* data.image_size 64"):
        stages.models.pretrain(params, "vqgan", str(raw), str(out))
    assert not out.exists()


def test_a_family_image_size_runs_an_official_checkpoint_at_its_native_size(tmp_path, rgb_tree):
    """The presets' MAE at 224 beside MAGE at 256, in small: the 32 px file taken as it is on a 64 px tree,
    and a size it cannot run at refused naming the family's key."""
    from pipeline_lib import stages
    from pipeline_lib.models import load_model

    path, arch = _official_files(tmp_path)["vqgan"]
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    raw = tmp_path / "raw"
    stages.data.data(_folder_params(rgb_tree, "vqgan", path, arch, sha, image_size=64), str(raw))
    out = tmp_path / "original" / "model.safetensors"
    stages.models.pretrain(_folder_params(rgb_tree, "vqgan", path, arch, sha, image_size=64, own_size=32), "vqgan",
                    str(raw), str(out))
    assert load_model(out).image_size == 32
    with pytest.raises(DataError, match=r"expects 3x32px images, the dataset gives 3x48px: .* "
                                        r"model.vqgan.image_size 48"):
        stages.models.pretrain(_folder_params(rgb_tree, "vqgan", path, arch, sha, image_size=64, own_size=48), "vqgan",
                        str(raw), str(tmp_path / "other" / "model.safetensors"))
