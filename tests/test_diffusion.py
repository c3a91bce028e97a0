"""The Palette-style diffusion family on real Fashion-MNIST: loss, sampling, encoder features, l2n, checkpoints."""

from __future__ import annotations

import pytest
import torch

from helpers import assert_state_dicts_equal, codec, fashion_subset, train_l2n_briefly
from pipeline_lib.models import checkpoints
from pipeline_lib.data import masks
from pipeline_lib.runtime.errors import DataError
from pipeline_lib.models import FAMILIES, load_model, save_model
from pipeline_lib.models.base import read_meta
from pipeline_lib.models.diffusion import DECODER_PREFIXES, ENCODER_PREFIXES, PaletteDiffusion

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: a tiny U-Net (16/32 channels, two levels, one attention block at 16 px and in the middle), 4 DDIM steps
TINY_DIFFUSION = dict(block_out_channels=[16, 32], layers_per_block=1, attention=True, norm_num_groups=8,
                      attention_head_dim=8, train_timesteps=1000, beta_start=1e-4, beta_end=0.02, sample_steps=4)


def test_diffusion_is_a_registered_family():
    assert FAMILIES["diffusion"] is PaletteDiffusion


def tiny(seed: int = 0, **overrides) -> PaletteDiffusion:
    torch.manual_seed(seed)
    return PaletteDiffusion(image_size=32, in_chans=1, **{**TINY_DIFFUSION, **overrides})


def real_images(n: int, offset: int = 0) -> torch.Tensor:
    images, _ = fashion_subset(n, train=True, offset=offset)
    return codec().encode(images)


def feature_sizes(model: PaletteDiffusion) -> int:
    """Σ of the down/mid feature sizes of the tiny U-Net, written out from the architecture."""
    c0, c1 = model.arch()["block_out_channels"]
    return (c0 * 32 * 32      # conv_in
            + c0 * 32 * 32    # down block 0, resnet
            + c0 * 16 * 16    # down block 0, downsampler
            + c1 * 16 * 16    # down block 1, resnet + attention (no downsampler on the last level)
            + c1 * 16 * 16)   # middle block


# --- training ------------------------------------------------------------------------------------------

def test_training_loss_falls_on_real_images():
    model = tiny()
    x = real_images(256)
    probe_x, probe_mask = real_images(32, offset=256), masks.center_mask(32, 32, 16)

    def probe() -> float:
        with torch.no_grad():
            return float(model.training_loss(probe_x, probe_mask, generator=torch.Generator().manual_seed(7)))

    before = probe()
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(12):
        idx = torch.randint(len(x), (16,), generator=g)
        mask = masks.sample_mask({"kind": "mixed", "size": 16, "ratio": 0.5}, 16, 32, 4, g)
        loss = model.training_loss(x[idx], mask, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = probe()
    assert after < 0.6 * before, f"held-out loss {before:.4f} -> {after:.4f}"


def test_training_loss_is_eps_mse_on_hidden_pixels():
    model = tiny().eval()
    x, mask = real_images(4), masks.center_mask(4, 32, 16)
    with torch.no_grad():
        loss = model.training_loss(x, mask, generator=torch.Generator().manual_seed(3))
        g = torch.Generator().manual_seed(3)  # replay the same draws: t first, then γ
        t = torch.randint(0, 1000, (4,), generator=g)
        noise = torch.randn(x.shape, generator=g)
        abar = model.train_scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        y_t = abar.sqrt() * x + (1 - abar).sqrt() * noise
        net_in = torch.cat([torch.where(mask, y_t, x), x.masked_fill(mask, 0.0), mask.float()], dim=1)
        eps = model.unet(net_in, t).sample
    expected = (eps - noise).pow(2)[mask].mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


# --- sampling --------------------------------------------------------------------------------------------

def test_reconstruct_keeps_visible_pixels_fills_hidden_ones_and_repeats():
    model = tiny().eval()
    x = real_images(4)
    for mask in (masks.center_mask(4, 32, 16), masks.random_patch_mask(4, 32, 4, 0.5, torch.Generator().manual_seed(1))):
        with torch.no_grad():
            out = model.reconstruct(x, mask, generator=torch.Generator().manual_seed(5))
            again = model.reconstruct(x, mask, generator=torch.Generator().manual_seed(5))
            other = model.reconstruct(x, mask, generator=torch.Generator().manual_seed(6))
            default_a, default_b = model.reconstruct(x, mask), model.reconstruct(x, mask)
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert torch.equal(out[~mask], x[~mask])
        changed = (out[mask] != x[mask]).float().mean()
        assert changed > 0.99, f"only {float(changed):.3f} of hidden pixels changed"
        assert torch.equal(out, again)
        assert not torch.equal(out[mask], other[mask])
        assert torch.equal(default_a, default_b)  # no generator: a fixed seed


# --- encoder -------------------------------------------------------------------------------------------

def test_encode_shape_determinism_and_unet_forward_agreement():
    model = tiny().eval()
    x, mask = real_images(3), masks.center_mask(3, 32, 16)
    with torch.no_grad():
        z = model.encode(x, mask)
        assert z.shape == (3, feature_sizes(model))
        assert torch.equal(z, model.encode(x, mask))  # fixed t and γ: student and teacher calls agree
        assert not torch.equal(z, model.encode(x, mask, t=10))
        # the features are what UNet2DModel.forward computes on its way down (forward hooks)
        seen: list[torch.Tensor] = []
        hooks = [b.register_forward_hook(lambda m, i, o: seen.extend(o[1])) for b in model.unet.down_blocks]
        hooks.append(model.unet.mid_block.register_forward_hook(lambda m, i, o: seen.append(o)))
        hooks.append(model.unet.conv_in.register_forward_hook(lambda m, i, o: seen.insert(0, o)))
        t = torch.full((3,), model.encode_timestep)
        y_t = model.noisy_target(x)
        model.unet(model.net_input(y_t, x, mask), t)
        for h in hooks:
            h.remove()
    assert torch.equal(torch.cat([f.flatten(1) for f in seen], dim=1), z)
    # encode_input: y verbatim as the noisy target, conditioning from a separate image (paper 1, Eq. C.25)
    n = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model.encode_input(y_t, x, mask), z)
        teacher_c25 = model.encode_input(n, x, mask)
        assert not torch.equal(teacher_c25, model.encode(n, mask))  # T(x_f) vs T(n) conditioning


