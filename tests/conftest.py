"""Shared set-up: subprocesses (Snakemake, DVC, the stage CLI) resolve `python` to this interpreter, the
smoke preset runs once per test session and engine (`smoke_runs`), and the tests are grouped for two workers.

`make test` runs two pytest-xdist workers (`-n 2 --dist loadgroup`): most tests use one thread, and the
workflow tests wait on subprocesses and on SLURM, so one worker alone leaves a core idle. Grouping keeps each
piece of shared work in one worker: a module's tests stay together (its module-scoped fixtures are built
once), and every test that reads the session's smoke runs or uses the SLURM cluster goes to one group, so the
smoke preset runs once and no two tests disturb the cluster at the same time. A test's bytes do not depend on
the other worker: every job's thread count is fixed by params."""

import concurrent.futures
import os
import sys
from pathlib import Path

import pytest

from helpers import init_dvc_repo, make_project, run, torch_threads

os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


#: the group of every test that reads the session's smoke runs or submits to the local SLURM cluster
SHARED_GROUP = "smoke-and-slurm"


def pytest_collection_modifyitems(config, items):
    for item in items:
        shared = "smoke_runs" in getattr(item, "fixturenames", ()) or item.get_closest_marker("slurm")
        item.add_marker(pytest.mark.xdist_group(SHARED_GROUP if shared else item.module.__name__))


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
