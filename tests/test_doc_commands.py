"""Every shell command the README and docs/ show works as written on a fresh clone.

Each line of a ```bash block in README.md and docs/*.md (docs/experiments/ holds dated records and is exempt)
runs in one fresh copy of the repository (its tracked and unignored files, a new git repository, no data and
no results), in the order the pages show them. A command that would run for long runs as its own dry run
(`DRY_RUNS`); every other one runs as written. A failure names the page, the command and its output.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted(p for p in (REPO_ROOT / "docs").glob("*.md"))]
#: long runs -> the same command as a dry run (the real runs are what `make run` and `make test` are)
DRY_RUNS = {
    "make run": "make -n run",
    "make test": "make -n test",
}


def doc_commands() -> list[tuple[str, str]]:
    """(page, command) for every line of every ```bash block, comments stripped, in page order."""
    out = []
    for page in PAGES:
        for block in re.findall(r"^```bash\n(.*?)^```", page.read_text(), flags=re.S | re.M):
            for line in block.splitlines():
                command = line.split(" #")[0].strip()
                if command and not command.startswith("#"):
                    out.append((str(page.relative_to(REPO_ROOT)), command))
    return out


def as_run(command: str) -> str:
    """The command as the test runs it: a dry run for the long ones, `-n` for a Snakemake run."""
    if command in DRY_RUNS:
        return DRY_RUNS[command]
    words = shlex.split(command)
    if words[0] == "snakemake" and not {"-n", "--dry-run", "--lint"} & set(words):
        return command + " -n"
    if words[:2] == ["dvc", "repro"] and "--dry" not in words:
        return command + " --dry"
    return command


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory) -> Path:
    """The repository's tracked and unignored files in a new git repository: what `git clone` gives a newcomer."""
    root = tmp_path_factory.mktemp("clone") / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO_ROOT / rel
        if src.is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "c"]):
        subprocess.run(["git", *args], cwd=root, check=True)
    return root


COMMANDS = doc_commands()


def test_the_pages_show_commands():
    assert ("README.md", "make run") in COMMANDS and ("README.md", "make test") in COMMANDS


@pytest.mark.parametrize("page, command", COMMANDS, ids=[f"{p}: {c}" for p, c in COMMANDS])
def test_a_documented_command_works_on_a_fresh_clone(fresh_clone, page, command):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(as_run(command), shell=True, cwd=fresh_clone, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, f"{page}: `{command}` failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    # and it changed no tracked file (a regenerated dvc.yaml equals the committed one)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=fresh_clone,
                            capture_output=True, text=True, check=True).stdout
    assert status == "", f"{page}: `{command}` changed tracked files:\n{status}"
