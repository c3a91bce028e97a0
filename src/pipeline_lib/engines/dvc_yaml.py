"""dvc.yaml, written from params.yaml: one DVC stage per job of the Snakemake DAG, with the same command.

DVC's templating cannot expand a different grid per method (nor skip a method params leave out), so the
stage list is generated here from the same run list Snakemake uses (`config.unlearn_runs`, `paths`). Stages of a
named forget set carry its name after the stage kind (`unlearn-<set>-mae-l2n-...`); the unnamed set's keep theirs.
Values that change inside an existing grid point (epochs, lr, arch) need nothing; after changing *which*
models, methods, grid points or tasks exist, run `python -m pipeline_lib dvc-yaml` (or `make dvc.yaml`),
then `dvc repro`. A stale dvc.yaml fails in its first stage, naming this fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..params import weights as metric_weights
from ..params import paths
from ..runtime.atomic import write_text
from ..params.grid import REFERENCE_METHODS, method_setting_keys, unlearn_runs
from ..params.sets import set_key, set_names
from ..report.summary import summary_files

HEADER = """\
# Generated from params.yaml by `python -m pipeline_lib dvc-yaml` (`make dvc.yaml`): do not edit by hand.
# The same jobs and commands as the Snakefile (tests/test_engines.py checks it). Changed values re-run what
# they feed; after adding or removing models, methods, grid points or tasks, regenerate, then `dvc repro`.
"""
CODE = "src/pipeline_lib"
#: report modules the report stage never runs: they write the documentation and timing tables from finished
#: runs, so editing them must not re-run the report
REPORT_TOOLS = ("docs.py", "timings.py")
#: the modules the report stage runs (every report module but the tools): a change to any of them re-runs it
REPORT_MODULES = (*sorted(f"report/{p.name}" for p in (Path(__file__).parents[1] / "report").glob("*.py")
                          if p.name not in REPORT_TOOLS), "evaluation/tsne.py", "evaluation/forgetting.py")
#: the verification checks' code: the checks, their stage functions and their settings
VERIFY_CODE = tuple(f"{CODE}/{m}" for m in ("verify", "stages/verify.py", "params/verify.py"))
PY = "python -m pipeline_lib"
#: figures the report stage draws per task, declared as DVC plots
PLOTS = ("grid", "alpha", "pareto")


@dataclass
class Stage:
    name: str
    cmd: str
    deps: list[str]
    params: list[str | dict[str, None]]
    outs: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    always_changed: bool = False

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cmd": self.cmd, **({"deps": self.deps} if self.deps else {}), "params": self.params}
        if self.always_changed:
            out["always_changed"] = True
        if self.outs:
            out["outs"] = self.outs
        if self.metrics:
            out["metrics"] = [{m: {"cache": False}} for m in self.metrics]
        return out


def _name(kind: str, set_name: str | None, *parts: str) -> str:
    """A stage's name: its kind, the forget set (when named) and what identifies the job within the set."""
    return "-".join([kind, *([set_name] if set_name else []), *parts])


def _noise_kinds(params: dict[str, Any]) -> list[str]:
    kinds = []
    for run in unlearn_runs(params):
        kind = paths.noise_kind(run["variant"])
        if kind not in kinds:
            kinds.append(kind)
    return kinds


def _present(params: dict[str, Any], prefix: str, keys: list[str]) -> list[str]:
    """Dotted params keys under `prefix` that exist (DVC refuses keys missing from params.yaml)."""
    node = params
    for part in filter(None, prefix.split(".")):
        if part not in node:
            return []
        node = node[part]
    return [f"{prefix}.{k}".lstrip(".") for k in keys if k in node]


def _model_stages(params: dict[str, Any], ds: str, raw: str) -> list[Stage]:
    """Pre-training (and its frozen parts): shared by every forget set."""
    stages = []
    for model in params["models"]:
        parts = paths.part_files(ds, model) if paths.parts_needed(params, model) else {}
        model_keys = _present(params, f"model.{model}", ["checkpoint", "image_size", "arch", "pretrain"])
        if params["model"][model]["checkpoint"] is not None:  # e.g. MAGE's tokenizer as its own file
            model_keys += [f"model.{model}.{part}.checkpoint" for part in paths.part_files(ds, model)
                           if _present(params, f"model.{model}.{part}", ["checkpoint"])]
        part_args = paths.pretrain_part_args(params, model)
        for part, out in parts.items():
            stages.append(Stage(
                f"pretrain_part-{model}-{part}",
                f"{PY} pretrain-part --params params.yaml --model {model} --part {part} --data-dir {raw} "
                f"--out {out} --log logs/pretrain_part/{ds}/{model}/{part}.log",
                [raw, f"{CODE}/models", f"{CODE}/training/trainer.py"],
                ["seed", *_present(params, "", ["pretrain_seed"]), "data", f"model.{model}.{part}",
                 *_present(params, f"model.{model}", ["image_size"])],
                [out, out.replace(".safetensors", ".json")]))
        original = paths.model_file(ds, model, *paths.ORIGINAL)
        part_deps = list(paths.pretrain_part_files(params, model).values())
        stages.append(Stage(
            f"pretrain-{model}",
            f"{PY} pretrain --params params.yaml --model {model} --data-dir {raw}{part_args} --out {original} "
            f"--log logs/pretrain/{ds}/{model}.log",
            [raw, *part_deps, f"{CODE}/models", f"{CODE}/training/trainer.py"],
            ["seed", *_present(params, "", ["pretrain_seed"]), "data", *model_keys],
            [original, original.replace(".safetensors", ".json")]))
    return stages


