"""Shared set-up: subprocesses (Snakemake, DVC, the stage CLI) resolve `python` to this interpreter, and the
smoke preset runs once per test session and engine (`smoke_runs`)."""

import concurrent.futures
import os
import sys
from pathlib import Path

import pytest

from helpers import init_dvc_repo, make_project, run, torch_threads

os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small-tensor tests run faster on one thread, and do not fight a busy second core."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory):
    """The smoke preset run once by each engine, side by side: Snakemake in one project copy, `dvc repro` in a
    git repository of another. Tests read these runs; a test that changes a run works on its own copy
    (`helpers.copy_run`), so no test depends on another's order or leftovers."""
    base = tmp_path_factory.mktemp("smoke")
    smk = make_project(base / "snakemake")
    dvc = make_project(base / "dvc")
    init_dvc_repo(dvc)
    # each job's thread count is fixed by params, so results do not depend on the engines running side by side
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        smk_log = pool.submit(run, ["snakemake", "--profile", "profiles/local"], smk)
        dvc_log = pool.submit(run, ["dvc", "repro"], dvc)
        return {"smk": smk, "smk_log": smk_log.result(), "dvc": dvc, "dvc_log": dvc_log.result()}
