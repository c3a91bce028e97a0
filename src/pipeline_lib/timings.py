"""Where the time goes: a per-stage table of every job's wall time.

Snakemake's benchmark files (benchmarks/<rule>/...tsv) give wall time and peak memory. The model rules
(pre-training, tokenizer, retrain, extractor) take part in Snakemake's between-workflow output cache, which
forbids a benchmark file, so their time is read from their own log (logs/<rule>/...log): the span between
its first and last time-stamped line.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pandas as pd

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", re.M)


def log_span_s(log: Path) -> float | None:
    """Seconds from the first to the last time-stamped line of a stage log (None without two stamps)."""
    stamps = STAMP.findall(log.read_text(errors="replace"))
    if len(stamps) < 2:
        return None
    first, last = (datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in (stamps[0], stamps[-1]))
    return (last - first).total_seconds()


def timing_table(bench_dir: str | Path = "benchmarks", log_dir: str | Path = "logs") -> pd.DataFrame:
    rows, seen = [], set()
    for tsv in sorted(Path(bench_dir).rglob("*.tsv")):
        rel = tsv.relative_to(bench_dir).with_suffix("")
        stats = pd.read_csv(tsv, sep="\t").iloc[-1]
        seen.add(rel.parts[0])
        rows.append({"stage": rel.parts[0], "job": "/".join(rel.parts[1:]), "wall s": float(stats["s"]),
                     "max RSS MB": float(stats["max_rss"]) if str(stats["max_rss"]) != "-" else None})
    logs = Path(log_dir)
    for log in sorted(logs.rglob("*.log")) if logs.is_dir() else []:
        rel = log.relative_to(logs).with_suffix("")
        span = None if rel.parts[0] in seen else log_span_s(log)
        if span is not None:
            rows.append({"stage": rel.parts[0], "job": "/".join(rel.parts[1:]), "wall s": span, "max RSS MB": None})
    if not rows:
        raise FileNotFoundError(f"no benchmark files under {bench_dir}: run the workflow with Snakemake first")
    df = pd.DataFrame(rows)
    total = pd.DataFrame([{"stage": "total", "job": "", "wall s": df["wall s"].sum(), "max RSS MB": None}])
    return pd.concat([df, total], ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m pipeline_lib.timings", description=__doc__)
    p.add_argument("--bench-dir", default="benchmarks")
    p.add_argument("--log-dir", default="logs")
    args = p.parse_args(argv)
    print(timing_table(args.bench_dir, args.log_dir).to_markdown(index=False, floatfmt=".1f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