def _retrain_stages(params: dict[str, Any], ds: str, raw: str, root: str, set_name: str | None) -> list[Stage]:
    """The retrain references of one forget set."""
    stages, split = [], paths.splits_file(root)
    for model in params["models"]:
        parts = paths.part_files(ds, model)
        model_keys = _present(params, f"model.{model}", ["checkpoint", "image_size", "arch", "pretrain"])
        for ref in REFERENCE_METHODS:
            if ref not in params["methods"]:
                continue
            out = paths.model_file(root, model, ref, "base")
            stages.append(Stage(
                _name(ref, set_name, model),
                f"{PY} {ref} --params params.yaml --model {model} --data-dir {raw} --splits {split}"
                f"{paths.part_args(ds, model)} --out {out} --log logs/{ref}/{root}/{model}.log",
                [raw, split, *parts.values(), f"{CODE}/models", f"{CODE}/training/trainer.py"],
                ["seed", *_present(params, "", ["pretrain_seed"]), "data", *model_keys],
                [out, out.replace(".safetensors", ".json")]))
    return stages


def _unlearn_stages(params: dict[str, Any], ds: str, raw: str, root: str, set_name: str | None) -> list[Stage]:
    stages, split = [], paths.splits_file(root)
    for run in unlearn_runs(params):
        model, method, variant = run["model"], run["method"], run["variant"]
        original = paths.model_file(ds, model, *paths.ORIGINAL)
        noise = paths.noise_file(root, paths.noise_kind(variant))
        out = paths.model_file(root, model, method, variant)
        anchors = paths.anchor_files(root, model, method, variant)
        stages.append(Stage(
            _name("unlearn", set_name, model, method, variant),
            f"{PY} unlearn --params params.yaml --model {model} --method {method} --variant {variant} "
            f"--original {original} --data-dir {raw} --splits {split} --noise {noise}"
            f"{paths.anchor_args(root, model, method, variant)} --out {out} --log logs/unlearn/{root}/{model}/{method}/{variant}.log",
            [original, raw, split, noise, *anchors, f"{CODE}/methods", f"{CODE}/training/trainer.py"],
            ["seed", "data", "unlearn", *method_setting_keys(params, method, model)],
            [out, out.replace(".safetensors", ".json")]))
    return stages


def weights_stages(params: dict[str, Any]) -> list[Stage]:
    """One download per standard metric network named by url: its url and hash are its only dependencies (a
    changed one fetches again), and the file is a cached output, so `dvc pull` brings it offline."""
    return [Stage(f"weights-{kind}", f"{PY} weights --params params.yaml --kind {kind} --out {out} "
                  f"--log logs/{out.removeprefix('data/')}.log", [], [f"metrics.{kind}.url", f"metrics.{kind}.sha256"],
                  [out])
            for kind, out in metric_weights.downloaded(params).items()]


def _evaluation_stages(params: dict[str, Any], ds: str, raw: str, root: str, set_name: str | None) -> list[Stage]:
    stages, split = [], paths.splits_file(root)
    weights = list(metric_weights.downloaded(params).values())
    reference, extractor = paths.reference_dir(root), paths.extractor_file(ds)
    for model, method, variant in paths.evaluated_models(params):
        checkpoint = paths.checkpoint_file(ds, root, model, method, variant)
        sampling = _present(params, f"model.{model}", ["sampling"])
        for task in paths.eval_tasks(params):
            recon = paths.recon_dir(root, model, method, variant, task)
            metrics = paths.metrics_file(root, model, method, variant, task)
            key = "-".join([model, method, variant, task])
            log = f"logs/{{}}/{root}/{model}/{method}/{variant}/{task}.log"
            if task == paths.XVAL:
                original = paths.model_file(ds, model, *paths.ORIGINAL)
                stages.append(Stage(
                    _name("crossval", set_name, key),
                    f"{PY} crossval --params params.yaml --checkpoint {checkpoint} --original {original} "
                    f"--data-dir {raw} --splits {split} --out {recon} --log {log.format('crossval')}",
                    list(dict.fromkeys([checkpoint, original, raw, split])),
                    ["seed", "data", "crossval", *(f"task.{t}" for t in params["crossval"].values()), *sampling],
                    [recon]))
            else:
                stages.append(Stage(
                    _name("generate", set_name, key),
                    f"{PY} generate --params params.yaml --checkpoint {checkpoint} --data-dir {raw} --splits {split} "
                    f"--task {task} --out {recon} --log {log.format('generate')}",
                    [checkpoint, raw, split], ["seed", "data", f"task.{task}", *sampling], [recon]))
            stages.append(Stage(
                _name("metrics", set_name, key),
                f"{PY} metrics --params params.yaml --recon {recon} --reference {reference} --extractor {extractor} "
                f"--checkpoint {checkpoint} --out {metrics} --log logs/metrics/{root}/{model}/{method}/{variant}/{task}.log",
                [recon, reference, extractor, checkpoint, *weights], ["seed", "metrics"], [metrics]))
    return stages


