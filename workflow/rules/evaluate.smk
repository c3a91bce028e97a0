rule reference:
    input:
        data="data/{dataset}/raw",
        splits="data/{dataset}{scope}/splits.json",
        extractor="data/{dataset}/extractor/classifier.safetensors",
    output:
        directory("data/{dataset}{scope}/reference"),
    log:
        "logs/reference/{dataset}{scope}.log",
    benchmark:
        "benchmarks/reference/{dataset}{scope}.tsv"
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=planned("reference", "mem_mb", 4000),
        runtime=planned("reference", "runtime", 30),
    params:
        data=config["data"],
    shell:
        "python -m pipeline_lib reference --params params.yaml --data-dir {input.data} --splits {input.splits} "
        "--extractor {input.extractor} --out {output} --log {log}"


rule generate:
    input:
        checkpoint=evaluated_checkpoint,
        data="data/{dataset}/raw",
        splits="data/{dataset}{scope}/splits.json",
    output:
        directory("results/{dataset}{scope}/recon/{model}/{method}/{variant}/{task}"),
    log:
        "logs/generate/{dataset}{scope}/{model}/{method}/{variant}/{task}.log",
    benchmark:
        "benchmarks/generate/{dataset}{scope}/{model}/{method}/{variant}/{task}.tsv"
    wildcard_constraints:
        task=r"(?!xval(?:/|$))[A-Za-z0-9_-]+",
    conda:
        "../envs/pipeline.yaml"
    resources:
        gpu=planned("generate", "gpu", family_gpus),
        nodes=1,
        cpus_per_gpu=gpu_cpus("generate"),
        mem_mb=planned("generate", "mem_mb", per_gpu(4000)),
        runtime=planned("generate", "runtime", 60),
    params:
        task=lambda w: config["task"][w.task],
        sampling=lambda w: config["model"][w.model].get("sampling", {}),
        data=config["data"],
        seed=config["seed"],
    shell:
        "python -m pipeline_lib generate --params params.yaml --checkpoint {input.checkpoint} --data-dir {input.data} "
        "--splits {input.splits} --task {wildcards.task} --out {output} --log {log}"


rule crossval:
    input:
        checkpoint=evaluated_checkpoint,
        original="data/{dataset}/models/{model}/original/base/model.safetensors",
        data="data/{dataset}/raw",
        splits="data/{dataset}{scope}/splits.json",
    output:
        directory("results/{dataset}{scope}/recon/{model}/{method}/{variant}/xval"),
    log:
        "logs/crossval/{dataset}{scope}/{model}/{method}/{variant}/xval.log",
    benchmark:
        "benchmarks/crossval/{dataset}{scope}/{model}/{method}/{variant}.tsv"
    conda:
        "../envs/pipeline.yaml"
    resources:
        gpu=planned("crossval", "gpu", family_gpus),
        nodes=1,
        cpus_per_gpu=gpu_cpus("crossval"),
        mem_mb=planned("crossval", "mem_mb", per_gpu(4000)),
        runtime=planned("crossval", "runtime", 60),
    params:
        crossval=config.get("crossval"),
        tasks=lambda w: [config["task"][t] for t in config["crossval"].values()],
        sampling=lambda w: config["model"][w.model].get("sampling", {}),
        data=config["data"],
        seed=config["seed"],
    shell:
        "python -m pipeline_lib crossval --params params.yaml --checkpoint {input.checkpoint} "
        "--original {input.original} --data-dir {input.data} --splits {input.splits} --out {output} --log {log}"


rule weights:
    output:
        "data/weights/{kind}/{file}",
    log:
        "logs/weights/{kind}/{file}.log",
    benchmark:
        "benchmarks/weights/{kind}/{file}.tsv"
    wildcard_constraints:
        kind="|".join(WEIGHT_KINDS),
        file=r"[^/]+",
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=planned("weights", "mem_mb", 1000),
        runtime=planned("weights", "runtime", 60),
    params:
        url=lambda w: config["metrics"][w.kind]["url"],
        sha256=lambda w: config["metrics"][w.kind]["sha256"],
    shell:
        "python -m pipeline_lib weights --params params.yaml --kind {wildcards.kind} --out {output} --log {log}"


rule metrics:
    input:
        recon="results/{dataset}{scope}/recon/{model}/{method}/{variant}/{task}",
        reference="data/{dataset}{scope}/reference",
        extractor="data/{dataset}/extractor/classifier.safetensors",
        checkpoint=evaluated_checkpoint,
        weights=list(downloaded_weights(config).values()),
    output:
        "results/{dataset}{scope}/metrics/{model}/{method}/{variant}/{task}.json",
    log:
        "logs/metrics/{dataset}{scope}/{model}/{method}/{variant}/{task}.log",
    benchmark:
        "benchmarks/metrics/{dataset}{scope}/{model}/{method}/{variant}/{task}.tsv"
    conda:
        "../envs/pipeline.yaml"
    resources:
        gpu=planned("metrics", "gpu", 0),
        mem_mb=planned("metrics", "mem_mb", 4000),
        runtime=planned("metrics", "runtime", 30),
    params:
        metrics=config["metrics"],
        seed=config["seed"],
    shell:
        "python -m pipeline_lib metrics --params params.yaml --recon {input.recon} --reference {input.reference} "
        "--extractor {input.extractor} --checkpoint {input.checkpoint} --out {output} --log {log}"
