rule pretrain:
    input:
        "data/{dataset}/raw",
    output:
        model="data/{dataset}/models/{model}/original/base/model.safetensors",
        meta="data/{dataset}/models/{model}/original/base/model.json",
    log:
        "logs/pretrain/{dataset}/{model}.log",
    benchmark:
        "benchmarks/pretrain/{dataset}/{model}.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    params:
        model=lambda w: config["model"][w.model],
        data=config["data"],
        seed=config["seed"],
    shell:
        "python -m pipeline_lib pretrain --params params.yaml --model {wildcards.model} --data-dir {input} --out {output.model} --log {log}"


rule extractor:
    input:
        "data/{dataset}/raw",
    output:
        model="data/{dataset}/extractor/classifier.safetensors",
        meta="data/{dataset}/extractor/classifier.json",
    log:
        "logs/extractor/{dataset}.log",
    benchmark:
        "benchmarks/extractor/{dataset}.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=60,
    params:
        extractor=config["extractor"],
        data=config["data"],
        seed=config["seed"],
    shell:
        "python -m pipeline_lib extractor --params params.yaml --data-dir {input} --out {output.model} --log {log}"
