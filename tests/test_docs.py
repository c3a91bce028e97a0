"""The documents: generated numbers match the committed runs, relative links resolve, the README stays short."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest

from helpers import REPO_ROOT
from pipeline_lib.report import docs

DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def test_generated_pages_match_the_committed_metrics():
    """`python -m pipeline_lib docs` would change nothing: every documented results table is what the committed
    metrics/ give (run it after recording a new run)."""
    stale = [rel for rel, content in docs.pages(REPO_ROOT).items() if (REPO_ROOT / rel).read_text() != content]
    assert stale == [], f"regenerate with: python -m pipeline_lib docs ({', '.join(stale)})"


def test_readme_shows_the_generated_results_table():
    readme = (REPO_ROOT / "README.md").read_text()
    blocks = docs.BLOCK.findall(readme)
    assert blocks, "the README shows no generated results table"
    for _, kind, ds, task, body, _ in blocks:
        assert (REPO_ROOT / "metrics" / ds / ("pretrain-seeds" if kind == "seed-spread" else "") / f"{task}.json").is_file()
        assert body.count("\n") >= 3


def test_a_changed_number_makes_the_pages_stale(tmp_path):
    """The check above can fail: one score moved in the committed summary changes the README and results page."""
    for name in ("README.md", "params.yaml", "dvc.lock"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    shutil.copytree(REPO_ROOT / "metrics", tmp_path / "metrics")
    shutil.copytree(REPO_ROOT / "workflow" / "schemas", tmp_path / "workflow" / "schemas")
    before = docs.pages(tmp_path)
    path = next((tmp_path / "metrics").glob("*/*.json"))
    summary = json.loads(path.read_text())
    moved = copy.deepcopy(summary)
    model = next(iter(moved))
    run = next(iter(moved[model]["original"].values()))
    run["F"]["fid"] += 1.0
    path.write_text(json.dumps(moved))
    after = docs.pages(tmp_path)
    assert after["docs/results.md"] != before["docs/results.md"]
    assert after["README.md"] != before["README.md"]
    assert after["docs/configuration.md"] == before["docs/configuration.md"]


def test_every_flag_of_the_table_follows_the_rule():
    """The generated `forgets` column is the report's rule: forget FID up and forget accuracy down."""
    summary = json.loads((REPO_ROOT / "metrics/fashion_mnist/center.json").read_text())
    table = docs.headline_table(summary)
    for _, row in table.iterrows():
        if row["method"] == "original":
            assert row["forgets"] == ""
            continue
        original = table[(table["model"] == row["model"]) & (table["method"] == "original")].iloc[0]
        ok = row["FID F"] > original["FID F"] and row["Acc F"] < original["Acc F"]
        assert (row["forgets"] == "yes") == ok


def test_configuration_page_lists_every_top_level_key():
    import yaml

    schema = yaml.safe_load((REPO_ROOT / "workflow/schemas/params.schema.yaml").read_text())
    page = (REPO_ROOT / "docs/configuration.md").read_text()
    for key in schema["properties"]:
        assert f"| `{key}` |" in page


def _anchor(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_anchor(m) for m in re.findall(r"^#+\s+(.*)$", text, flags=re.M)}


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_resolve(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    broken = []
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if re.match(r"^[a-z]+:", target):
            continue  # an external address: not followed here
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(target)
    assert broken == []


def test_readme_is_short_and_starts_with_the_two_commands():
    readme = (REPO_ROOT / "README.md").read_text().splitlines()
    assert len(readme) <= 250
    first = "\n".join(readme[:12])
    block = re.search(r"```bash\n(.*?)```", first, flags=re.S)
    assert block, "the README's first lines show no command block"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["make run", "make test"]
