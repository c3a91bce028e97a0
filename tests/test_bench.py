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
