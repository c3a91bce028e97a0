"""Nothing lost in the shared cache (issue 25, part 3): the team's caches and remote under concurrency and faults.

Everything is real: `dvc`, `snakemake` and `git` run as subprocesses on repositories made in temporary
directories; nothing is mocked. The stages are tiny stand-ins for the pipeline's (a deterministic 4 MiB file, or
a directory of many files), so each test takes seconds, not the pipeline's minutes.

- two clones sharing one DVC cache (`cache.dir`, `cache.shared group`) reproduce the same stage at the same time;
- two workflows sharing one Snakemake output cache (`--cache`, SNAKEMAKE_OUTPUT_CACHE) run the same cached rule;
- a `dvc push` killed (SIGKILL) mid-transfer, then pushed again, leaves a remote a fresh clone pulls completely;
- one byte flipped in a remote object: what `dvc pull` does with and without `remote.<name>.verify`.

"At the same time" is enforced, not hoped for: the stage command waits at a barrier (a directory each running
command signs) until both have started, so both computations overlap whatever the machine's load.
docs/cluster.md, "What the shared cache and the remote guarantee", states what these tests establish.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")
SNAKEMAKE = str(BIN / "snakemake")
TIMEOUT = 240  # seconds for any one command; they take a few seconds
#: how DVC's commit race shows when it strikes (an error on the output or the cache object); see test 1
RACE_SIGNS = ("No such file or directory", "Permission denied")

#: the stage's program: a deterministic 4 MiB file written slowly in 32 chunks (so a reader could catch it half
#: written), after a barrier that holds each run until TEAM_FAULTS_PARTIES runs have started
GEN_PY = '''\
import json, os, random, sys, time
from pathlib import Path

SIZE, CHUNK = 4 * 1024 * 1024, 128 * 1024


def chunks():
    for i in range(SIZE // CHUNK):
        yield random.Random(f"issue-25-{i}").randbytes(CHUNK)


def barrier():
    sign = os.environ.get("TEAM_FAULTS_BARRIER")
    if not sign:
        return
    parties = int(os.environ.get("TEAM_FAULTS_PARTIES", "2"))
    Path(sign).mkdir(parents=True, exist_ok=True)
    Path(sign, f"{os.getpid()}-{time.time_ns()}").touch()
    deadline = time.time() + 60
    while len(os.listdir(sign)) < parties and time.time() < deadline:
        time.sleep(0.05)


if __name__ == "__main__":
    barrier()
    with open(sys.argv[1], "wb") as f:
        for chunk in chunks():
            f.write(chunk)
            f.flush()
            time.sleep(0.02)
    if len(sys.argv) > 2:
        Path(sys.argv[2]).write_text(json.dumps({"size": SIZE}))
'''

#: many small files: a push of them takes long enough to be killed half way
MANY_PY = '''\
import os, random, sys

out, n = sys.argv[1], int(sys.argv[2])
os.makedirs(out, exist_ok=True)
for i in range(n):
    with open(os.path.join(out, f"part-{i:05d}.bin"), "wb") as f:
        f.write(random.Random(f"part-{i}").randbytes(32 * 1024))
'''
MANY = 1500  # files of 32 KiB: 48 MiB, a push of about two seconds here

STAGE_YAML = """\
stages:
  make:
    cmd: python gen.py out.bin
    deps:
      - gen.py
    outs:
      - out.bin
"""

MANY_YAML = f"""\
stages:
  many:
    cmd: python many.py parts {MANY}
    deps:
      - many.py
    outs:
      - parts
"""

SNAKEFILE = """\
rule all:
    input:
        "data/out.bin",


rule make:
    output:
        model="data/out.bin",
        meta="data/out.json",
    cache: True
    shell:
        "python gen.py {output.model} {output.meta}"
