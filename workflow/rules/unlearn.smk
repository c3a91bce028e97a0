rule unlearn:
    input:
        original="data/{dataset}/models/{model}/original/base/model.safetensors",
        data="data/{dataset}/raw",
        splits="data/{dataset}/splits.json",
    output:
        model="data/{dataset}/models/{model}/{method}/{variant}/model.safetensors",
        meta="data/{dataset}/models/{model}/{method}/{variant}/model.json",
    wildcard_constraints:
        method=r"(?!original$)[a-z0-9_]+",
    params:
        unlearn=config["unlearn"],
        data=config["data"],
        seed=config["seed"],
    log:
        "logs/unlearn/{dataset}/{model}/{method}/{variant}.log",
    benchmark:
        "benchmarks/unlearn/{dataset}/{model}/{method}/{variant}.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    shell:
        "{STAGE} unlearn --params {PARAMS} --model {wildcards.model} --method {wildcards.method} "
        "--variant {wildcards.variant} --original {input.original} --data-dir {input.data} "
        "--splits {input.splits} --out {output.model} --log {log}"
