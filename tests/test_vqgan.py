"""The VQ-GAN/MAGE family on real Fashion-MNIST: tokenizer, masked token model, decoding, checkpoints, l2n."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import assert_state_dicts_equal, codec, fashion_subset, official_vit_block, train_l2n_briefly
from pipeline_lib.models import checkpoints
from pipeline_lib.data import masks
from pipeline_lib import models
from pipeline_lib.runtime.errors import DataError
from pipeline_lib.models import load_model, save_model
from pipeline_lib.models.vqgan import DECODER_PREFIXES, ENCODER_PREFIXES, MaskedTokenModel, VQTokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOK_ARCH = dict(codebook_size=32, code_dim=8, tokenizer_dim=16, downsample=4, beta=0.25)
TINY = dict(TOK_ARCH, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2,
            mlp_ratio=2.0, steps=4, temperature=4.5)


def real_images(n: int, offset: int = 0) -> torch.Tensor:
    images, _ = fashion_subset(n, train=True, offset=offset)
    return codec().encode(images)


def train_tokenizer(tok: VQTokenizer, x: torch.Tensor, steps: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    tok.train()
    for _ in range(steps):
        loss = tok.training_loss(x[torch.randint(len(x), (32,), generator=g)])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    tok.eval()


@pytest.fixture(scope="module")
def tokenizer() -> VQTokenizer:
    """A tokenizer briefly pre-trained on real images (shared, do not modify)."""
    torch.manual_seed(0)
    tok = VQTokenizer(32, 1, **TOK_ARCH)
    with torch.random.fork_rng():
        train_tokenizer(tok, real_images(256), steps=40)
    return tok


def tiny_model(tokenizer: VQTokenizer, seed: int = 0, **over) -> MaskedTokenModel:
    torch.manual_seed(seed)
    arch = {k: v for k, v in TINY.items() if k not in TOK_ARCH}
    arch.update(over)
    return MaskedTokenModel.from_tokenizer(tokenizer, **arch)


# --- tokenizer -----------------------------------------------------------------------------------------

def test_tokenizer_loss_falls_and_shapes(tmp_path):
    torch.manual_seed(1)
    tok = VQTokenizer(32, 1, **TOK_ARCH)
    probe = real_images(64, offset=512)
    with torch.no_grad():
        before = tok.training_loss(probe)
    train_tokenizer(tok, real_images(256), steps=30, seed=1)
    with torch.no_grad():
        after = tok.training_loss(probe)
    assert set(after) == {"loss", "recon", "codebook", "commit"}
    assert float(after["loss"]) < 0.7 * float(before["loss"]), f"{float(before['loss'])} -> {float(after['loss'])}"
    assert float(after["recon"]) < float(before["recon"])

    tokens = tok.tokenize(probe[:4])
    assert tokens.shape == (4, 64) and tokens.dtype == torch.long
    assert int(tokens.min()) >= 0 and int(tokens.max()) < 32
    with torch.no_grad():
        image = tok.detokenize(tokens)
        assert image.shape == (4, 1, 32, 32)
        assert torch.allclose(tok.detokenize_weights(F.one_hot(tokens, 32).float()), image, atol=1e-6)

    path = tmp_path / "tok" / "tokenizer.safetensors"
    tok.save(path, {"steps": 30})
    loaded = VQTokenizer.load(path)
    assert loaded.arch() == tok.arch()
    assert_state_dicts_equal(loaded.state_dict(), tok.state_dict())

    model = MaskedTokenModel(image_size=32, in_chans=1, **TINY)
    model.load_tokenizer(path)
    assert_state_dicts_equal(model.tokenizer.state_dict(), tok.state_dict())
    assert all(not p.requires_grad for p in model.tokenizer.parameters())
    other = MaskedTokenModel(image_size=32, in_chans=1, **dict(TINY, codebook_size=16))
    with pytest.raises(DataError, match="tokenizer"):
        other.load_tokenizer(path)


# --- masked token model --------------------------------------------------------------------------------

def test_token_model_loss_falls(tokenizer):
    model = tiny_model(tokenizer)
    x = real_images(512)
    assert len(tokenizer.tokenize(x[:64]).unique()) > 4  # the tokenizer uses more than a handful of codes
    probe_x = real_images(64, offset=512)
    probe_mask = masks.random_patch_mask(64, 32, 4, 0.6, torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = float(model.training_loss(probe_x, probe_mask))
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    tok_before = {k: v.clone() for k, v in model.tokenizer.state_dict().items()}
    model.train()
    assert not model.tokenizer.training
    for _ in range(12):
        loss = model.training_loss(x[torch.randint(len(x), (64,), generator=g)],
                                   masks.random_patch_mask(64, 32, 4, 0.6, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(model.training_loss(probe_x, probe_mask))
    assert after < 0.8 * before, f"held-out loss {before:.4f} -> {after:.4f}"
    assert_state_dicts_equal(model.tokenizer.state_dict(), tok_before)


def test_encode_sees_visible_tokens_only(tokenizer):
    model = tiny_model(tokenizer).eval()
    x = real_images(4)
    mask = masks.center_mask(4, 32, 16)
    with torch.no_grad():
        feats = model.encode(x, mask)
        assert feats.shape == (4, 65 * 32)
        assert torch.equal(feats, model.encode(masks.apply_mask(x, mask), mask))
        assert not torch.equal(feats, model.encode(x, masks.center_mask(4, 32, 8)))


def test_reconstruct_keeps_visible_pixels_and_fills_hidden_ones(tokenizer):
    model = tiny_model(tokenizer).eval()
    x = real_images(8)
    random_mask = masks.random_patch_mask(8, 32, 4, 0.75, torch.Generator().manual_seed(0))
    uneven = masks.center_mask(8, 32, 16)
    uneven[::2] = masks.center_mask(4, 32, 8)  # different hidden counts per sample are allowed
    for mask in (masks.center_mask(8, 32, 16), random_mask, uneven):
        out = model.reconstruct(x, mask, torch.Generator().manual_seed(1))
        assert out.shape == x.shape
        assert torch.equal(out[~mask], x[~mask])
        changed = (out[mask] != x[mask]).float().mean()
        assert changed > 0.99, f"only {float(changed):.3f} of hidden pixels changed"
        # deterministic for a generator, and for torch's global seed
        assert torch.equal(out, model.reconstruct(x, mask, torch.Generator().manual_seed(1)))
        torch.manual_seed(7)
        a = model.reconstruct(x, mask)
        torch.manual_seed(7)
        assert torch.equal(a, model.reconstruct(x, mask))
        # what is under the hole does not matter
        blank = model.reconstruct(masks.apply_mask(x, mask), mask, torch.Generator().manual_seed(1))
        assert torch.equal(blank, torch.where(mask, out, masks.apply_mask(x, mask)))
    # decoding keeps visible tokens and fills every hidden one with a code
    tmask = model.token_mask(random_mask)
    tokens = model.generate_tokens(x, random_mask, torch.Generator().manual_seed(2))
    given = tokenizer.tokenize(x)
    assert torch.equal(tokens[~tmask], given[~tmask])
    assert int(tokens.min()) >= 0 and int(tokens.max()) < 32


def test_greedy_one_step_decoding_equals_output(tokenizer):
    model = tiny_model(tokenizer, steps=1, temperature=0.0).eval()
    x = real_images(4)
    mask = masks.center_mask(4, 32, 16)
    with torch.no_grad():
        out = model.output(x, mask)
        assert torch.allclose(model.reconstruct(x, mask), torch.where(mask, out, x), atol=1e-6)
    # output is differentiable (straight-through) for output-space baselines
    model.output(x, mask).pow(2).mean().backward()
    assert model.mlm_layer.fc.weight.grad is not None and model.mlm_layer.fc.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.tokenizer.parameters())


# --- checkpoints --------------------------------------------------------------------------------------

def test_vqgan_is_a_registered_family():
    assert models.FAMILIES["vqgan"] is MaskedTokenModel


def test_save_load_round_trip(tmp_path, tokenizer):
    model = tiny_model(tokenizer, seed=3)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.01)
    path = tmp_path / "m" / "model.safetensors"
    save_model(model, path, {"note": "round trip"})
    loaded = load_model(path)
    assert type(loaded) is MaskedTokenModel and loaded.arch() == model.arch()
    assert loaded.arch() == MaskedTokenModel(image_size=32, in_chans=1, **model.arch()).arch()
    assert_state_dicts_equal(model.state_dict(), loaded.state_dict())
    assert any(k.startswith("tokenizer.") for k in loaded.state_dict())
    assert all(not p.requires_grad for p in loaded.tokenizer.parameters())
    x, mask = real_images(4), masks.random_patch_mask(4, 32, 4, 0.5, torch.Generator().manual_seed(9))
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(model.encode(x, mask), loaded.encode(x, mask))
        assert torch.equal(model.reconstruct(x, mask, torch.Generator().manual_seed(0)),
                           loaded.reconstruct(x, mask, torch.Generator().manual_seed(0)))


def official_mage_state_dict(embed_dim: int = 32, depth: int = 2, decoder_embed_dim: int = 32, decoder_depth: int = 1,
                             codebook_size: int = 32, grid: int = 8, mlp_ratio: float = 2.0,
                             seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the key names and shapes of MAGE's MaskedGenerativeEncoderViT (models_mage.py).

    Written from the official definition: BertEmbeddings token_emb (vocab K + 1000 + 1, positions L + 1,
    position_ids buffer), timm-style blocks with qkv bias, MlmLayer (fc, ln, bias), plus the unused
    patch_embed / cls_token / pos_embed / mask_token / decoder_pos_embed / decoder_pred. No vqgan.* tokenizer:
    with one, MaskGIT's VQGAN is loaded from it (tests/test_official_mage.py).
    """
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    def block(prefix: str, dim: int) -> dict[str, torch.Tensor]:
        return official_vit_block(prefix, dim, mlp_ratio, r)

    vocab, n = codebook_size + 1000 + 1, grid * grid + 1
    sd = {
        "token_emb.word_embeddings.weight": r(vocab, embed_dim),
        "token_emb.position_embeddings.weight": r(n, embed_dim),
        "token_emb.LayerNorm.weight": r(embed_dim), "token_emb.LayerNorm.bias": r(embed_dim),
        "token_emb.position_ids": torch.arange(n).unsqueeze(0),
        "patch_embed.proj.weight": r(embed_dim, 3, 4, 4), "patch_embed.proj.bias": r(embed_dim),
        "cls_token": r(1, 1, embed_dim), "pos_embed": r(1, n, embed_dim),
    }
    for i in range(depth):
        sd.update(block(f"blocks.{i}", embed_dim))
    sd.update({
        "norm.weight": r(embed_dim), "norm.bias": r(embed_dim),
        "decoder_embed.weight": r(decoder_embed_dim, embed_dim), "decoder_embed.bias": r(decoder_embed_dim),
        "mask_token": r(1, 1, decoder_embed_dim),
        "decoder_pos_embed": r(1, n, decoder_embed_dim), "decoder_pos_embed_learned": r(1, n, decoder_embed_dim),
    })
    for i in range(decoder_depth):
        sd.update(block(f"decoder_blocks.{i}", decoder_embed_dim))
    sd.update({
        "decoder_norm.weight": r(decoder_embed_dim), "decoder_norm.bias": r(decoder_embed_dim),
        "decoder_pred.weight": r(48, decoder_embed_dim), "decoder_pred.bias": r(48),
        "mlm_layer.fc.weight": r(embed_dim, decoder_embed_dim), "mlm_layer.fc.bias": r(embed_dim),
        "mlm_layer.ln.weight": r(embed_dim), "mlm_layer.ln.bias": r(embed_dim),
        "mlm_layer.bias": r(1, 1, vocab),
    })
    return sd


