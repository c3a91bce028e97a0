"""Shared set-up: subprocesses (Snakemake, DVC, the stage CLI) resolve `python` to this interpreter."""

import os
import sys
from pathlib import Path

os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
