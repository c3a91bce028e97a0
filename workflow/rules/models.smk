rule pretrain:
    input:
        "data/{dataset}/raw",
    output:
        model="data/{dataset}/models/{model}/original/base/model.safetensors",
        meta="data/{dataset}/models/{model}/original/base/model.json",
    params:
        model=lambda w: config["model"][w.model],
        data=config["data"],
        seed=config["seed"],
    log:
        "logs/pretrain/{dataset}/{model}.log",
    benchmark:
        "benchmarks/pretrain/{dataset}/{model}.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    shell:
        "{STAGE} pretrain --params {PARAMS} --model {wildcards.model} --data-dir {input} --out {output.model} --log {log}"


rule extractor:
    input:
        "data/{dataset}/raw",
    output:
        model="data/{dataset}/extractor/classifier.safetensors",
        meta="data/{dataset}/extractor/classifier.json",
    params:
        extractor=config["extractor"],
        data=config["data"],
        seed=config["seed"],
    log:
        "logs/extractor/{dataset}.log",
    benchmark:
        "benchmarks/extractor/{dataset}.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=60,
    shell:
        "{STAGE} extractor --params {PARAMS} --data-dir {input} --out {output.model} --log {log}"
