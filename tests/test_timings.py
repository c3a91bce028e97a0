"""The timing table counts every job once (a verification job has a benchmark file and a log) and gives each
stage's share of the time and the cores its jobs kept busy. Hand-written Snakemake benchmark files and logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline_lib.report.timings import stage_shares, timing_table

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def bench(root: Path, rel: str, wall: float, cpu: float | str) -> None:
    path = root / "benchmarks" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{wall}\t0:00:00\t100.0\t200\t90\t95\t0\t0\t50\t{cpu}\n")


def log(root: Path, rel: str, first: str, last: str) -> None:
    path = root / "logs" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{first} INFO pipeline_lib: stage start\n{last} INFO pipeline_lib: stage done\n")


@pytest.fixture
def run_dir(tmp_path):
    bench(tmp_path, "verify_probe/fm/mae/l2n/a.tsv", 10.0, 18.0)
    log(tmp_path, "verify/fm/mae/l2n/a/probe.log", "2026-01-01 00:00:00,000", "2026-01-01 00:00:10,000")
    bench(tmp_path, "unlearn/fm/mae/l2n/a.tsv", 30.0, 30.0)
    log(tmp_path, "unlearn/fm/mae/l2n/a.log", "2026-01-01 00:00:00,000", "2026-01-01 00:00:30,000")
    log(tmp_path, "pretrain/fm/mae.log", "2026-01-01 00:00:00,000", "2026-01-01 00:01:00,000")  # cached: no tsv
    bench(tmp_path, "splits/fm.tsv", 5.0, "-")
    return tmp_path


def test_each_job_is_counted_once(run_dir):
    table = timing_table(run_dir / "benchmarks", run_dir / "logs")
    jobs = table[table["stage"] != "total"]
    assert sorted(jobs["stage"]) == ["pretrain", "splits", "unlearn", "verify_probe"]
    assert table.iloc[-1]["wall s"] == pytest.approx(10 + 30 + 60 + 5)
    assert jobs.set_index("stage").loc["pretrain", "wall s"] == pytest.approx(60.0)  # from its log


def test_stage_shares_give_time_shares_and_cores_busy(run_dir):
    shares = stage_shares(timing_table(run_dir / "benchmarks", run_dir / "logs")).set_index("stage")
    assert shares["share"].sum() == pytest.approx(1.0)
    assert shares.loc["pretrain", "share"] == pytest.approx(60 / 105)
    assert shares.loc["verify_probe", "cores busy"] == pytest.approx(1.8)
    assert shares.loc["unlearn", "cores busy"] == pytest.approx(1.0)
    assert shares.index[0] == "pretrain"  # the largest first
    assert shares["cores busy"].isna()[["pretrain", "splits"]].all()  # no CPU time measured
