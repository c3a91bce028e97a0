rule aggregate:
    input:
        metrics=all_metrics(config),
        recon=all_recon(config),
        verify=all_verify(config),
        extractor="data/{dataset}/extractor/classifier.safetensors",
        reference=lambda w: [reference_dir(root) for root in set_roots(config)],
    output:
        report(
            directory("results/{dataset}/report"),
            patterns=["{name}.png", "{name}.html"],
            caption="../report/results.rst",
            category="Results",
        ),
    log:
        "logs/aggregate/{dataset}.log",
    benchmark:
        "benchmarks/aggregate/{dataset}.tsv"
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=planned("aggregate", "mem_mb", 4000),
        runtime=planned("aggregate", "runtime", 20),
    params:
        tasks=config["tasks"],
        models=config["models"],
        methods=config["methods"],
        generate=config["generate"],
        crossval=config.get("crossval"),
        sets=config["splits"].get("sets"),  # a set's role (tuning / held-out) sorts it in the tables
        seed=config["seed"],
        verify=config.get("verify"),
    shell:
        "python -m pipeline_lib aggregate --params params.yaml --extractor {input.extractor} "
        "--reference {input.reference} --out {output} --log {log}"


rule summary:
    input:
        all_metrics(config),
    output:
        summary_files(config),
    log:
        "logs/summary/{dataset}.log".format(dataset=DATASET),
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=planned("summary", "mem_mb", 1000),
        runtime=planned("summary", "runtime", 10),
    params:
        tasks=config["tasks"],
        models=config["models"],
        methods=config["methods"],
        crossval=config.get("crossval"),
    shell:
        "python -m pipeline_lib summary --params params.yaml --log {log}"
