"""Where the time goes: a per-stage table from Snakemake's benchmark files (benchmarks/<rule>/...tsv)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def timing_table(bench_dir: str | Path = "benchmarks") -> pd.DataFrame:
    rows = []
    for tsv in sorted(Path(bench_dir).rglob("*.tsv")):
        rel = tsv.relative_to(bench_dir).with_suffix("")
        stats = pd.read_csv(tsv, sep="\t").iloc[-1]
        rows.append({"stage": rel.parts[0], "job": "/".join(rel.parts[1:]), "wall s": float(stats["s"]),
                     "max RSS MB": float(stats["max_rss"]) if str(stats["max_rss"]) != "-" else None})
    if not rows:
        raise FileNotFoundError(f"no benchmark files under {bench_dir}: run the workflow with Snakemake first")
    df = pd.DataFrame(rows)
    total = pd.DataFrame([{"stage": "total", "job": "", "wall s": df["wall s"].sum(), "max RSS MB": None}])
    return pd.concat([df, total], ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m pipeline_lib.timings", description=__doc__)
    p.add_argument("--bench-dir", default="benchmarks")
    args = p.parse_args(argv)
    print(timing_table(args.bench_dir).to_markdown(index=False, floatfmt=".1f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
