rule unlearn:
    input:
        original="data/{dataset}/models/{model}/original/base/model.safetensors",
        data="data/{dataset}/raw",
        splits="data/{dataset}{scope}/splits.json",
        noise=lambda w: noise_file(w.dataset + w.scope, noise_kind(w.variant)),
        anchors=lambda w: anchor_files(
            w.dataset + w.scope, w.model, w.method, w.variant
        ),
    output:
        model="data/{dataset}{scope}/models/{model}/{method}/{variant}/model.safetensors",
        meta="data/{dataset}{scope}/models/{model}/{method}/{variant}/model.json",
    log:
        "logs/unlearn/{dataset}{scope}/{model}/{method}/{variant}.log",
    benchmark:
        "benchmarks/unlearn/{dataset}{scope}/{model}/{method}/{variant}.tsv"
    wildcard_constraints:
        method=r"(?!(?:original|retrain)(?:/|$))[a-z0-9_]+",
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        gpu=planned("unlearn", "gpu", family_gpus),
        nodes=1,
        cpus_per_gpu=gpu_cpus("unlearn"),
        mem_mb=planned("unlearn", "mem_mb", per_gpu(8000)),
        runtime=planned("unlearn", "runtime", 240),
    params:
        anchors=lambda w: anchor_args(w.dataset + w.scope, w.model, w.method, w.variant),
        method=lambda w: method_settings(config, w.method, w.model),
        unlearn=config["unlearn"],
        data=config["data"],
        seed=config["seed"],
    shell:
        "python -m pipeline_lib unlearn --params params.yaml --model {wildcards.model} --method {wildcards.method} "
        "--variant {wildcards.variant} --original {input.original} --data-dir {input.data} "
        "--splits {input.splits} --noise {input.noise}{params.anchors} --out {output.model} --log {log}"
