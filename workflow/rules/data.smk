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


rule noise:
    input:
        data="data/{dataset}/raw",
        splits="data/{dataset}/splits.json",
    output:
        "data/{dataset}/noise/{kind}.safetensors",
    log:
        "logs/noise/{dataset}/{kind}.log",
    benchmark:
        "benchmarks/noise/{dataset}/{kind}.tsv"
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        noise=config["noise"],
        data=config["data"],
    shell:
        "python -m pipeline_lib noise --params params.yaml --kind {wildcards.kind} --data-dir {input.data} "
        "--splits {input.splits} --out {output} --log {log}"
