"""VQ-GAN / MAGE (Li et al. 2023) as an I2I model: a frozen VQ tokenizer and a masked token transformer.

Two parts:

* `VQTokenizer` — a small VQ autoencoder: a patch-local conv encoder (one token per `downsample` x
  `downsample` patch, 32 -> 8 by default; unlike VQGAN's wide receptive field, a token sees only its own
  patch, so hidden pixels cannot leak into visible tokens — MAGE's official I2I code instead tokenizes the
  full image and masks an extra ring of tokens around the hole), a codebook of K entries with l2-normalised
  codes (as ViT-VQGAN; avoids collapse of a tiny codebook), straight-through estimator, the codebook and
  commitment losses of VQ-VAE (no EMA), and a conv decoder back to pixels. It is pre-trained on its own
  (`training_loss`, `save`/`load`) and then frozen. Its objective is reconstruction MSE + VQ losses only:
  the VQ-GAN adversarial and perceptual terms are omitted (no discriminator, no LPIPS network: too costly on
  a CPU and not needed at 32 px).
* `MaskedTokenModel` — MAGE's transformer on the tokens, with MAGE's parameter names:
  encoder = `token_emb` (word + position embeddings + LayerNorm, as MAGE's `BertEmbeddings`), `blocks`,
  `norm`; decoder = `decoder_embed`, `decoder_pos_embed_learned`, `decoder_blocks`, `decoder_norm`,
  `mlm_layer`. The sequence is MAGE's: a class token (MAGE's `fake_class_label`) followed by the L image
  tokens; hidden tokens get the [MASK] id. Vocabulary = K codes + `num_class_tokens` class ids + 1 mask id
  (MAGE: 1024 + 1000 + 1). The tokenizer is a submodule (`tokenizer.*` in the state dict, so `save_model`
  keeps it) with requires_grad False, outside `encoder_parameters()`; the constructor takes its arch keywords
  (codebook_size, code_dim, tokenizer_dim, downsample, beta) and pre-trained weights come in through
  `from_tokenizer` or `load_tokenizer`.

Weight sharing. MAGE's `MlmLayer` computes logits against `token_emb.word_embeddings.weight` (detached), so
"encoder-only" tuning of the token embedding also changes what the decoder predicts (REFERENCE.md, official
code facts). ``tied_output: true`` does exactly that (the default when loading MAGE's published checkpoint,
whose output layer has no table of its own); otherwise `mlm_layer.word_embeddings` is the decoder's own copy
and encoder-only training (l2n) leaves every decoder tensor bitwise unchanged (the pipeline's default;
`from_official(..., tied_output=False)` fills the copy from the checkpoint, so right after loading the
function equals MAGE's).

Official tokenizer. ``tokenizer_kind: maskgit_vqgan`` puts MaskGIT's VQGAN (`maskgit_vqgan`, MAGE's
`vqgan_jax_strongaug.ckpt`) in place of the small tokenizer; `from_official` loads it from a MAGE checkpoint's
``vqgan.*`` keys. ``decoding: mage`` makes `reconstruct` run paper 1's inpainting procedure (`mage_inpaint`).

Simplified against MAGE: no token dropping in the encoder (every position is kept; hidden ones carry the
[MASK] id, which allows a different hidden count per sample), no dropout, no label smoothing, plain
cross-entropy over the K codes on hidden tokens, decoder fills hidden positions with the class-token output
(MAGE's `pad_with_cls_token`). The decoding loop follows MAGE's `gen_image` (cosine schedule, Gumbel-noised
confidence with temperature annealed by (1 - step/steps)) restricted to the hidden tokens.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime.errors import DataError
from .base import (I2IModel, check_heads_divide, check_stated_arch, load_state_exactly, official_shape, read_weights,
                   save_weights)
from . import mage_inpaint
from .maskgit_vqgan import MaskGITVQGAN
from .vit import init_linear_and_norm, vit_block

#: head counts of the published MAGE models (not recoverable from weights)
OFFICIAL_HEADS = {768: 12, 1024: 16}
#: MAGE's vocabulary: K codes, 1000 ImageNet class ids, 1 mask id; its fake class label is K + 1100 - 1024
OFFICIAL_CLASS_TOKENS, OFFICIAL_FAKE_CLASS_OFFSET = 1000, 76

ENCODER_PREFIXES = ("token_emb.", "blocks.", "norm.")
DECODER_PREFIXES = ("decoder_embed.", "decoder_pos_embed_learned", "decoder_blocks.", "decoder_norm.", "mlm_layer.")
TOKENIZER_KEYS = ("codebook_size", "code_dim", "tokenizer_dim", "downsample", "beta")
#: tokenizer kinds: the pipeline's small patch-local tokenizer, MaskGIT's VQGAN (MAGE's published one)
TOKENIZER_KINDS = ("patch", "maskgit_vqgan")
MASKGIT_KEYS = ("codebook_size", "code_dim", "tokenizer_dim", "ch_mult", "num_res_blocks")
#: keys of an official MAGE checkpoint that have no counterpart in the transformer (ignored by `from_official`;
#: vqgan.* is read separately, as MaskGIT's VQGAN)
OFFICIAL_UNUSED = ("patch_embed.", "cls_token", "pos_embed", "mask_token", "decoder_pos_embed", "decoder_pred.",
                   "token_emb.position_ids", "vqgan.")


# --- tokenizer -----------------------------------------------------------------------------------------

class VQTokenizer(nn.Module):
    """Conv VQ autoencoder: image [B, C, H, W] <-> tokens [B, (H/downsample)^2] over a K-entry codebook."""

    def __init__(self, image_size: int = 32, in_chans: int = 1, codebook_size: int = 256, code_dim: int = 32,
                 tokenizer_dim: int = 64, downsample: int = 4, beta: float = 0.25):
        super().__init__()
        if downsample < 1 or image_size % downsample:
            raise ValueError(f"downsample {downsample} must divide image size {image_size}")
        self.image_size, self.in_chans = image_size, in_chans
        self.codebook_size, self.downsample, self.beta = codebook_size, downsample, beta
        self.grid = image_size // downsample
        self._arch = dict(codebook_size=codebook_size, code_dim=code_dim, tokenizer_dim=tokenizer_dim,
                          downsample=downsample, beta=beta)
        d = tokenizer_dim
        # patch-local encoder: a token depends on its own patch only, so hidden pixels never leak into the
        # tokens of visible patches (and what lies under a hole does not matter)
        self.encoder = nn.Sequential(nn.Conv2d(in_chans, d, downsample, stride=downsample), nn.GELU(),
                                     nn.Conv2d(d, d, 1), nn.GELU(), nn.Conv2d(d, code_dim, 1))
        self.codebook = nn.Embedding(codebook_size, code_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        self.decoder = nn.Sequential(nn.Conv2d(code_dim, d, 3, padding=1), nn.GELU(),
                                     nn.ConvTranspose2d(d, d, downsample, stride=downsample), nn.GELU(),
                                     nn.Conv2d(d, d, 3, padding=1), nn.GELU(), nn.Conv2d(d, in_chans, 3, padding=1))

    def arch(self) -> dict[str, Any]:
        return dict(self._arch)

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous codes z_e as [B, L, code_dim] (row-major over the token grid), l2-normalised."""
        return F.normalize(self.encoder(x).flatten(2).transpose(1, 2), dim=-1)

    def codes(self) -> torch.Tensor:
        """The codebook vectors, l2-normalised like z_e (ViT-VQGAN's normalised codes: no collapse, bounded losses)."""
        return F.normalize(self.codebook.weight, dim=-1)

    def _nearest(self, z: torch.Tensor) -> torch.Tensor:
        e = self.codes()
        dist = z.pow(2).sum(-1, keepdim=True) - 2 * z @ e.t() + e.pow(2).sum(-1)
        return dist.argmin(dim=-1)

    def _decode(self, zq: torch.Tensor) -> torch.Tensor:
        b, _, c = zq.shape
        return self.decoder(zq.transpose(1, 2).reshape(b, c, self.grid, self.grid))

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """LongTensor [B, L] of codebook indices (no gradient)."""
        with torch.no_grad():
            return self._nearest(self._encode(x))

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._decode(self.codes()[tokens])

    def detokenize_weights(self, weights: torch.Tensor) -> torch.Tensor:
        """Decode [B, L, K] weights over the codebook (one-hot rows reproduce `detokenize`); differentiable."""
        return self._decode(weights.to(self.codebook.weight.dtype) @ self.codes())

    def training_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """VQ-VAE objective: MSE(x, x̂) + ‖sg[z_e] − e‖² + β ‖z_e − sg[e]‖² (no adversarial term)."""
        z = self._encode(x)
        e = self.codes()[self._nearest(z.detach())]
        codebook = F.mse_loss(e, z.detach())
        commit = F.mse_loss(z, e.detach())
        zq = z + (e - z).detach()  # straight-through estimator
        recon = F.mse_loss(self._decode(zq), x)
        return {"loss": recon + codebook + self.beta * commit, "recon": recon, "codebook": codebook, "commit": commit}

    def save(self, path: str | Path, meta: dict[str, Any] | None = None) -> None:
        save_weights(self, path, {"kind": "vq_tokenizer", "image_size": self.image_size, "in_chans": self.in_chans,
                                  "arch": self.arch(), "meta": meta or {}})

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "VQTokenizer":
        state, sidecar = read_weights(path, map_location)
        if sidecar.get("kind") != "vq_tokenizer":
            raise DataError(f"{path} is not a VQ tokenizer (sidecar kind {sidecar.get('kind')!r})")
        tok = cls(image_size=sidecar["image_size"], in_chans=sidecar["in_chans"], **sidecar["arch"])
        tok.load_state_dict(state)
        return tok.to(map_location)