IGNORED = ("vqgan.", "patch_embed.", "cls_token", "pos_embed", "mask_token", "decoder_pos_embed", "decoder_pred.",
           "token_emb.position_ids")


def test_from_official_maps_mage_names(tmp_path, tokenizer):
    sd = official_mage_state_dict()
    path = tmp_path / "mage.pth"
    torch.save({"model": sd}, path)
    # no vqgan.* keys and no tokenizer given: refused, never a fresh or pipeline-trained tokenizer in its place
    with pytest.raises(DataError, match="no tokenizer .* set params model.vqgan.tokenizer.checkpoint"):
        checkpoints.load_official("vqgan", path, {"num_heads": 4, "decoder_num_heads": 2})
    # a tokenizer handed over explicitly (here the pipeline's own, 32 codes on an 8x8 grid)
    model = checkpoints.load_official("vqgan", path, {"num_heads": 4, "decoder_num_heads": 2}, tokenizer=tokenizer)
    assert isinstance(model, MaskedTokenModel) and (model.image_size, model.in_chans) == (32, 1)
    arch = model.arch()
    assert (arch["codebook_size"], arch["embed_dim"], arch["depth"], arch["decoder_depth"], arch["num_heads"],
            arch["num_class_tokens"], arch["mlp_ratio"]) == (32, 32, 2, 1, 4, 1000, 2.0)
    assert model.fake_class_label == 32 + 1100 - 1024 and model.mask_token_label == 32 + 1000
    own = model.state_dict()
    mapped = [k for k in sd if not (k in IGNORED or k.startswith(tuple(p for p in IGNORED if p.endswith("."))))]
    assert len(mapped) == len([k for k in own if not k.startswith("tokenizer.")]) - 1
    for k in mapped:
        assert torch.equal(own[k], sd[k]), k
    assert torch.equal(own["mlm_layer.word_embeddings"], sd["token_emb.word_embeddings.weight"])

    # the tokenizer's weights are kept; the model runs end to end
    assert_state_dicts_equal(model.tokenizer.state_dict(), tokenizer.state_dict())
    out = model.eval().reconstruct(real_images(2), masks.center_mask(2, 32, 16), torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all()
    # encoder / decoder split follows MAGE's
    names = {n for n, _ in model.named_parameters() if not n.startswith("tokenizer.")}
    assert names == {n for n in names if n.startswith(ENCODER_PREFIXES + DECODER_PREFIXES)}


@pytest.mark.parametrize("edit", ["drop:blocks.1.attn.proj.bias", "drop:mlm_layer.bias",
                                  "drop:token_emb.LayerNorm.weight", "extra:head.weight",
                                  "shape:decoder_norm.weight", "grid", "vocab"])
def test_from_official_rejects_mismatches(edit, tokenizer):
    sd = official_mage_state_dict(seed=1)
    kind, _, key = edit.partition(":")
    kwargs = {"tokenizer": tokenizer}
    if kind == "drop":
        del sd[key]
    elif kind == "extra":
        sd[key] = torch.zeros(10, 32)
    elif kind == "shape":
        sd[key] = torch.zeros(7)
    elif kind == "grid":  # 16x16 token positions, tokenizer has an 8x8 grid
        sd = official_mage_state_dict(grid=16, seed=1)
        key = "token_emb.position_embeddings.weight"
    elif kind == "vocab":  # a vocabulary too small for the codebook
        kwargs["codebook_size"] = 2000
    with pytest.raises(DataError) as info:
        MaskedTokenModel.from_official({"model": sd}, num_heads=4, decoder_num_heads=2, **kwargs)
    if key:
        assert key in str(info.value)


# --- encoder-only l2n -----------------------------------------------------------------------------------

def test_l2n_trains_the_encoder_only(tokenizer):
    model = tiny_model(tokenizer, seed=5)
    objective, before, teacher_before, after = train_l2n_briefly(model)
    encoder_keys = [k for k in after if k.startswith(ENCODER_PREFIXES)]
    frozen_keys = [k for k in after if not k.startswith(ENCODER_PREFIXES)]
    assert encoder_keys and any(k.startswith("tokenizer.") for k in frozen_keys)
    assert any(k.startswith("mlm_layer.") for k in frozen_keys)
    for k in frozen_keys:
        assert torch.equal(after[k], before[k]), f"decoder/tokenizer tensor {k} changed"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(encoder_keys)
    for k in encoder_keys:
        assert not torch.equal(after[k], before[k]), f"encoder tensor {k} did not change"
    assert_state_dicts_equal(objective.teacher.state_dict(), teacher_before)
