rule data:
    output:
        directory("data/{dataset}/raw"),
    params:
        data=config["data"],
    log:
        "logs/data/{dataset}.log",
    benchmark:
        "benchmarks/data/{dataset}.tsv"
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "{STAGE} data --params {PARAMS} --out {output} --log {log}"


rule splits:
    input:
        "data/{dataset}/raw",
    output:
        "data/{dataset}/splits.json",
    params:
        splits=config["splits"],
        seed=config["seed"],
    log:
        "logs/splits/{dataset}.log",
    benchmark:
        "benchmarks/splits/{dataset}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{STAGE} splits --params {PARAMS} --data-dir {input} --out {output} --log {log}"
