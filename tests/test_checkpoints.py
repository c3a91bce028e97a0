"""Published-checkpoint download and verification over a loopback server, and the pretrain stage using one."""

from __future__ import annotations

import hashlib

import pytest
import torch

from helpers import (DEBIAN_DIR, assert_state_dicts_equal, base_params, closed_port_url, official_mae_state_dict,
                     serve_directory, temp_leftovers)
from pipeline_lib.models import checkpoints
from pipeline_lib.params import load
from pipeline_lib import stages
import pipeline_lib.stages.models  # noqa: F401
from pipeline_lib.runtime.errors import DataError
from pipeline_lib.models import MAE, load_model
from pipeline_lib.models.base import read_meta


def _write_checkpoint(directory, name="mae.pth", **kw) -> tuple[dict, str]:
    directory.mkdir(parents=True, exist_ok=True)
    sd = official_mae_state_dict(**kw)
    torch.save({"model": sd}, directory / name)
    sha = hashlib.sha256((directory / name).read_bytes()).hexdigest()
    return sd, sha


def test_fetch_good_checksum(tmp_path):
    sd, sha = _write_checkpoint(tmp_path / "srv")
    dest_dir = tmp_path / "dl"
    dest = dest_dir / "official.pth"
    with serve_directory(tmp_path / "srv") as url:
        got = checkpoints.fetch_checkpoint(url + "mae.pth", sha, dest)
    assert got == dest and dest.is_file()
    assert dest.read_bytes() == (tmp_path / "srv" / "mae.pth").read_bytes()
    assert temp_leftovers(dest_dir) == []
    model = checkpoints.load_official("mae", dest, {"num_heads": 4, "decoder_num_heads": 4})
    assert_state_dicts_equal(model.state_dict(), sd)


def test_fetch_wrong_checksum_leaves_nothing(tmp_path):
    _, sha = _write_checkpoint(tmp_path / "srv")
    wrong = hashlib.sha256(b"something else").hexdigest()
    assert wrong != sha
    dest_dir = tmp_path / "dl"
    dest = dest_dir / "official.pth"
    with serve_directory(tmp_path / "srv") as url, pytest.raises(DataError) as info:
        checkpoints.fetch_checkpoint(url + "mae.pth", wrong, dest)
    msg = str(info.value)
    assert "checksum mismatch" in msg and sha in msg and wrong in msg
    assert not dest.exists()
    assert list(dest_dir.iterdir()) == []


def test_fetch_wrong_checksum_keeps_an_existing_good_file(tmp_path):
    _, sha = _write_checkpoint(tmp_path / "srv")
    dest = tmp_path / "dl" / "official.pth"
    dest.parent.mkdir()
    dest.write_bytes(b"previous")
    with serve_directory(tmp_path / "srv") as url, pytest.raises(DataError, match="checksum mismatch"):
        checkpoints.fetch_checkpoint(url + "mae.pth", "0" * 64, dest)
    assert dest.read_bytes() == b"previous"
    assert temp_leftovers(dest.parent) == []


def test_fetch_unreachable_url(tmp_path):
    dest_dir = tmp_path / "dl"
    with pytest.raises(DataError, match="download from .* failed"):
        checkpoints.fetch_checkpoint(closed_port_url() + "mae.pth", "0" * 64, dest_dir / "official.pth", timeout=10)
    assert list(dest_dir.iterdir()) == []


def test_fetch_missing_file_on_server(tmp_path):
    (tmp_path / "srv").mkdir()
    dest_dir = tmp_path / "dl"
    with serve_directory(tmp_path / "srv") as url, pytest.raises(DataError, match="404"):
        checkpoints.fetch_checkpoint(url + "nope.pth", "0" * 64, dest_dir / "official.pth")
    assert list(dest_dir.iterdir()) == []


# --- the pretrain stage with a published checkpoint -----------------------------------------------------------

#: the architecture of `official_mae_state_dict`'s default file, as params state it
FILE_ARCH = {"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 4, "decoder_embed_dim": 32, "decoder_depth": 1,
             "decoder_num_heads": 4, "mlp_ratio": 2.0}


