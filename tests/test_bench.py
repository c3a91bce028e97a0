"""bench/gpu.py, the prepared GPU benchmark, keeps working: its CPU `--tiny` run goes through every case, and
without CUDA the real run stops with a message instead of a traceback."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from helpers import REPO_ROOT


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO_ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_tiny_run_measures_every_case_on_the_cpu(capsys, one_torch_thread):
    assert _bench().main(["--tiny", "--peak-tflops", "1"]) == 0
    out = capsys.readouterr().out
    for case in ("MAE tiny fp32", "MAE tiny bf16", "U-Net tiny fp32", "U-Net tiny bf16", "U-Net tiny bf16 NHWC"):
        assert f"| {case} " in out, out
    assert "%" in out  # the bf16 MAE row's MFU against the given peak


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real benchmark")
def test_without_cuda_the_real_run_stops_with_a_message(capsys):
    assert _bench().main([]) == 2
    err = capsys.readouterr().err
    assert "none is visible" in err and "--tiny" in err


def _feedback():
    spec = importlib.util.spec_from_file_location("bench_feedback", REPO_ROOT / "bench" / "feedback.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SUITE = """
============================= slowest durations ==============================
30.00s call     tests/test_engines.py::test_a
10.00s setup    tests/test_engines.py::test_b
5.00s call     tests/test_docs.py::test_c
5.00s call     tests/test_docs.py::test_d[x]
=================== 4 passed, 1 skipped in 52.10s ===================
"""


def test_the_suite_report_gives_shares_of_the_slowest_tests_and_files():
    out = _feedback().suite_report(SUITE, top=2)
    assert "tests' times summed 0.8 min" in out and "4 passed, 1 skipped in 52.10s" in out
    assert "| test_a " in out and "0.60" in out  # 30 of 50 s
    assert "| test_c " not in out.split("\n\n")[1]  # only the two slowest in the first table
    assert "| tests/test_docs.py " in out and "0.20" in out  # the file's 10 of 50 s


def test_the_default_report_reads_the_runs_timings(tmp_path):
    from test_timings import bench, log

    bench(tmp_path, "unlearn/fm/mae.tsv", 30.0, 60.0)
    log(tmp_path, "pretrain/fm/mae.log", "2026-01-01 00:00:00,000", "2026-01-01 00:01:30,000")
    out = _feedback().default_report(tmp_path, wall_s=60.0)
    assert "wall 1.0 min; jobs 2, their times summed 2.0 min" in out and "(sum / wall) 2.00" in out
    assert "| pretrain " in out and "| unlearn " in out and "2.00" in out  # unlearn kept 2 cores busy
