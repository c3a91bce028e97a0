rule pretrain_part:
    input:
        "data/{dataset}/raw",
    output:
        model="data/{dataset}/models/{model}/{part}/model.safetensors",
        meta="data/{dataset}/models/{model}/{part}/model.json",
    log:
        "logs/pretrain_part/{dataset}/{model}/{part}.log",
    wildcard_constraints:
        part=r"tokenizer",
    cache: True
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        gpu=planned("pretrain_part", "gpu", 1),
        mem_mb=planned("pretrain_part", "mem_mb", 8000),
        runtime=planned("pretrain_part", "runtime", 240),
    params:
        code=code_version("models", "training/trainer.py"),
        part=lambda w: part_keys(config, w.model, w.part),
        data=config["data"],
        seed=pretrain_seed(config),
    shell:
        "python -m pipeline_lib pretrain-part --params params.yaml --model {wildcards.model} --part {wildcards.part} "
        "--data-dir {input} --out {output.model} --log {log}"


rule pretrain:
    input:
        data="data/{dataset}/raw",
        parts=lambda w: pretrain_part_files(config, w.model).values(),
    output:
        model="data/{dataset}/models/{model}/original/base/model.safetensors",
        meta="data/{dataset}/models/{model}/original/base/model.json",
    log:
        "logs/pretrain/{dataset}/{model}.log",
    cache: True
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        gpu=planned("pretrain", "gpu", family_gpus),
        nodes=1,
        cpus_per_gpu=gpu_cpus("pretrain"),
        mem_mb=planned("pretrain", "mem_mb", per_gpu(8000)),
        runtime=planned("pretrain", "runtime", 240),
    params:
        code=code_version("models", "training/trainer.py"),
        parts=lambda w: pretrain_part_args(config, w.model),
        model=lambda w: training_keys(config, w.model),
        data=config["data"],
        seed=pretrain_seed(config),
    shell:
        "python -m pipeline_lib pretrain --params params.yaml --model {wildcards.model} --data-dir {input.data}"
        "{params.parts} --out {output.model} --log {log}"


rule retrain:
    input:
        data="data/{dataset}/raw",
        splits="data/{dataset}{scope}/splits.json",
        parts=lambda w: part_files(w.dataset, w.model).values(),
    output:
        model="data/{dataset}{scope}/models/{model}/retrain/base/model.safetensors",
        meta="data/{dataset}{scope}/models/{model}/retrain/base/model.json",
    log:
        "logs/retrain/{dataset}{scope}/{model}.log",
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        gpu=planned("retrain", "gpu", family_gpus),
        nodes=1,
        cpus_per_gpu=gpu_cpus("retrain"),
        mem_mb=planned("retrain", "mem_mb", per_gpu(8000)),
        runtime=planned("retrain", "runtime", 240),
    params:
        code=code_version("models", "training/trainer.py"),
        parts=lambda w: part_args(w.dataset, w.model),
        model=lambda w: training_keys(config, w.model),
        data=config["data"],
        seed=pretrain_seed(config),
    shell:
        "python -m pipeline_lib retrain --params params.yaml --model {wildcards.model} --data-dir {input.data} "
        "--splits {input.splits}{params.parts} --out {output.model} --log {log}"


rule extractor:
    input:
        "data/{dataset}/raw",
    output:
        model="data/{dataset}/extractor/classifier.safetensors",
        meta="data/{dataset}/extractor/classifier.json",
    log:
        "logs/extractor/{dataset}.log",
    cache: True
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        gpu=planned("extractor", "gpu", 1),
        mem_mb=planned("extractor", "mem_mb", 4000),
        runtime=planned("extractor", "runtime", 60),
    params:
        code=code_version("evaluation/extractor.py"),
        extractor=config["extractor"],
        data=config["data"],
        seed=config["seed"],
    shell:
        "python -m pipeline_lib extractor --params params.yaml --data-dir {input} --out {output.model} --log {log}"
