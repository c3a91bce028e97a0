"""MAGE's official formats: MaskGIT's VQGAN tokenizer, the transformer with its tied output layer, and the
paper's inpainting procedure, output-exact against the official code (fixtures: see their README)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline_lib.models import checkpoints
from pipeline_lib.runtime.errors import DataError
from pipeline_lib.models import MaskedTokenModel, load_model, save_model
from pipeline_lib.models import mage_inpaint
from pipeline_lib.models.maskgit_vqgan import MaskGITVQGAN

FIXTURES = Path(__file__).parent / "fixtures" / "official"
HEADS = {"num_heads": 4, "decoder_num_heads": 4}


def _ckpt(tensors: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k[len("ckpt."):]: v.float() for k, v in tensors.items() if k.startswith("ckpt.")}


@pytest.fixture(scope="module")
def vq():
    return load_file(str(FIXTURES / "maskgit_vqgan.safetensors"))


@pytest.fixture(scope="module")
def mage():
    return load_file(str(FIXTURES / "mage_vit.safetensors"))


@pytest.fixture(scope="module")
def mage_state(vq, mage):
    """The full MAGE checkpoint as published: transformer keys plus the tokenizer under `vqgan.`."""
    return {**_ckpt(mage), **_ckpt(vq, "vqgan.")}


@pytest.fixture(scope="module")
def model(mage_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("mage") / "mage-vitb-1600.pth"
    torch.save({"model": mage_state}, path)
    return checkpoints.load_official("vqgan", path, HEADS).eval()


# --- tokenizer ---------------------------------------------------------------------------------------

def test_tokenizer_file_alone_encodes_and_decodes_as_the_official_code(vq):
    tok = MaskGITVQGAN.from_official({"state_dict": _ckpt(vq)}, image_size=16)
    assert tok.arch() == {"codebook_size": 64, "code_dim": 16, "tokenizer_dim": 32, "ch_mult": [1, 2],
                          "num_res_blocks": 2}
    with torch.no_grad():
        assert torch.equal(tok.tokenize(vq["x"]), vq["indices"])
        torch.testing.assert_close(tok.detokenize(vq["indices"]), vq["decoded"], atol=5e-5, rtol=1e-5)


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("quantize.embedding.weight"), "quantize.embedding.weight"),
    (lambda sd: sd.pop("decoder.up.1.upsample.conv.weight"), "decoder.up.1.upsample.conv.weight"),
    (lambda sd: sd.__setitem__("encoder.conv_out.bias", torch.zeros(5)), "encoder.conv_out.bias"),
    (lambda sd: sd.__setitem__("loss.discriminator.weight", torch.zeros(1)), "loss.discriminator.weight"),
])
def test_tokenizer_mismatches_are_named(vq, edit, message):
    sd = _ckpt(vq)
    edit(sd)
    with pytest.raises(DataError, match=message):
        MaskGITVQGAN.from_official(sd)


# --- transformer -------------------------------------------------------------------------------------

def test_full_checkpoint_reproduces_official_token_logits(model, mage):
    assert isinstance(model.tokenizer, MaskGITVQGAN) and model.image_size == 32 and model.in_chans == 3
    assert model.fake_class_label == 64 + 76 and model.mask_token_label == 64 + 1000
    with torch.no_grad():
        logits = model.logits(model.tokenizer.tokenize(mage["x"]), mage["token_mask"])
    torch.testing.assert_close(logits, mage["logits"], atol=5e-5, rtol=1e-5)


def test_output_layer_is_tied_to_the_encoder_word_table(model, mage):
    assert "mlm_layer.word_embeddings" not in model.state_dict()
    net = copy.deepcopy(model)
    tokens = model.tokenizer.tokenize(mage["x"])
    with torch.no_grad():
        before = net.logits(tokens, mage["token_mask"])
        net.token_emb.word_embeddings.weight[:64].mul_(2.0)  # an "encoder-only" change...
        after = net.logits(tokens, mage["token_mask"])
    assert not torch.allclose(before, after)  # ...moves the decoder's logits, as in MAGE


def test_untied_option_copies_the_table(mage_state, mage):
    net = MaskedTokenModel.from_official({"model": mage_state}, tied_output=False, **HEADS).eval()
    assert torch.equal(net.mlm_layer.word_embeddings, net.token_emb.word_embeddings.weight)
    with torch.no_grad():
        logits = net.logits(net.tokenizer.tokenize(mage["x"]), mage["token_mask"])
    torch.testing.assert_close(logits, mage["logits"], atol=5e-5, rtol=1e-5)


def test_round_trip_keeps_tokenizer_tie_and_decoding(model, mage, tmp_path):
    model.configure_sampling(decoding="mage", steps=20, temperature=6.0, paste_margin=2)
    try:
        save_model(model, tmp_path / "m.safetensors")
        loaded = load_model(tmp_path / "m.safetensors").eval()
    finally:
        model.configure_sampling(decoding="pipeline", steps=8, temperature=4.5, paste_margin=14)
    assert isinstance(loaded.tokenizer, MaskGITVQGAN) and loaded.decoding == "mage" and loaded.paste_margin == 2
    with torch.no_grad():
        tokens = loaded.tokenizer.tokenize(mage["x"])
        assert torch.equal(loaded.logits(tokens, mage["token_mask"]), model.logits(tokens, mage["token_mask"]))


def test_transformer_and_tokenizer_mismatches_are_named(mage_state):
    sd = dict(mage_state)
    sd["decoder_embed.weight"] = torch.zeros(32, 8)
    with pytest.raises(DataError, match="decoder_embed.weight"):
        MaskedTokenModel.from_official({"model": sd}, **HEADS)
    sd = dict(mage_state)
    del sd["vqgan.decoder.conv_out.bias"]
    with pytest.raises(DataError, match=r"missing \['vqgan.decoder.conv_out.bias'\]"):  # the file's own key
        MaskedTokenModel.from_official({"model": sd}, **HEADS)


def test_a_checkpoint_without_its_tokenizer_is_refused_naming_the_params_key(mage, vq, tmp_path):
    """No vqgan.* keys and no tokenizer file: never a random or pipeline-trained tokenizer in MaskGIT's place."""
    transformer = _ckpt(mage)
    path = tmp_path / "mage-vitb-1600.pth"
    torch.save({"model": transformer}, path)
    with pytest.raises(DataError, match=r"no tokenizer \(no 'vqgan.\*' keys\).*model.vqgan.tokenizer.checkpoint"):
        checkpoints.load_official("vqgan", path, HEADS)
    # with the tokenizer file (what the pretrain stage passes for model.vqgan.tokenizer.checkpoint): MAGE itself
    tok = MaskGITVQGAN.from_official({"state_dict": _ckpt(vq)}, grid=16)
    net = checkpoints.load_official("vqgan", path, HEADS, tokenizer=tok).eval()
    with torch.no_grad():
        logits = net.logits(net.tokenizer.tokenize(mage["x"]), mage["token_mask"])
    torch.testing.assert_close(logits, mage["logits"], atol=5e-5, rtol=1e-5)