"""


# ---------------------------------------------------------------------------------------------------- helpers


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def expected(tmp_path_factory) -> str:
    """The md5 of what the stage computes, from the same program imported here (not run through any engine)."""
    path = tmp_path_factory.mktemp("gen") / "gen.py"
    path.write_text(GEN_PY)
    spec = importlib.util.spec_from_file_location("team_faults_gen", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return hashlib.md5(b"".join(module.chunks())).hexdigest()


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """The commands' environment: this interpreter's `python`, a git identity, no analytics, and DVC's per-machine
    state (site cache: the hash index and remote indexes) in this test's own directory, not /var/tmp/dvc."""
    out = dict(os.environ)
    out["PATH"] = f"{BIN}{os.pathsep}{out.get('PATH', '')}"  # `python` in the stage commands: this interpreter
    out.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.org", DVC_NO_ANALYTICS="1",
               DVC_SITE_CACHE_DIR=str(tmp_path / "dvc-site-cache"))
    out.pop("SNAKEMAKE_OUTPUT_CACHE", None)
    return out


def sh(cmd: list[str], cwd: Path, env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess:
    """Run a command; with `ok`, fail the test with its output when it fails."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=TIMEOUT, check=False)
    if ok:
        assert proc.returncode == 0, f"{' '.join(cmd)} in {cwd} failed ({proc.returncode}):\n{proc.stdout[-4000:]}"
    return proc


def together(cmds: list[tuple[list[str], Path]], env: dict[str, str]) -> list[tuple[int, str]]:
    """Start all commands at once; (return code, output) of each once all have ended."""
    procs = [subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for cmd, cwd in cmds]
    out = []
    for proc in procs:
        try:
            text, _ = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            text, _ = proc.communicate()
        out.append((proc.returncode, text))
    return out


def dvc_repo(path: Path, files: dict[str, str], env: dict[str, str]) -> Path:
    """A git + DVC repository holding `files`, committed."""
    path.mkdir(parents=True)
    sh(["git", "init", "-q", "-b", "main"], path, env)
    sh([DVC, "init", "-q"], path, env)
    for name, text in files.items():
        (path / name).write_text(text)
    sh(["git", "add", "-A"], path, env)
    sh(["git", "commit", "-qm", "init"], path, env)
    return path


def clone(origin: Path, dest: Path, env: dict[str, str]) -> Path:
    sh(["git", "clone", "-q", str(origin), str(dest)], dest.parent, env)
    return dest


def lock_md5(repo: Path, stage: str) -> str:
    import yaml

    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return lock["stages"][stage]["outs"][0]["md5"]


def objects(root: Path) -> list[Path]:
    """Object files of a DVC cache or remote (files/md5/xx/yyyy), without the `.*.tmp` leftovers of a transfer."""
    base = root / "files" / "md5"
    return sorted(p for p in base.rglob("*") if p.is_file() and not p.name.startswith("."))


def leftovers(root: Path) -> list[Path]:
    """Temporary files a transfer writes before its atomic rename (`.<random>.tmp`)."""
    return sorted(p for p in root.rglob(".*") if p.is_file())


def object_oid(path: Path) -> str:
    return path.parent.name + path.name.removesuffix(".dir")


def corrupt(path: Path, offset: int = 1_000_000, keep_mode: bool = True) -> None:
    """Flip one byte in place, as a failing disk or a stray in-place write would; by default the file keeps its
    mode (DVC stores objects read-only, 0444)."""
    mode = path.stat().st_mode & 0o7777
    path.chmod(0o644)
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    if keep_mode:
        path.chmod(mode)


# ------------------------------------------------------------------------------- 1. one shared DVC cache, two clones


@pytest.mark.parametrize("link", ["copy", "symlink"])
def test_two_clones_reproduce_one_stage_at_once_into_one_shared_cache(tmp_path, env, expected, link):
    """Both `dvc repro` finish; the shared cache holds one object for the output, and it is the right one; each
    clone's out.bin is what the stage computes; a third clone then takes the result from the shared run cache."""
    origin = dvc_repo(tmp_path / "origin", {"gen.py": GEN_PY, "dvc.yaml": STAGE_YAML}, env)
    shared = tmp_path / "shared-cache"
    shared.mkdir()
    clones = [clone(origin, tmp_path / name, env) for name in ("a", "b", "c")]
    for repo in clones:
        sh([DVC, "cache", "dir", "--local", str(shared)], repo, env)
        sh([DVC, "config", "--local", "cache.shared", "group"], repo, env)
        sh([DVC, "config", "--local", "cache.type", link], repo, env)

    barrier = tmp_path / "barrier"
    barrier.mkdir()
    runs = together([([DVC, "repro"], repo) for repo in clones[:2]],
                    dict(env, TEAM_FAULTS_BARRIER=str(barrier), TEAM_FAULTS_PARTIES="2"))
    retried = []
    for repo, (code, out) in zip(clones[:2], runs):
        assert "Running stage 'make'" in out, out
        if code != 0:
            retried.append(repo)
            # seen once in about 95 symlink runs (docs/experiments/shared-cache-races.md): this clone's commit
            # fails on a missing output or cache file; the likely cause is the other clone's first try to
            # reflink the same object, which truncates and removes it for a moment (a non-root user would get
            # "Permission denied" on it instead). The remedy: run it again; the run cache has the result.
            assert any(sign in out for sign in RACE_SIGNS), f"not the known race:\n{out}"
            again = sh([DVC, "repro"], repo, dict(env, TEAM_FAULTS_BARRIER=str(tmp_path / "barrier-again"),
                                                  TEAM_FAULTS_PARTIES="1")).stdout
            print(f"{repo.name}: the known race; `dvc repro` again:\n{out}\n{again}")
    assert len(os.listdir(barrier)) == 2, "the two stage commands did not both run, at the same time"

    stored = objects(shared)
    assert [object_oid(p) for p in stored] == [expected], "the shared cache holds one object: the stage's output"
    assert md5(stored[0]) == expected
    assert leftovers(shared) == []
    assert len([p for p in (shared / "runs").rglob("*") if p.is_file()]) == 1, "one run-cache entry for the stage"
    for repo in clones[:2]:
        out = repo / "out.bin"
        assert md5(out) == expected, f"{repo.name}/out.bin is not what the stage computes"
        assert out.stat().st_size == 4 * 1024 * 1024
        if link == "symlink" and repo not in retried:
            assert out.is_symlink() and out.resolve() == stored[0]
        assert lock_md5(repo, "make") == expected
        assert "Data and pipelines are up to date" in sh([DVC, "status"], repo, env).stdout

    # a third clone on the same cache: the run cache restores the output without running the command
    third = tmp_path / "barrier-third"
    third.mkdir()
    out = sh([DVC, "repro"], clones[2], dict(env, TEAM_FAULTS_BARRIER=str(third), TEAM_FAULTS_PARTIES="1")).stdout
    assert "is cached - skipping run" in out, out
    assert os.listdir(third) == [], "the third clone ran the command instead of using the shared cache"
    assert md5(clones[2] / "out.bin") == expected
    assert [object_oid(p) for p in objects(shared)] == [expected]


# ------------------------------------------------------------------------ 2. one Snakemake output cache, two workflows


def test_two_workflows_run_one_cached_rule_at_once_into_one_output_cache(tmp_path, env, expected):
    """`snakemake --cache` in two checkouts at once, SNAKEMAKE_OUTPUT_CACHE shared: both finish with the same,
    correct output; the cache holds one entry (one provenance hash: one file per named output, no temporary
    directory left); a third checkout takes it from the cache without running the rule."""
    cache = tmp_path / "output-cache"
    cache.mkdir()
    flows = []
    for name in ("w1", "w2", "w3"):
        flow = tmp_path / name
        flow.mkdir()
        (flow / "Snakefile").write_text(SNAKEFILE)
        (flow / "gen.py").write_text(GEN_PY)
        flows.append(flow)
    smk_env = dict(env, SNAKEMAKE_OUTPUT_CACHE=str(cache))
    cmd = [SNAKEMAKE, "--cache", "--cores", "1"]

    barrier = tmp_path / "barrier"
    barrier.mkdir()
    runs = together([(cmd, flow) for flow in flows[:2]],
                    dict(smk_env, TEAM_FAULTS_BARRIER=str(barrier), TEAM_FAULTS_PARTIES="2"))
    for code, out in runs:
        assert code == 0, out
        assert "Moving output file data/out.bin to cache" in out, out
    assert len(os.listdir(barrier)) == 2, "the two rule jobs did not both run, at the same time"

    entries = sorted(cache.iterdir())
    assert all(p.is_file() for p in entries), f"a temporary directory was left in the cache: {entries}"
    hashes = {p.name.split("_")[0] for p in entries}
    assert len(hashes) == 1, f"the cache holds more than one entry: {[p.name for p in entries]}"
    (key,) = hashes
    assert sorted(p.name for p in entries) == [f"{key}_meta.json", f"{key}_model.bin"]
    assert md5(cache / f"{key}_model.bin") == expected
    for flow in flows[:2]:
        assert md5(flow / "data/out.bin") == expected, f"{flow.name}/data/out.bin is not what the rule computes"
        assert (flow / "data/out.bin").resolve() == cache / f"{key}_model.bin"
        assert json.loads((flow / "data/out.json").read_text()) == {"size": 4 * 1024 * 1024}

    third = tmp_path / "barrier-third"
    third.mkdir()
    sh(cmd, flows[2], dict(smk_env, TEAM_FAULTS_BARRIER=str(third), TEAM_FAULTS_PARTIES="1"))
    assert os.listdir(third) == [], "the third workflow ran the rule instead of using the cache"
    assert md5(flows[2] / "data/out.bin") == expected
    assert sorted(cache.iterdir()) == entries


# ------------------------------------------------------------------------------------ 3. an interrupted dvc push


def kill_push_once_the_remote_fills(repo: Path, remote: Path, env: dict[str, str]) -> int:
    """Start `dvc push`, SIGKILL it as soon as 20 files have landed in the remote; the files there then."""
    proc = subprocess.Popen([DVC, "push"], cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + TIMEOUT
        while proc.poll() is None and time.time() < deadline:
            if remote.exists() and sum(1 for p in remote.rglob("*") if p.is_file()) >= 20:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        code = proc.wait(timeout=TIMEOUT)
    assert code == -signal.SIGKILL, f"the push ended ({code}) before it could be killed mid-transfer"
    return sum(1 for p in remote.rglob("*") if p.is_file())


def test_a_push_killed_mid_transfer_then_pushed_again_gives_a_complete_remote(tmp_path, env):
    """Killed half way, the remote holds some objects and no directory listing (`.dir`, uploaded last), so a clone
    pulling from it fails loudly instead of getting half a directory; after `dvc push` again, every object in the
    remote matches its name and a fresh clone's `dvc pull` gets everything, `dvc status` clean."""
    remote = tmp_path / "remote"
    origin = dvc_repo(tmp_path / "origin", {"many.py": MANY_PY, "dvc.yaml": MANY_YAML}, env)
    sh([DVC, "remote", "add", "-d", "store", str(remote)], origin, env)
    sh([DVC, "repro"], origin, env)
    sh(["git", "add", "-A"], origin, env)
    sh(["git", "commit", "-qm", "run"], origin, env)
    digests = {p.name: md5(p) for p in (origin / "parts").iterdir()}
    assert len(digests) == MANY

    landed = kill_push_once_the_remote_fills(origin, remote, env)
    assert 0 < landed < MANY + 1, landed
    assert not [p for p in objects(remote) if p.name.endswith(".dir")], "the .dir listing was pushed before its files"

    early = clone(origin, tmp_path / "early", env)
    pulled = sh([DVC, "pull"], early, env, ok=False)
    assert pulled.returncode != 0, pulled.stdout
    assert "parts" in pulled.stdout, pulled.stdout
    assert not (early / "parts").exists() or not any((early / "parts").iterdir())

    out = sh([DVC, "push"], origin, env).stdout
    assert "pushed" in out, out
    stored = objects(remote)
    assert len(stored) == MANY + 1  # every file and the directory's listing
    bad = [p for p in stored if md5(p) != object_oid(p)]
    assert bad == [], f"objects whose content does not match their name: {bad[:5]}"
    # what the kill left: at most the temporary files of the transfers in flight, never under an object's name
    assert all(p.name.endswith(".tmp") for p in leftovers(remote)), leftovers(remote)

    fresh = clone(origin, tmp_path / "fresh", env)
    sh([DVC, "pull"], fresh, env)
    assert {p.name: md5(p) for p in (fresh / "parts").iterdir()} == digests
    assert "Data and pipelines are up to date" in sh([DVC, "status"], fresh, env).stdout
    assert "in sync" in sh([DVC, "status", "--cloud"], fresh, env).stdout


# ---------------------------------------------------------------------------------- 4. a corrupted remote object


@pytest.fixture
def published(tmp_path, env, expected) -> tuple[Path, Path]:
    """A repository whose stage output (out.bin) is committed in dvc.lock and pushed to a local remote; with the
    remote's object for out.bin, one byte flipped (mode kept: read-only, as DVC stores it)."""
    remote = tmp_path / "remote"
    origin = dvc_repo(tmp_path / "origin", {"gen.py": GEN_PY, "dvc.yaml": STAGE_YAML}, env)
    sh([DVC, "remote", "add", "-d", "store", str(remote)], origin, env)
    sh([DVC, "repro"], origin, env)
    sh(["git", "add", "-A"], origin, env)
    sh(["git", "commit", "-qm", "run"], origin, env)
    sh([DVC, "push"], origin, env)
    (obj,) = objects(remote)
    assert object_oid(obj) == expected and obj.stat().st_mode & 0o777 == 0o444
    return origin, obj


def test_without_verify_a_corrupted_read_only_remote_object_is_used_silently(tmp_path, env, expected, published):
    """Why the remote needs `verify = true`: by default DVC trusts a read-only (0444) object without hashing it, on
    the remote as in the cache, so a flipped byte reaches the workspace, `dvc pull` succeeds, `dvc status` is
    clean. (If a DVC release starts detecting this, this test fails: then the setting may no longer be needed.)"""
    origin, obj = published
    corrupt(obj)
    fresh = clone(origin, tmp_path / "fresh", env)
    sh([DVC, "pull"], fresh, env)
    assert md5(fresh / "out.bin") != expected, "DVC now detects this without verify"
    assert "Data and pipelines are up to date" in sh([DVC, "status"], fresh, env).stdout


def test_without_verify_a_corrupted_writable_remote_object_is_detected_and_deleted(tmp_path, env, expected,
                                                                                  published):
    """An object that lost its read-only mode is hashed when DVC asks the remote what it has: DVC reports it
    missing, deletes it from the (local) remote, and `dvc pull` fails naming out.bin."""
    origin, obj = published
    corrupt(obj, keep_mode=False)
    fresh = clone(origin, tmp_path / "fresh", env)
    pulled = sh([DVC, "pull"], fresh, env, ok=False)
    assert pulled.returncode != 0, pulled.stdout
    assert expected in pulled.stdout and "out.bin" in pulled.stdout, pulled.stdout
    assert not (fresh / "out.bin").exists()
    assert not obj.exists(), "the corrupted object was left in the remote"


def test_with_verify_a_corrupted_remote_object_fails_the_pull_and_never_reaches_the_workspace(tmp_path, env,
                                                                                             expected, published):
    """With `dvc remote modify store verify true` committed, `dvc pull` hashes what it downloads: the corrupted
    object is dropped from the local cache, the pull fails naming out.bin, the workspace gets no out.bin, and
    `dvc status` says it is not in the cache. `dvc push` alone does not repair the remote (it trusts the
    read-only object there); removing the named object from the remote and pushing again does."""
    origin, obj = published
    sh([DVC, "remote", "modify", "store", "verify", "true"], origin, env)
    sh(["git", "commit", "-qam", "verify what is pulled"], origin, env)
    corrupt(obj)

    fresh = clone(origin, tmp_path / "fresh", env)
    pulled = sh([DVC, "pull"], fresh, env, ok=False)
    assert pulled.returncode != 0, pulled.stdout
    assert "out.bin" in pulled.stdout, pulled.stdout
    assert not (fresh / "out.bin").exists(), "the corrupted bytes reached the workspace"
    assert objects(fresh / ".dvc" / "cache") == [], "the corrupted object stayed in the clone's cache"
    assert "not in cache" in sh([DVC, "status"], fresh, env).stdout
    # `dvc fetch` alone exits 0 ("1 file fetched") though it kept nothing: check with pull, or status after fetch
    fetched = sh([DVC, "fetch"], fresh, env, ok=False)
    assert objects(fresh / ".dvc" / "cache") == [], fetched.stdout

    assert "up to date" in sh([DVC, "push"], origin, env).stdout
    assert md5(obj) != expected, "dvc push replaced the corrupted object after all"
    obj.unlink()
    sh([DVC, "push"], origin, env)
    assert md5(obj) == expected

    repaired = clone(origin, tmp_path / "repaired", env)
    sh([DVC, "pull"], repaired, env)
    assert md5(repaired / "out.bin") == expected
    assert "Data and pipelines are up to date" in sh([DVC, "status"], repaired, env).stdout