# --- MAGE transformer pieces (MAGE's names) ------------------------------------------------------------

class TokenEmbeddings(nn.Module):
    """MAGE's `BertEmbeddings` without dropout: word + learned position embedding, then LayerNorm."""

    def __init__(self, vocab_size: int, dim: int, max_positions: int):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, dim)
        self.position_embeddings = nn.Embedding(max_positions, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.normal_(self.word_embeddings.weight, std=0.02)
        nn.init.normal_(self.position_embeddings.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.word_embeddings(ids) + self.position_embeddings.weight[: ids.shape[1]])


class MlmLayer(nn.Module):
    """MAGE's `MlmLayer` (fc, GELU, ln, bias). Untied: its own output embedding. Tied (MAGE's published
    models): logits against the encoder's word table, passed in detached as MAGE does."""

    def __init__(self, feat_dim: int, word_dim: int, vocab_size: int, tied: bool = False):
        super().__init__()
        self.fc = nn.Linear(feat_dim, word_dim)
        self.ln = nn.LayerNorm(word_dim)
        self.bias = nn.Parameter(torch.zeros(1, 1, vocab_size))
        self.word_embeddings = None if tied else nn.Parameter(torch.randn(vocab_size, word_dim) * 0.02)

    def forward(self, x: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        table = self.word_embeddings if self.word_embeddings is not None else table.detach()
        return self.ln(F.gelu(self.fc(x))) @ table.t() + self.bias


def tokenizer_arch(tokenizer: VQTokenizer | MaskGITVQGAN) -> dict[str, Any]:
    """The MaskedTokenModel keywords that rebuild `tokenizer` inside the model."""
    if isinstance(tokenizer, MaskGITVQGAN):
        return {**tokenizer.arch(), "tokenizer_kind": "maskgit_vqgan", "downsample": tokenizer.downsample}
    return tokenizer.arch()


# --- the I2I model -------------------------------------------------------------------------------------

class MaskedTokenModel(I2IModel):
    """MAGE on a frozen `VQTokenizer`: hidden 4x4 patches -> [MASK] tokens, predicted by the transformer."""

    family = "vqgan"
    trainable_reconstruct = False  # iterative decoding samples tokens
    convolutional = True  # the VQ tokenizer's encoder and decoder (the transformer's weights are not 4-D)
    granularity_key = "downsample"
    encoder_prefixes = ENCODER_PREFIXES
    sampling_keys = {"steps": "steps", "temperature": "temperature", "decoding": "decoding",
                     "token_ring": "token_ring", "paste_margin": "paste_margin", "paste_blur": "paste_blur",
                     "fill": "fill"}
    DECODINGS = ("pipeline", "mage")
    pretrained_parts = ("tokenizer",)

    def __init__(self, image_size: int = 32, in_chans: int = 1, codebook_size: int = 256, code_dim: int = 32,
                 tokenizer_dim: int = 64, downsample: int = 4, beta: float = 0.25, embed_dim: int = 128,
                 depth: int = 4, num_heads: int = 4, decoder_embed_dim: int = 128, decoder_depth: int = 2,
                 decoder_num_heads: int = 4, mlp_ratio: float = 4.0, num_class_tokens: int = 1,
                 fake_class_offset: int = 0, steps: int = 8, temperature: float = 4.5,
                 tokenizer_kind: str = "patch", ch_mult: list[int] | None = None, num_res_blocks: int = 2,
                 tied_output: bool = False, decoding: str = "pipeline", token_ring: int = 1,
                 paste_margin: int = 14, paste_blur: float = 7.0, fill: list[float] | None = None):
        super().__init__()
        if decoding not in self.DECODINGS:
            raise ValueError(f"unknown decoding '{decoding}' (known: {', '.join(self.DECODINGS)})")
        if tokenizer_kind not in TOKENIZER_KINDS:
            raise ValueError(f"unknown tokenizer_kind '{tokenizer_kind}' (known: {', '.join(TOKENIZER_KINDS)})")
        if tokenizer_kind == "maskgit_vqgan":
            ch_mult = list(ch_mult or [1, 1, 2, 2, 4])
            if downsample != 2 ** (len(ch_mult) - 1):
                raise ValueError(f"downsample {downsample} does not match the MaskGIT VQGAN's ch_mult {ch_mult} "
                                 f"({2 ** (len(ch_mult) - 1)}x)")
        if not 0 <= fake_class_offset < num_class_tokens:
            raise ValueError(f"fake_class_offset {fake_class_offset} outside 0..{num_class_tokens - 1}")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.image_size, self.in_chans = image_size, in_chans
        self.mask_granularity = downsample
        self._arch = dict(codebook_size=codebook_size, code_dim=code_dim, tokenizer_dim=tokenizer_dim,
                          downsample=downsample, beta=beta, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                          decoder_embed_dim=decoder_embed_dim, decoder_depth=decoder_depth,
                          decoder_num_heads=decoder_num_heads, mlp_ratio=mlp_ratio, num_class_tokens=num_class_tokens,
                          fake_class_offset=fake_class_offset, steps=steps, temperature=temperature)
        if tokenizer_kind != "patch":  # recorded only when not the default, so older sidecars stay as they were
            self._arch.update(tokenizer_kind=tokenizer_kind, ch_mult=ch_mult, num_res_blocks=num_res_blocks)
        if tied_output:
            self._arch["tied_output"] = True
        self.decoding, self.token_ring, self.paste_margin, self.paste_blur = decoding, token_ring, paste_margin, paste_blur
        self.fill = list(fill) if fill is not None else list(mage_inpaint.IMAGENET_MEAN)
        if decoding != "pipeline":
            self._arch.update(decoding=decoding, token_ring=token_ring, paste_margin=paste_margin,
                              paste_blur=paste_blur, fill=self.fill)
        self.steps, self.temperature = steps, temperature
        self.tokenizer_kind = tokenizer_kind
        if tokenizer_kind == "maskgit_vqgan":
            self.tokenizer = MaskGITVQGAN(image_size, in_chans, codebook_size, code_dim, tokenizer_dim, ch_mult,
                                          num_res_blocks)
        else:
            self.tokenizer = VQTokenizer(image_size, in_chans, codebook_size, code_dim, tokenizer_dim, downsample,
                                         beta)
        self.tokenizer.requires_grad_(False)
        self.codebook_size = codebook_size
        self.num_tokens = self.tokenizer.num_tokens
        vocab = codebook_size + num_class_tokens + 1
        self.fake_class_label, self.mask_token_label = codebook_size + fake_class_offset, vocab - 1
        # encoder
        self.token_emb = TokenEmbeddings(vocab, embed_dim, self.num_tokens + 1)
        self.blocks = nn.ModuleList(vit_block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        # decoder
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, self.num_tokens + 1, decoder_embed_dim))
        self.decoder_blocks = nn.ModuleList(
            vit_block(decoder_embed_dim, decoder_num_heads, mlp_ratio) for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=1e-6)
        self.mlm_layer = MlmLayer(decoder_embed_dim, embed_dim, vocab, tied=tied_output)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.decoder_pos_embed_learned, std=0.02)
        init_linear_and_norm(m for name, m in self.named_modules() if not name.startswith("tokenizer"))

    def train(self, mode: bool = True) -> "MaskedTokenModel":
        super().train(mode)
        self.tokenizer.eval()  # frozen: always in inference mode
        return self

    # --- tokenizer ------------------------------------------------------------------------------------
    @classmethod
    def from_tokenizer(cls, tokenizer: VQTokenizer | MaskGITVQGAN, **arch: Any) -> "MaskedTokenModel":
        """A model around (a copy of the weights of) a pre-trained tokenizer; `arch` = transformer keywords."""
        model = cls(image_size=tokenizer.image_size, in_chans=tokenizer.in_chans, **tokenizer_arch(tokenizer), **arch)
        model.tokenizer.load_state_dict(tokenizer.state_dict())
        return model

    def load_tokenizer(self, path: str | Path) -> None:
        """Copy weights saved by `VQTokenizer.save` into the frozen tokenizer; DataError if the arch differs."""
        cls = MaskGITVQGAN if self.tokenizer_kind == "maskgit_vqgan" else VQTokenizer
        keys = MASKGIT_KEYS if self.tokenizer_kind == "maskgit_vqgan" else TOKENIZER_KEYS
        tok = cls.load(path)
        want = (self.image_size, self.in_chans, {k: self._arch[k] for k in keys})
        got = (tok.image_size, tok.in_chans, tok.arch())
        if got != want:
            raise DataError(f"tokenizer {path} has image_size/in_chans/arch {got}, the model needs {want}")
        self.tokenizer.load_state_dict(tok.state_dict())

    @classmethod
    def build_part(cls, part: str, arch: dict[str, Any], image_size: int, in_chans: int) -> nn.Module:
        if part != "tokenizer":
            return super().build_part(part, arch, image_size, in_chans)
        return VQTokenizer(image_size, in_chans, **arch)

    def attach_pretrained(self, part: str, path: str | Path) -> None:
        if part != "tokenizer":
            super().attach_pretrained(part, path)
        self.load_tokenizer(path)

    def token_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """[B, L] True where any pixel of the token's patch is hidden."""
        p = self.mask_granularity
        return F.max_pool2d(mask.to(torch.float32), p, p).flatten(1) > 0

    # --- transformer ----------------------------------------------------------------------------------
    def _input_ids(self, tokens: torch.Tensor, tmask: torch.Tensor) -> torch.Tensor:
        ids = tokens.masked_fill(tmask, self.mask_token_label)
        cls = torch.full_like(ids[:, :1], self.fake_class_label)
        return torch.cat([cls, ids], dim=1)

    def _encoder(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.token_emb(ids)
        for blk in self.blocks:
            h = blk(h)
        return self.norm(h)

    def _decoder(self, latent: torch.Tensor, tmask: torch.Tensor) -> torch.Tensor:
        """Logits [B, L, K] over the codebook for every image position."""
        h = self.decoder_embed(latent)
        hidden = torch.cat([torch.zeros_like(tmask[:, :1]), tmask], dim=1).unsqueeze(-1)
        h = torch.where(hidden, h[:, :1].expand_as(h), h)  # MAGE's pad_with_cls_token
        h = h + self.decoder_pos_embed_learned
        for blk in self.decoder_blocks:
            h = blk(h)
        return self.mlm_layer(self.decoder_norm(h), self.token_emb.word_embeddings.weight)[:, 1:, : self.codebook_size]

    def logits(self, tokens: torch.Tensor, tmask: torch.Tensor) -> torch.Tensor:
        return self._decoder(self._encoder(self._input_ids(tokens, tmask)), tmask)

    # --- I2I interface --------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tmask = self.token_mask(mask)
        return self._encoder(self._input_ids(self.tokenizer.tokenize(x), tmask)).flatten(1)

    def training_loss(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tmask = self.token_mask(mask)
        if not tmask.any():
            raise ValueError("the mask hides no token: nothing to predict")
        tokens = self.tokenizer.tokenize(x)
        logits = self.logits(tokens, tmask)
        return F.cross_entropy(logits[tmask].float(), tokens[tmask])

    def output(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One step: argmax tokens at hidden positions, tokenizer's at visible ones, detokenized.

        The forward value is the hard prediction; gradients reach the transformer through a straight-through
        softmax over the codebook (so output-space baselines can train on it).
        """
        tmask = self.token_mask(mask)
        tokens = self.tokenizer.tokenize(x)
        probs = self.logits(tokens, tmask).float().softmax(dim=-1)
        hard = F.one_hot(probs.argmax(dim=-1), self.codebook_size).to(probs.dtype)
        soft = hard + (probs - probs.detach())  # value exactly `hard`
        given = F.one_hot(tokens, self.codebook_size).to(probs.dtype)
        return self.tokenizer.detokenize_weights(torch.where(tmask.unsqueeze(-1), soft, given)).to(x.dtype)

    def generate_tokens(self, x: torch.Tensor, mask: torch.Tensor,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """MaskGIT/MAGE iterative decoding of the hidden tokens; visible tokens are kept.

        At step t (ratio r = (t+1)/steps) tokens are sampled for every still-unknown position; each sample's
        confidence (log-probability, plus Gumbel noise × temperature × (1 − r); known positions +inf) decides
        which to keep: the floor(n_hidden · cos(π r / 2)) least confident are masked again (at least one token
        is fixed per step, none is left at the last step). temperature = 0 is greedy and noise-free.
        Random numbers come from `generator` (CPU) or torch's global generator.
        """
        tmask = self.token_mask(mask)
        tokens = self.tokenizer.tokenize(x)
        unknown = tmask.clone()
        n_hidden = tmask.sum(dim=1, keepdim=True)
        for step in range(self.steps):
            if not unknown.any():
                break
            logp = self.logits(tokens, unknown).float().log_softmax(dim=-1)
            if self.temperature > 0:
                u = torch.rand(logp.shape, generator=generator).clamp_min(1e-20).to(logp.device)
                sampled = (logp - torch.log(-torch.log(u))).argmax(dim=-1)  # Gumbel-max = categorical sample
            else:
                sampled = logp.argmax(dim=-1)
            sampled = torch.where(unknown, sampled, tokens)
            confidence = logp.gather(-1, sampled.unsqueeze(-1)).squeeze(-1)
            ratio = (step + 1) / self.steps
            if self.temperature > 0:
                u = torch.rand(confidence.shape, generator=generator).clamp_min(1e-20).to(confidence.device)
                confidence = confidence + self.temperature * (1 - ratio) * -torch.log(-torch.log(u))
            confidence = confidence.masked_fill(~unknown, float("inf"))
            remask = self._still_unknown(n_hidden, unknown.sum(dim=1, keepdim=True), step)
            rank = confidence.argsort(dim=1).argsort(dim=1)  # 0 = least confident
            tokens = sampled
            unknown = rank < remask
        return tokens

    def _still_unknown(self, n_hidden: torch.Tensor, n_unknown: torch.Tensor, step: int) -> torch.Tensor:
        """[B, 1] tokens per image masked again after `step`: floor(n_hidden · cos(π r / 2)), at least one token
        fixed per step, none left after the last. A function of the mask alone (not of the samples)."""
        ratio = (step + 1) / self.steps
        remask = torch.floor(n_hidden * math.cos(math.pi / 2 * ratio)).long()
        return torch.minimum(remask, (n_unknown - 1).clamp_min(0)) if step < self.steps - 1 else remask * 0

    def skip_sampling(self, mask: torch.Tensor) -> None:
        """Draw from torch's global generator exactly what `reconstruct(x, mask)` without a generator would
        (pipeline decoding at temperature > 0: two uniform draws per decoding step, a step count set by the
        mask alone), without running the network: a process generating only its share of the global batches
        skips the others' so its own draw what one process would have drawn for them."""
        if self.decoding == "mage" or self.temperature <= 0:
            return
        tmask = self.token_mask(mask)
        n_hidden = n_unknown = tmask.sum(dim=1, keepdim=True)
        for step in range(self.steps):
            if not bool((n_unknown > 0).any()):
                break
            torch.rand((*tmask.shape, self.codebook_size))
            torch.rand(tmask.shape)
            n_unknown = self._still_unknown(n_hidden, n_unknown, step)

    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Iterative decoding, detokenized; visible pixels returned as given. Not differentiable (sampling):
        output-space baselines should use `output` (region "full").

        ``decoding: mage``: paper 1's MAGE procedure instead (`mage_inpaint`: mean-filled hole, token ring,
        official schedule, blurred paste-back that also blends visible pixels near the hole); the seed is
        drawn from `generator` (default 0)."""
        if self.decoding == "mage":
            seed = 0 if generator is None else int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
            settings = {"steps": self.steps, "temperature": self.temperature, "token_ring": self.token_ring,
                        "paste_margin": self.paste_margin, "paste_blur": self.paste_blur, "fill": self.fill}
            with torch.no_grad():
                return mage_inpaint.inpaint(self, x, mask, settings, seed)
        with torch.no_grad():
            out = self.tokenizer.detokenize(self.generate_tokens(x, mask, generator))
        return torch.where(mask, out.to(x.dtype), x)

    # --- official checkpoints ------------------------------------------------------------------------
    @classmethod
    def from_official(cls, checkpoint: dict[str, Any], num_heads: int | None = None,
                      decoder_num_heads: int | None = None, tokenizer: VQTokenizer | MaskGITVQGAN | None = None,
                      codebook_size: int | None = None, tied_output: bool | None = None,
                      embed_dim: int | None = None, depth: int | None = None, decoder_embed_dim: int | None = None,
                      decoder_depth: int | None = None, mlp_ratio: float | None = None) -> "MaskedTokenModel":
        """Build the transformer from a MAGE checkpoint (`{"model": state_dict}` or a bare state dict).

        Tokenizer: `tokenizer` if given (the pretrain stage passes MaskGIT's VQGAN from params
        ``model.vqgan.tokenizer.checkpoint``), else MaskGIT's VQGAN from the checkpoint's `vqgan.*` keys (MAGE's
        full checkpoints hold it). A checkpoint with neither is refused (DataError naming the params key): MAGE's
        transformer predicts that tokenizer's codes, so a random or pipeline-trained tokenizer in its place would
        run, but not as MAGE. Output layer: tied to the encoder's word table as MAGE's (`tied_output`, default
        True when the tokenizer is MaskGIT's VQGAN), or untied.

        Mapped one to one: token_emb.word_embeddings.weight, token_emb.position_embeddings.weight,
        token_emb.LayerNorm.*, blocks.N.*, norm.*, decoder_embed.*, decoder_pos_embed_learned,
        decoder_blocks.N.*, decoder_norm.*, mlm_layer.fc.*, mlm_layer.ln.*, mlm_layer.bias.
        Derived: mlm_layer.word_embeddings (untied only; absent in MAGE, which reuses the encoder's table) = a
        copy of token_emb.word_embeddings.weight. Ignored (unused by MAGE's token path): patch_embed.*,
        cls_token, pos_embed, mask_token, decoder_pos_embed, decoder_pred.*, token_emb.position_ids.

        Sizes come from the tokenizer, not from the tables they describe: the word table must be
        [K + 1000 + 1, D] (K codes, MAGE's 1000 class ids, the mask id) and the position table
        [grid² + 1, D] for the tokenizer's grid. The other keywords are what params ``model.vqgan.arch`` state:
        one the tensors contradict (depth, decoder depth, widths, MLP ratio) is a DataError naming both values;
        the head counts must divide the widths. Any missing, extra or mis-shaped tensor is a DataError naming the
        checkpoint's own key (and both shapes).
        """
        what = "MAGE checkpoint"
        state = checkpoint.get("model", checkpoint)
        if not isinstance(state, dict):
            raise DataError("not a MAGE checkpoint: no state dict")
        required = ["token_emb.word_embeddings.weight", "token_emb.position_embeddings.weight", "norm.weight",
                    "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight", "decoder_embed.weight",
                    "decoder_pos_embed_learned", "decoder_blocks.0.attn.qkv.weight", "mlm_layer.fc.weight"]
        missing = [k for k in required if k not in state]
        if missing:
            raise DataError(f"not a MAGE checkpoint: missing {', '.join(missing)}")
        from_file = tokenizer is None  # MaskGIT's VQGAN from the checkpoint's own vqgan.* keys
        if from_file and not any(k.startswith("vqgan.") for k in state):
            raise DataError("MAGE checkpoint holds no tokenizer (no 'vqgan.*' keys) and none is given: MAGE's "
                            "transformer predicts the codes of MaskGIT's VQGAN and cannot run faithfully without it; "
                            "set params model.vqgan.tokenizer.checkpoint to that tokenizer's file "
                            "(vqgan_jax_strongaug.ckpt, docs/models.md), or use a checkpoint with 'vqgan.*' keys")
        (width,) = official_shape(state, "norm.weight", 1, what)
        positions = official_shape(state, "token_emb.position_embeddings.weight", 2, what)
        if tokenizer is None:  # the grid is the file's: its two position tables must agree on it
            dec_positions = official_shape(state, "decoder_pos_embed_learned", 3, what)
            if dec_positions[:2] != (1, positions[0]):
                raise DataError(f"{what}: 'token_emb.position_embeddings.weight' {list(positions)} and "
                                f"'decoder_pos_embed_learned' {list(dec_positions)} disagree on the token positions "
                                f"({positions[0]} vs {dec_positions[1]})")
            side = int(round((positions[0] - 1) ** 0.5)) if positions[0] > 1 else 0
            if side < 1 or side * side + 1 != positions[0]:
                raise DataError(f"{what}: 'token_emb.position_embeddings.weight' has shape {list(positions)}, "
                                f"expected [L + 1, {width}] with L a square number of tokens")
            tokenizer = MaskGITVQGAN.from_official(state, grid=side)
        grid = tokenizer.grid
        if codebook_size not in (None, tokenizer.codebook_size):
            raise DataError(f"codebook_size {codebook_size} != the tokenizer's {tokenizer.codebook_size}")
        codebook_size = tokenizer.codebook_size
        vocab = codebook_size + OFFICIAL_CLASS_TOKENS + 1
        expected = {"token_emb.word_embeddings.weight": [vocab, width],
                    "token_emb.position_embeddings.weight": [grid * grid + 1, width]}
        for key, shape in expected.items():
            got = official_shape(state, key, 2, what)
            if list(got) != shape:
                raise DataError(f"{what}: '{key}' has shape {list(got)}, expected {shape} ({codebook_size} codes + "
                                f"{OFFICIAL_CLASS_TOKENS} class ids + 1 mask id; {grid}x{grid} tokens + the class "
                                f"token; width {width} of 'norm.weight')")
        dec_width = official_shape(state, "decoder_embed.weight", 2, what)[0]
        hidden = official_shape(state, "blocks.0.mlp.fc1.weight", 2, what)[0]
        n_blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        n_dec = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("decoder_blocks."))
        check_stated_arch("vqgan", {"embed_dim": embed_dim, "depth": depth, "decoder_embed_dim": decoder_embed_dim,
                                    "decoder_depth": decoder_depth, "mlp_ratio": mlp_ratio},
                          {"embed_dim": (width, "norm.weight"), "depth": (n_blocks, f"blocks.0 to blocks.{n_blocks - 1}"),
                           "decoder_embed_dim": (dec_width, "decoder_embed.weight"),
                           "decoder_depth": (n_dec, f"decoder_blocks.0 to decoder_blocks.{n_dec - 1}"),
                           "mlp_ratio": (hidden / width, "blocks.0.mlp.fc1.weight")}, what)
        heads = num_heads or OFFICIAL_HEADS.get(width, 1)
        dec_heads = decoder_num_heads or (16 if dec_width % 16 == 0 else 1)
        check_heads_divide("vqgan", "num_heads", heads, width, "norm.weight", what)
        check_heads_divide("vqgan", "decoder_num_heads", dec_heads, dec_width, "decoder_embed.weight", what)
        if tied_output is None:
            tied_output = isinstance(tokenizer, MaskGITVQGAN)
        model = cls(image_size=grid * tokenizer.downsample, in_chans=tokenizer.in_chans, **tokenizer_arch(tokenizer),
                    embed_dim=width, depth=n_blocks, num_heads=heads, decoder_embed_dim=dec_width,
                    decoder_depth=n_dec, decoder_num_heads=dec_heads, mlp_ratio=hidden / width,
                    num_class_tokens=OFFICIAL_CLASS_TOKENS, fake_class_offset=OFFICIAL_FAKE_CLASS_OFFSET,
                    tied_output=tied_output)
        mapped = {k: v for k, v in state.items()
                  if not any(k == u or (u.endswith(".") and k.startswith(u)) for u in OFFICIAL_UNUSED)}
        names = {}
        if not tied_output:
            mapped["mlm_layer.word_embeddings"] = state["token_emb.word_embeddings.weight"]
            names["mlm_layer.word_embeddings"] = "token_emb.word_embeddings.weight"
        for k, v in tokenizer.state_dict().items():
            mapped["tokenizer." + k] = v
            names["tokenizer." + k] = ("vqgan." if from_file else "tokenizer ") + k
        load_state_exactly(model, mapped, what, names)
        return model
