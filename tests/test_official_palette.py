"""Palette's official checkpoint format: conversion to diffusers, output-exact against the official code.

The fixture (tests/fixtures/official/palette_unet.safetensors, see its README) holds a small random-weight
U-Net built by Janspiry/Palette's own `Network` (guided-diffusion modules), its schedule buffers, and the
official outputs: noise predictions at four γ and one full 10-step restoration chain over those buffers.
palette_test_phase.safetensors holds what the official TEST phase (jpmorganchase/i2i_Palette, branch i2i) does
with that file: the buffers dropped by its non-strict load, a test schedule of its own (8 levels), the chain.
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
from pipeline_lib.models.palette_official import TEST_SCHEDULE, detect_schedule, schedule_buffers

FIXTURE = Path(__file__).parent / "fixtures" / "official" / "palette_unet.safetensors"
TEST_PHASE = FIXTURE.with_name("palette_test_phase.safetensors")
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


def test_full_sampling_chain_over_the_file_buffers_matches_the_official_restoration(model, fixture):
    """`schedule: checkpoint`: the chain the official Network runs over the buffers it trained with."""
    import copy

    net = copy.deepcopy(model)
    net.configure_sampling(schedule="checkpoint", steps=10)
    x, mask = fixture["x"], fixture["mask"].bool()
    assert net.sample_steps == 10 and net.sampler == "ddpm" and net.arch()["sample_schedule"] == "checkpoint"
    with torch.no_grad():
        out = net.reconstruct(x, mask, generator=torch.Generator().manual_seed(int(fixture["chain_seed"])))
    torch.testing.assert_close(out, fixture["chain_out"], atol=2e-5, rtol=1e-5)
    assert torch.equal(out[~mask.expand_as(x)], x[~mask.expand_as(x)])


@pytest.fixture(scope="module")
def test_phase():
    return load_file(str(TEST_PHASE))


def _test_schedule(test_phase) -> dict:
    levels, start, end = test_phase["test_schedule"].tolist()
    return {"beta_schedule": "linear", "timesteps": int(levels), "beta_start": start, "beta_end": end}


def test_official_checkpoints_sample_over_the_papers_test_schedule_by_default(model, tmp_path):
    assert model.arch()["sample_schedule"] == TEST_SCHEDULE == {"beta_schedule": "linear", "timesteps": 2000,
                                                                 "beta_start": 1e-4, "beta_end": 0.09}
    assert model.sample_steps == 2000 and model.official_meta["sampling_schedule"] == TEST_SCHEDULE
    published = schedule_buffers("linear", 2000, 1e-4, 0.09)
    chain = model.palette_chain()
    for name, value in published.items():
        assert torch.equal(chain[name], value), name
    save_model(model, tmp_path / "m.safetensors", model.official_meta)  # the sidecar records it
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.sample_schedule == TEST_SCHEDULE and read_meta(tmp_path / "m.safetensors")["sampling_schedule"] == TEST_SCHEDULE


def test_test_phase_chain_matches_the_official_test_run(model, fixture, test_phase):
    """The official test phase: the file's buffers ignored, its own schedule set, the chain run over it."""
    import copy

    net = copy.deepcopy(model)
    schedule = _test_schedule(test_phase)
    net.configure_sampling(schedule=schedule, steps=schedule["timesteps"])
    assert net.arch()["sample_schedule"] == schedule
    for name, value in net.sampling_buffers().items():
        assert torch.equal(value, test_phase["test." + name]), name  # computed as set_new_noise_schedule does
    x, mask = fixture["x"], fixture["mask"].bool()
    with torch.no_grad():
        out = net.reconstruct(x, mask, generator=torch.Generator().manual_seed(int(test_phase["chain_seed"])))
    torch.testing.assert_close(out, test_phase["chain_out"], atol=2e-5, rtol=1e-5)
    assert torch.equal(out[~mask.expand_as(x)], x[~mask.expand_as(x)])
    # the file's buffers play no part in it: other buffers in the file, the same chain
    ckpt = official_checkpoint(fixture)
    ckpt.update(schedule_buffers("linear", 10, 1e-3, 0.05))
    other = PaletteDiffusion.from_official(ckpt, image_size=16, attention_head_dim=8, sample_schedule=schedule).eval()
    with torch.no_grad():
        again = other.reconstruct(x, mask, generator=torch.Generator().manual_seed(int(test_phase["chain_seed"])))
    assert torch.equal(again, out)
    net.configure_sampling(schedule="checkpoint", steps=8)  # over the training buffers instead: another chain
    with torch.no_grad():
        trained = net.reconstruct(x, mask, generator=torch.Generator().manual_seed(int(test_phase["chain_seed"])))
    assert (trained - out).abs().max() > 0.1


