"""The run plan: what the current params will cost before anything is submitted, and the SLURM resources
that follow from it.

The jobs are the engines' own (`dvc_yaml.stages`, the list Snakemake's DAG has, one entry per job with its
command), so the plan cannot drift from what runs. Per job it works out the images the job pushes through a
network, the FLOPs (`flops`: counted on meta tensors at params' architecture, times images, epochs and
sampling steps), an estimated time and a peak memory:

- time = `plan.startup_s` (interpreter, torch, params, data: paid by every job) + FLOPs / (peak × utilisation)
  (+ `plan.report_s_per_map` per t-SNE map of the report, which runs no network)
  of the device the job runs on. Rules that use no network, or a GPU job's CPU-side work, run on `plan.cpu`;
  model rules on `plan.gpu` (or on `plan.cpu` with `--device cpu` or `runtime.device: cpu`), spread over the
  family's `model.<family>.gpus`. Where `bench/rehearsal/<preset>.json` measured a rule (the paper-size dress
  rehearsal), its images/s replaces the FLOP rate for that rule.
- memory = `plan.baseline_mb` (a stage's resident set before its model: torch, the data index) + parameters
  in float32 × (1 for inference; weights, gradients and AdamW's two moments = 4 for training, + 1 for
  unlearning's frozen teacher) + the activations autograd keeps for one training batch (bytes counted per
  image on meta tensors × the batch), or a third of that for an inference batch.
- SLURM: runtime = ⌈`plan.margin` × time⌉ minutes (at least `plan.min_runtime_min`), mem_mb = `plan.mem_margin`
  × memory, gpu = the family's GPU count for a job that runs a network on a GPU and 0 otherwise (a published
  checkpoint's download, the CPU-only rules, a CPU run).

Totals: GPU-hours (time × GPUs held, over every GPU job), the serial time (one job after another) and the
wall time with every independent job side by side (the longest dependency path).
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..params import paths
from ..params.grid import run_settings
from ..params.runtime import gpus as family_gpus
from ..params.sets import set_names, set_settings
from ..runtime.errors import ParamsError
from . import dvc_yaml
from .flops import METRIC_PASSES, FamilyCost, extractor_cost, family_cost, metric_network_flops, part_cost

#: `plan:` keys and their defaults (workflow/schemas/params.schema.yaml describes each)
DEFAULTS: dict[str, Any] = {
    "device": None,  # gpu | cpu for the model rules; null: cpu when runtime.device is cpu, else gpu
    # fp32 without tensor cores, TF32 and dense bf16 (runtime.amp): NVIDIA's H200 SXM figures
    "gpu": {"name": "NVIDIA H200", "peak_tflops": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}, "utilisation": 0.4},
    # 2 cores x 2.6 GHz x 32 fp32 FLOP a cycle (two AVX2 FMA units; the pipeline pins AVX2 kernels); 0.35: the
    # default models' training steps ran at 55-68 GFLOP/s here (bench/kernels.py, docs/experiments/feedback-loops.md)
    "cpu": {"name": "2-core x86-64 CPU (AVX2 kernels)", "peak_tflops": 0.166, "utilisation": 0.35},
    # a stage's start-up: 2.6-4.3 s for the stages that do little else in the quiet default run, 5.3 s of imports
    # under load (docs/experiments/feedback-loops.md)
    "startup_s": 4.0,
    # the report's t-SNE map and figures per model, task and forget set: (16.3 s - start-up) / 3 maps in the
    # quiet default run (docs/experiments/feedback-loops.md)
    "report_s_per_map": 3.8,
    "baseline_mb": 800,  # a stage's resident set before its model: 540-800 MB measured on the smoke preset
    "margin": 2.0,
    "mem_margin": 1.5,
    "min_runtime_min": 10,
    "train_images": None,  # class-folder trees: the training set's size (null: known sets, else the data stage's list)
    "rehearsal": None,  # a rehearsal json; null: bench/rehearsal/<preset>.json when params are a preset's
}
#: training images, evaluation-side images and classes of the data sets the presets name
KNOWN_SETS = {"fashion_mnist": (60000, 10), "imagenet": (1281167, 1000), "places365": (1803460, 365)}
#: rules that run a network (the model rules declare a GPU; the others never ask for one)
NETWORK_RULES = ("pretrain_part", "pretrain", "retrain", "extractor", "unlearn", "generate", "crossval",
                 "verify_probe", "verify_sweep", "verify_relearn", "verify_membership")
#: where `profiles/slurm` (through workflow/rules/common.smk) reads the planned resources
RESOURCES_FILE = "profiles/slurm/planned-resources.yaml"
MB = 2**20


def settings(params: dict[str, Any]) -> dict[str, Any]:
    """`plan:` over its defaults (one level deep for the device sections)."""
    given = params.get("plan") or {}
    out = {**DEFAULTS, **given}
    for key in ("gpu", "cpu"):
        out[key] = {**DEFAULTS[key], **(given.get(key) or {})}
    return out


@dataclass
class Job:
    rule: str
    name: str
    family: str | None
    images: int = 0
    flops: float = 0.0
    memory_mb: float = 0.0  # a process's peak with its network on the CPU (state + activations + baseline)
    host_mb: float = 0.0  # what the job asks of the node (SLURM mem_mb before the margin)
    device_mb: float = 0.0  # a GPU's peak (state + activations) when the network runs on GPUs
    model_mb: float = 0.0  # the parameters a process reads from the checkpoint, in float32
    network: bool = False  # runs a network (on the GPU when the plan's device is one)
    metric_flops: float = 0.0  # a metrics job's standard networks (Inception, CLIP, Places365)
    gpus: int = 0
    seconds: float = 0.0
    deps: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()


def _args(cmd: str) -> dict[str, str]:
    words, out = shlex.split(cmd), {}
    for i, word in enumerate(words):
        if word.startswith("--") and i + 1 < len(words) and not words[i + 1].startswith("--"):
            out[word[2:].replace("-", "_")] = words[i + 1]
    return out


def _family_of(args: dict[str, str], ds: str) -> str | None:
    if "model" in args:
        return args["model"]
    checkpoint = args.get("checkpoint", "")
    parts = checkpoint.split("/")
    return parts[parts.index("models") + 1] if "models" in parts else None


def _set_name(params: dict[str, Any], args: dict[str, str]) -> str | None:
    """The forget set a job works on (named in its paths); for shared jobs, the first set params name."""
    for value in args.values():
        parts = value.split("/")
        if "sets" in parts[:-1]:
            return parts[parts.index("sets") + 1]
    return None if "forget" in params["splits"] else set_names(params)[0]


def _dataset_size(params: dict[str, Any], plan: dict[str, Any]) -> tuple[int, int]:
    """(training images, classes) of the data set."""
    ds = params["dataset"]
    if plan["train_images"] is not None:
        return int(plan["train_images"]), KNOWN_SETS.get(ds, (0, 1000))[1]
    if params["data"].get("kind", "fashion_mnist") == "fashion_mnist" or ds in KNOWN_SETS:
        return KNOWN_SETS["fashion_mnist" if params["data"].get("kind", "fashion_mnist") == "fashion_mnist" else ds]
    raise ParamsError(f"plan: the size of data set '{ds}' is not known before its data stage ran; set params key "
                      "'plan.train_images' to its number of training images")


def _classes(spec: Any) -> int:
    return spec["count"] if isinstance(spec, dict) else len(spec)


def _memory_mb(plan: dict[str, Any], cost: FamilyCost, batch: int, state_copies: int, training: bool) -> float:
    """baseline + float32 parameters x copies (weights, gradients, AdamW's two moments, a teacher) + the
    activations of one batch (training: what autograd keeps; inference: a third of it)."""
    activations = cost.activation_bytes * batch * (1 if training else 1 / 3)
    state = cost.params * 4 * state_copies + (cost.all_params - cost.params) * 4
    return plan["baseline_mb"] + (state + activations) / MB


def _metric_networks(params: dict[str, Any], root: Path) -> list[tuple[str, str | None]]:
    """(kind, arch) of the standard networks a metrics job runs: those the weights stage downloads, and those
    whose local weights file exists (the stage skips a missing one, with a note)."""
    from ..params.weights import specs

    return [(kind, spec.get("arch")) for kind, spec in specs(params).items()
            if "url" in spec or (spec.get("weights") and (root / spec["weights"]).is_file())]


def _cost(params: dict[str, Any], plan: dict[str, Any], stage: dvc_yaml.Stage, root: Path) -> Job:
    """Images, FLOPs and memory of one job; the time comes later (`_time`)."""
    rule = stage.name.split("-")[0]
    args = _args(stage.cmd)
    family = _family_of(args, params["dataset"])
    job = Job(rule, stage.name, family, memory_mb=plan["baseline_mb"], deps=tuple(stage.deps),
              outs=tuple([*stage.outs, *stage.metrics]))
    n_train, n_classes = _dataset_size(params, plan)
    split = set_settings(params, _set_name(params, args))
    n_forget, n_retain = _classes(split["forget"]), _classes(split["retain"])
    n_eval = split["eval_per_class"] * (n_forget + n_retain)
    extractor = extractor_cost(params, n_classes)
    cost = extractor
    if rule == "pretrain_part":
        cost, cfg = part_cost(params, family, args["part"]), params["model"][family][args["part"]]["pretrain"]
        images = min(cfg.get("subset") or n_train, n_train) * cfg["epochs"]
        job.images, job.flops = images, images * cost.train_flops
        job.memory_mb = _memory_mb(plan, cost, cfg["batch_size"], 4, True)
    elif rule in ("pretrain", "retrain"):
        cfg = params["model"][family]
        if rule == "pretrain" and cfg["checkpoint"] is not None:
            cost = family_cost(params, family)  # a download and a conversion: no network is run
            job.memory_mb = plan["baseline_mb"] + 2 * cost.all_params * 4 / MB
            job.model_mb = cost.all_params * 4 / MB
            return job
        cost, training = family_cost(params, family), cfg["pretrain"]
        available = n_train if rule == "pretrain" else round(n_train * (1 - n_forget / n_classes))
        images = min(training.get("subset") or available, available) * training["epochs"]
        job.images, job.flops = images, images * cost.train_flops
        job.memory_mb = _memory_mb(plan, cost, training["batch_size"], 4, True)
    elif rule == "extractor":
        training = params["extractor"]["training"]
        images = min(training.get("subset") or n_train, n_train) * training["epochs"]
        job.images, job.flops = images, images * extractor.train_flops
        job.memory_mb = _memory_mb(plan, extractor, training["batch_size"], 4, True)
    elif rule == "unlearn":
        cost = family_cost(params, family)
        training, _ = run_settings(params, args["method"], family)
        per_side = training["batch_size"]
        forget = split["unlearn_per_class"] * n_forget
        steps = math.ceil(forget / per_side) * training["epochs"]
        # each step: both sides through the student (trained) and the frozen teacher (forward), then one
        # evaluation pass over an epoch's batches
        images = steps * 2 * per_side
        job.images = images
        job.flops = images * (cost.train_flops + cost.encode_flops) + (images / training["epochs"]) * cost.encode_flops
        job.memory_mb = _memory_mb(plan, cost, 2 * per_side, 5, True)
    elif rule in ("generate", "crossval"):
        cost = family_cost(params, family)
        passes = 2 if rule == "crossval" else 1  # crossval: the inpainting, then the original outpaints it
        job.images, job.flops = n_eval * passes, n_eval * passes * cost.infer_flops
        job.memory_mb = _memory_mb(plan, cost, params["generate"]["batch_size"], passes, False)
    elif rule in ("metrics", "reference"):
        job.images, job.flops = n_eval, n_eval * extractor.infer_flops  # the pipeline's extractor, on the CPU
        if rule == "metrics":  # and the standard networks (Inception, CLIP, Places365), on the job's device
            job.metric_flops = n_eval * sum(METRIC_PASSES[kind] * metric_network_flops(kind, arch)
                                            for kind, arch in _metric_networks(params, root))
            job.flops += job.metric_flops
    elif rule.startswith("verify_"):
        from ..params.verify import settings as verify_settings

        cost, check = family_cost(params, family), rule.removeprefix("verify_")
        s = verify_settings(params, family, check)
        if check == "probe":
            images = (s["train_per_class"] + s["test_per_class"]) * n_classes  # every class (the probe's fit is not counted)
            flops = images * cost.encode_flops
        elif check == "sweep":
            images = s["images"] * len(s["masks"]) * len(s["seeds"]) * 2
            flops = images * (cost.infer_flops + extractor.infer_flops)
        elif check == "relearn":
            steps = s["max_steps"] * len(s["K"])
            evals = (s["max_steps"] // s["every"] + 1) * len(s["K"]) * s["images"]
            images = steps * s["batch_size"] + evals
            flops = steps * s["batch_size"] * cost.train_flops + evals * (cost.infer_flops + extractor.infer_flops)
        else:  # membership: each member and non-member, under several masks and noise levels
            images = s["members"] * 2 * s["masks"] * max(1, len(s.get("timesteps") or []))
            flops = images * cost.encode_flops * 3
        job.images, job.flops = images, flops
        job.memory_mb = _memory_mb(plan, cost, params["generate"]["batch_size"], 4 if check == "relearn" else 1,
                                   check == "relearn")
    job.model_mb = cost.all_params * 4 / MB
    return job


def preset_name(params: dict[str, Any], root: Path) -> str | None:
    """The preset these params are (equal once parsed, but for `data.root`, which a researcher sets to where
    the data set lies), if any."""
    def unrooted(doc: dict[str, Any]) -> dict[str, Any]:
        return {**doc, "data": {k: v for k, v in (doc.get("data") or {}).items() if k != "root"}}

    for preset in sorted((root / "presets").glob("*.yaml")):
        if unrooted(yaml.safe_load(preset.read_text())) == unrooted(params):
            return preset.stem
    return None


def rehearsal(params: dict[str, Any], plan: dict[str, Any], root: Path) -> tuple[Path | None, dict[str, Any]]:
    """The measured rehearsal that applies to these params: `plan.rehearsal`, else bench/rehearsal/<preset>.json."""
    if plan["rehearsal"] is not None:
        path = root / plan["rehearsal"]
        if not path.is_file():
            raise ParamsError(f"params key 'plan.rehearsal': {path} does not exist")
    else:
        name = preset_name(params, root)
        path = root / "bench" / "rehearsal" / f"{name}.json" if name else None
        if path is None or not path.is_file():
            return None, {}
    measured = json.loads(path.read_text())
    if measured.get("tiny"):  # small models at 32 px: the wiring's timings, not the preset's
        return None, {}
    return path, measured


def _measured_rate(measured: dict[str, Any], job: Job, on_gpu: bool, startup_s: float) -> float | None:
    """The rehearsal's images/s for this job (its family's where recorded), when it ran where the job will: a
    GPU job on a CUDA rehearsal, a CPU job's rule without a network on any, a network on the CPU on a CPU one;
    and when its jobs ran long enough (ten start-ups each) for the rate not to be mostly their start-up: a
    rehearsal's handful of images says nothing of a rule's rate over a data set otherwise."""
    device = (measured.get("machine") or {}).get("device")
    if on_gpu != (device == "cuda") and (on_gpu or job.rule in NETWORK_RULES or job.metric_flops):
        return None
    entry = (measured.get("stages") or {}).get(job.rule) or {}
    entry = (entry.get("models") or {}).get(job.family or "", entry)
    if (entry.get("wall_s") or 0) < 10 * startup_s * (entry.get("jobs") or 1):
        return None
    rate = entry.get("images_per_s") or None
    ran, preset = entry.get("sampling_steps"), entry.get("preset_sampling_steps")
    if rate and ran and preset:  # the rehearsal sampled a shorter chain of the same network
        rate *= ran / preset
    return rate


def _precision(params: dict[str, Any]) -> str:
    runtime = params["runtime"]
    return "bf16" if runtime.get("amp") else "tf32" if runtime.get("tf32") else "fp32"


def device_rate(plan: dict[str, Any], kind: str, precision: str) -> float:
    """FLOP/s a job achieves on one `kind` device: its peak times the utilisation assumed."""
    spec = plan[kind]
    peak = spec["peak_tflops"]
    peak = peak.get(precision, peak.get("fp32")) if isinstance(peak, dict) else peak
    return float(peak) * 1e12 * float(spec["utilisation"])


def _maps(params: dict[str, Any]) -> int:
    """t-SNE maps the report draws: one per model and task, in every forget set."""
    return len(params["models"]) * len(paths.eval_tasks(params)) * len(set_names(params))


def plan_jobs(params: dict[str, Any], device: str | None = None, root: str | Path = ".") -> dict[str, Any]:
    """Every job of the DAG with its images, FLOPs, time, memory and GPUs; the device and rehearsal used."""
    root = Path(root)
    plan = settings(params)
    kind = device or plan["device"] or ("cpu" if params["runtime"]["device"] == "cpu" else "gpu")
    if kind not in ("cpu", "gpu"):
        raise ParamsError(f"params key 'plan.device' (or --device): '{kind}' is neither cpu nor gpu")
    source, measured = rehearsal(params, plan, root)
    rates = {"cpu": device_rate(plan, "cpu", "fp32"), "gpu": device_rate(plan, "gpu", _precision(params))}
    jobs = []
    for stage in dvc_yaml.stages(params):
        job = _cost(params, plan, stage, root)
        job.network = (job.rule in NETWORK_RULES and job.flops > 0) or job.metric_flops > 0
        on_gpu = job.network and kind == "gpu"
        job.gpus = family_gpus(params, job.family) if on_gpu and job.rule not in ("extractor", "metrics") else int(on_gpu)
        rule_measured = (measured.get("stages") or {}).get(job.rule) or {}
        rate = _measured_rate(measured, job, on_gpu, plan["startup_s"]) if job.images else None
        if rate:  # measured on one GPU (or the CPU) with its start-up inside: spread over the job's GPUs
            compute = job.images / (rate * max(job.gpus, 1))
        else:
            compute = job.flops / (rates["gpu" if on_gpu else "cpu"] * max(job.gpus, 1))
        if job.rule == "aggregate":
            compute += plan["report_s_per_map"] * _maps(params)
        job.seconds = plan["startup_s"] + compute
        if on_gpu:  # the network's state and activations on each GPU; each process holds a CPU copy on load
            job.device_mb = job.memory_mb - plan["baseline_mb"]
            job.host_mb = (plan["baseline_mb"] + 2 * job.model_mb) * job.gpus
        else:
            job.host_mb = job.memory_mb
        if rule_measured.get("max_rss_mb"):
            job.host_mb = max(job.host_mb, float(rule_measured["max_rss_mb"]) * max(job.gpus, 1))
        jobs.append(job)
    name = plan[kind]["name"] + ("" if kind == "cpu" else f", {_precision(params)}")
    if source is not None:
        machine = measured.get("machine") or {}
        name += f"; measured throughput from {source.relative_to(root) if source.is_relative_to(root) else source}"
        name += f" ({machine.get('gpu') or machine.get('device') or 'its machine'})" if machine else ""
    return {"device": kind, "device_name": name, "rates": rates, "jobs": jobs, "settings": plan}


def critical_path_s(jobs: list[Job]) -> float:
    """The longest chain of dependent jobs: the wall time with every independent job side by side."""
    producer = {out: i for i, job in enumerate(jobs) for out in job.outs}
    finish: dict[int, float] = {}

    def done(i: int) -> float:
        if i not in finish:
            before = [done(producer[d]) for d in jobs[i].deps if producer.get(d, i) != i]
            finish[i] = max(before, default=0.0) + jobs[i].seconds
        return finish[i]

    return max((done(i) for i in range(len(jobs))), default=0.0)


def resources(planned: dict[str, Any]) -> dict[str, dict[str, dict[str, int]]]:
    """{rule: {family or "_": {runtime (min), mem_mb, gpu}}}: the largest need among a rule's jobs per family."""
    plan = planned["settings"]
    out: dict[str, dict[str, dict[str, int]]] = {}
    for job in planned["jobs"]:
        rule = job.rule
        key = job.family if job.family and rule not in ("metrics", "reference") else "_"
        want = {"runtime": max(int(plan["min_runtime_min"]), math.ceil(plan["margin"] * job.seconds / 60)),
                "mem_mb": int(math.ceil(plan["mem_margin"] * job.host_mb / 100) * 100), "gpu": job.gpus}
        have = out.setdefault(rule, {}).get(key)
        out[rule][key] = want if have is None else {k: max(have[k], want[k]) for k in want}
    return out


