"""How much of a class the classifier reads from the border alone: the floor of the forget-accuracy criterion.

The forgetting flag asks that the classifier name the forget class less often on a model's reconstructions than
on the original's. The classifier sees the whole image, and a hole task leaves most of it (the border) as it
was, so erasing the hole is not enough to move that number: this module scores the ground truth with the hole
filled with something that holds no class (black, white, uniform noise). When a black hole still reads as the
class, only a fill that looks like another class can lower the accuracy, so a family whose fills go dark (the
VQ-GAN's and the U-Net's) can forget the hole and still fail the flag. Read from the original model's
reconstruction files of each set, which hold the ground truth and the evaluation mask.

    python -m pipeline_lib.report.border --params params.yaml [--task center]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file

from ..evaluation import scores as evaluate
from ..params import paths
from ..runtime.errors import DataError, PipelineError
from ..params.sets import set_names

FILLS = ("ground truth", "black", "white", "noise")


def filled(gt: torch.Tensor, mask: torch.Tensor, fill: str, seed: int) -> torch.Tensor:
    """uint8 images with the masked pixels replaced by `fill` (the ground truth itself for "ground truth")."""
    hole = mask.bool()
    if fill == "ground truth":
        return gt
    if fill == "noise":
        noise = torch.randint(0, 256, gt.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
        return torch.where(hole, noise, gt)
    return gt.masked_fill(hole, {"black": 0, "white": 255}[fill])


def border_accuracy(recon_file: str | Path, extractor_path: str | Path, batch_size: int, seed: int) -> dict[str, float]:
    """The classifier's accuracy on one reconstruction file's ground truth, per fill of its hole."""
    if not Path(recon_file).is_file():
        raise DataError(f"reconstruction file {recon_file} is missing: run the workflow (its generate stage) first")
    tensors = load_file(str(recon_file))
    # every fill in one pass: the extractor is built once, not once per fill
    images = torch.cat([filled(tensors["gt"], tensors["mask"], fill, seed) for fill in FILLS])
    logits = evaluate.extract_features(images, extractor_path, batch_size)["logits_unbiased"]
    right = (logits.argmax(dim=1) == tensors["labels"].repeat(len(FILLS))).double()
    return {fill: float(hits.mean()) for fill, hits in zip(FILLS, right.chunk(len(FILLS)))}


def border_table(params: dict, task: str, extractor_path: str | Path) -> pd.DataFrame:
    """One row per forget set and evaluation set (forget, retain): accuracy per fill of the hole."""
    ds, model = params["dataset"], params["models"][0]
    rows = []
    for name in set_names(params):
        recon = Path(paths.recon_dir(paths.set_root(ds, name), model, *paths.ORIGINAL, task))
        for which in paths.SETS:
            acc = border_accuracy(recon / f"{which}.safetensors", extractor_path, params["metrics"]["batch_size"],
                                  params["seed"])
            rows.append({"set": name or "", "images": which, **acc})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from ..params.load import load_params

    p = argparse.ArgumentParser(prog="python -m pipeline_lib.report.border", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--task", default=None, help="an evaluation task (default: params' first)")
    args = p.parse_args(argv)
    try:  # bad params or a missing file: one line naming it, not a traceback
        params = load_params(args.params)
        table = border_table(params, args.task or params["tasks"][0], paths.extractor_file(params["dataset"]))
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table.to_markdown(index=False, floatfmt=".3f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
