"""Shared set-up: subprocesses (Snakemake, DVC, the stage CLI) resolve `python` to this interpreter."""

import os
import sys
from pathlib import Path

import pytest

from helpers import torch_threads

os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small-tensor tests run faster on one thread, and do not fight a busy second core."""
    with torch_threads(1):
        yield
