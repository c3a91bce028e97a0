"""Benchmark: OpenMP's spin-wait when more busy threads than cores share a machine, as in the test suite.

    .venv/bin/python bench/omp_spin.py                 # 3 processes x 2 threads on this machine's cores
    .venv/bin/python bench/omp_spin.py --procs 1       # a lone process: the short spin must cost nothing

Why: `make test` runs three workers on two cores, each starting stages with two torch threads. torch's
OpenMP threads spin for a while before they sleep (GOMP_SPINCOUNT, 300000 by default), so a waiting thread
burns the core another process needs, and its CPU seconds count the spinning. tests/conftest.py sets a short
spin (GOMP_SPINCOUNT=1000) for the session. This script runs the same small-matmul workload (the size of the
smoke preset's layers) in `--procs` processes at once, with the default spin and with the short one, in
alternating rounds, and prints the wall and CPU seconds of each and the ratio default / short (medians).
The setting changes when a thread sleeps, never what it computes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

WORKLOAD = """
import torch
torch.set_num_threads({threads})
x, w = torch.randn(64, 256), torch.randn(256, 256)
for _ in range({steps}):
    x = torch.nn.functional.gelu(x @ w) / 16
"""


def run_round(procs: int, threads: int, steps: int, spin: str | None) -> tuple[float, float]:
    """Wall and CPU seconds (children's user + system) of `procs` processes started together."""
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if spin is not None:
        env["GOMP_SPINCOUNT"] = spin
    code = WORKLOAD.format(threads=threads, steps=steps)
    before = os.times()
    start = time.perf_counter()
    running = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(procs)]
    for p in running:
        if p.wait():
            raise SystemExit(f"the workload failed (exit {p.returncode})")
    wall = time.perf_counter() - start
    after = os.times()
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--procs", type=int, default=3, help="processes at once (default 3, as make test's workers)")
    p.add_argument("--threads", type=int, default=2, help="torch threads each (default 2, a stage's)")
    p.add_argument("--steps", type=int, default=5000, help="matmuls per process")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--spin", default="1000", help="the short GOMP_SPINCOUNT (default 1000, the suite's)")
    args = p.parse_args(argv)
    results: dict[str, list[tuple[float, float]]] = {"default": [], "short": []}
    for _ in range(args.rounds):
        results["default"].append(run_round(args.procs, args.threads, args.steps, None))
        results["short"].append(run_round(args.procs, args.threads, args.steps, args.spin))
    print(f"{args.procs} processes x {args.threads} threads on {os.cpu_count()} cores, {args.steps} matmuls "
          f"each, {args.rounds} alternating rounds (medians)")
    print("| spin | wall s | cpu s |\n|---|---|---|")
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in results.items()}
    for name, (wall, cpu) in med.items():
        label = "GOMP_SPINCOUNT unset" if name == "default" else f"GOMP_SPINCOUNT={args.spin}"
        print(f"| {label} | {wall:.2f} | {cpu:.2f} |")
    print(f"default / short: wall x{med['default'][0] / med['short'][0]:.2f}, "
          f"cpu x{med['default'][1] / med['short'][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