def test_encoder_decoder_split_covers_every_parameter():
    model = tiny()
    names = [n for n, _ in model.named_parameters()]
    enc = [n for n in names if n.startswith(ENCODER_PREFIXES)]
    dec = [n for n in names if n.startswith(DECODER_PREFIXES)]
    assert enc and dec and sorted(enc + dec) == sorted(names)
    assert len(model.encoder_parameters()) == len(enc)
    assert any(n.startswith("unet.time_embedding.") for n in enc)


# --- encoder-only l2n ------------------------------------------------------------------------------------

def test_l2n_trains_the_encoder_only():
    model = tiny(seed=5)
    objective, before, teacher_before, after = train_l2n_briefly(
        model, steps=2, batch=4, ratio=0.5, optimizer={"name": "adam", "lr": 1e-3, "betas": [0.9, 0.999]})
    decoder_keys = [k for k in after if k.startswith(DECODER_PREFIXES)]
    encoder_keys = [k for k in after if k.startswith(ENCODER_PREFIXES)]
    assert decoder_keys and encoder_keys and len(decoder_keys) + len(encoder_keys) == len(after)
    for k in decoder_keys:
        assert torch.equal(after[k], before[k]), f"decoder tensor {k} changed"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(encoder_keys)
    moved = [k for k in encoder_keys if not torch.equal(after[k], before[k])]
    assert len(moved) == len(encoder_keys), f"unchanged encoder tensors: {sorted(set(encoder_keys) - set(moved))}"
    assert_state_dicts_equal(objective.teacher.state_dict(), teacher_before)
    assert all(not p.requires_grad for p in objective.teacher.parameters())


# --- checkpoints ---------------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    model = tiny(seed=3, encode_timestep=123, encode_seed=4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = tmp_path / "m" / "model.safetensors"
    save_model(model, path, {"note": "round trip"})
    loaded = load_model(path)
    assert type(loaded) is PaletteDiffusion
    assert loaded.arch() == model.arch() and loaded.image_size == 32 and loaded.in_chans == 1
    assert loaded.arch()["encode_timestep"] == 123
    assert_state_dicts_equal(model.state_dict(), loaded.state_dict())
    assert read_meta(path) == {"note": "round trip"}
    x, mask = real_images(2), masks.center_mask(2, 32, 16)
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(model.encode(x, mask), loaded.encode(x, mask))
        assert torch.equal(model.reconstruct(x, mask), loaded.reconstruct(x, mask))


