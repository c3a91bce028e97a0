"""Benchmark: where the two feedback loops spend their time: the default experiment run cold, and the test suite.

The default: copies the repository's tracked and unignored files into a temporary directory (a fresh clone,
no data, no results), runs `snakemake --profile profiles/local` there, and prints the wall time, the sum of
the jobs' times (benchmark files and logs, as `python -m pipeline_lib.report.timings` reads them) with the
ratio of the two (how many jobs ran side by side on average), and each stage's share of the job time and
the cores its jobs kept busy.

With --alpha, the finished run is then asked again: a no-op dry run (`snakemake -n`, timed), and the re-run
after `methods.l2n.alpha` changes to the given value (the jobs it ran and its wall time).

The suite: reads the output of `pytest --durations=0` (saved to a file) and prints the summed test time, the
shares of the slowest tests and of each test file. Shares and ratios come from one run, so they hold on a
busy machine too, where absolute times do not.

    .venv/bin/python bench/feedback.py                                   # the default, cold (about 20 min)
    .venv/bin/python bench/feedback.py --keep /tmp/default-run          # ... and keep the run there
    .venv/bin/python bench/feedback.py --alpha 0.25                     # ... then a no-op and an alpha change
    make test PYTEST_ARGS=--durations=0 | tee /tmp/suite.txt
    .venv/bin/python bench/feedback.py --suite /tmp/suite.txt --no-run   # the suite's shares only
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from pipeline_lib.report.timings import stage_shares, timing_table

REPO = Path(__file__).resolve().parents[1]
DURATION = re.compile(r"^\s*([\d.]+)s (call|setup|teardown)\s+(\S+?)::(\S+)", re.M)


def fresh_copy(dest: Path) -> Path:
    """The repository's tracked and unignored files, as a clone has them."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


def run_default(root: Path, extra: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(["snakemake", "--profile", "profiles/local", *extra], cwd=root, check=True)
    return time.perf_counter() - start


def default_report(root: Path, wall_s: float) -> str:
    table = timing_table(root / "benchmarks", root / "logs")
    jobs_s = float(table.iloc[-1]["wall s"])
    shares = stage_shares(table)
    lines = [f"default run, cold: wall {wall_s / 60:.1f} min; jobs {len(table) - 1}, their times summed "
             f"{jobs_s / 60:.1f} min; jobs side by side on average (sum / wall) {jobs_s / wall_s:.2f}", "",
             shares.to_markdown(index=False, floatfmt=".2f")]
    return "\n".join(lines)


def rerun_report(root: Path, alpha: float) -> str:
    """The no-op dry run's time, then the re-run after an α change: what ran, and how long it took."""
    start = time.perf_counter()
    dry = subprocess.run(["snakemake", "--profile", "profiles/local", "-n"], cwd=root, check=True,
                         capture_output=True, text=True).stdout
    noop_s = time.perf_counter() - start
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["methods"]["l2n"]["alpha"] = [alpha]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    start = time.perf_counter()
    log = subprocess.run(["snakemake", "--profile", "profiles/local"], cwd=root, check=True, capture_output=True,
                         text=True)
    rerun_s = time.perf_counter() - start
    blocks = re.split(r"^(?:local)?rule (?=\w+:$)", log.stdout + log.stderr, flags=re.M)[1:]
    ran = [(b.split(":", 1)[0], (re.findall(r"^\s+wildcards: (.*)$", b.split("\n\n", 1)[0], re.M) or [""])[0])
           for b in blocks if not b.startswith("all:")]
    lines = [f"no-op dry run: {noop_s:.1f} s ({'nothing to do' if 'Nothing to be done' in dry else 'has work'})",
             f"alpha -> {alpha}: re-run wall {rerun_s:.0f} s, {len(ran)} jobs:"]
    lines += [f"  {rule}: {wildcards}" for rule, wildcards in ran]
    return "\n".join(lines)


def suite_report(text: str, top: int = 15) -> str:
    rows = [{"seconds": float(s), "phase": phase, "file": f, "test": t} for s, phase, f, t in DURATION.findall(text)]
    if not rows:
        raise SystemExit("no `pytest --durations` lines found: run pytest with --durations=0")
    df = pd.DataFrame(rows)
    total = df["seconds"].sum()
    slowest = df.sort_values("seconds", ascending=False).head(top).assign(share=lambda d: d["seconds"] / total)
    files = (df.groupby("file")["seconds"].sum().sort_values(ascending=False).to_frame()
             .assign(share=lambda d: d["seconds"] / total).reset_index())
    summary = re.findall(r"=+ (.*(?:passed|failed).* in [\d.]+s.*) =+", text)
    head = f"test suite: tests' times summed {total / 60:.1f} min" + (f"; pytest: {summary[-1]}" if summary else "")
    return "\n".join([head, "", slowest.to_markdown(index=False, floatfmt=".2f"), "",
                      files.to_markdown(index=False, floatfmt=".2f")])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", type=Path, help="run the default here (kept) instead of a temporary directory")
    p.add_argument("--no-run", action="store_true", help="skip the default run (with --suite)")
    p.add_argument("--alpha", type=float, help="after the cold run: time a no-op dry run, then an alpha change")
    p.add_argument("--suite", type=Path, help="a saved `pytest --durations=0` output to summarise")
    p.add_argument("snakemake_args", nargs="*", help="extra snakemake arguments, after --")
    args = p.parse_args(argv)
    if not args.no_run:
        with tempfile.TemporaryDirectory(prefix="default-run-") as tmp:
            root = fresh_copy(args.keep or Path(tmp))
            wall = run_default(root, args.snakemake_args)
            print(default_report(root, wall))
            if args.alpha is not None:
                print()
                print(rerun_report(root, args.alpha))
    if args.suite:
        print()
        print(suite_report(args.suite.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
