"""A hash of the library code a stage runs, for Snakemake's between-workflow output cache.

Snakemake keys a cached output by the rule's shell command, params and the provenance of its inputs, not by
the Python it imports: `python -m pipeline_lib pretrain ...` reads the same after a change to the trainer.
Handing the hash of the code a rule runs to the rule as a param puts the code into the key (and into
Snakemake's params trigger), so a checkout with other code never takes another's cached model. DVC tracks
the same files as stage dependencies.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=None)
def code_version(*parts: str) -> str:
    """sha256 over the .py files of `parts` (files or folders below src/pipeline_lib), in a fixed order."""
    h = hashlib.sha256()
    for part in parts:
        path = PACKAGE / part
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            raise FileNotFoundError(f"code_version: {path} holds no Python source")
        for f in files:
            h.update(str(f.relative_to(PACKAGE)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]
