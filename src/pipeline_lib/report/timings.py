"""Where the time goes: every job's wall time, CPU time and peak memory, and each stage's share.

Snakemake's benchmark files (benchmarks/<rule>/...tsv) give wall time, CPU time and peak memory. The model
rules (pre-training, tokenizer, retrain, extractor) take part in Snakemake's between-workflow output cache,
which forbids a benchmark file, so their time is read from their own log (logs/<rule>/...log): the span
between its first and last time-stamped line. A job with a benchmark file is counted once: the verification
rules (`verify_probe`, ...) write their logs under logs/verify/, which is not read when such a file exists.
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
                     "cpu s": _number(stats.get("cpu_time")), "max RSS MB": _number(stats.get("max_rss"))})
    logs = Path(log_dir)
    for log in sorted(logs.rglob("*.log")) if logs.is_dir() else []:
        rel = log.relative_to(logs).with_suffix("")
        benchmarked = any(s == rel.parts[0] or s.startswith(rel.parts[0] + "_") for s in seen)
        span = None if benchmarked else log_span_s(log)
        if span is not None:
            rows.append({"stage": rel.parts[0], "job": "/".join(rel.parts[1:]), "wall s": span, "cpu s": None,
                         "max RSS MB": None})
    if not rows:
        raise FileNotFoundError(f"no benchmark files under {bench_dir}: run the workflow with Snakemake first")
    df = pd.DataFrame(rows)
    total = pd.DataFrame([{"stage": "total", "job": "", "wall s": df["wall s"].sum(), "cpu s": df["cpu s"].sum(),
                           "max RSS MB": None}])
    return pd.concat([df, total], ignore_index=True)


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):  # Snakemake writes "-" where it could not measure
        return None


def stage_shares(table: pd.DataFrame) -> pd.DataFrame:
    """Per stage: jobs, summed wall and CPU seconds, share of all jobs' wall time, and the cores a job kept
    busy on average (CPU ÷ wall, where the benchmark measured CPU time: below 1.5 on two cores says two
    one-thread jobs side by side would finish sooner)."""
    jobs = table[table["stage"] != "total"]
    out = jobs.groupby("stage", sort=False).agg(jobs=("job", "size"), wall_s=("wall s", "sum"),
                                               cpu_s=("cpu s", lambda c: c.sum(min_count=1)))
    out["share"] = out["wall_s"] / out["wall_s"].sum()
    measured = jobs.dropna(subset=["cpu s"]).groupby("stage")["wall s"].sum()
    out["cores busy"] = out["cpu_s"] / measured.reindex(out.index)
    return out.sort_values("wall_s", ascending=False).reset_index().rename(columns={"wall_s": "wall s",
                                                                                   "cpu_s": "cpu s"})


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m pipeline_lib.report.timings", description=__doc__)
    p.add_argument("--bench-dir", default="benchmarks")
    p.add_argument("--log-dir", default="logs")
    args = p.parse_args(argv)
    table = timing_table(args.bench_dir, args.log_dir)
    print(table.to_markdown(index=False, floatfmt=".1f"))
    print()
    print(stage_shares(table).to_markdown(index=False, floatfmt=".2f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
