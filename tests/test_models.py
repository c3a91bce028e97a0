"""The MAE family on real Fashion-MNIST: training, reconstruction, the checkpoint format, official weights, l2n."""

from __future__ import annotations


import pytest
import torch

from helpers import TINY_ARCH, assert_state_dicts_equal, codec, fashion_subset, official_mae_state_dict, train_l2n_briefly
from pipeline_lib.models import checkpoints
from pipeline_lib.data import masks
from pipeline_lib.runtime.errors import DataError
from pipeline_lib.models import MAE, build_model, load_model, save_model
from pipeline_lib.models.base import read_meta

pytestmark = pytest.mark.usefixtures("one_torch_thread")


DECODER_PREFIXES = ("decoder_embed.", "mask_token", "decoder_pos_embed", "decoder_blocks.", "decoder_norm.",
                    "decoder_pred.")


def tiny_mae(seed: int = 0) -> MAE:
    torch.manual_seed(seed)
    return build_model("mae", TINY_ARCH, image_size=32, in_chans=1)


def real_images(n: int, offset: int = 0) -> torch.Tensor:
    images, _ = fashion_subset(n, train=True, offset=offset)
    return codec().encode(images)


# --- training and reconstruction -----------------------------------------------------------------------

def test_training_loss_falls_on_real_images():
    model = tiny_mae()
    x = real_images(512)
    g = torch.Generator().manual_seed(0)
    probe_x = real_images(64, offset=512)
    probe_mask = masks.random_patch_mask(64, 32, 4, 0.75, torch.Generator().manual_seed(123))
    with torch.no_grad():
        before = float(model.training_loss(probe_x, probe_mask))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for step in range(12):
        idx = torch.randint(len(x), (64,), generator=g)
        mask = masks.random_patch_mask(64, 32, 4, 0.75, g)
        loss = model.training_loss(x[idx], mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(model.training_loss(probe_x, probe_mask))
    assert after < 0.6 * before, f"held-out loss {before:.4f} -> {after:.4f}"


def test_training_loss_is_mse_on_hidden_patches_only():
    model = tiny_mae().eval()
    x = real_images(4)
    mask = masks.center_mask(4, 32, 16)
    with torch.no_grad():
        pred = model.predict(x, mask)
        loss = model.training_loss(x, mask)
    expected = (pred - x).pow(2)[mask].mean()  # centre hole = whole patches, so per-pixel mean = per-patch mean
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_reconstruct_keeps_visible_pixels_and_fills_hidden_ones():
    model = tiny_mae().eval()
    x = real_images(8)
    random_mask = masks.random_patch_mask(8, 32, 4, 0.75, torch.Generator().manual_seed(0))
    for mask in (masks.center_mask(8, 32, 16), random_mask):
        with torch.no_grad():
            out = model.reconstruct(x, mask)
        assert out.shape == x.shape
        assert torch.equal(out[~mask], x[~mask])
        changed = (out[mask] != x[mask]).float().mean()
        assert changed > 0.99, f"only {float(changed):.3f} of hidden pixels changed"
        # the encoder sees visible patches only: what is under the hole does not matter
        with torch.no_grad():
            out_blank = model.reconstruct(masks.apply_mask(x, mask), mask)
        assert torch.allclose(out_blank[mask], out[mask], atol=1e-5)


def test_mask_with_unequal_counts_is_rejected():
    model = tiny_mae()
    mask = masks.center_mask(2, 32, 16)
    mask[1] = False
    with pytest.raises(ValueError, match="same number"):
        model.encode(real_images(2), mask)
    with pytest.raises(ValueError, match="every patch"):
        model.encode(real_images(2), torch.ones(2, 1, 32, 32, dtype=torch.bool))


def test_save_load_round_trip(tmp_path):
    model = tiny_mae(seed=3)
    # move away from the initialisation so every tensor is non-trivial
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = tmp_path / "m" / "model.safetensors"
    save_model(model, path, {"note": "round trip", "steps": 7})
    assert path.is_file() and path.with_suffix(".json").is_file()
    loaded = load_model(path)
    assert type(loaded) is MAE
    assert loaded.arch() == model.arch() and loaded.image_size == 32 and loaded.in_chans == 1
    assert_state_dicts_equal(model.state_dict(), loaded.state_dict())
    assert read_meta(path) == {"note": "round trip", "steps": 7}
    x = real_images(4)
    mask = masks.random_patch_mask(4, 32, 4, 0.75, torch.Generator().manual_seed(9))
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(model.reconstruct(x, mask), loaded.reconstruct(x, mask))
        assert torch.equal(model.encode(x, mask), loaded.encode(x, mask))


def test_load_model_missing_sidecar(tmp_path):
    path = tmp_path / "model.safetensors"
    save_model(tiny_mae(), path)
    path.with_suffix(".json").unlink()
    with pytest.raises(DataError, match="missing"):
        load_model(path)


# --- official checkpoints ------------------------------------------------------------------------------

def _save_official(tmp_path, sd) -> str:
    path = tmp_path / "official.pth"
    torch.save({"model": sd}, path)
    return str(path)


def test_from_official_infers_architecture_and_copies_weights(tmp_path):
    sd = official_mae_state_dict(embed_dim=32, depth=2, decoder_embed_dim=16, decoder_depth=1, patch_size=4, grid=8,
                                 in_chans=1, mlp_ratio=2.0)
    path = _save_official(tmp_path, sd)
    model = checkpoints.load_official("mae", path, {"num_heads": 4, "decoder_num_heads": 2})
    assert isinstance(model, MAE)
    assert model.image_size == 32 and model.in_chans == 1
    arch = model.arch()
    assert (arch["patch_size"], arch["embed_dim"], arch["depth"], arch["decoder_embed_dim"], arch["decoder_depth"],
            arch["num_heads"], arch["decoder_num_heads"], arch["mlp_ratio"]) == (4, 32, 2, 16, 1, 4, 2, 2.0)
    assert_state_dicts_equal(model.state_dict(), sd)
    # the loaded model runs
    with torch.no_grad():
        out = model.reconstruct(real_images(2), masks.center_mask(2, 32, 16))
    assert torch.isfinite(out).all()


def test_from_official_three_channels_and_bare_state_dict():
    sd = official_mae_state_dict(embed_dim=16, depth=1, decoder_embed_dim=16, decoder_depth=2, patch_size=2, grid=4,
                                 in_chans=3, mlp_ratio=4.0, seed=1)
    model = MAE.from_official(sd, num_heads=2, decoder_num_heads=2)  # not wrapped in {"model": ...}
    assert (model.image_size, model.in_chans, model.patch_size) == (8, 3, 2)
    assert model.arch()["decoder_depth"] == 2 and model.arch()["mlp_ratio"] == 4.0
    assert_state_dicts_equal(model.state_dict(), sd)


@pytest.mark.parametrize(
    "drop",
    [
        "decoder_pred.weight",
        "cls_token",
        "blocks.1.attn.proj.bias",
        "decoder_blocks.0.norm2.weight",
        "blocks.0.mlp.fc1.weight",
        "decoder_blocks.0.attn.qkv.weight",
    ],
)
def test_official_state_dict_with_missing_key(tmp_path, drop):
    sd = official_mae_state_dict()
    del sd[drop]
    path = _save_official(tmp_path, sd)
    with pytest.raises(DataError) as info:
        checkpoints.load_official("mae", path, {"num_heads": 4, "decoder_num_heads": 4})
    assert drop in str(info.value)


def test_official_state_dict_with_extra_key(tmp_path):
    sd = official_mae_state_dict()
    sd["head.weight"] = torch.zeros(10, 32)
    with pytest.raises(DataError, match="head.weight"):
        checkpoints.load_official("mae", _save_official(tmp_path, sd), {"num_heads": 4, "decoder_num_heads": 4})


def test_load_official_rejects_non_checkpoints(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="not a loadable"):
        checkpoints.load_official("mae", junk, {})
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(DataError, match="not a checkpoint dict"):
        checkpoints.load_official("mae", listed, {})


# --- encoder-only l2n -----------------------------------------------------------------------------------

def test_l2n_trains_the_encoder_only():
    model = tiny_mae(seed=5)
    objective, before, teacher_before, after = train_l2n_briefly(model)
    decoder_keys = [k for k in after if k.startswith(DECODER_PREFIXES)]
    encoder_keys = [k for k in after if not k.startswith(DECODER_PREFIXES)]
    assert decoder_keys and encoder_keys
    for k in decoder_keys:
        assert torch.equal(after[k], before[k]), f"decoder tensor {k} changed"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for k in encoder_keys:
        if k == "pos_embed":  # a fixed sin-cos table, not a trained parameter
            assert torch.equal(after[k], before[k])
            continue
        assert k in trainable, f"encoder parameter {k} is not trained"
        assert not torch.equal(after[k], before[k]), f"encoder tensor {k} did not change"
    assert not trainable & set(decoder_keys)
    # the teacher (the original model) is frozen
    assert_state_dicts_equal(objective.teacher.state_dict(), teacher_before)
    assert all(not p.requires_grad for p in objective.teacher.parameters())
