# Verification (docs/verification.md): one job per check and evaluated model (the
# original, the runs of verify.methods, retrain) on every forget set ({scope}: see common.smk); the report
# reads them into each set's verification tables.


rule verify_probe:
    input:
        checkpoint=evaluated_checkpoint,
        data="data/{dataset}/raw",
        splits="data/{dataset}{scope}/splits.json",
    output:
        "results/{dataset}{scope}/verify/{model}/{method}/{variant}/probe.json",
    log:
        "logs/verify/{dataset}{scope}/{model}/{method}/{variant}/probe.log",
    benchmark:
        "benchmarks/verify_probe/{dataset}{scope}/{model}/{method}/{variant}.tsv"
    conda:
        "../envs/pipeline.yaml"
    resources:
        gpu=planned("verify_probe", "gpu", 1),
        mem_mb=planned("verify_probe", "mem_mb", 4000),
        runtime=planned("verify_probe", "runtime", 60),
    params:
        verify=verify_params("probe"),
    shell:
        "python -m pipeline_lib verify-probe --params params.yaml --checkpoint {input.checkpoint} "
        "--data-dir {input.data} --splits {input.splits} --out {output} --log {log}"


rule verify_sweep:
    input:
        checkpoint=evaluated_checkpoint,
        data="data/{dataset}/raw",
        splits="data/{dataset}{scope}/splits.json",
        extractor="data/{dataset}/extractor/classifier.safetensors",
    output:
        "results/{dataset}{scope}/verify/{model}/{method}/{variant}/sweep.json",
    log:
        "logs/verify/{dataset}{scope}/{model}/{method}/{variant}/sweep.log",
    benchmark:
        "benchmarks/verify_sweep/{dataset}{scope}/{model}/{method}/{variant}.tsv"
    conda:
        "../envs/pipeline.yaml"
    resources:
        gpu=planned("verify_sweep", "gpu", 1),
        mem_mb=planned("verify_sweep", "mem_mb", 4000),
        runtime=planned("verify_sweep", "runtime", 60),
    params:
        verify=verify_params("sweep"),
    shell:
        "python -m pipeline_lib verify-sweep --params params.yaml --checkpoint {input.checkpoint} "
        "--data-dir {input.data} --splits {input.splits} --extractor {input.extractor} --out {output} --log {log}"


rule verify_relearn:
    input:
        checkpoint=evaluated_checkpoint,
        original="data/{dataset}/models/{model}/original/base/model.safetensors",
        data="data/{dataset}/raw",
        splits="data/{dataset}{scope}/splits.json",
        extractor="data/{dataset}/extractor/classifier.safetensors",
    output:
        "results/{dataset}{scope}/verify/{model}/{method}/{variant}/relearn.json",
    log:
        "logs/verify/{dataset}{scope}/{model}/{method}/{variant}/relearn.log",
    benchmark:
        "benchmarks/verify_relearn/{dataset}{scope}/{model}/{method}/{variant}.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        gpu=planned("verify_relearn", "gpu", 1),
        mem_mb=planned("verify_relearn", "mem_mb", 8000),
        runtime=planned("verify_relearn", "runtime", 120),
    params:
        verify=verify_params("relearn"),
        model=lambda w: config["model"][w.model]["pretrain"].get(
            "mask", config["unlearn"]["mask"]
        ),
    shell:
        "python -m pipeline_lib verify-relearn --params params.yaml --checkpoint {input.checkpoint} "
        "--original {input.original} --data-dir {input.data} --splits {input.splits} --extractor {input.extractor} "
        "--out {output} --log {log}"


rule verify_membership:
    input:
        checkpoint=evaluated_checkpoint,
        data="data/{dataset}/raw",
        splits="data/{dataset}{scope}/splits.json",
    output:
        "results/{dataset}{scope}/verify/{model}/{method}/{variant}/membership.json",
    log:
        "logs/verify/{dataset}{scope}/{model}/{method}/{variant}/membership.log",
    benchmark:
        "benchmarks/verify_membership/{dataset}{scope}/{model}/{method}/{variant}.tsv"
    conda:
        "../envs/pipeline.yaml"
    resources:
        gpu=planned("verify_membership", "gpu", 1),
        mem_mb=planned("verify_membership", "mem_mb", 4000),
        runtime=planned("verify_membership", "runtime", 60),
    params:
        verify=verify_params("membership"),
        model=lambda w: {
            "pretrain": config["model"][w.model]["pretrain"],
            "mask": config["unlearn"]["mask"],
        },
    shell:
        "python -m pipeline_lib verify-membership --params params.yaml --checkpoint {input.checkpoint} "
        "--data-dir {input.data} --splits {input.splits} --out {output} --log {log}"
