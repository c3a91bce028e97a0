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
        mem_mb=planned("data", "mem_mb", 2000),
        runtime=planned("data", "runtime", 30),
    params:
        data=config["data"],
    shell:
        "python -m pipeline_lib data --params params.yaml --out {output} --log {log}"


rule splits:
    input:
        "data/{dataset}/raw",
    output:
        "data/{dataset}{scope}/splits.json",
    log:
        "logs/splits/{dataset}{scope}.log",
    benchmark:
        "benchmarks/splits/{dataset}{scope}.tsv"
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=planned("splits", "mem_mb", 2000),
        runtime=planned("splits", "runtime", 10),
    params:
        set=lambda w: set_arg(set_of(w.scope)),
        splits=lambda w: set_settings(config, set_of(w.scope)),
        seed=config["seed"],
    shell:
        "python -m pipeline_lib splits --params params.yaml{params.set} --data-dir {input} --out {output} --log {log}"


rule noise:
    input:
        data="data/{dataset}/raw",
        splits="data/{dataset}{scope}/splits.json",
    output:
        "data/{dataset}{scope}/noise/{kind}.safetensors",
    log:
        "logs/noise/{dataset}{scope}/{kind}.log",
    benchmark:
        "benchmarks/noise/{dataset}{scope}/{kind}.tsv"
    conda:
        "../envs/pipeline.yaml"
    resources:
        mem_mb=planned("noise", "mem_mb", 4000),
        runtime=planned("noise", "runtime", 30),
    params:
        noise=config["noise"],
        data=config["data"],
    shell:
        "python -m pipeline_lib noise --params params.yaml --kind {wildcards.kind} --data-dir {input.data} "
        "--splits {input.splits} --out {output} --log {log}"
