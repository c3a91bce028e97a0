"""Palette's official checkpoint format: conversion to diffusers, output-exact against the official code.

The fixture (tests/fixtures/official/palette_unet.safetensors, see its README) holds a small random-weight
U-Net built by Janspiry/Palette's own `Network` (guided-diffusion modules), its schedule buffers, and the
official outputs: noise predictions at four γ and one full 10-step restoration chain.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline_lib.models import checkpoints
from pipeline_lib.runtime.errors import DataError
from pipeline_lib.models import PaletteDiffusion, load_model, save_model
from pipeline_lib.models.base import read_meta
from pipeline_lib.models.palette_official import detect_schedule, schedule_buffers

FIXTURE = Path(__file__).parent / "fixtures" / "official" / "palette_unet.safetensors"
ARCH = {"attention_head_dim": 8}  # the fixture's num_head_channels (Palette's published model: 32)


@pytest.fixture(scope="module")
def fixture():
    return load_file(str(FIXTURE))


def official_checkpoint(fixture) -> dict[str, torch.Tensor]:
    """The fixture's state dict as Palette saves `16_Network.pth`: `denoise_fn.*` plus the schedule buffers."""
    return {k[len("ckpt."):]: v.float() for k, v in fixture.items() if k.startswith("ckpt.")}


@pytest.fixture(scope="module")
def model(fixture, tmp_path_factory):
    path = tmp_path_factory.mktemp("palette") / "16_Network.pth"
    torch.save(official_checkpoint(fixture), path)
    return checkpoints.load_official("diffusion", path, ARCH, image_size=16).eval()


def test_noise_prediction_matches_the_official_unet_at_several_gammas(model, fixture):
    x, mask = fixture["x"], fixture["mask"].bool()
    with torch.no_grad():
        for i, gamma in enumerate(fixture["gammas_in"]):
            eps = model.predict_noise(fixture["y_t"], x, mask, torch.full((2,), float(gamma)),
                                      cond_noise=fixture["cond_noise"])
            torch.testing.assert_close(eps, fixture[f"eps_{i}"], atol=2e-5, rtol=1e-5)


def test_full_sampling_chain_matches_the_official_restoration(model, fixture):
    x, mask = fixture["x"], fixture["mask"].bool()
    assert model.sample_steps == 10 and model.sampler == "ddpm"
    with torch.no_grad():
        out = model.reconstruct(x, mask, generator=torch.Generator().manual_seed(int(fixture["chain_seed"])))
    torch.testing.assert_close(out, fixture["chain_out"], atol=2e-5, rtol=1e-5)
    assert torch.equal(out[~mask.expand_as(x)], x[~mask.expand_as(x)])


def test_metadata_names_the_schedule_the_buffers_carry(model):
    assert model.official_meta["noise_schedule"] == {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.2,
                                                     "train_timesteps": 10}
    arch = model.arch()
    assert arch["layout"] == "palette" and arch["block_out_channels"] == [32, 32] and arch["layers_per_block"] == 2


def test_schedule_detection():
    published = detect_schedule(schedule_buffers("linear", 2000, 1e-6, 0.01)["gammas"])
    assert published == {"beta_schedule": "linear", "beta_start": 1e-6, "beta_end": 0.01, "train_timesteps": 2000}
    assert detect_schedule(schedule_buffers("quad", 1000, 1e-4, 0.09)["gammas"])["beta_schedule"] == "quad"
    assert detect_schedule(torch.linspace(0.99, 0.01, 100))["beta_schedule"] == "unrecognised"


def test_round_trip_through_the_pipeline_format(model, fixture, tmp_path):
    save_model(model, tmp_path / "m.safetensors", {"note": "x"})
    loaded = load_model(tmp_path / "m.safetensors").eval()
    x, mask = fixture["x"], fixture["mask"].bool()
    with torch.no_grad():
        assert torch.equal(loaded.encode(x, mask), model.encode(x, mask))
        for name in ("gammas", "posterior_mean_coef1"):
            assert torch.equal(getattr(loaded.schedule, name), getattr(model.schedule, name))
    assert read_meta(tmp_path / "m.safetensors") == {"note": "x"}