def test_the_pretrain_stage_refuses_a_mage_checkpoint_without_tokenizer(mage, tmp_path):
    import hashlib

    from helpers import DEBIAN_DIR, base_params
    from pipeline_lib import stages
    from pipeline_lib.params import load
    import pipeline_lib.stages.models  # noqa: F401

    path = tmp_path / "mage-vitb-1600.pth"
    torch.save({"model": _ckpt(mage)}, path)
    params = base_params()
    params["model"]["vqgan"]["arch"] = dict(HEADS)
    params["model"]["vqgan"]["checkpoint"] = {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    out = tmp_path / "m.safetensors"
    with pytest.raises(DataError, match="set params model.vqgan.tokenizer.checkpoint"):
        stages.models.pretrain(load.validate_params(params), "vqgan", str(DEBIAN_DIR), str(out))
    assert not out.exists()


def test_an_architecture_params_state_is_checked_against_the_tensors(mage_state):
    """The fixture: width 32, 2 blocks, decoder 32 wide and 1 deep, MLP ratio 4."""
    stated = {"embed_dim": 32, "depth": 2, "decoder_embed_dim": 32, "decoder_depth": 1, "mlp_ratio": 4.0}
    assert MaskedTokenModel.from_official({"model": mage_state}, **HEADS, **stated).arch()["depth"] == 2
    for key, value, implied in (("decoder_depth", 8, "1"), ("embed_dim", 768, "32"), ("decoder_embed_dim", 16, "32"),
                                ("mlp_ratio", 2.0, "4.0"), ("depth", 12, "2")):
        with pytest.raises(DataError, match=f"params model.vqgan.arch.{key} is {value}, the checkpoint's tensors "
                                            f"imply {implied}"):
            MaskedTokenModel.from_official({"model": mage_state}, **HEADS, **{**stated, key: value})
    shallow = {k: v for k, v in mage_state.items() if not k.startswith("blocks.1.")}  # a whole block missing
    with pytest.raises(DataError, match=r"model.vqgan.arch.depth is 2, the checkpoint's tensors imply 1 \(blocks.0 to "
                                        r"blocks.0\)"):
        MaskedTokenModel.from_official({"model": shallow}, **HEADS, **stated)
    for key, heads in (("num_heads", 5), ("decoder_num_heads", 3)):
        with pytest.raises(DataError, match=f"params model.vqgan.arch.{key} = {heads} does not divide the "
                                            "checkpoint's width 32"):
            MaskedTokenModel.from_official({"model": mage_state}, **{**HEADS, key: heads})


@pytest.mark.parametrize("key, bad, message", [
    # the vocabulary and the token grid come from the tokenizer (64 codes, 16x16 tokens), not from these tables
    ("token_emb.word_embeddings.weight", torch.zeros(1066, 32),
     r"'token_emb.word_embeddings.weight' has shape \[1066, 32\], expected \[1065, 32\]"),
    ("token_emb.word_embeddings.weight", torch.zeros(1065, 16),
     r"'token_emb.word_embeddings.weight' has shape \[1065, 16\], expected \[1065, 32\]"),
    ("token_emb.position_embeddings.weight", torch.zeros(226, 32),
     r"'token_emb.position_embeddings.weight' \[226, 32\] and 'decoder_pos_embed_learned' \[1, 257, 32\] disagree"),
    ("token_emb.position_embeddings.weight", torch.zeros(258, 32), r"disagree on the token positions \(258 vs 257\)"),
    ("blocks.1.attn.qkv.weight", torch.zeros(96, 31), r"blocks.1.attn.qkv.weight \[96, 31\] \(expected \[96, 32\]\)"),
    ("decoder_blocks.0.attn.qkv.bias", torch.zeros(95), r"decoder_blocks.0.attn.qkv.bias \[95\] \(expected \[96\]\)"),
    ("mlm_layer.bias", torch.zeros(1, 1, 1064), r"mlm_layer.bias \[1, 1, 1064\] \(expected \[1, 1, 1065\]\)"),
    ("decoder_pos_embed_learned", torch.zeros(1, 256, 32), r"disagree on the token positions \(257 vs 256\)"),
    ("decoder_pos_embed_learned", torch.zeros(1, 257, 31),
     r"decoder_pos_embed_learned \[1, 257, 31\] \(expected \[1, 257, 32\]\)"),
    ("norm.weight", torch.zeros(32, 1), r"'norm.weight' has shape \[32, 1\], expected 1 dimensions"),
    ("vqgan.quantize.embedding.weight", torch.zeros(64), r"'vqgan.quantize.embedding.weight' has shape \[64\]"),
    ("vqgan.encoder.conv_out.weight", torch.zeros(16, 63, 1, 1),
     r"vqgan.encoder.conv_out.weight \[16, 63, 1, 1\] \(expected \[16, 64, 1, 1\]\)"),
])
def test_a_wrong_shape_is_named_with_both_shapes(mage_state, key, bad, message):
    sd = dict(mage_state)
    sd[key] = bad
    for tied in (None, False):
        with pytest.raises(DataError, match=message):
            MaskedTokenModel.from_official({"model": sd}, tied_output=tied, **HEADS)


def test_position_tables_must_describe_a_square_token_grid(mage_state, vq):
    sd = {**mage_state, "token_emb.position_embeddings.weight": torch.zeros(258, 32),
          "decoder_pos_embed_learned": torch.zeros(1, 258, 32)}
    with pytest.raises(DataError, match=r"has shape \[258, 32\], expected \[L \+ 1, 32\] with L a square number"):
        MaskedTokenModel.from_official({"model": sd}, **HEADS)
    tok = MaskGITVQGAN.from_official({"state_dict": _ckpt(vq)}, grid=8)  # a given tokenizer's grid decides
    with pytest.raises(DataError, match=r"'token_emb.position_embeddings.weight' has shape \[257, 32\], expected "
                                        r"\[65, 32\]"):
        MaskedTokenModel.from_official({"model": mage_state}, tokenizer=tok, **HEADS)


# --- inpainting as the paper ran it ----------------------------------------------------------------------

def test_inpainting_reproduces_the_official_testpaint_run(model, mage):
    hole = mage["paint_hole"]
    assert torch.equal(mage_inpaint.token_mask(hole, 2, 1), mage["paint_token_mask"])
    settings = {**mage_inpaint.OFFICIAL, "paste_margin": 2}  # 14 px at 256 px; the fixture is 32 px
    with torch.no_grad():
        out = mage_inpaint.inpaint(model, mage["paint_image"], hole, settings, seed=0)
    pixels = (out[0].permute(1, 2, 0) * 255).clamp(0, 255).int()  # what testpaint.py writes
    assert (pixels - mage["paint_out"]).abs().max() <= 1


def test_token_ring_follows_the_official_box_formula():
    hole = torch.zeros(1, 1, 256, 256, dtype=torch.bool)
    hole[..., 64:192, 100:150] = True  # rows end on a token edge, columns inside a token
    tm = mage_inpaint.token_mask(hole, 16, 1).view(16, 16)
    rows, cols = tm.any(dim=1).nonzero().flatten(), tm.any(dim=0).nonzero().flatten()
    assert (rows.min(), rows.max()) == (64 // 16 - 1, 192 // 16)  # [a//s − 1, b//s + 1)
    assert (cols.min(), cols.max()) == (100 // 16 - 1, 150 // 16)
    assert tm.sum() == len(rows) * len(cols)


def test_one_l2n_step_moves_the_tied_logits(model, mage):
    from pipeline_lib.methods import build_method

    net = copy.deepcopy(model)
    teacher = copy.deepcopy(model).requires_grad_(False)
    method = build_method("l2n", net, teacher, alpha=0.25, norm="l2")
    params = method.trainable_parameters()
    x = mage["x"]
    mask = torch.zeros(2, 1, 32, 32, dtype=torch.bool)
    mask[..., 8:24, 8:24] = True
    batch = {"x_r": x, "mask_r": mask, "x_f": x.flip(0), "mask_f": mask, "noise": torch.rand_like(x)}
    method.loss(batch)["loss"].backward()
    torch.optim.SGD(params, lr=1.0).step()
    decoder = [n for n, p in net.named_parameters() if n.startswith(("decoder_", "mlm_layer"))]
    assert decoder and all(torch.equal(net.state_dict()[n], model.state_dict()[n]) for n in decoder)
    hidden = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(0))  # the same decoder features...
    with torch.no_grad():
        old = model.mlm_layer(hidden, model.token_emb.word_embeddings.weight)
        new = net.mlm_layer(hidden, net.token_emb.word_embeddings.weight)
    assert not torch.allclose(old, new)  # ...score differently: the output layer reads the trained word table


def test_fill_must_match_the_channels():
    with pytest.raises(ValueError, match="sampling.fill has 3 value"):
        mage_inpaint.filled(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4, dtype=torch.bool), [0.5, 0.5, 0.5])
