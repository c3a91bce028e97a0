"""`python -m pipeline_lib <stage> ...`: the single entry point Snakemake and DVC call for every stage.

Parameters are validated on start-up; library errors print as one line naming what is wrong and exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path

from .params.load import load_params
from .params.runtime import gpus
from .runtime.errors import PipelineError
from .runtime.devices import configure_threads, setup_logging

LOG = logging.getLogger("pipeline_lib")

#: stage -> ("module:function" under pipeline_lib.stages, arguments); "name?" is optional, "name*" takes one or
#: more paths, "name!" is a switch. A stage imports only its own module: `splits` never loads the model families' libraries.
STAGES = {
    "data": ("data:data", ["out"]),
    "splits": ("data:splits", ["set?", "data_dir", "out"]),
    "pretrain-part": ("models:pretrain_part", ["model", "part", "data_dir", "out"]),
    "pretrain": ("models:pretrain", ["model", "data_dir", "tokenizer?", "out"]),
    "retrain": ("models:retrain", ["model", "data_dir", "splits", "tokenizer?", "out"]),
    "extractor": ("models:train_extractor", ["data_dir", "out"]),
    "reference": ("evaluate:reference", ["data_dir", "splits", "extractor", "out"]),
    "noise": ("noise:noise", ["kind", "data_dir", "splits", "out"]),
    "unlearn": ("unlearn:unlearn", ["model", "method", "variant", "original", "data_dir", "splits", "noise", "anchors*", "out"]),
    "generate": ("generate:generate", ["checkpoint", "data_dir", "splits", "task", "out"]),
    "crossval": ("generate:crossval", ["checkpoint", "original", "data_dir", "splits", "out"]),
    "weights": ("evaluate:weights", ["kind", "out"]),
    "metrics": ("evaluate:metrics", ["recon", "reference", "extractor", "checkpoint", "out"]),
    "summary": ("report:summary", []),
    "aggregate": ("report:aggregate", ["extractor", "reference*", "out"]),
    "dvc-yaml": ("team:dvc_yaml", ["out?"]),
    "record": ("team:record", ["accept_machine!"]),
    "adopt": ("team:adopt", []),
    "pretrain-spread": ("team:pretrain_spread", ["seeds*", "workdir?"]),
    "docs": ("report:docs", []),
    "plan": ("plan:plan", ["device?", "out?"]),
    "verify-probe": ("verify:verify_probe", ["checkpoint", "data_dir", "splits", "out"]),
    "verify-sweep": ("verify:verify_sweep", ["checkpoint", "data_dir", "splits", "extractor", "out"]),
    "verify-relearn": ("verify:verify_relearn", ["checkpoint", "original", "data_dir", "splits", "extractor", "out"]),
    "verify-membership": ("verify:verify_membership", ["checkpoint", "data_dir", "splits", "out"]),
}


def stage_function(stage: str):
    """The function behind `stage`, its module imported on first use."""
    module, name = STAGES[stage][0].split(":")
    return getattr(importlib.import_module(f"{__package__}.stages.{module}"), name)


def _summary(stage: str) -> str | None:
    doc = stage_function(stage).__doc__
    return doc.strip().splitlines()[0] if doc else None


def parser(described: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    """The CLI; `described`: the stages whose one-line help is shown (None: all, which imports every stage)."""
    p = argparse.ArgumentParser(prog="python -m pipeline_lib", description=__doc__)
    sub = p.add_subparsers(dest="stage", required=True)
    for name, (_, args) in STAGES.items():
        shown = described is None or name in described
        sp = sub.add_parser(name, help=_summary(name) if shown else None,
                            description=_summary(name) if shown else None)
        sp.add_argument("--params", default="params.yaml")
        sp.add_argument("--log", default=None, help="also write everything this stage prints here")
        for arg in args:
            name = arg.rstrip("?*!")
            flag = "--" + name.replace("_", "-")
            if arg.endswith("!"):
                sp.add_argument(flag, dest=name, action="store_true")
            elif arg.endswith("*"):
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
    words = sys.argv[1:] if argv is None else argv
    ns = parser((words[0],) if words and words[0] in STAGES else None).parse_args(argv)
    setup_logging(ns.log if os.environ.get("RANK", "0") == "0" else None)  # under torchrun: rank 0 writes the log
    args = STAGES[ns.stage][1]
    try:
        params = load_params(ns.params)
        from .runtime import distributed

        relaunch = distributed.relaunch_command(ns.stage, gpus(params, _family(ns)), params["runtime"]["device"],
                                                 sys.argv[1:] if argv is None else argv)
        if relaunch is not None:  # the family asks for several GPUs: one process per GPU under torchrun
            LOG.info("stage %s: %s", ns.stage, " ".join(relaunch))
            return distributed.run_relaunched(relaunch)
        distributed.setup(params["runtime"]["device"])
        if ns.stage not in ("dvc-yaml", "record", "adopt", "docs", "pretrain-spread"):
            from .engines.dvc_yaml import check_current_stage

            check_current_stage(params, dict(os.environ))
        threads = configure_threads(params["runtime"].get("threads"))
        kwargs = {a.rstrip("?*!"): getattr(ns, a.rstrip("?*!")) for a in args}
        # the functions name the split file and reference directory by role
        rename = {"splits": "splits_path", "extractor": "extractor_path", "reference": "reference_dir",
                  "set": "set_name"}
        kwargs = {rename.get(k, k): v for k, v in kwargs.items()}
        LOG.info("stage %s (%d CPU threads): %s", ns.stage, threads, kwargs)
        stage_function(ns.stage)(params, **kwargs)
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
