"""Benchmark: what pinning the CPU kernels at AVX2 costs (runtime/kernels.py), as a ratio against the machine's
own kernels, measured side by side.

Each round runs the same training steps twice in fresh processes, once pinned (the default) and once with
PIPELINE_CPU_KERNELS=native, alternating which goes first; it prints each family's steps/s both ways and the
median ratio native / pinned over the rounds (above 1: the pin costs that factor). The steps are the default
experiment's own: its MAE, VQ-GAN token model and U-Net at their params.yaml sizes, one pre-training step
each on a batch of random images (the VQ-GAN's tokenizer as built, untrained).

    .venv/bin/python bench/kernels.py               # 5 rounds
    .venv/bin/python bench/kernels.py --rounds 1 --steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("mae", "vqgan", "diffusion")

CHILD = r"""
import json, sys, time
import torch
from pipeline_lib.params.load import load_params
from pipeline_lib.params.grid import family_arch
from pipeline_lib.models import build_model
from pipeline_lib.models.base import FamilyObjective
from pipeline_lib.runtime import kernels
from pipeline_lib.data.masks import sample_mask

params = load_params(sys.argv[1])
steps, batch = int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(2)
out = {"aten": kernels.in_force()["aten_capability"]}
for family in sys.argv[4:]:
    torch.manual_seed(0)
    size = params["data"]["image_size"]
    net = build_model(family, family_arch(params, family), size, in_chans=1).train()
    objective = FamilyObjective(net)
    opt = torch.optim.AdamW(objective.trainable_parameters(), lr=1e-4)
    x = torch.randn(batch, 1, size, size)
    g = torch.Generator().manual_seed(0)
    mask = sample_mask(params["task"]["center"], batch, size, net.mask_granularity, g)
    def step():
        loss = objective.loss({"x": x, "mask": mask})["loss"]
        opt.zero_grad(); loss.backward(); opt.step()
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    out[family] = steps / (time.perf_counter() - start)
print(json.dumps(out))
"""


def run(native: bool, steps: int, batch: int, params: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                                                            "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")}
    if native:
        env["PIPELINE_CPU_KERNELS"] = "native"
    proc = subprocess.run([sys.executable, "-c", CHILD, params, str(steps), str(batch), *FAMILIES], cwd=REPO, env=env,
                          check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--params", default=str(REPO / "params.yaml"))
    args = p.parse_args(argv)
    pinned, native = [], []
    for i in range(args.rounds):
        order = (False, True) if i % 2 == 0 else (True, False)
        for is_native in order:
            (native if is_native else pinned).append(run(is_native, args.steps, args.batch, args.params))
    rows = []
    for family in FAMILIES:
        ratios = [n[family] / p_[family] for n, p_ in zip(native, pinned)]
        rows.append([family, statistics.median(r[family] for r in pinned), statistics.median(r[family] for r in native),
                     statistics.median(ratios), min(ratios), max(ratios)])
    print(f"ATen capability: pinned {pinned[0]['aten']}, native {native[0]['aten']}; {args.rounds} rounds of "
          f"{args.steps} steps, batch {args.batch}, 2 threads")
    print(tabulate(rows, headers=["family", "pinned steps/s", "native steps/s", "native/pinned (median)", "min",
                                  "max"], floatfmt=".3f", tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
