"""Random-weight checkpoints in the published files' own layouts, at any size, for the dress rehearsal.

Why: the paper presets start from published checkpoints that cannot be fetched here (Google Drive, hubs).
The rehearsal (`bench/rehearsal.py`) needs files the loaders treat exactly as the real ones: the same key
names, nesting and shapes, at the published architectures. The key tables below are written from the
official model definitions (facebookresearch/mae `MaskedAutoencoderViT` with timm blocks; MAGE's
`MaskedGenerativeEncoderViT` holding MaskGIT's VQGAN under `vqgan.*`; Palette's `Network`: guided-diffusion's
U-Net under `denoise_fn.*` plus six schedule buffers), not from pipeline_lib's models;
`tests/test_rehearsal.py` checks them against the fixtures made with the official code
(`tests/fixtures/official/`). The metric networks are the real architectures (torch-fidelity's Inception-v3,
open_clip, torchvision's ResNet-50 in CSAIL's Places365 file layout) with their random initialisation.

Values: ≥ 2-D weights N(0, 1/fan_in), 1-D weights (every norm) 1, biases 0, embedding tables and tokens
N(0, 0.02), MAE's position tables the fixed sin-cos ones; nothing about them is meant to be meaningful.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pipeline_lib.models.palette_official import schedule_buffers

Shapes = dict[str, tuple[int, ...]]

#: MaskGIT's published VQGAN (MAGE's tokenizer): channel multipliers of its 5 levels (16x downsampling)
MASKGIT_CH_MULT = (1, 1, 2, 2, 4)
#: MAGE's vocabulary beyond the codes: 1000 class ids and the mask id
MAGE_EXTRA_TOKENS = 1000 + 1


# --- key and shape tables ------------------------------------------------------------------------------------

def vit_block(prefix: str, dim: int, mlp_ratio: float) -> Shapes:
    """One timm transformer block (qkv bias), as both MAE and MAGE use."""
    hidden = int(dim * mlp_ratio)
    return {f"{prefix}.norm1.weight": (dim,), f"{prefix}.norm1.bias": (dim,),
            f"{prefix}.attn.qkv.weight": (3 * dim, dim), f"{prefix}.attn.qkv.bias": (3 * dim,),
            f"{prefix}.attn.proj.weight": (dim, dim), f"{prefix}.attn.proj.bias": (dim,),
            f"{prefix}.norm2.weight": (dim,), f"{prefix}.norm2.bias": (dim,),
            f"{prefix}.mlp.fc1.weight": (hidden, dim), f"{prefix}.mlp.fc1.bias": (hidden,),
            f"{prefix}.mlp.fc2.weight": (dim, hidden), f"{prefix}.mlp.fc2.bias": (dim,)}


def _mae_like_encoder(dim: int, depth: int, dec_dim: int, dec_depth: int, mlp_ratio: float, patch: int,
                      tokens: int, in_chans: int, pred: int) -> Shapes:
    """The parts MAE and MAGE share (MAGE keeps MAE's patch embedding and pixel decoder, unused)."""
    shapes: Shapes = {"cls_token": (1, 1, dim), "pos_embed": (1, tokens, dim),
                      "patch_embed.proj.weight": (dim, in_chans, patch, patch), "patch_embed.proj.bias": (dim,)}
    for i in range(depth):
        shapes.update(vit_block(f"blocks.{i}", dim, mlp_ratio))
    shapes.update({"norm.weight": (dim,), "norm.bias": (dim,), "mask_token": (1, 1, dec_dim),
                   "decoder_pos_embed": (1, tokens, dec_dim), "decoder_embed.weight": (dec_dim, dim),
                   "decoder_embed.bias": (dec_dim,)})
    for i in range(dec_depth):
        shapes.update(vit_block(f"decoder_blocks.{i}", dec_dim, mlp_ratio))
    shapes.update({"decoder_norm.weight": (dec_dim,), "decoder_norm.bias": (dec_dim,),
                   "decoder_pred.weight": (pred, dec_dim), "decoder_pred.bias": (pred,)})
    return shapes


def mae_shapes(image_size: int, patch_size: int, embed_dim: int, depth: int, decoder_embed_dim: int,
               decoder_depth: int, mlp_ratio: float, in_chans: int = 3, **_: object) -> Shapes:
    """facebookresearch/mae `MaskedAutoencoderViT` (the `model` entry of `mae_visualize_vit_large*.pth`)."""
    grid = image_size // patch_size
    return _mae_like_encoder(embed_dim, depth, decoder_embed_dim, decoder_depth, mlp_ratio, patch_size,
                             grid * grid + 1, in_chans, patch_size * patch_size * in_chans)


def _vq_resblock(prefix: str, cin: int, cout: int) -> Shapes:
    shapes: Shapes = {f"{prefix}.norm1.weight": (cin,), f"{prefix}.norm1.bias": (cin,),
                      f"{prefix}.conv1.weight": (cout, cin, 3, 3), f"{prefix}.norm2.weight": (cout,),
                      f"{prefix}.norm2.bias": (cout,), f"{prefix}.conv2.weight": (cout, cout, 3, 3)}
    if cin != cout:  # MaskGIT's shortcut maps the residual branch (cout -> cout), bias-free
        shapes[f"{prefix}.nin_shortcut.weight"] = (cout, cout, 1, 1)
    return shapes


def maskgit_vqgan_shapes(codebook_size: int, code_dim: int, tokenizer_dim: int,
                         ch_mult: tuple[int, ...] = MASKGIT_CH_MULT, num_res_blocks: int = 2,
                         in_chans: int = 3) -> Shapes:
    """MaskGIT's VQGAN as `vqgan_jax_strongaug.ckpt` holds it (bias-free encoder convolutions but conv_out, no
    attention, no quant_conv; the decoder's level index is the resolution level)."""
    ch = tokenizer_dim
    enc: Shapes = {"encoder.conv_in.weight": (ch, in_chans, 3, 3)}
    cin = ch
    for level, mult in enumerate(ch_mult):
        for b in range(num_res_blocks):
            enc.update(_vq_resblock(f"encoder.down.{level}.block.{b}", cin, ch * mult))
            cin = ch * mult
    for name in ("block_1", "block_2"):
        enc.update(_vq_resblock(f"encoder.mid.{name}", cin, cin))
    enc.update({"encoder.norm_out.weight": (cin,), "encoder.norm_out.bias": (cin,),
                "encoder.conv_out.weight": (code_dim, cin, 1, 1), "encoder.conv_out.bias": (code_dim,)})
    dec: Shapes = {"decoder.conv_in.weight": (cin, code_dim, 3, 3), "decoder.conv_in.bias": (cin,)}
    for name in ("block_1", "block_2"):
        dec.update(_vq_resblock(f"decoder.mid.{name}", cin, cin))
    for level in reversed(range(len(ch_mult))):
        for b in range(num_res_blocks):
            dec.update(_vq_resblock(f"decoder.up.{level}.block.{b}", cin, ch * ch_mult[level]))
            cin = ch * ch_mult[level]
        if level:
            dec.update({f"decoder.up.{level}.upsample.conv.weight": (cin, cin, 3, 3),
                        f"decoder.up.{level}.upsample.conv.bias": (cin,)})
    dec.update({"decoder.norm_out.weight": (cin,), "decoder.norm_out.bias": (cin,),
                "decoder.conv_out.weight": (in_chans, cin, 3, 3), "decoder.conv_out.bias": (in_chans,)})
    return {**enc, **dec, "quantize.embedding.weight": (codebook_size, code_dim)}


def mage_shapes(image_size: int, embed_dim: int, depth: int, decoder_embed_dim: int, decoder_depth: int,
                mlp_ratio: float, codebook_size: int, downsample: int, in_chans: int = 3, patch_size: int | None = None,
                **_: object) -> Shapes:
    """MAGE's `MaskedGenerativeEncoderViT` without its tokenizer: token embedding (BERT-style, with its
    `position_ids` buffer), transformer, learned decoder positions, MLM head over the whole vocabulary, and
    MAE's unused patch embedding / pixel decoder (`patch_size`, default the tokenizer's downsampling: 16 as
    the published model is built)."""
    grid = image_size // downsample
    tokens, vocab = grid * grid + 1, codebook_size + MAGE_EXTRA_TOKENS
    patch = patch_size or downsample
    shapes = _mae_like_encoder(embed_dim, depth, decoder_embed_dim, decoder_depth, mlp_ratio, patch, tokens, in_chans,
                               patch * patch * in_chans)
    shapes.update({"token_emb.word_embeddings.weight": (vocab, embed_dim),
                   "token_emb.position_embeddings.weight": (tokens, embed_dim),
                   "token_emb.LayerNorm.weight": (embed_dim,), "token_emb.LayerNorm.bias": (embed_dim,),
                   "token_emb.position_ids": (1, tokens),
                   "decoder_pos_embed_learned": (1, tokens, decoder_embed_dim),
                   "mlm_layer.fc.weight": (embed_dim, decoder_embed_dim), "mlm_layer.fc.bias": (embed_dim,),
                   "mlm_layer.ln.weight": (embed_dim,), "mlm_layer.ln.bias": (embed_dim,),
                   "mlm_layer.bias": (1, 1, vocab)})
    return shapes


def _gd_resblock(prefix: str, cin: int, cout: int, emb: int) -> Shapes:
    """guided-diffusion ResBlock with scale-shift norm (emb_layers give 2 x cout)."""
    shapes: Shapes = {f"{prefix}.in_layers.0.weight": (cin,), f"{prefix}.in_layers.0.bias": (cin,),
                      f"{prefix}.in_layers.2.weight": (cout, cin, 3, 3), f"{prefix}.in_layers.2.bias": (cout,),
                      f"{prefix}.emb_layers.1.weight": (2 * cout, emb), f"{prefix}.emb_layers.1.bias": (2 * cout,),
                      f"{prefix}.out_layers.0.weight": (cout,), f"{prefix}.out_layers.0.bias": (cout,),
                      f"{prefix}.out_layers.3.weight": (cout, cout, 3, 3), f"{prefix}.out_layers.3.bias": (cout,)}
    if cin != cout:
        shapes.update({f"{prefix}.skip_connection.weight": (cout, cin, 1, 1), f"{prefix}.skip_connection.bias": (cout,)})
    return shapes


def palette_unet_shapes(block_out_channels: list[int], layers_per_block: int, in_chans: int = 3,
                        **_: object) -> Shapes:
    """Palette's guided-diffusion U-Net (`denoise_fn.*` of `16_Network.pth`): conditioning on [cond, y_t],
    resblock up/down-sampling, attention in the middle block only (the published attn_res is never reached)."""
    inner = block_out_channels[0]
    mults = [c // inner for c in block_out_channels]
    emb = 4 * inner
    shapes: Shapes = {"cond_embed.0.weight": (emb, inner), "cond_embed.0.bias": (emb,),
                      "cond_embed.2.weight": (emb, emb), "cond_embed.2.bias": (emb,),
                      "input_blocks.0.0.weight": (inner, 2 * in_chans, 3, 3), "input_blocks.0.0.bias": (inner,)}
    skips, ch, block = [inner], inner, 1
    for level, mult in enumerate(mults):
        for _ in range(layers_per_block):
            shapes.update(_gd_resblock(f"input_blocks.{block}.0", ch, inner * mult, emb))
            ch = inner * mult
            skips.append(ch)
            block += 1
        if level < len(mults) - 1:
            shapes.update(_gd_resblock(f"input_blocks.{block}.0", ch, ch, emb))
            skips.append(ch)
            block += 1
    shapes.update(_gd_resblock("middle_block.0", ch, ch, emb))
    shapes.update({"middle_block.1.norm.weight": (ch,), "middle_block.1.norm.bias": (ch,),
                   "middle_block.1.qkv.weight": (3 * ch, ch, 1), "middle_block.1.qkv.bias": (3 * ch,),
                   "middle_block.1.proj_out.weight": (ch, ch, 1), "middle_block.1.proj_out.bias": (ch,)})
    shapes.update(_gd_resblock("middle_block.2", ch, ch, emb))
    block = 0
    for level, mult in reversed(list(enumerate(mults))):
        for i in range(layers_per_block + 1):
            shapes.update(_gd_resblock(f"output_blocks.{block}.0", ch + skips.pop(), inner * mult, emb))
            ch = inner * mult
            if level and i == layers_per_block:
                shapes.update(_gd_resblock(f"output_blocks.{block}.1", ch, ch, emb))
            block += 1
    shapes.update({"out.0.weight": (ch,), "out.0.bias": (ch,), "out.2.weight": (in_chans, ch, 3, 3),
                   "out.2.bias": (in_chans,)})
    return {"denoise_fn." + k: v for k, v in shapes.items()}


# --- values --------------------------------------------------------------------------------------------------

def sincos_table(dim: int, grid: int) -> torch.Tensor:
    """MAE's fixed 2-D sine-cosine position table [1, grid² + 1, dim] (a zero row for the class token)."""
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))
    ys, xs = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")
    halves = []
    for pos in (xs, ys):
        angle = np.outer(pos.reshape(-1), omega)
        halves.append(np.concatenate([np.sin(angle), np.cos(angle)], axis=1))
    table = np.concatenate([np.zeros((1, dim)), np.concatenate(halves, axis=1)], axis=0)
    return torch.from_numpy(table).float().unsqueeze(0)


