rule data:
    output:
        directory("data/{dataset}/raw"),
    log:
        "logs/data/{dataset}.log",
    benchmark:
        "benchmarks/data/{dataset}.tsv"
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        data=config["data"],
    shell:
        "python -m pipeline_lib data --params params.yaml --out {output} --log {log}"


rule splits:
    input:
        "data/{dataset}/raw",
    output:
        "data/{dataset}/splits.json",
    log:
        "logs/splits/{dataset}.log",
    benchmark:
        "benchmarks/splits/{dataset}.tsv"
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        splits=config["splits"],
        seed=config["seed"],
    shell:
        "python -m pipeline_lib splits --params params.yaml --data-dir {input} --out {output} --log {log}"
