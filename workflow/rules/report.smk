rule aggregate:
    input:
        metrics=all_metrics(config),
        recon=all_recon(config),
    output:
        directory("results/{dataset}/report"),
    log:
        "logs/aggregate/{dataset}.log",
    benchmark:
        "benchmarks/aggregate/{dataset}.tsv"
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        tasks=config["tasks"],
        models=config["models"],
        methods=config["methods"],
        generate=config["generate"],
    shell:
        "python -m pipeline_lib aggregate --params params.yaml --out {output} --log {log}"