def _checkpoint_params(url: str, sha: str, arch: dict | None = None) -> dict:
    params = base_params()
    params["model"]["mae"]["checkpoint"] = {"url": url, "sha256": sha}
    params["model"]["mae"]["arch"].update(FILE_ARCH if arch is None else arch)
    return load.validate_params(params)


def test_pretrain_stage_uses_the_verified_checkpoint(tmp_path):
    # in_chans=1 and an 8x8 grid of 4 px patches: the 32 px images params.yaml asks for
    sd, sha = _write_checkpoint(tmp_path / "srv", embed_dim=32, depth=2, decoder_embed_dim=32, decoder_depth=1,
                                patch_size=4, grid=8, in_chans=1, mlp_ratio=2.0, seed=11)
    out = tmp_path / "models" / "mae" / "original" / "base" / "model.safetensors"
    with serve_directory(tmp_path / "srv") as url:
        ckpt_url = url + "mae.pth"
        params = _checkpoint_params(ckpt_url, sha)
        stages.models.pretrain(params, "mae", str(DEBIAN_DIR), str(out))
    model = load_model(out)
    assert isinstance(model, MAE) and model.image_size == params["data"]["image_size"] and model.in_chans == 1
    assert_state_dicts_equal(model.state_dict(), sd)
    meta = read_meta(out)
    assert meta["source"] == ckpt_url and meta["sha256"] == sha
    assert meta["runtime"]["device"] == "cpu" and meta["runtime"]["torch"] == torch.__version__  # converted here
    # the downloaded .pth is removed; only the model and its sidecar remain
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.json", "model.safetensors"]


def test_pretrain_stage_refuses_a_checkpoint_of_another_architecture_than_params_state(tmp_path):
    """The default params' MAE (width 128, 3 blocks, decoder 64 wide and 2 deep) is not the file's: both named."""
    _, sha = _write_checkpoint(tmp_path / "srv")
    out = tmp_path / "model" / "model.safetensors"
    with serve_directory(tmp_path / "srv") as url:
        params = _checkpoint_params(url + "mae.pth", sha, arch={})
        with pytest.raises(DataError, match=r"model.mae.arch.embed_dim is 128, the checkpoint's tensors imply 32 .*"
                                            r"model.mae.arch.decoder_depth is 2, the checkpoint's tensors imply 1"):
            stages.models.pretrain(params, "mae", str(DEBIAN_DIR), str(out))
    assert not out.exists()


def test_pretrain_stage_rejects_a_checkpoint_for_other_images(tmp_path):
    _, sha = _write_checkpoint(tmp_path / "srv", patch_size=4, grid=8, in_chans=3)
    out = tmp_path / "model" / "model.safetensors"
    with serve_directory(tmp_path / "srv") as url:
        params = _checkpoint_params(url + "mae.pth", sha)
        with pytest.raises(DataError, match="expects 3x32px"):
            stages.models.pretrain(params, "mae", str(DEBIAN_DIR), str(out))
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_pretrain_stage_with_a_wrong_checksum_writes_no_model(tmp_path):
    _write_checkpoint(tmp_path / "srv")
    out = tmp_path / "model" / "model.safetensors"
    with serve_directory(tmp_path / "srv") as url:
        params = _checkpoint_params(url + "mae.pth", "f" * 64)
        with pytest.raises(DataError, match="checksum mismatch"):
            stages.models.pretrain(params, "mae", str(DEBIAN_DIR), str(out))
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_pretrain_stage_with_an_unloadable_checkpoint_leaves_no_download(tmp_path):
    srv = tmp_path / "srv"
    srv.mkdir()
    sd = official_mae_state_dict()
    del sd["decoder_pred.weight"]
    torch.save({"model": sd}, srv / "mae.pth")
    sha = hashlib.sha256((srv / "mae.pth").read_bytes()).hexdigest()
    out = tmp_path / "model" / "model.safetensors"
    with serve_directory(srv) as url:
        params = _checkpoint_params(url + "mae.pth", sha)
        with pytest.raises(DataError, match="decoder_pred.weight"):
            stages.models.pretrain(params, "mae", str(DEBIAN_DIR), str(out))
    assert not out.exists()
    assert list(out.parent.iterdir()) == []
