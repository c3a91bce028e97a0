"""Shared set-up: subprocesses (Snakemake, DVC, the stage CLI) resolve `python` to this interpreter, the
smoke preset runs once per test session and engine (`smoke_runs`), and tests are grouped for the workers.

`make test` runs three pytest-xdist workers on the two cores (`-n 3 --dist loadscope --no-loadscope-reorder`):
most tests use one thread, the workflow tests wait on subprocesses, and the SLURM tests mostly wait on the
cluster's status polls, so fewer workers leave a core idle. Each module runs in one worker, so a module-scoped fixture is built
once and the SLURM tests (all in test_slurm.py: the cluster has one node, and a test drains it) never run
side by side. The smoke runs are made once for all workers, under a file lock, in the session's shared
directory. A test's bytes do not depend on the other workers: every job's thread count is fixed by params.
"""

import concurrent.futures
import fcntl
import json
import os
import sys
import threading
from pathlib import Path

import pytest

# Before torch loads (here and in every subprocess): the session runs more busy threads than the two cores
# (three workers, the two engines side by side, two threads a job), and OpenMP's default spin-wait then burns
# the cores the other threads need (bench/omp_spin.py measures it side by side), and a
# job's CPU seconds (which tests/test_plan.py compares with the plan) counted the spinning. A short spin keeps
# a lone process as fast as the default. It changes when a thread sleeps, never what it computes.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

from helpers import init_dvc_repo, make_project, run, torch_threads  # noqa: E402

os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


#: the modules that hold the session's longest chains, handed to the workers first, in this order (`make test`
#: keeps xdist from re-sorting modules by test count: --no-loadscope-reorder). The SLURM module comes first: its
#: 15 minutes mostly wait on the cluster, so it must run beside everything else, not after it.
FIRST = ("test_slurm.py", "test_engines.py", "test_axes.py", "test_paperscale_engines.py", "test_rehearsal.py")


def pytest_collection_modifyitems(config, items):
    # within a module, the tests that need no smoke run first: they run while the smoke runs are made
    def rank(item):
        module = item.path.name
        return (FIRST.index(module) if module in FIRST else len(FIRST),
                "smoke_runs" in getattr(item, "fixturenames", ()))
    items.sort(key=rank)


def pytest_collection_finish(session):
    """Start the smoke runs as soon as the tests that read them are known, in the background: no worker
    then waits minutes for them in the middle of the session."""
    if session.config.option.collectonly:
        return
    if any("smoke_runs" in getattr(item, "fixturenames", ()) for item in session.items):
        shared = _shared_dir(session.config._tmp_path_factory)
        threading.Thread(target=_smoke_once, args=(shared,), daemon=True).start()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small-tensor tests run faster on one thread, and do not fight a busy second core."""
    with torch_threads(1):
        yield


def _run_smoke(base: Path) -> dict[str, str]:
    smk = make_project(base / "snakemake")
    dvc = make_project(base / "dvc")
    init_dvc_repo(dvc)
    # each job's thread count is fixed by params, so results do not depend on the engines running side by side
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        smk_log = pool.submit(run, ["snakemake", "--profile", "profiles/local"], smk)
        dvc_log = pool.submit(run, ["dvc", "repro"], dvc)
        return {"smk_log": smk_log.result(), "dvc_log": dvc_log.result()}


def _shared_dir(tmp_path_factory) -> Path:
    """The session's directory both xdist workers see (the base temp directory without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _smoke_once(shared: Path) -> dict:
    """The smoke runs' logs, made by whichever caller (worker, or background thread) takes the lock first."""
    base, logs = shared / "smoke", shared / "smoke" / "logs.json"
    with open(shared / "smoke.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if a worker dies
        if not logs.is_file():
            base.mkdir(exist_ok=True)
            logs.write_text(json.dumps(_run_smoke(base)))
    return {"smk": base / "snakemake", "dvc": base / "dvc", **json.loads(logs.read_text())}


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory):
    """The smoke preset run once by each engine, side by side: Snakemake in one project copy, `dvc repro` in a
    git repository of another. Tests read these runs; a test that changes a run works on its own copy
    (`helpers.copy_run`), so no test depends on another's order or leftovers. Under xdist the first worker
    to need them makes them in the directory both workers share; the other waits on the lock and reads them.
    They start in the background when the session's tests are collected (`pytest_collection_finish`)."""
    return _smoke_once(_shared_dir(tmp_path_factory))
