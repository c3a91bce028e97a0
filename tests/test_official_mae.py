"""facebookresearch/mae's format, output-exact: a small random-weight MAE built by the official
`models_mae.py` (fixture: tests/fixtures/official/README.md) predicts the same patches here; a file that does
not match what params state, or holds a mis-shaped tensor, is refused naming its own keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline_lib.models import checkpoints
from pipeline_lib.runtime.errors import DataError

FIXTURE = Path(__file__).parent / "fixtures" / "official" / "mae_vit.safetensors"


def test_mae_predicts_the_official_patches(tmp_path):
    f = load_file(str(FIXTURE))
    path = tmp_path / "mae_visualize_vit_base.pth"
    torch.save({"model": {k[5:]: v.float() for k, v in f.items() if k.startswith("ckpt.")}}, path)
    model = checkpoints.load_official("mae", path, {"num_heads": 4, "decoder_num_heads": 4}).eval()
    assert (model.image_size, model.in_chans, model.patch_size) == (32, 3, 8)
    mask = f["patch_mask"].view(2, 1, 4, 4).repeat_interleave(8, 2).repeat_interleave(8, 3)
    with torch.no_grad():
        out = model.predict(f["x"], mask)
    torch.testing.assert_close(out, f["image"], atol=2e-5, rtol=1e-5)


def test_mae_at_another_size_rebuilds_only_the_sincos_tables(tmp_path):
    """paper 1's ImageNet preset runs MAGE's 256 px: the MAE's fixed sin-cos tables are rebuilt for 16x16."""
    from pipeline_lib.models.vit import sincos_pos_embed

    f = load_file(str(FIXTURE))
    state = {k[5:]: v.float() for k, v in f.items() if k.startswith("ckpt.")}
    path = tmp_path / "mae.pth"
    torch.save({"model": state}, path)
    model = checkpoints.load_official("mae", path, {"num_heads": 4, "decoder_num_heads": 4}, image_size=48)
    assert (model.image_size, model.in_chans) == (48, 3)
    torch.testing.assert_close(model.pos_embed.data, sincos_pos_embed(state["pos_embed"].shape[-1], 6))
    for k, v in model.state_dict().items():
        if k not in ("pos_embed", "decoder_pos_embed"):
            assert torch.equal(v, state[k]), k
    state["pos_embed"] = state["pos_embed"] + 0.1  # a learned table cannot be rebuilt
    torch.save({"model": state}, path)
    with pytest.raises(DataError, match="'pos_embed' is not the fixed sin-cos table"):
        checkpoints.load_official("mae", path, {"num_heads": 4, "decoder_num_heads": 4}, image_size=48)


# --- what the loader refuses -------------------------------------------------------------------------------

HEADS = {"num_heads": 4, "decoder_num_heads": 4}


def _state() -> dict:
    f = load_file(str(FIXTURE))
    return {k[5:]: v.float() for k, v in f.items() if k.startswith("ckpt.")}


def _load(tmp_path, state: dict, arch: dict, **context):
    path = tmp_path / "mae.pth"
    torch.save({"model": state}, path)
    return checkpoints.load_official("mae", path, arch, **context)


def test_an_architecture_params_state_is_checked_against_the_tensors(tmp_path):
    """The fixture: width 32, 2 blocks, decoder 32 wide and 1 deep, patch 8, MLP ratio 4."""
    state = _state()
    stated = {"patch_size": 8, "embed_dim": 32, "depth": 2, "decoder_embed_dim": 32, "decoder_depth": 1,
              "mlp_ratio": 4.0, "norm_pix_loss": False}
    assert _load(tmp_path, state, {**HEADS, **stated}).arch()["depth"] == 2
    for key, value, implied in (("decoder_depth", 2, "1"), ("embed_dim", 1024, "32"), ("patch_size", 16, "8"),
                                ("mlp_ratio", 2.0, "4.0"), ("decoder_embed_dim", 512, "32")):
        with pytest.raises(DataError, match=f"params model.mae.arch.{key} is {value}, the checkpoint's tensors "
                                            f"imply {implied}"):
            _load(tmp_path, state, {**HEADS, **stated, key: value})
    # a file missing its last encoder block would load as a shallower encoder: params say how deep it is
    shallow = {k: v for k, v in state.items() if not k.startswith("blocks.1.")}
    with pytest.raises(DataError, match=r"model.mae.arch.depth is 2, the checkpoint's tensors imply 1 \(blocks.0 to blocks.0\)"):
        _load(tmp_path, shallow, {**HEADS, **stated})
    for key, heads in (("num_heads", 5), ("decoder_num_heads", 3)):
        with pytest.raises(DataError, match=f"params model.mae.arch.{key} = {heads} does not divide the checkpoint's "
                                            "width 32"):
            _load(tmp_path, state, {**HEADS, key: heads})


@pytest.mark.parametrize("key, bad, message", [
    ("blocks.0.attn.qkv.weight", torch.zeros(95, 32), r"blocks.0.attn.qkv.weight \[95, 32\] \(expected \[96, 32\]\)"),
    ("decoder_blocks.0.attn.proj.weight", torch.zeros(32, 31),
     r"decoder_blocks.0.attn.proj.weight \[32, 31\] \(expected \[32, 32\]\)"),
    ("cls_token", torch.zeros(1, 2, 32), r"cls_token \[1, 2, 32\] \(expected \[1, 1, 32\]\)"),
    ("mask_token", torch.zeros(32), r"mask_token \[32\] \(expected \[1, 1, 32\]\)"),
    ("pos_embed", torch.zeros(1, 16, 32), r"'pos_embed' has shape \[1, 16, 32\], expected \[1, L \+ 1, 32\]"),
    ("pos_embed", torch.zeros(17, 32), r"'pos_embed' has shape \[17, 32\], expected 3 dimensions"),
    ("decoder_pos_embed", torch.zeros(1, 10, 32), r"'decoder_pos_embed' has shape \[1, 10, 32\] \(expected \[1, 17, 32\]\)"),
    ("patch_embed.proj.weight", torch.zeros(32, 3, 8), r"'patch_embed.proj.weight' has shape \[32, 3, 8\], expected 4"),
    ("decoder_pred.weight", torch.zeros(190, 32), r"decoder_pred.weight \[190, 32\] \(expected \[192, 32\]\)"),
])
def test_a_wrong_shape_is_named_with_both_shapes(tmp_path, key, bad, message):
    state = _state()
    state[key] = bad
    for size in (None, 48):  # also on the way to rebuilding the sin-cos tables
        with pytest.raises(DataError, match=message):
            _load(tmp_path, state, HEADS, **({} if size is None else {"image_size": size}))