def test_fewer_steps_ddim_training_and_encode(fixture):
    ckpt = official_checkpoint(fixture)
    x, mask = fixture["x"], fixture["mask"].bool()
    for sampler in ("ddpm", "ddim"):
        net = PaletteDiffusion.from_official(ckpt, image_size=16, attention_head_dim=8, sample_steps=4,
                                             sampler=sampler).eval()
        assert net.palette_chain()["gammas"].shape == (4,)
        with torch.no_grad():
            out = net.reconstruct(x, mask)
        assert torch.isfinite(out).all() and torch.equal(out[~mask.expand_as(x)], x[~mask.expand_as(x)])
    net.train()
    loss = net.training_loss(x, mask, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and net.unet.conv_in.weight.grad is not None
    with torch.no_grad():
        assert torch.equal(net.encode(x, mask), net.encode(x, mask))  # fixed level, noise and condition noise


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("posterior_mean_coef2"), "posterior_mean_coef2"),
    (lambda sd: sd.__setitem__("gammas", sd["gammas"][:5]), "gammas"),
    (lambda sd: sd.pop("denoise_fn.middle_block.1.qkv.weight"), "middle_block.1.qkv.weight"),
    (lambda sd: sd.__setitem__("denoise_fn.extra.weight", torch.zeros(1)), "denoise_fn.extra.weight"),
    (lambda sd: sd.__setitem__("denoise_fn.out.2.weight", torch.zeros(3, 16, 3, 3)), "conv_out.weight"),
    (lambda sd: sd.__setitem__("denoise_fn.input_blocks.1.1.qkv.weight", torch.zeros(96, 32, 1)), "attention inside"),
    (lambda sd: sd.clear(), "not a Palette checkpoint"),
])
def test_bad_checkpoints_are_refused_naming_the_problem(fixture, edit, message):
    sd = official_checkpoint(fixture)
    edit(sd)
    with pytest.raises(DataError, match=message):
        PaletteDiffusion.from_official(sd, image_size=16, attention_head_dim=8)


def test_sampling_options_are_checked(fixture):
    net = PaletteDiffusion.from_official(official_checkpoint(fixture), image_size=16, attention_head_dim=8)
    net.configure_sampling(steps=3, sampler="ddim")
    assert net.arch()["sampler"] == "ddim" and net.sample_steps == 3
    with pytest.raises(ValueError, match="outside"):
        net.configure_sampling(steps=11)
    with pytest.raises(ValueError, match="sampler 'ddpm' is not available with layout 'pipeline'"):
        PaletteDiffusion(image_size=16, in_chans=1, block_out_channels=[8], norm_num_groups=4).configure_sampling(
            sampler="ddpm")


def test_one_l2n_step_on_the_official_layout_moves_only_the_encoder(fixture):
    import copy

    from pipeline_lib.methods import build_method

    net = PaletteDiffusion.from_official(official_checkpoint(fixture), image_size=16, attention_head_dim=8)
    teacher = copy.deepcopy(net).eval().requires_grad_(False)
    method = build_method("l2n", net, teacher, alpha=0.25, norm="l2")
    params = method.trainable_parameters()
    x, mask = fixture["x"], fixture["mask"].bool()
    batch = {"x_r": x, "mask_r": mask, "x_f": x.flip(0), "mask_f": mask, "noise": torch.randn_like(x), "seed": 3}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loss = method.loss(batch)["loss"]
    loss.backward()
    torch.optim.SGD(params, lr=1e-2).step()
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(("unet.conv_in", "unet.time_embedding", "unet.down_blocks", "unet.mid_block"))
                           for k in changed)