_TABLES = ("cls_token", "mask_token", "pos_embed", "embeddings.weight", "decoder_pos_embed_learned")


def random_state(shapes: Shapes, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("position_ids"):
            state[key] = torch.arange(shape[-1]).reshape(shape)
        elif any(key.endswith(t) for t in _TABLES):
            state[key] = torch.randn(shape, generator=g) * 0.02
        elif key.endswith("bias"):
            state[key] = torch.zeros(shape)
        elif len(shape) == 1:
            state[key] = torch.ones(shape)
        else:
            state[key] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
    return state


# --- files ---------------------------------------------------------------------------------------------------

def mae_checkpoint(arch: dict, image_size: int, seed: int = 0) -> dict:
    """`{"model": state}` as facebookresearch/mae saves it, sin-cos position tables included."""
    state = random_state(mae_shapes(image_size, **arch), seed)
    grid = image_size // arch["patch_size"]
    state["pos_embed"] = sincos_table(arch["embed_dim"], grid)
    state["decoder_pos_embed"] = sincos_table(arch["decoder_embed_dim"], grid)
    return {"model": state}


def tokenizer_ch_mult(tokenizer_arch: dict) -> tuple[int, ...]:
    """MaskGIT's multipliers for its published size; for another downsampling, 1 then 2s (a smaller stand-in)."""
    levels = int(math.log2(tokenizer_arch["downsample"])) + 1
    if levels == len(MASKGIT_CH_MULT):
        return MASKGIT_CH_MULT
    return (1,) + (2,) * (levels - 1)


def mage_checkpoint(arch: dict, tokenizer_arch: dict, image_size: int, seed: int = 0) -> dict:
    """`{"model": state}` as MAGE's `mage-vitb-1600.pth`: the transformer and MaskGIT's VQGAN under `vqgan.*`."""
    shapes = mage_shapes(image_size, codebook_size=tokenizer_arch["codebook_size"],
                         downsample=tokenizer_arch["downsample"], **arch)
    vq = maskgit_vqgan_shapes(tokenizer_arch["codebook_size"], tokenizer_arch["code_dim"],
                              tokenizer_arch["tokenizer_dim"], tokenizer_ch_mult(tokenizer_arch))
    shapes.update({"vqgan." + k: v for k, v in vq.items()})
    return {"model": random_state(shapes, seed)}


def palette_checkpoint(arch: dict, seed: int = 0) -> dict:
    """Palette's `Network` state dict as `16_Network.pth`: U-Net under `denoise_fn.`, the training schedule's
    buffers beside it (a bare dict, no nesting)."""
    state = random_state(palette_unet_shapes(arch["block_out_channels"], arch["layers_per_block"]), seed)
    # the six buffers Palette's Network.set_new_noise_schedule registers for its training schedule
    state.update(schedule_buffers("linear", arch["train_timesteps"], arch["beta_start"], arch["beta_end"]))
    return state


def inception_state() -> dict[str, torch.Tensor]:
    """torch-fidelity's `inception-v3-compat` with a variance-preserving random init (PyTorch's default lets the
    ~90 layers shrink the features towards 0)."""
    from torch import nn
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # keep the random init
            return None

    torch.manual_seed(0)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        torch.save({}, Path(tmp) / "empty.pth")
        net = Unloaded("random", ["2048"], feature_extractor_weights_path=str(Path(tmp) / "empty.pth"))
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net.state_dict()


def clip_state(arch: str) -> dict[str, torch.Tensor]:
    import open_clip

    torch.manual_seed(0)
    return open_clip.create_model(arch, pretrained=None).state_dict()


def places_checkpoint() -> dict:
    """CSAIL's `resnet50_places365.pth.tar` layout: a DataParallel state dict under `state_dict`."""
    from torchvision.models import resnet50

    torch.manual_seed(0)
    state = resnet50(num_classes=365).state_dict()
    return {"epoch": 0, "arch": "resnet50", "state_dict": {"module." + k: v for k, v in state.items()}}


def write(path: Path, make: Callable[[], dict]) -> Path:
    """Write `make()` to `path` (torch.save, or safetensors for a .safetensors name) unless it is there."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    state = make()
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    else:
        torch.save(state, tmp)
    tmp.replace(path)
    return path
