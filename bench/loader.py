"""Benchmark: can the DataLoader workers feed an unlearning step, and does the data stage stay flat?

1. Loader throughput: decoded + transformed (RGB, resize + centre crop to --size, the MAE's normalisation)
   images/s of ONE worker, on generated JPEGs of ImageNet's typical size (500 x 375, quality 90).
2. The step rate of l2n unlearning on a ViT-B MAE (patch 16, 768 wide, 12 blocks; decoder 512 x 8) at
   --size px, --batch images per side (retain + forget), on the chosen device.
   Their ratio is the number of workers one device needs so that data never waits: printed in one table.
3. Peak RSS of the data stage (`image_folder.record`, in a fresh process) on trees of N and 10 N tiny
   images: the file list is streamed to disk, so the peak should not grow with the tree.

    .venv/bin/python bench/loader.py                       # 256 px, 64 JPEGs, batch 2, CPU, trees of 2000 / 20000
    .venv/bin/python bench/loader.py --device cuda --batch 16 --steps 20
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

from pipeline_lib.data import image_folder
from pipeline_lib.training.loaders import BalancedLoader, mask_sampler
from pipeline_lib.methods import build_method
from pipeline_lib.models import build_model
from pipeline_lib.params import dataset

VIT_B = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, decoder_embed_dim=512, decoder_depth=8,
             decoder_num_heads=16, mlp_ratio=4.0, norm_pix_loss=False)


def _jpegs(root: Path, classes: int, per_class: int, size: tuple[int, int], seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                # smooth noise compresses like a photograph, not like white noise
                small = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
                Image.fromarray(small).resize(size, Image.BICUBIC).save(d / f"{i:06d}.JPEG", quality=90)


def loader_rate(root: Path, size: int, rounds: int = 3) -> float:
    """Images/s of one worker: decode, RGB, resize, crop, normalise (what a DataLoader worker does)."""
    params = {"data": {"kind": "image_folder", "image_size": size, "mean": None, "std": None}}
    raw = root / "raw"
    image_folder.record(str(root), raw)
    reader = dataset.reader(params, raw)
    images = reader.images(torch.arange(len(reader.labels(True))), True)
    codec = dataset.codec(params, "mae")
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(len(images)):
            codec.encode(images[i].unsqueeze(0))
        best = max(best, len(images) / (time.perf_counter() - start))
    return best


def step_rate(size: int, batch: int, steps: int, device: torch.device) -> float:
    """Images/s (retain + forget) of l2n steps on a ViT-B MAE, after one warm-up step."""
    teacher = build_model("mae", VIT_B, size, in_chans=3).to(device)
    student = copy.deepcopy(teacher)
    objective = build_method("l2n", student, teacher, alpha=0.25, norm="l2")
    g = torch.Generator().manual_seed(0)
    data = torch.randn(batch * (steps + 1), 3, size, size)
    loader = BalancedLoader(data, data, batch, g, mask_sampler({"kind": "random", "ratio": 0.75, "patch": 16}, size,
                                                               16, g))
    opt = torch.optim.AdamW(objective.trainable_parameters(), lr=1e-4)
    objective.train_mode()
    times = []
    for batch_ in loader:
        batch_ = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch_.items()}
        start = time.perf_counter()
        loss = objective.loss(batch_)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 2 * batch / float(np.median(times[1:]))


RSS_PROBE = """
import sys
from pipeline_lib.data.image_folder import record
record(sys.argv[1], sys.argv[2])
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) // 1024)
"""


def record_peak_rss(n: int, base: Path) -> tuple[int, float]:
    """Peak RSS (MiB) and seconds of the data stage's listing on a tree of n tiny (1 kB) images."""
    root = base / f"tree{n}"
    payload = b"\xff\xd8" + bytes(1024)
    per_class = 100
    for split in ("train", "val"):
        for c in range(max(1, n // per_class)):
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class if split == "train" else 1):
                (d / f"{i:06d}.JPEG").write_bytes(payload)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", RSS_PROBE, str(root), str(base / f"raw{n}")], check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[-1]), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--images", type=int, default=64, help="generated JPEGs for the loader rate")
    ap.add_argument("--batch", type=int, default=2, help="images per side of an unlearning step")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tree", type=int, default=2000, help="images of the small tree (the large one has 10x)")
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        _jpegs(base / "jpegs", classes=4, per_class=args.images // 4, size=(500, 375))
        per_worker = loader_rate(base / "jpegs", args.size)
        step = step_rate(args.size, args.batch, args.steps, torch.device(args.device))
        print(tabulate([[f"{per_worker:.1f}", f"{step:.2f}", f"{step / per_worker:.2f}"]],
                       headers=[f"loader img/s per worker ({args.size} px)",
                                f"ViT-B MAE l2n img/s ({args.device}, batch {args.batch}+{args.batch})",
                                "workers needed (step / loader)"], tablefmt="github"))
        rows = []
        for n in (args.tree, 10 * args.tree):
            rss, secs = record_peak_rss(n, base)
            rows.append([n, rss, f"{secs:.1f}"])
        print()
        print(tabulate(rows, headers=["images in tree", "data stage peak RSS (MiB)", "s"], tablefmt="github"))


if __name__ == "__main__":
    main()
