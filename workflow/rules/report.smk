rule aggregate:
    input:
        metrics=all_metrics(config),
        recon=all_recon(config),
    output:
        directory("results/{dataset}/report"),
    params:
        tasks=config["tasks"],
        models=config["models"],
        methods=config["methods"],
        generate=config["generate"],
    log:
        "logs/aggregate/{dataset}.log",
    benchmark:
        "benchmarks/aggregate/{dataset}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{STAGE} aggregate --params {PARAMS} --out {output} --log {log}"
