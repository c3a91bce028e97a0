"""`python -m pipeline_lib <stage> ...`: the single entry point Snakemake and DVC call for every stage.

Parameters are validated on start-up; library errors print as one line naming what is wrong and exit 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import stages
from .verify import stages as verify_stages
from .config import load_params
from .errors import PipelineError
from .runtime import configure_threads, setup_logging

LOG = logging.getLogger("pipeline_lib")

#: stage -> (function, arguments); "name?" is optional, "name*" takes one or more paths
STAGES = {
    "data": (stages.data, ["out"]),
    "splits": (stages.splits, ["set?", "data_dir", "out"]),
    "pretrain-part": (stages.pretrain_part, ["model", "part", "data_dir", "out"]),
    "pretrain": (stages.pretrain, ["model", "data_dir", "tokenizer?", "out"]),
    "retrain": (stages.retrain, ["model", "data_dir", "splits", "tokenizer?", "out"]),
    "extractor": (stages.train_extractor, ["data_dir", "out"]),
    "reference": (stages.reference, ["data_dir", "splits", "extractor", "out"]),
    "noise": (stages.noise, ["kind", "data_dir", "splits", "out"]),
    "unlearn": (stages.unlearn, ["model", "method", "variant", "original", "data_dir", "splits", "noise", "anchors*", "out"]),
    "generate": (stages.generate, ["checkpoint", "data_dir", "splits", "task", "out"]),
    "crossval": (stages.crossval, ["checkpoint", "original", "data_dir", "splits", "out"]),
    "weights": (stages.weights, ["kind", "out"]),
    "metrics": (stages.metrics, ["recon", "reference", "extractor", "checkpoint", "out"]),
    "summary": (stages.summary, []),
    "aggregate": (stages.aggregate, ["extractor", "reference*", "out"]),
    "dvc-yaml": (stages.dvc_yaml, ["out?"]),
    "record": (stages.record, []),
    "adopt": (stages.adopt, []),
    "verify-probe": (verify_stages.verify_probe, ["checkpoint", "data_dir", "splits", "out"]),
    "verify-sweep": (verify_stages.verify_sweep, ["checkpoint", "data_dir", "splits", "extractor", "out"]),
    "verify-relearn": (verify_stages.verify_relearn, ["checkpoint", "original", "data_dir", "splits", "extractor", "out"]),
    "verify-membership": (verify_stages.verify_membership, ["checkpoint", "data_dir", "splits", "out"]),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline_lib", description=__doc__)
    sub = p.add_subparsers(dest="stage", required=True)
    for name, (fn, args) in STAGES.items():
        sp = sub.add_parser(name, help=(fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else None)
        sp.add_argument("--params", default="params.yaml")
        sp.add_argument("--log", default=None, help="also write everything this stage prints here")
        for arg in args:
            name = arg.rstrip("?*")
            flag = "--" + name.replace("_", "-")
            if arg.endswith("*"):
                sp.add_argument(flag, dest=name, nargs="+", default=None)
            else:
                sp.add_argument(flag, dest=name, required=not arg.endswith("?"), default=None)
    return p


def _family(ns: argparse.Namespace) -> str | None:
    """The model family a stage works on: its --model, or the family in its --checkpoint's sidecar (generation
    stages); None when neither tells (the stage itself reports a missing checkpoint)."""
    if getattr(ns, "model", None):
        return ns.model
    checkpoint = getattr(ns, "checkpoint", None)
    sidecar = Path(checkpoint).with_suffix(".json") if checkpoint else None
    if sidecar is None or not sidecar.is_file():
        return None
    return json.loads(sidecar.read_text()).get("family")


def main(argv: list[str] | None = None) -> int:
    ns = parser().parse_args(argv)
    setup_logging(ns.log if os.environ.get("RANK", "0") == "0" else None)  # under torchrun: rank 0 writes the log
    fn, args = STAGES[ns.stage]
    try:
        params = load_params(ns.params)
        from . import distributed

        relaunch = distributed.relaunch_command(ns.stage, params, _family(ns), sys.argv[1:] if argv is None else argv)
        if relaunch is not None:  # the family asks for several GPUs: one process per GPU under torchrun
            LOG.info("stage %s: %s", ns.stage, " ".join(relaunch))
            return distributed.run_relaunched(relaunch)
        distributed.setup(params["runtime"]["device"])
        if ns.stage not in ("dvc-yaml", "record", "adopt"):
            from .dvc_stages import check_current_stage

            check_current_stage(params, dict(os.environ))
        threads = configure_threads(params["runtime"].get("threads"))
        kwargs = {a.rstrip("?*"): getattr(ns, a.rstrip("?*")) for a in args}
        # the functions name the split file and reference directory by role
        rename = {"splits": "splits_path", "extractor": "extractor_path", "reference": "reference_dir",
                  "set": "set_name"}
        kwargs = {rename.get(k, k): v for k, v in kwargs.items()}
        LOG.info("stage %s (%d CPU threads): %s", ns.stage, threads, kwargs)
        fn(params, **kwargs)
    except PipelineError as exc:
        LOG.error("%s failed: %s", ns.stage, exc)
        return 1
    except Exception as exc:  # a bug, not bad input: keep the traceback, but lead with one line
        LOG.exception("%s failed unexpectedly (%s: %s); traceback follows", ns.stage, type(exc).__name__, exc)
        return 2
    LOG.info("stage %s done", ns.stage)
    return 0


if __name__ == "__main__":
    sys.exit(main())
