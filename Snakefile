# Machine unlearning for image-to-image generative models: the experiment DAG.
# params.yaml is the single source of truth (DVC reads it too); every rule is one call into pipeline_lib.
from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/unlearn.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/verify.smk"
include: "workflow/rules/report.smk"


onerror:
    # a SLURM job killed over its runtime or memory: name the rule's resource key to raise, not only SLURM's state
    from snakemake.logging import logger
    from pipeline_lib.engines.slurm_faults import explain

    for line in explain(log):
        logger.error(line)


rule all:
    default_target: True
    input:
        report_dir(DATASET),
        all_metrics(config),
        summary_files(config),
        all_verify(config),
