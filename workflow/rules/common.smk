import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from pipeline_lib.params.grid import (
    method_settings,
    part_keys,
    pretrain_seed,
    training_keys,
)
from pipeline_lib.params.load import read_yaml, validate_params
from pipeline_lib.runtime.errors import ParamsError
from pipeline_lib.evaluation.metric_weights import KINDS as WEIGHT_KINDS
from pipeline_lib.params.weights import downloaded as downloaded_weights
from pipeline_lib.params.paths import (
    all_metrics,
    all_recon,
    anchor_args,
    anchor_files,
    checkpoint_file,
    noise_file,
    noise_kind,
    part_args,
    part_files,
    pretrain_part_args,
    pretrain_part_files,
    reference_dir,
    report_dir,
    set_arg,
    set_of,
    set_roots,
)
from pipeline_lib.runtime.provenance import code_version
from pipeline_lib.engines.plan import RESOURCES_FILE, params_digest
from pipeline_lib.params.sets import set_settings
from pipeline_lib.report.summary import summary_files
from pipeline_lib.params.verify import (
    all_verify,
    settings as verify_settings,
    task_name as verify_task,
)

# Fail before any job starts: the schema (workflow/schemas/params.schema.yaml; names the bad key), then the
# semantic checks.
try:
    validate_params(config)
except ParamsError as exc:
    raise WorkflowError(str(exc))
with open("params.yaml") as fh:
    if read_yaml(fh.read()) != config:
        raise WorkflowError(
            "the stages read params.yaml: edit it instead of passing --config/--configfile"
        )

DATASET = config["dataset"]


def family_gpus(wildcards):
    """The GPUs a job of this family asks for (params model.<family>.gpus; the presets carry paper 1's)."""
    return config["model"][wildcards.model].get("gpus", 1)


def planned_resources():
    """{rule: {family or "_": {runtime, mem_mb, gpu}}} that `python -m pipeline_lib plan` wrote for these very
    params (profiles/slurm/planned-resources.yaml); empty without a plan, or with one planned for other params."""
    path = Path(RESOURCES_FILE)
    if not path.is_file():
        return {}
    doc = read_yaml(path.read_text()) or {}
    if doc.get("params_sha256") != params_digest(config):
        print(f"{RESOURCES_FILE} was planned for other params: ignored (the rules' own resources apply); "
              "run `python -m pipeline_lib plan` again", file=sys.stderr)
        return {}
    return doc.get("resources") or {}


PLANNED = planned_resources()


def planned(rule, key, default):
    """A resource of `rule`'s job: the plan's for the job's family (or the rule's "_" entry), else `default` (a
    value, or a function of the wildcards). With a plan, a job that runs no network on a GPU asks gpu=0."""

    def resource(wildcards):
        entries = PLANNED.get(rule, {})
        entry = entries.get(getattr(wildcards, "model", None) or "_", entries.get("_"))
        if entry is not None and key in entry:
            return entry[key]
        return default(wildcards) if callable(default) else default

    return resource


def per_gpu(mem_mb):
    """A multi-GPU rule's memory: `mem_mb` for each of its torchrun processes (one per GPU, each with its own
    model copy and loader workers); a one-GPU job asks `mem_mb` as before."""
    return lambda wildcards: mem_mb * family_gpus(wildcards)


def gpu_cpus(rule):
    """cpus_per_gpu of a rule's job, 0 (SLURM's --cpus-per-task instead) when the plan gives it no GPU."""
    gpus = planned(rule, "gpu", 1)
    return lambda wildcards: cpus_per_gpu(wildcards) if gpus(wildcards) else 0


#: the pipeline's cap on DataLoader workers per process (pipeline_lib.data.streaming.configure)
MAX_LOADER_WORKERS = 8


def cpus_per_gpu(wildcards):
    """CPUs per GPU of a model job (SLURM --cpus-per-gpu): its process plus the DataLoader workers decoding a
    class-folder tree (runtime.loader_workers; null: the pipeline's cap). In-memory data (Fashion-MNIST): 0,
    which leaves the plugin asking --cpus-per-task=<threads> as before."""
    if config["data"].get("kind") != "image_folder":
        return 0
    workers = config["runtime"].get("loader_workers")
    return 1 + (MAX_LOADER_WORKERS if workers is None else workers)


# {scope} is the forget set's part of a path: empty for the single unnamed set, /sets/<name> otherwise
# (pipeline_lib.params.paths.scope); shared artefacts (raw data, pre-trained models, extractor) have none.
wildcard_constraints:
    dataset=r"[a-z0-9_]+",
    scope=r"(?:/sets/[A-Za-z0-9][A-Za-z0-9_-]*)?",
    model=r"[a-z0-9_]+",
    method=r"[a-z0-9_]+",
    variant=r"[A-Za-z0-9_.-]+",
    task=r"[A-Za-z0-9_-]+",
    part=r"[a-z0-9_]+",


def evaluated_checkpoint(w):
    """The checkpoint a forget set's evaluation reads: the shared original model, or the set's own run."""
    return checkpoint_file(w.dataset, w.dataset + w.scope, w.model, w.method, w.variant)


# the params a verification job depends on (workflow/rules/verify.smk)
def verify_params(check):
    return lambda w: {
        "settings": verify_settings(config, w.model, check),
        "task": config["task"][verify_task(config)],
        "sampling": config["model"][w.model].get("sampling", {}),
        "data": config["data"],
        "seed": config["seed"],
    }