def _split_stage(params: dict[str, Any], raw: str, root: str, set_name: str | None) -> Stage:
    """One forget set's split file. The unnamed set tracks all of `splits`; a named one its own classes and
    the shared per-class counts, so editing one set re-runs only that set's jobs."""
    split = paths.splits_file(root)
    keys = ["splits"] if set_name is None else [
        *_present(params, "splits", ["unlearn_per_class", "eval_per_class"]),
        *_present(params, set_key(set_name), ["forget", "retain"])]
    code = [f"{CODE}/data/splits.py", f"{CODE}/params/sets.py", f"{CODE}/data/classes.py"]
    return Stage(_name("splits", set_name), f"{PY} splits --params params.yaml{paths.set_arg(set_name)} "
                 f"--data-dir {raw} --out {split} --log logs/splits/{root}.log", [raw, *code],
                 ["seed", *keys], [split])


def _feature_stages(params: dict[str, Any], ds: str, raw: str, root: str, set_name: str | None) -> list[Stage]:
    """One forget set's reference features and noise targets."""
    split, reference = paths.splits_file(root), paths.reference_dir(root)
    extractor = paths.extractor_file(ds)
    out = [Stage(_name("reference", set_name), f"{PY} reference --params params.yaml --data-dir {raw} --splits {split} "
                 f"--extractor {extractor} --out {reference} --log logs/reference/{root}.log",
                 [raw, split, extractor], ["data"], [reference])]
    for kind in _noise_kinds(params):
        noise = paths.noise_file(root, kind)
        out.append(Stage(_name("noise", set_name, kind), f"{PY} noise --params params.yaml --kind {kind} "
                         f"--data-dir {raw} --splits {split} --out {noise} --log logs/noise/{root}/{kind}.log",
                         [raw, split, f"{CODE}/noise/covariance.py"], ["data", "noise"], [noise]))
    return out


def verify_stages(params: dict[str, Any], ds: str, raw: str, root: str, set_name: str | None) -> list[Stage]:
    """One stage per verification check and evaluated model of one forget set (workflow/rules/verify.smk's
    jobs)."""
    from ..params.verify import enabled, task_name, verified_models, verify_file

    if not enabled(params):
        return []
    out, extractor = [], paths.extractor_file(ds)
    split, task = paths.splits_file(root), f"task.{task_name(params)}"
    for model, method, variant in verified_models(params):
        checkpoint = paths.checkpoint_file(ds, root, model, method, variant)
        original = paths.model_file(ds, model, *paths.ORIGINAL)
        sampling = _present(params, f"model.{model}", ["sampling"])
        for check in params["verify"]["checks"]:
            result = verify_file(root, model, method, variant, check)
            args, deps = f"--checkpoint {checkpoint}", [checkpoint]
            if check == "relearn":
                args, deps = f"{args} --original {original}", list(dict.fromkeys([checkpoint, original]))
            args += f" --data-dir {raw} --splits {split}"
            deps += [raw, split]
            if check in ("sweep", "relearn"):
                args, deps = f"{args} --extractor {extractor}", [*deps, extractor]
            keys = ["seed", "data", "verify", task, *sampling]
            if check in ("relearn", "membership"):
                keys.append(f"model.{model}.pretrain")
            out.append(Stage(_name(f"verify_{check}", set_name, model, method, variant),
                             f"{PY} verify-{check} --params params.yaml {args} --out {result} "
                             f"--log logs/verify/{root}/{model}/{method}/{variant}/{check}.log",
                             [*deps, *VERIFY_CODE], keys, [result]))
    return out


