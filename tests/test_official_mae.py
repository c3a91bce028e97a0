"""facebookresearch/mae's format, output-exact: a small random-weight MAE built by the official
`models_mae.py` (fixture: tests/fixtures/official/README.md) predicts the same patches here."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from pipeline_lib import checkpoints

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
