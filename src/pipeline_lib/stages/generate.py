"""Generation stages: reconstructions of the evaluation sets per task, and the cross-validation check."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..runtime import distributed
from ..params import paths
from ..runtime.errors import ResourceError
from ..data.masks import sample_mask
from ..runtime.devices import progress, seed_everything
from .common import image_codec, load_images, main_output, read_splits, sampling_model, stage_device

LOG = logging.getLogger(__name__)


def _save_pngs(images: torch.Tensor, directory: Path) -> None:
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        if img.shape[0] == 1:
            Image.fromarray(img[0].numpy(), mode="L").save(directory / f"{i:04d}.png")
        else:
            Image.fromarray(img.permute(1, 2, 0).contiguous().numpy(), mode="RGB").save(directory / f"{i:04d}.png")


def _fill(params: dict, net, x: torch.Tensor, task: str, desc: str) -> tuple[torch.Tensor, torch.Tensor, range]:
    """This process's reconstructions of `x` for one task, the masks of all of `x`, and the rows it did.

    Masks come from the seed, so every model sees the same. `x` is cut into global batches of
    `generate.batch_size`; under torchrun each process reconstructs a contiguous share of whole batches
    (`distributed.share`) and skips the others' random draws (`skip_sampling`), so every batch is
    reconstructed from the same inputs and random numbers whatever the number of processes."""
    codec, spec, bs = image_codec(params, net.family), params["task"][task], params["generate"]["batch_size"]
    device = next(net.parameters()).device
    g = torch.Generator().manual_seed(params["seed"])
    mask = torch.cat([sample_mask(spec, len(b), codec.image_size, net.mask_granularity, g) for b in x.split(bs)])
    batches = list(zip(x.split(bs), mask.split(bs)))
    mine = distributed.share(len(batches))
    recon, bar = [], progress(total=len(mine), desc=desc)
    with torch.no_grad():
        for i, (xb, mb) in enumerate(batches):
            if i not in mine:
                net.skip_sampling(mb.to(device))
                continue
            try:
                recon.append(net.reconstruct(xb.to(device), mb.to(device)).float().cpu())
            except torch.OutOfMemoryError:
                raise ResourceError(f"{desc}: out of memory on {device}; lower params key 'generate.batch_size' "
                                    f"(now {bs})") from None
            bar.update(1)
    bar.close()
    rows = range(mine.start * bs, min(len(x), mine.stop * bs))
    return torch.cat(recon) if recon else x[:0].float(), mask, rows


def _write_recon(params: dict, family: str, out: Path | None, which: str, x: torch.Tensor, recon: torch.Tensor,
                 mask: torch.Tensor, labels: torch.Tensor) -> None:
    """Gather every process's reconstructions (uint8: a quarter of the float traffic) and, on the main process,
    write the set's tensor file and PNGs into `out` (None on the other processes)."""
    from safetensors.torch import save_file

    codec = image_codec(params, family)
    gathered = distributed.gather_to_main([codec.to_uint8(recon)])
    if out is None:
        return
    (recon_u8,) = gathered
    tensors = {"recon": recon_u8, "gt": codec.to_uint8(x), "mask": mask.to(torch.uint8), "labels": labels}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / f"{which}.safetensors"))
    _save_pngs(recon_u8, out / "png" / which)


def generate(params: dict, checkpoint: str, data_dir: str, splits_path: str, task: str, out: str) -> None:
    """Reconstructions of both evaluation sets: a tensor file per set plus one PNG per image."""
    seed_everything(params["seed"])
    split = read_splits(splits_path)
    net = sampling_model(params, checkpoint, stage_device(params))
    codec = image_codec(params, net.family)
    with main_output(out) as tmp:
        for which in paths.SETS:
            x, labels = load_images(params, data_dir, split["eval"][which], False, codec)
            recon, mask, _ = _fill(params, net, x, task, f"generate {which}")
            _write_recon(params, net.family, tmp, which, x, recon, mask, labels)
    if distributed.is_main():
        LOG.info("reconstructions written to %s", out)


def crossval(params: dict, checkpoint: str, original: str, data_dir: str, splits_path: str, out: str) -> None:
    """Paper 1 App. E.2: the model's inpainting, outpainted by the original model, then scored like a task.

    Forgetting that only hides the forget classes (rather than removing them) would show up here: the
    original model would restore them from what the unlearned model left around the hole.
    """
    seed_everything(params["seed"])
    split = read_splits(splits_path)
    cfg, device = params["crossval"], stage_device(params)
    first, second = sampling_model(params, checkpoint, device), sampling_model(params, original, device)
    codec = image_codec(params, first.family)
    with main_output(out) as tmp:
        for which in paths.SETS:
            x, labels = load_images(params, data_dir, split["eval"][which], False, codec)
            inpainted, _, rows = _fill(params, first, x, cfg["inpaint"], f"inpaint {which}")
            staged = x.clone()  # the same global batches again: only this process's rows are read
            staged[rows.start:rows.stop] = inpainted
            outpainted, mask, _ = _fill(params, second, staged, cfg["outpaint"], f"outpaint {which} (original)")
            _write_recon(params, first.family, tmp, which, x, outpainted, mask, labels)
    if distributed.is_main():
        LOG.info("cross-validation reconstructions written to %s", out)