def stages(params: dict[str, Any]) -> list[Stage]:
    """Every job: the shared ones once (data, pre-training, extractor, report), the split's per forget set."""
    ds = params["dataset"]
    raw = f"data/{ds}/raw"
    extractor = paths.extractor_file(ds)
    sets = [(paths.set_root(ds, name), name) for name in set_names(params)]
    # a class-folder tree lies outside DVC: the stage re-lists it on every repro (cheap; the images are not
    # hashed), and an unchanged file list leaves every later stage cached
    out = [Stage("data", f"{PY} data --params params.yaml --out {raw} --log logs/data/{ds}.log",
                 [f"{CODE}/data/datasets.py"], ["dataset", "data"], [raw],
                 always_changed=params["data"].get("kind") == "image_folder")]
    out += [_split_stage(params, raw, *scope) for scope in sets]
    out += _model_stages(params, ds, raw)
    out += [s for scope in sets for s in _retrain_stages(params, ds, raw, *scope)]
    out.append(Stage("extractor", f"{PY} extractor --params params.yaml --data-dir {raw} --out {extractor} "
                     f"--log logs/extractor/{ds}.log", [raw, f"{CODE}/evaluation/extractor.py"], ["seed", "data", "extractor"],
                     [extractor, extractor.replace(".safetensors", ".json")]))
    out += weights_stages(params)
    for per_set in (_feature_stages, _unlearn_stages, _evaluation_stages):
        out += [s for scope in sets for s in per_set(params, ds, raw, *scope)]
    out.append(Stage("summary", f"{PY} summary --params params.yaml --log logs/summary/{ds}.log",
                     [*paths.all_metrics(params), f"{CODE}/report/summary.py"],
                     _present(params, "", ["models", "methods", "tasks", "crossval"]),
                     metrics=summary_files(params)))
    out += [s for scope in sets for s in verify_stages(params, ds, raw, *scope)]
    report, references = paths.report_dir(ds), [paths.reference_dir(root) for root, _ in sets]
    out.append(Stage("aggregate", f"{PY} aggregate --params params.yaml --extractor {extractor} "
                     f"--reference {' '.join(references)} --out {report} --log logs/aggregate/{ds}.log",
                     [*paths.all_metrics(params), *paths.all_recon(params), *_all_verify(params), extractor, *references,
                      *(f"{CODE}/{m}" for m in REPORT_MODULES)],
                     # the whole file: any params change reaches this stage, which checks dvc.yaml is current
                     [{"params.yaml": None}],
                     [report]))
    return out


def _all_verify(params: dict[str, Any]) -> list[str]:
    from ..params.verify import all_verify

    return all_verify(params)


def render(params: dict[str, Any]) -> str:
    report = paths.report_dir(params["dataset"])
    plots = []
    for name in set_names(params):  # each forget set's figures (the unnamed set's at the report's top)
        where = report + ("" if name is None else f"/sets/{name}")
        plots += [f"{where}/{kind}_{task}.png" for task in paths.eval_tasks(params) for kind in PLOTS]
        plots += [f"{where}/tsne_{model}_{task}.png" for task in paths.eval_tasks(params) for model in params["models"]]
    doc = {"stages": {s.name: s.as_dict() for s in stages(params)}, "plots": plots}
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=120)


def write(params: dict[str, Any], out: str | Path = "dvc.yaml") -> None:
    write_text(Path(out), render(params))


def check_current_stage(params: dict[str, Any], environ: dict[str, str]) -> None:
    """Under `dvc repro` (DVC sets DVC_STAGE and DVC_ROOT), refuse to run a stage whose dvc.yaml entry
    differs from what params.yaml now asks for: DVC decides what to re-run from the declared params and
    deps, so a stale entry could skip a needed run and leave an old result looking current. The report
    stage depends on every key and compares the whole file, so no stale dvc.yaml yields a report."""
    name, root = environ.get("DVC_STAGE"), environ.get("DVC_ROOT")
    path = Path(root) / "dvc.yaml" if root else None
    if not name or path is None or not path.is_file():
        return
    from ..runtime.errors import ParamsError

    declared_text = path.read_text()
    if name == "aggregate":
        # it tracks all of params.yaml, so a change that a stale dvc.yaml hides from the other stages ends here
        if declared_text != render(params):
            raise ParamsError("dvc.yaml is stale: params.yaml now asks for other stages or dependencies than it "
                              "declares, so DVC may have skipped runs; regenerate it (python -m pipeline_lib "
                              "dvc-yaml), then dvc repro")
        return
    declared = (yaml.safe_load(declared_text) or {}).get("stages", {}).get(name)
    wanted = {s.name: s.as_dict() for s in stages(params)}.get(name)
    if declared != wanted:
        why = "is no longer planned by params.yaml" if wanted is None else "differs from what params.yaml asks for"
        raise ParamsError(f"dvc.yaml is stale: stage '{name}' {why}; regenerate it (python -m pipeline_lib "
                          "dvc-yaml), then dvc repro")
