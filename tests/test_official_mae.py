"""facebookresearch/mae's format, output-exact: a small random-weight MAE built by the official
`models_mae.py` (fixture: tests/fixtures/official/README.md) predicts the same patches here."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from pipeline_lib.models import checkpoints

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
    import pytest

    from pipeline_lib.runtime.errors import DataError
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