def test_unlearning_and_encode_keep_the_training_gammas(fixture, test_phase):
    """encode, output, the membership losses and training read the file's (training) buffers whatever the
    sampling schedule: the official unlearning runs in the train phase."""
    ckpt = official_checkpoint(fixture)
    x, mask = fixture["x"], fixture["mask"].bool()
    nets = [PaletteDiffusion.from_official(ckpt, image_size=16, attention_head_dim=8, sample_schedule=s).eval()
            for s in ("checkpoint", _test_schedule(test_phase), None)]
    with torch.no_grad():
        ref = nets[0]
        level = ref.noise_levels(None, 2, x.device)
        assert torch.equal(level, ckpt["gammas"][ref.encode_timestep].expand(2))
        for net in nets[1:]:
            assert torch.equal(net.noise_levels(None, 2, x.device), level)
            assert torch.equal(net.encode(x, mask), ref.encode(x, mask))
            assert torch.equal(net.output(x, mask), ref.output(x, mask))
            assert torch.equal(net.sample_losses(x, mask), ref.sample_losses(x, mask))
            losses = [n.training_loss(x, mask, generator=torch.Generator().manual_seed(0)) for n in (ref, net)]
            assert torch.equal(*losses)


def test_metadata_names_the_schedule_the_buffers_carry(model):
    assert model.official_meta["noise_schedule"] == {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.2,
                                                     "train_timesteps": 10}
    assert model.official_meta["sampling_schedule"] == TEST_SCHEDULE
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
    (lambda sd: sd.__setitem__("denoise_fn.out.2.weight", torch.zeros(3, 16, 3, 3)),
     r"denoise_fn.out.2.weight \[3, 16, 3, 3\] \(expected \[3, 32, 3, 3\]\)"),
    (lambda sd: sd.__setitem__("denoise_fn.input_blocks.1.1.qkv.weight", torch.zeros(96, 32, 1)), "attention inside"),
    (lambda sd: sd.clear(), "not a Palette checkpoint"),
    # a wrong shape anywhere: the checkpoint's key and both shapes, never a reshape error
    (lambda sd: sd.__setitem__("denoise_fn.middle_block.1.qkv.weight", torch.zeros(90, 32, 1)),
     r"'denoise_fn.middle_block.1.qkv.weight' has shape \[90, 32, 1\], expected \[96, 32, 1\]"),
    (lambda sd: sd.__setitem__("denoise_fn.middle_block.1.proj_out.weight", torch.zeros(32, 32)),
     r"'denoise_fn.middle_block.1.proj_out.weight' has shape \[32, 32\], expected \[32, 32, 1\]"),
    (lambda sd: sd.__setitem__("denoise_fn.middle_block.1.qkv.bias", torch.zeros(95)),
     r"'denoise_fn.middle_block.1.qkv.bias' has shape \[95\], expected \[96\]"),
    (lambda sd: sd.__setitem__("denoise_fn.cond_embed.0.weight", torch.zeros(128)),
     r"'denoise_fn.cond_embed.0.weight' has shape \[128\], expected 2 dimensions"),
    (lambda sd: sd.__setitem__("denoise_fn.input_blocks.2.0.emb_layers.1.weight", torch.zeros(64, 127)),
     r"denoise_fn.input_blocks.2.0.emb_layers.1.weight \[64, 127\] \(expected \[64, 128\]\)"),
    (lambda sd: sd.__setitem__("posterior_log_variance_clipped", torch.zeros(10, 1)),
     r"'posterior_log_variance_clipped' has shape \[10, 1\]"),
    # a whole block missing: refused (the last output block), or named key by key (an inner one)
    (lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("denoise_fn.output_blocks.5.")], "a block is missing"),
    (lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("denoise_fn.input_blocks.2.")],
     r"missing \['denoise_fn.input_blocks.2.0"),
])
def test_bad_checkpoints_are_refused_naming_the_problem(fixture, edit, message):
    sd = official_checkpoint(fixture)
    edit(sd)
    with pytest.raises(DataError, match=message):
        PaletteDiffusion.from_official(sd, image_size=16, attention_head_dim=8)