def params_digest(params: dict[str, Any]) -> str:
    """The params a resources file was planned for (common.smk ignores a file planned for other params)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def write_resources(params: dict[str, Any], planned: dict[str, Any], out: str | Path) -> Path:
    from ..runtime.atomic import write_text

    plan = planned["settings"]
    doc = {"params_sha256": params_digest(params), "device": planned["device_name"],
           "margin": plan["margin"], "mem_margin": plan["mem_margin"], "min_runtime_min": plan["min_runtime_min"],
           "resources": resources(planned)}
    header = ("# Written by `python -m pipeline_lib plan` for the params.yaml of params_sha256 (workflow/rules/\n"
              "# common.smk ignores it, with a warning, once params change). Per rule and family: runtime in minutes\n"
              f"# (x{plan['margin']} the estimate, at least {plan['min_runtime_min']}), mem_mb (x{plan['mem_margin']}), "
              "gpu (0: the job runs no network on a GPU).\n")
    path = Path(out)
    write_text(path, header + yaml.safe_dump(doc, sort_keys=False, width=120))
    return path


def _si(x: float) -> str:
    for unit, size in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.3g} {unit}"
    return f"{x:.3g} "


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def rule_table(planned: dict[str, Any]) -> list[dict[str, Any]]:
    """Per rule, in DAG order: jobs, images, FLOPs, estimated seconds (summed), peak memory, GPUs a job holds."""
    rows: dict[str, dict[str, Any]] = {}
    for job in planned["jobs"]:
        row = rows.setdefault(job.rule, {"rule": job.rule, "jobs": 0, "images": 0, "flops": 0.0, "seconds": 0.0,
                                         "host_mb": 0.0, "device_mb": 0.0, "gpus": 0})
        row["jobs"] += 1
        row["images"] += job.images
        row["flops"] += job.flops
        row["seconds"] += job.seconds
        row["host_mb"] = max(row["host_mb"], job.host_mb)
        row["device_mb"] = max(row["device_mb"], job.device_mb)
        row["gpus"] = max(row["gpus"], job.gpus)
    return list(rows.values())


def totals(planned: dict[str, Any]) -> dict[str, float]:
    jobs = planned["jobs"]
    return {"gpu_hours": sum(j.seconds * j.gpus for j in jobs) / 3600, "serial_s": sum(j.seconds for j in jobs),
            "wall_s": critical_path_s(jobs)}


def render(planned: dict[str, Any]) -> str:
    rows = rule_table(planned)
    head = "| rule | jobs | images | FLOPs | est. time (all jobs) | peak host memory (a job) | peak GPU memory | GPUs a job |"
    lines = [f"Run plan on {planned['device_name']} (start-up {planned['settings']['startup_s']} s a job; "
             f"{_si(planned['rates']['gpu'])}FLOP/s a GPU, {_si(planned['rates']['cpu'])}FLOP/s on the CPU)", "",
             head, "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['rule']} | {r['jobs']} | {r['images']:,} | {_si(r['flops'])}FLOP | {_duration(r['seconds'])} "
                     f"| {r['host_mb'] / 1024:.1f} GiB | {r['device_mb'] / 1024:.1f} GiB | {r['gpus']} |")
    t = totals(planned)
    lines += ["", f"GPU-hours: {t['gpu_hours']:.2f}; one job at a time: {_duration(t['serial_s'])}; "
                  f"every independent job side by side (longest dependency path): {_duration(t['wall_s'])}"]
    return "\n".join(lines) + "\n"
