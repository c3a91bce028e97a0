"""Shared set-up: subprocesses (Snakemake, DVC, the stage CLI) resolve `python` to this interpreter, the
smoke preset runs once per test session and engine (`smoke_runs`), and tests are grouped for two workers.

`make test` runs two pytest-xdist workers (`-n 2 --dist loadgroup`): most tests use one thread, and the
workflow tests wait on subprocesses and on SLURM, so one worker alone leaves a core idle. The groups keep
shared work from being done twice or disturbed: a module whose tests share a module-scoped fixture stays in
one worker (the fixture is built once); every SLURM test goes to one worker (the cluster has one node, and a
test drains it); the smoke runs are made once for both workers, under a file lock, in the session's shared
directory. A test's bytes do not depend on the other worker: every job's thread count is fixed by params.
"""

import concurrent.futures
import fcntl
import json
import os
import sys
from pathlib import Path

import pytest

from helpers import init_dvc_repo, make_project, run, torch_threads

os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def _shares_a_module_fixture(item) -> bool:
    defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    return any(d.scope in ("module", "class", "package") for chain in defs.values() for d in chain)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.xdist_group("slurm"))
        elif _shares_a_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


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


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory):
    """The smoke preset run once by each engine, side by side: Snakemake in one project copy, `dvc repro` in a
    git repository of another. Tests read these runs; a test that changes a run works on its own copy
    (`helpers.copy_run`), so no test depends on another's order or leftovers. Under xdist the first worker
    to need them makes them in the directory both workers share; the other waits on the lock and reads them."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    shared = tmp_path_factory.getbasetemp().parent if worker else tmp_path_factory.getbasetemp()
    base, logs = shared / "smoke", shared / "smoke" / "logs.json"
    with open(shared / "smoke.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if a worker dies
        if not logs.is_file():
            base.mkdir(exist_ok=True)
            logs.write_text(json.dumps(_run_smoke(base)))
    return {"smk": base / "snakemake", "dvc": base / "dvc", **json.loads(logs.read_text())}