def test_partial_palette_checkpoint_is_refused_naming_what_is_missing(tmp_path):
    # key names of Palette's guided-diffusion U-Net, but no schedule buffers (full checks: test_official_palette)
    sd = {"denoise_fn.cond_embed.0.weight": torch.zeros(4, 2), "denoise_fn.input_blocks.0.0.weight": torch.zeros(2, 6, 3, 3),
          "denoise_fn.middle_block.0.in_layers.0.weight": torch.zeros(2),
          "denoise_fn.output_blocks.0.0.in_layers.0.weight": torch.zeros(2), "denoise_fn.out.2.weight": torch.zeros(3, 2, 3, 3)}
    path = tmp_path / "16_Network.pth"
    torch.save(sd, path)
    with pytest.raises(DataError, match="schedule buffer.*gammas"):
        checkpoints.load_official("diffusion", path, {})
    other = tmp_path / "other.pth"
    torch.save({"model": {"foo.weight": torch.zeros(1)}}, other)
    with pytest.raises(DataError, match="not a Palette checkpoint"):
        checkpoints.load_official("diffusion", other, {})


def test_bad_arch_is_rejected():
    with pytest.raises(ValueError, match="encode_timestep"):
        tiny(encode_timestep=1000)
    with pytest.raises(ValueError, match="divisible"):
        PaletteDiffusion(image_size=30, block_out_channels=[8, 8, 8], norm_num_groups=8)


def test_l2n_forget_target_keeps_the_forget_images_condition():
    """Paper 1 Eq. C.25: the teacher sees noise n as the noisy target, conditioned on T(x_f), not T(n)."""
    from pipeline_lib.methods import build_method

    model = tiny(seed=3)
    x = real_images(4)
    mask = masks.center_mask(4, 32, 16)
    n = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    objective = build_method("l2n", model, None, alpha=1.0, norm="l2")
    batch = {"x_r": x, "x_f": x, "mask_r": mask, "mask_f": mask, "noise": n}
    forget = objective.loss(batch)["forget"]
    with torch.no_grad():
        expected = (model.encode(x, mask) - objective.teacher.encode_input(n, x, mask)).flatten(1).norm(dim=1).mean()
        literal = (model.encode(x, mask) - objective.teacher.encode(n, mask)).flatten(1).norm(dim=1).mean()
    assert forget.item() == pytest.approx(expected.item(), rel=1e-6)
    assert abs(forget.item() - literal.item()) > 1e-3
    # noise_input "image" (Algorithm 1 read literally): the noise replaces the condition too
    image = build_method("l2n", model, objective.teacher, alpha=1.0, norm="l2", noise_input="image")
    assert image.loss(batch)["forget"].item() == pytest.approx(literal.item(), rel=1e-6)
    with pytest.raises(ValueError, match="noise_input 'pixels'"):
        build_method("l2n", model, None, alpha=1.0, norm="l2", noise_input="pixels")


def test_stochastic_encoding_is_shared_by_student_and_teacher():
    """l2n draws diffusion's t and γ once per batch (from the loader's seed) for both networks: with the
    student still equal to the teacher the retain term is exactly zero, at random timesteps."""
    import copy

    from pipeline_lib.methods import build_method

    torch.manual_seed(0)
    model = PaletteDiffusion(image_size=16, block_out_channels=(8, 16), norm_num_groups=4, train_timesteps=100)
    x = torch.randn(4, 1, 16, 16)
    a, b = model.encoding_state(x, 7), model.encoding_state(x, 7)
    assert torch.equal(a["t"], b["t"]) and torch.equal(a["noise"], b["noise"])
    assert not torch.equal(model.encoding_state(x, 8)["t"], a["t"])
    mask = torch.zeros(4, 1, 16, 16, dtype=torch.bool)
    mask[..., 4:12, 4:12] = True
    method = build_method("l2n", model, copy.deepcopy(model), alpha=0.25, norm="l2")
    batch = {"x_r": x, "x_f": torch.randn(4, 1, 16, 16), "mask_r": mask, "mask_f": mask,
             "noise": torch.randn(4, 1, 16, 16), "seed": 3}
    losses = method.loss(batch)
    assert losses["retain"].item() == 0.0 and losses["forget"].item() > 0
    # the encoder really depends on the drawn timestep
    assert not torch.equal(model.encode(x, mask, **a), model.encode(x, mask))