@pytest.mark.parametrize("stated, message", [
    ({"block_out_channels": [16, 32]}, r"block_out_channels is \[16, 32\], the checkpoint's tensors imply \[32, 32\]"),
    ({"layers_per_block": 1}, "layers_per_block is 1, the checkpoint's tensors imply 2"),
    ({"train_timesteps": 2000}, r"train_timesteps is 2000, the checkpoint's tensors imply 10 \(buffer 'gammas' \[10\]\)"),
    ({"beta_start": 1e-6, "beta_end": 0.01}, "beta_start is 1e-06, .* imply 0.0001 .*beta_end is 0.01, .* imply 0.2"),
    ({"norm_num_groups": 8}, "norm_num_groups is 8, the checkpoint's tensors imply 32"),
    ({"attention": False}, "attention is False, .*middle_block.1.qkv.weight"),
    ({"attention_head_dim": 5}, "32 channels, not divisible by params model.diffusion.arch.attention_head_dim = 5"),
])
def test_an_architecture_params_state_is_checked_against_the_tensors(fixture, tmp_path, stated, message):
    path = tmp_path / "16_Network.pth"
    torch.save(official_checkpoint(fixture), path)
    with pytest.raises(DataError, match=message):
        checkpoints.load_official("diffusion", path, {**ARCH, **stated}, image_size=16)
    agreeing = {"block_out_channels": [32, 32], "layers_per_block": 2, "train_timesteps": 10, "beta_start": 1e-4,
                "beta_end": 0.2, "norm_num_groups": 32, "attention": True}
    assert checkpoints.load_official("diffusion", path, {**ARCH, **agreeing}, image_size=16).arch()["layers_per_block"] == 2


def test_sampling_options_are_checked(fixture):
    net = PaletteDiffusion.from_official(official_checkpoint(fixture), image_size=16, attention_head_dim=8)
    net.configure_sampling(steps=3, sampler="ddim")
    assert net.arch()["sampler"] == "ddim" and net.sample_steps == 3
    with pytest.raises(ValueError, match=r"outside \[1, 2000\]"):  # the test schedule's levels
        net.configure_sampling(steps=2001)
    with pytest.raises(ValueError, match=r"outside \[1, 10\]"):  # the file's own 10 levels
        net.configure_sampling(schedule="checkpoint", steps=11)
    assert net.sample_schedule == TEST_SCHEDULE  # a refused setting changes nothing
    for bad, message in (("training", "expected 'checkpoint'"), ({**TEST_SCHEDULE, "beta_schedule": "cosine"}, "cosine"),
                         ({**TEST_SCHEDULE, "beta_start": 0.5, "beta_end": 0.1}, "beta_start 0.5"),
                         ({"timesteps": 5}, "exactly")):
        with pytest.raises(ValueError, match=message):
            net.configure_sampling(schedule=bad)
    pipeline = PaletteDiffusion(image_size=16, in_chans=1, block_out_channels=[8], norm_num_groups=4)
    with pytest.raises(ValueError, match="sampler 'ddpm' is not available with layout 'pipeline'"):
        pipeline.configure_sampling(sampler="ddpm")
    with pytest.raises(ValueError, match="sampling.schedule is an option of Palette's checkpoint"):
        pipeline.configure_sampling(schedule="checkpoint")
    assert "sample_schedule" not in pipeline.arch()  # the pipeline layout's sidecar is unchanged


def test_params_state_the_schedule_for_palettes_checkpoint_only():
    from helpers import base_params
    from pipeline_lib.params import load
    from pipeline_lib.runtime.errors import ParamsError

    params = base_params()
    params["model"]["diffusion"]["sampling"]["schedule"] = dict(TEST_SCHEDULE)
    with pytest.raises(ParamsError, match="'model.diffusion.sampling.schedule' applies to Palette's checkpoint only"):
        load.validate_params(params)
    params["model"]["diffusion"]["checkpoint"] = {"path": "/x/16_Network.pth", "sha256": None}
    params["model"]["diffusion"]["arch"] = {"attention_head_dim": 32}
    load.validate_params(params)
    params["model"]["diffusion"]["sampling"] = {"steps": 2000, "sampler": "ddpm", "schedule": "checkpoint"}
    load.validate_params(params)
    for bad, message in (({**TEST_SCHEDULE, "beta_schedule": "cosine"}, "model.diffusion.sampling.schedule"),
                         ({**TEST_SCHEDULE, "beta_start": 0.5}, "beta_start 0.5 is above beta_end"),
                         ({**TEST_SCHEDULE, "timesteps": 100}, "'model.diffusion.sampling.steps' = 2000 exceeds")):
        params["model"]["diffusion"]["sampling"]["schedule"] = bad
        with pytest.raises(ParamsError, match=message):
            load.validate_params(params)


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
