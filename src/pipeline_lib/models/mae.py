"""Masked autoencoder (He et al. 2022) as an I2I model: the encoder sees only visible patches.

Parameter names follow facebookresearch/mae, so its published checkpoints (`{"model": state_dict}`) load
through `MAE.from_official`. Encoder = patch_embed, cls_token, pos_embed, blocks, norm; decoder = the rest.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..runtime.errors import DataError
from .base import I2IModel, check_heads_divide, check_stated_arch, load_state_exactly, official_shape
from .vit import PatchEmbed, init_linear_and_norm, sincos_pos_embed, vit_block

ENCODER_PREFIXES = ("patch_embed.", "cls_token", "pos_embed", "blocks.", "norm.")
#: head counts of the published models (not recoverable from weights)
OFFICIAL_HEADS = {768: 12, 1024: 16, 1280: 16}


class MAE(I2IModel):
    family = "mae"
    granularity_key = "patch_size"
    encoder_prefixes = ENCODER_PREFIXES

    def __init__(self, image_size: int = 32, in_chans: int = 1, patch_size: int = 4, embed_dim: int = 128,
                 depth: int = 4, num_heads: int = 4, decoder_embed_dim: int = 128, decoder_depth: int = 2,
                 decoder_num_heads: int = 4, mlp_ratio: float = 4.0, norm_pix_loss: bool = False):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not a multiple of patch size {patch_size}")
        self.image_size, self.in_chans, self.patch_size = image_size, in_chans, patch_size
        self.mask_granularity = patch_size
        self._arch = dict(patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                          decoder_embed_dim=decoder_embed_dim, decoder_depth=decoder_depth,
                          decoder_num_heads=decoder_num_heads, mlp_ratio=mlp_ratio, norm_pix_loss=norm_pix_loss)
        grid = image_size // patch_size
        self.num_patches = grid * grid
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(sincos_pos_embed(embed_dim, grid), requires_grad=False)
        self.blocks = nn.ModuleList(vit_block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed(decoder_embed_dim, grid), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            vit_block(decoder_embed_dim, decoder_num_heads, mlp_ratio) for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans)
        self._init_weights()

    def _init_weights(self) -> None:
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        init_linear_and_norm(self.modules())

    # --- patches -------------------------------------------------------------------------------------
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        p, g = self.patch_size, self.image_size // self.patch_size
        x = x.reshape(x.shape[0], self.in_chans, g, p, g, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(x.shape[0], g * g, p * p * self.in_chans)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        p, g = self.patch_size, self.image_size // self.patch_size
        x = x.reshape(x.shape[0], g, g, p, p, self.in_chans)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], self.in_chans, g * p, g * p)

    def patch_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """[B, L] True where any pixel of the patch is hidden; every row must hide the same count."""
        mask = mask.to(torch.float32).expand(mask.shape[0], self.in_chans, *mask.shape[2:])  # [B, 1, H, W] for RGB too
        m = self.patchify(mask).amax(dim=-1) > 0
        counts = m.sum(dim=1)
        if (counts != counts[0]).any():
            raise ValueError("MAE needs the same number of hidden patches in every sample of a batch")
        if counts[0] == self.num_patches:
            raise ValueError("the mask hides every patch: MAE has nothing to encode")
        return m

    # --- encoder / decoder ---------------------------------------------------------------------------
    def _encode_tokens(self, x: torch.Tensor, pmask: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x) + self.pos_embed[:, 1:, :]
        b, _, d = tokens.shape
        visible = tokens[~pmask].view(b, -1, d)  # row-major: visible patches keep their order
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(b, -1, -1)
        h = torch.cat([cls, visible], dim=1)
        for blk in self.blocks:
            h = blk(h)
        return self.norm(h)

    def _decode_tokens(self, latent: torch.Tensor, pmask: torch.Tensor) -> torch.Tensor:
        h = self.decoder_embed(latent)
        b, _, d = h.shape
        full = self.mask_token.to(h.dtype).expand(b, self.num_patches, d).clone()
        full[~pmask] = h[:, 1:, :].reshape(-1, d)
        h = torch.cat([h[:, :1, :], full], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            h = blk(h)
        return self.decoder_pred(self.decoder_norm(h))[:, 1:, :]

    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self._encode_tokens(x, self.patch_mask(mask)).flatten(1)

    def predict(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The decoder's full image (visible patches predicted too)."""
        pmask = self.patch_mask(mask)
        return self.unpatchify(self._decode_tokens(self._encode_tokens(x, pmask), pmask))

    def output(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.predict(x, mask)

    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, self.predict(x, mask).to(x.dtype), x)

    def training_loss(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pmask = self.patch_mask(mask)
        pred = self._decode_tokens(self._encode_tokens(x, pmask), pmask)
        target = self.patchify(x)
        if self._arch["norm_pix_loss"]:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = (pred - target).pow(2).mean(dim=-1)
        return (per_patch * pmask).sum() / pmask.sum()

    # --- official checkpoints ------------------------------------------------------------------------
    @classmethod
    def from_official(cls, checkpoint: dict[str, Any], num_heads: int | None = None,
                      decoder_num_heads: int | None = None, image_size: int | None = None,
                      patch_size: int | None = None, embed_dim: int | None = None, depth: int | None = None,
                      decoder_embed_dim: int | None = None, decoder_depth: int | None = None,
                      mlp_ratio: float | None = None) -> "MAE":
        """Build an MAE from a facebookresearch/mae checkpoint (`{"model": state_dict}`), architecture inferred.

        `image_size` other than the checkpoint's (224 for the published files): the fixed sin-cos position
        tables are rebuilt for the new grid, as the official code does when built with that `img_size`; every
        other weight is size-independent. Refused when the stored tables are not the sin-cos ones.

        The other keywords are what params ``model.mae.arch`` state: a stated width, depth or MLP ratio the
        tensors contradict (a file missing its last decoder block, say) is a DataError naming both values; the
        head counts (not in the weights) must divide the widths. Every error names the checkpoint's own keys,
        and a tensor of the wrong shape is named with both shapes."""
        what = "MAE checkpoint"
        state = checkpoint.get("model", checkpoint)
        if not isinstance(state, dict):
            raise DataError("not a facebookresearch/mae checkpoint: no state dict")
        required = ["patch_embed.proj.weight", "cls_token", "pos_embed", "norm.weight", "decoder_embed.weight",
                    "mask_token", "decoder_pos_embed", "decoder_norm.weight", "decoder_pred.weight", "blocks.0.attn.qkv.weight",
                    "blocks.0.mlp.fc1.weight", "decoder_blocks.0.attn.qkv.weight"]
        missing = [k for k in required if k not in state]
        if missing:
            raise DataError(f"not a facebookresearch/mae checkpoint: missing {', '.join(missing)}")
        width, in_chans, patch, patch_w = official_shape(state, "patch_embed.proj.weight", 4, what)
        if patch != patch_w:
            raise DataError(f"{what}: 'patch_embed.proj.weight' has shape {list(state['patch_embed.proj.weight'].shape)}: "
                            "not square patches")
        positions = official_shape(state, "pos_embed", 3, what)
        grid = int(round((positions[1] - 1) ** 0.5)) if positions[1] > 1 else 0
        if positions[0] != 1 or positions[2] != width or grid < 1 or grid * grid + 1 != positions[1]:
            raise DataError(f"{what}: 'pos_embed' has shape {list(positions)}, expected [1, L + 1, {width}] with L "
                            "a square number of patches")
        dec_width = official_shape(state, "decoder_embed.weight", 2, what)[0]
        hidden = official_shape(state, "blocks.0.mlp.fc1.weight", 2, what)[0]
        n_blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        n_dec = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("decoder_blocks."))
        check_stated_arch("mae", {"patch_size": patch_size, "embed_dim": embed_dim, "depth": depth,
                                  "decoder_embed_dim": decoder_embed_dim, "decoder_depth": decoder_depth,
                                  "mlp_ratio": mlp_ratio},
                          {"patch_size": (patch, "patch_embed.proj.weight"), "embed_dim": (width, "patch_embed.proj.weight"),
                           "depth": (n_blocks, f"blocks.0 to blocks.{n_blocks - 1}"),
                           "decoder_embed_dim": (dec_width, "decoder_embed.weight"),
                           "decoder_depth": (n_dec, f"decoder_blocks.0 to decoder_blocks.{n_dec - 1}"),
                           "mlp_ratio": (hidden / width, "blocks.0.mlp.fc1.weight")}, what)
        heads = num_heads or OFFICIAL_HEADS.get(width, 1)
        dec_heads = decoder_num_heads or (16 if dec_width % 16 == 0 else 1)
        check_heads_divide("mae", "num_heads", heads, width, "patch_embed.proj.weight", what)
        check_heads_divide("mae", "decoder_num_heads", dec_heads, dec_width, "decoder_embed.weight", what)
        dec_positions = official_shape(state, "decoder_pos_embed", 3, what)
        if list(dec_positions) != [1, positions[1], dec_width]:
            raise DataError(f"{what}: 'decoder_pos_embed' has shape {list(dec_positions)} (expected "
                            f"[1, {positions[1]}, {dec_width}])")
        rebuilt = set()
        if image_size not in (None, grid * patch):
            if image_size % patch:
                raise DataError(f"image size {image_size} is not a multiple of the checkpoint's patch size {patch}")
            for key, dim in (("pos_embed", width), ("decoder_pos_embed", dec_width)):
                if not torch.allclose(state[key].float(), sincos_pos_embed(dim, grid), atol=1e-5):
                    raise DataError(f"MAE checkpoint key '{key}' is not the fixed sin-cos table of its {grid}x{grid} "
                                    f"grid: it cannot be rebuilt for {image_size} px")
            rebuilt = {"pos_embed", "decoder_pos_embed"}
            grid = image_size // patch
        model = cls(image_size=grid * patch, in_chans=in_chans, patch_size=patch, embed_dim=width,
                    depth=n_blocks, num_heads=heads, decoder_embed_dim=dec_width, decoder_depth=n_dec,
                    decoder_num_heads=dec_heads, mlp_ratio=hidden / width)
        own = model.state_dict()
        state = {**{k: v for k, v in state.items() if k not in rebuilt}, **{k: own[k] for k in rebuilt}}
        load_state_exactly(model, state, what)
        return model
