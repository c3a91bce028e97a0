"""Dress rehearsal of a paper preset: every stage through Snakemake at the published sizes, measured.

    python bench/rehearsal.py --preset imagenet|places365 [--tiny]

Why: no stage of `presets/imagenet.yaml` or `presets/places365.yaml` can otherwise run before a cluster
run (no data set, no published checkpoint, no hub here), so shape, memory and time surprises would first
show after hours of queued GPUs. This script builds what the preset needs and runs its whole DAG
(`snakemake --profile profiles/local` in a temporary copy of the project):

- the preset merged with `bench/rehearsal/overlay-<preset>.yaml` (class lists cut to a handful, a few
  images per class, one unlearning epoch, a short Palette chain; `--tiny` adds its `tiny` section: small
  models at 32 px, the wiring test's size);
- a generated class-folder tree of those classes (JPEGs larger than the models' inputs, so every stage
  decodes, resizes and crops as on the real sets);
- random-weight checkpoints in the published files' layouts at the preset's architectures
  (`bench/official_weights.py`), named as the preset names them (the MAE by a url served from 127.0.0.1, MAGE and
  Palette by path), each with its sha256 pinned; the metric networks (torch-fidelity's Inception-v3,
  open_clip's ViT-H-14, ResNet-50-Places365) likewise, through the `weights` stage from such urls.

Per rule it records jobs, wall time (summed over jobs), peak RSS (the largest job's), images, images/s and
FLOPs per image (`bench/rehearsal_flops.py`), writes `bench/rehearsal/<preset>.json` and prints a markdown
table; `docs/rehearsal.md` and the README's short table are rendered from every json there
(`python bench/rehearsal.py --render`). On a
CUDA machine the same command runs the preset's bf16 autocast (`runtime.amp`) and adds MFU (achieved FLOP/s
over the GPU's peak: `--peak-tflops`, else `PEAK_TFLOPS` by device name) to the training and sampling rules.
Generated weights are cached in `--weights-dir` between runs.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import functools
import hashlib
import http.server
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "rehearsal"
DOCS_PAGE = REPO / "docs" / "rehearsal.md"
README = REPO / "README.md"
README_BLOCK = re.compile(r"(<!-- generated: rehearsal -->\n)(.*?)(<!-- /generated -->)", re.S)
sys.path.insert(0, str(REPO / "bench"))

import official_weights  # noqa: E402  (bench/ is not a package)

#: what a project copy holds (as tests/helpers.make_project copies it)
PROJECT_FILES = ["Snakefile", "workflow", "profiles", "src", "pyproject.toml", ".gitignore", "presets", ".dvc",
                 ".dvcignore"]
#: dense bf16 peak FLOP/s (tensor cores, no sparsity) by a substring of torch.cuda.get_device_name()
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
               "RTX 4090": 165.0, "RTX 3090": 71.0, "V100": 125.0}
#: rules whose model op is a training step or a sampling chain (the ones given an MFU)
MFU_RULES = ("unlearn", "generate", "crossval", "extractor")
#: Snakemake's benchmark files are polled; the monitor below polls the rules without one (cached rules)
POLL_S = 0.25


# --- params ----------------------------------------------------------------------------------------------------

def merge(base: dict, over: dict) -> dict:
    """`over` into a copy of `base`: mappings key by key, everything else replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def rehearsal_config(preset: str, tiny: bool, models: list[str] | None = None) -> tuple[dict, dict]:
    """(params, tree settings) of the preset with its overlay (and the overlay's tiny section); `models` keeps
    only those families."""
    params = yaml.safe_load((REPO / "presets" / f"{preset}.yaml").read_text())
    overlay = yaml.safe_load((BENCH / f"overlay-{preset}.yaml").read_text())
    params, tree = merge(params, overlay["params"]), dict(overlay["tree"])
    if tiny:
        params, tree = merge(params, overlay["tiny"]["params"]), {**tree, **overlay["tiny"].get("tree", {})}
    if models:
        unknown = sorted(set(models) - set(params["models"]))
        if unknown:
            raise SystemExit(f"--models {' '.join(unknown)}: not in presets/{preset}.yaml's models {params['models']}")
        params["models"] = [m for m in params["models"] if m in models]
    return params, tree


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _arch_tag(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:10]


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """`directory` over HTTP on 127.0.0.1 for the run (params take http(s) urls only); yields the base url."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - the base class's signature
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def weights_for(params: dict, weights_dir: Path, base_url: str) -> dict:
    """Write (or reuse) every checkpoint and metric-network file the preset names and point params at them:
    a url (served from `weights_dir` at `base_url`) where the preset has a url, else a path; sha256 pinned."""
    params = copy.deepcopy(params)

    def url(path: Path) -> str:
        return base_url + path.relative_to(weights_dir).as_posix()

    model = params["model"]
    if "mae" in params["models"]:
        arch, size = model["mae"]["arch"], model["mae"].get("image_size", params["data"]["image_size"])
        path = official_weights.write(weights_dir / f"mae-{_arch_tag(arch, size)}.pth",
                                      lambda: official_weights.mae_checkpoint(arch, size))
        model["mae"]["checkpoint"] = {"url": url(path), "sha256": sha256(path)}  # as the preset: a url
    if "vqgan" in params["models"]:
        cfg = model["vqgan"]
        size = cfg.get("image_size", params["data"]["image_size"])
        tok = cfg["tokenizer"]["arch"]
        path = official_weights.write(weights_dir / f"mage-{_arch_tag(cfg['arch'], tok, size)}.pth",
                                      lambda: official_weights.mage_checkpoint(cfg["arch"], tok, size))
        cfg["checkpoint"] = {"path": str(path), "sha256": sha256(path)}  # holds its tokenizer under vqgan.*
    if "diffusion" in params["models"]:
        arch = model["diffusion"]["arch"]
        path = official_weights.write(weights_dir / f"palette-{_arch_tag(arch)}.pth",
                                      lambda: official_weights.palette_checkpoint(arch))
        model["diffusion"]["checkpoint"] = {"path": str(path), "sha256": sha256(path)}
    metrics = params["metrics"]
    makers = {"inception": (lambda: official_weights.inception_state(), "inception"),
              "places": (lambda: official_weights.places_checkpoint(), "places")}
    for kind, spec in metrics.items():
        if not isinstance(spec, dict) or not ("url" in spec or "weights" in spec):
            continue
        name = Path(spec.get("url") or spec["weights"]).name
        if kind == "clip":
            arch = spec["arch"]
            path = official_weights.write(weights_dir / f"clip-{arch}" / Path(name).with_suffix(".safetensors").name,
                                          lambda: official_weights.clip_state(arch))
        else:
            path = official_weights.write(weights_dir / kind / name, makers[kind][0])
        metrics[kind] = {**{k: v for k, v in spec.items() if k not in ("url", "weights", "sha256")},
                         "url": url(path), "sha256": sha256(path)}
    return params


# --- data and project ----------------------------------------------------------------------------------------

def make_tree(root: Path, classes: list[str], train: int, val: int, seed: int = 0) -> Path:
    """root/{train,val}/<class>/*.JPEG: blocks of colour at sizes around 1.3x the models' 256 px, one in five
    grey, so decoding, RGB conversion, resize and centre crop all run as on the real sets."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("val", val)):
        for cls in classes:
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = int(rng.integers(280, 380)), int(rng.integers(300, 500))
                img = np.empty((h, w, 3), np.uint8)
                img[:] = rng.integers(0, 255, size=3)
                y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
                img[y: y + h // 2, x: x + w // 2] = rng.integers(0, 255, size=3)
                out = Image.fromarray(img)
                (out.convert("L") if i % 5 == 4 else out).save(d / f"{cls.replace('/', '_')}_{i:05d}.JPEG", quality=85)
    return root


def make_project(root: Path, params: dict) -> Path:
    root.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "cache", "tmp",
                                                                             "config.local"))
        else:
            shutil.copy(src, root / name)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def _run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd} (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n"
                         f"{proc.stderr[-8000:]}")
    return proc.stdout + proc.stderr


def planned_jobs(root: Path) -> dict[str, int]:
    """Jobs per rule from Snakemake's dry run ("Job stats")."""
    out = _run(["snakemake", "--profile", "profiles/local", "-n", "--forceall", "--quiet", "rules"], root)
    counts = {}
    for line in out.split("Job stats:", 1)[-1].splitlines():
        m = re.match(r"^(\w+)\s+(\d+)\s*$", line.strip())
        if m and m.group(1) not in ("total", "job", "count", "all"):  # `all` runs nothing
            counts[m.group(1)] = int(m.group(2))
    return counts


# --- measuring ---------------------------------------------------------------------------------------------------

class JobMonitor:
    """Wall time and peak RSS of every `python -m pipeline_lib` job under a Snakemake process, keyed by its
    --log path (every rule passes one): for the rules without a benchmark file (the cached model rules).
    RSS is summed over the job's process tree (its loader workers too), as Snakemake's benchmarks do."""

    def __init__(self, pid: int):
        import psutil

        self.root, self.jobs, self._stop = psutil.Process(pid), {}, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> "JobMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _log_of(proc) -> str | None:
        try:
            cmd = proc.cmdline()
        except Exception:  # the process ended
            return None
        words = " ".join(cmd).split()
        if "pipeline_lib" not in words or "--log" not in words:
            return None
        return words[words.index("--log") + 1]

    def _poll(self) -> None:
        import psutil

        while not self._stop.is_set():
            now = time.monotonic()
            try:
                procs = self.root.children(recursive=True)
            except psutil.Error:
                break
            tops: dict[str, Any] = {}
            for proc in procs:
                log = self._log_of(proc)
                if log is None:
                    continue
                try:
                    parent_log = self._log_of(proc.parent()) if proc.parent() else None
                except psutil.Error:
                    parent_log = None
                if parent_log != log:
                    tops[log] = proc
            for log, top in tops.items():
                try:
                    rss = sum(p.memory_info().rss for p in [top, *top.children(recursive=True)])
                except psutil.Error:
                    continue
                job = self.jobs.setdefault(log, {"first": now, "last": now, "max_rss": 0})
                job["last"], job["max_rss"] = now, max(job["max_rss"], rss)
            self._stop.wait(POLL_S)

    def wall_s(self, log: str) -> float:
        job = self.jobs[log]
        return job["last"] - job["first"] + POLL_S


def run_dag(root: Path, rules: list[str]) -> tuple[float, dict]:
    """Snakemake over the whole DAG, one job at a time (every rule's threads set to all the cores, so each
    job's time and memory are its own, and two large metric networks never share the memory), watched by a
    JobMonitor; (wall seconds, monitored jobs)."""
    start = time.monotonic()
    out_path = root / "snakemake.out"
    cores = os.cpu_count() or 1
    cmd = ["snakemake", "--profile", "profiles/local", "--cores", str(cores),
           "--set-threads", *(f"{r}={cores}" for r in rules)]
    with open(out_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=root, stdout=out,
                                stderr=subprocess.STDOUT, text=True)
        with JobMonitor(proc.pid) as monitor:
            code = proc.wait()
    if code:
        raise SystemExit(f"snakemake failed (exit {code}) in {root}; its output ends:\n"
                         f"{out_path.read_text()[-6000:]}")
    return time.monotonic() - start, {log: {"wall_s": monitor.wall_s(log), "max_rss_mb": job["max_rss"] / 2**20}
                                      for log, job in monitor.jobs.items()}


def _benchmarks(root: Path) -> dict[str, list[dict]]:
    """Snakemake's benchmark rows per rule (the last row of each file: s, max_rss in MB)."""
    import csv

    rules: dict[str, list[dict]] = {}
    for tsv in sorted((root / "benchmarks").rglob("*.tsv")):
        with open(tsv) as fh:
            row = list(csv.DictReader(fh, delimiter="\t"))[-1]
        rss = row.get("max_rss")
        rules.setdefault(tsv.relative_to(root / "benchmarks").parts[0], []).append(
            {"wall_s": float(row["s"]), "max_rss_mb": float(rss) if rss not in (None, "", "-", "NA") else None,
             "job": str(tsv.relative_to(root / "benchmarks").with_suffix(""))})
    return rules


def _images(root: Path, params: dict, dataset: str) -> dict[str, dict[str, int]]:
    """Images each rule processed, per family where the rule has one (read from the jobs' outputs)."""
    from safetensors import safe_open

    data = root / "data" / dataset
    split = json.loads((data / "splits.json").read_text())
    files = (data / "raw" / "files.tsv").read_text().splitlines()
    n_eval = sum(len(v) for v in split["eval"].values())
    out: dict[str, dict[str, int]] = {"data": {"": len(files) - 1}, "reference": {"": n_eval}}
    ext = json.loads((data / "extractor" / "classifier.json").read_text())["meta"]
    if "images_seen" in ext:
        out["extractor"] = {"": ext["images_seen"]}
    for meta in (data / "models").rglob("model.json"):
        parts = meta.relative_to(data / "models").parts
        info = json.loads(meta.read_text())["meta"]
        if parts[1] not in ("original", "retrain") and "training" in info:
            fam = out.setdefault("unlearn", {})
            fam[parts[0]] = fam.get(parts[0], 0) + info["training"]["images_seen"]
    for recon in (root / "results" / dataset / "recon").rglob("*.safetensors"):
        family = recon.relative_to(root / "results" / dataset / "recon").parts[0]
        with safe_open(str(recon), "pt") as fh:
            n = fh.get_slice("recon").get_shape()[0]
        rule = "crossval" if "xval" in recon.parts else "generate"
        for r in (rule, "metrics") if rule == "generate" else (rule,):
            fam = out.setdefault(r, {})
            fam[family] = fam.get(family, 0) + n
    return out


def _family_of(job: str, families: list[str]) -> str:
    return next((f for f in families if f"/{f}/" in f"/{job}/"), "")


def stage_table(root: Path, params: dict, jobs: dict[str, int], monitored: dict, flops: dict) -> dict[str, dict]:
    """The json's `stages`: per rule jobs, wall_s (sum), max_rss_mb (largest job), images, images/s,
    flops_per_image; rules that run one family per job also get `models` with the same fields per family."""
    dataset = params["dataset"]
    families = list(params["models"])
    bench = _benchmarks(root)
    for log, job in monitored.items():  # the rules without a benchmark file
        rule = Path(log).parts[1]
        if rule not in bench:
            bench.setdefault(f"~{rule}", []).append({**job, "job": str(Path(*Path(log).parts[1:]).with_suffix(""))})
    bench = {k.lstrip("~"): v for k, v in bench.items()}
    images = _images(root, params, dataset)
    fam_flops = flops["families"]
    per_image = {"extractor": {"": flops["extractor"]["train"]}, "reference": {"": flops["extractor"]["forward"]},
                 "unlearn": {f: fam_flops[f]["unlearn"] for f in families},
                 "generate": {f: fam_flops[f]["generate"] for f in families},
                 "metrics": {f: fam_flops[f]["metrics"] for f in families}}
    stages = {}
    for rule, count in jobs.items():
        rows = bench.get(rule, [])
        entry = _entry(count, rows, images.get(rule, {}), per_image.get(rule, {}))
        by_family = {}
        if rule in per_image and "" not in per_image[rule]:
            for f in families:
                f_rows = [r for r in rows if _family_of(r["job"], families) == f]
                if f_rows:
                    by_family[f] = _entry(len(f_rows), f_rows, {f: images.get(rule, {}).get(f, 0)},
                                          {f: per_image[rule][f]})
        if by_family:
            entry["models"] = by_family
        stages[rule] = entry
    return stages


def _entry(jobs: int, rows: list[dict], images: dict[str, int], per_image: dict[str, int | None]) -> dict:
    wall = round(sum(r["wall_s"] for r in rows), 2) if rows else None
    rss = [r["max_rss_mb"] for r in rows if r.get("max_rss_mb") is not None]
    n = sum(images.values()) if images else None
    total = sum((per_image.get(k) or 0) * v for k, v in images.items()) if images and per_image else None
    return {"jobs": jobs, "wall_s": wall, "max_rss_mb": round(max(rss), 1) if rss else None,
            "flops_per_image": int(total / n) if total and n else None, "images": n,
            "images_per_s": round(n / wall, 4) if n and wall else None}


def note_chains(stages: dict, params: dict, preset: dict) -> None:
    """Where the overlay shortened a family's sampling chain, its generate entry says by how much
    (`sampling_steps` as run, `preset_sampling_steps`): its FLOPs per image and images/s are the short chain's,
    and a chain's cost is its steps times the cost of one (the same network at every step)."""
    for family, entry in stages.get("generate", {}).get("models", {}).items():
        ran = params["model"][family].get("sampling", {}).get("steps")
        planned = preset["model"][family].get("sampling", {}).get("steps")
        if ran is not None:
            entry.update({"sampling_steps": ran, "preset_sampling_steps": planned})


def add_mfu(stages: dict, peak_flops: float) -> None:
    """MFU = achieved FLOP/s (FLOPs per image x images / the job's wall time, so a lower bound: loading and
    writing count as time) over the device's peak, for the training and sampling rules."""
    for rule, entry in stages.items():
        for e in [entry, *entry.get("models", {}).values()]:
            if rule in MFU_RULES and e["flops_per_image"] and e["images_per_s"]:
                e["mfu"] = round(e["flops_per_image"] * e["images_per_s"] / peak_flops, 6)


def machine(device: str, peak_tflops: float | None) -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    info = {"cpu": cpu, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "memory_gb": round(_mem_total_gb(), 1),
            "load_average": [round(x, 2) for x in os.getloadavg()], "device": device}
    if device == "cuda":
        info.update({"gpu": torch.cuda.get_device_name(0), "cuda": torch.version.cuda, "dtype": "bfloat16",
                     "peak_tflops": peak_tflops})
    return info


def _mem_total_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def peak_tflops_for(name: str, given: float | None) -> float:
    if given:
        return given
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            return value
    raise SystemExit(f"no peak FLOP/s known for GPU '{name}': pass --peak-tflops (dense bf16)")


# --- report ----------------------------------------------------------------------------------------------------

def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "flops":  # in GFLOP
        return f"{value / 1e9:,.0f}" if value >= 1e11 else f"{value / 1e9:.3g}"
    if kind == "mfu":
        return f"{100 * value:.1f} %"
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 10 else f"{value:.3g}"
    return str(value)


def markdown_table(result: dict) -> str:
    """One row per rule (and per family below it where jobs are per family)."""
    mfu = any("mfu" in e for e in result["stages"].values())
    head = ["rule", "jobs", "wall s", "peak RSS MB", "GFLOP / image", "images", "images / s"] + (["MFU"] if mfu else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(name: str, e: dict) -> None:
        cells = [name, str(e["jobs"]), _fmt(e["wall_s"], ""), _fmt(e["max_rss_mb"], ""),
                 _fmt(e["flops_per_image"], "flops"), _fmt(e["images"], ""), _fmt(e["images_per_s"], "")]
        lines.append("| " + " | ".join(cells + ([_fmt(e.get("mfu"), "mfu")] if mfu else [])) + " |")

    for rule, e in result["stages"].items():
        row(rule, e)
        for fam, fe in e.get("models", {}).items():
            row(f"  {rule} / {fam}", fe)
    return "\n".join(lines)


def readme_table(bench_dir: Path = BENCH) -> str:
    """The README's short form: per rule, each preset's wall time and peak memory, then how each was run."""
    results = [json.loads(p.read_text()) for p in sorted(bench_dir.glob("*.json"))]
    if not results:
        return "No rehearsal is recorded yet.\n"
    head = ["rule"] + [f"{r['preset']} {c}" for r in results for c in ("wall s", "peak RSS GB")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rule in dict.fromkeys(rule for r in results for rule in r["stages"]):
        cells = [rule]
        for r in results:
            e = r["stages"].get(rule, {})
            rss = e.get("max_rss_mb")
            cells += [_fmt(e.get("wall_s"), ""), "–" if rss is None else f"{rss / 1024:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for r in results:
        m = r["machine"]
        lines.append(f"{r['preset']}: `{r['command']}`, {r['date']}, {m.get('gpu') or m['cpu']} "
                     f"({m['cpus']} CPUs), the whole DAG in {r['dag_wall_s']:,.0f} s.")
    return "\n".join(lines) + "\n"


def render_readme(text: str, bench_dir: Path = BENCH) -> str:
    """The README with its `<!-- generated: rehearsal -->` block rewritten from the recorded runs."""
    return README_BLOCK.sub(lambda m: m.group(1) + readme_table(bench_dir) + m.group(3), text)


def render_docs(bench_dir: Path = BENCH) -> str:
    """docs/rehearsal.md from every bench/rehearsal/<preset>.json (generated: never edit by hand)."""
    parts = ["# Dress rehearsal at the published sizes",
             "",
             "Generated by `python bench/rehearsal.py --render` from `bench/rehearsal/*.json`; do not edit. Each "
             "preset's whole DAG ran through Snakemake on the machine below at the published architectures "
             "and image sizes (the MAE ViT-L/16 at 224 px, MAGE ViT-B on MaskGIT's VQGAN at 256 px, Palette's "
             "U-Net at 256 px, Inception-v3, CLIP ViT-H-14, ResNet-50-Places365) from random-weight checkpoints "
             "in the published files' layouts, on a generated class-folder tree cut by "
             "`bench/rehearsal/overlay-<preset>.yaml` (a few classes and images, one unlearning epoch, "
             "a short Palette chain). Wall time is summed over a rule's jobs (process start, loading and writing "
             "included), peak RSS is its largest job's, FLOPs per image count one image through the rule's "
             "model op (`bench/rehearsal_flops.py`: training step with its backward, sampling chain as run, "
             "or the metric networks on a reconstruction and its ground truth; matmuls, convolutions and "
             "attention). See [paper-scale.md](paper-scale.md).",
             ""]
    recorded = sorted(bench_dir.glob("*.json"))
    if not recorded:
        parts += ["No rehearsal is recorded yet: `python bench/rehearsal.py --preset imagenet` (then `places365`) "
                  "writes `bench/rehearsal/<preset>.json` and this page.", ""]
    for path in recorded:
        result = json.loads(path.read_text())
        m = result["machine"]
        where = (f"{m.get('gpu')} ({m.get('dtype')}, peak {m.get('peak_tflops')} TFLOP/s)" if m.get("device") == "cuda"
                 else f"{m['cpu']}, {m['cpus']} CPUs, {m['torch_threads']} torch threads")
        parts += [f"## {result['preset']}", "",
                  f"`{result['command']}` on {result['date']} at commit {result['commit'][:10]}: {where}, "
                  f"{m['memory_gb']} GB memory (shared), torch {m['torch']}, load average "
                  f"{m['load_average'][0]} at the start and {m.get('load_average_end', ['?'])[0]} at the end; "
                  f"jobs ran one at a time, the DAG in {result['dag_wall_s']:,.0f} s.", "",
                  markdown_table(result), ""]
        for family, e in result["stages"].get("generate", {}).get("models", {}).items():
            ran, planned = e.get("sampling_steps"), e.get("preset_sampling_steps")
            if ran and planned and ran != planned:
                parts += [f"`generate / {family}` sampled a {ran}-step chain; the preset samples {planned} steps of "
                          f"the same network, {planned / ran:g} times its FLOPs and time per image.", ""]
    return "\n".join(parts)


# --- main --------------------------------------------------------------------------------------------------------

def rehearse(preset: str, tiny: bool, workdir: Path, weights_dir: Path, out: Path | None, device: str,
             peak_tflops: float | None, models: list[str] | None = None) -> dict:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    command = (f"python bench/rehearsal.py --preset {preset}" + (" --tiny" if tiny else "")
               + (f" --models {' '.join(models)}" if models else ""))
    load_start = [round(x, 2) for x in os.getloadavg()]
    params, tree_cfg = rehearsal_config(preset, tiny, models)
    params["runtime"]["device"] = device
    splits = params["splits"]
    tree = make_tree(workdir / "tree", splits["forget"] + splits["retain"] + tree_cfg["proxy"],
                     tree_cfg["train_per_class"], tree_cfg["val_per_class"])
    params["data"]["root"] = str(tree)
    t0 = time.monotonic()
    weights_dir.mkdir(parents=True, exist_ok=True)
    with serve(weights_dir) as base_url:
        params = weights_for(params, weights_dir, base_url)
        print(f"weights ready in {weights_dir} ({time.monotonic() - t0:.0f} s)", flush=True)
        root = make_project(workdir / "project", params)
        jobs = planned_jobs(root)
        print(f"{sum(jobs.values())} jobs: {jobs}", flush=True)
        dag_wall, monitored = run_dag(root, list(jobs))
    record = {"preset": preset, "tiny": tiny, "command": command, "device": device, "peak_tflops": peak_tflops,
              "load_average": load_start, "date": datetime.date.today().isoformat(), "commit": _commit(),
              "jobs": jobs, "dag_wall_s": round(dag_wall, 1), "monitored": monitored}
    (workdir / "run.json").write_text(json.dumps(record, indent=2))  # what --collect needs, kept with the run
    print(f"DAG done in {dag_wall:.0f} s; counting FLOPs", flush=True)
    return collect(workdir, out)


def collect(workdir: Path, out: Path | None) -> dict:
    """The json of a finished run in `workdir` (its run.json and project): FLOPs counted, stages tabulated."""
    import torch
    from pipeline_lib.params.load import load_params

    import rehearsal_flops

    record = json.loads((workdir / "run.json").read_text())
    root = workdir / "project"
    params = yaml.safe_load((root / "params.yaml").read_text())
    cwd = os.getcwd()
    os.chdir(root)
    try:
        flops = rehearsal_flops.per_family(load_params(root / "params.yaml"), root, params["dataset"])
    finally:
        os.chdir(cwd)
    stages = stage_table(root, params, record["jobs"], record["monitored"], flops)
    note_chains(stages, params, yaml.safe_load((REPO / "presets" / f"{record['preset']}.yaml").read_text()))
    peak = None
    if record["device"] == "cuda":
        peak = peak_tflops_for(torch.cuda.get_device_name(0), record["peak_tflops"])
        add_mfu(stages, peak * 1e12)
    info = machine(record["device"], peak)
    info["load_average"], info["load_average_end"] = record["load_average"], info["load_average"]
    result = {"preset": record["preset"], "tiny": record["tiny"], "machine": info, "command": record["command"],
              "date": record["date"], "commit": record["commit"], "dag_wall_s": record["dag_wall_s"],
              "flops_detail": flops, "stages": stages}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=["imagenet", "places365"])
    ap.add_argument("--tiny", action="store_true", help="small models at 32 px (the wiring test)")
    ap.add_argument("--models", nargs="+", help="only these families of the preset")
    ap.add_argument("--workdir", type=Path, help="tree and project copy (default: a temporary directory, removed)")
    ap.add_argument("--weights-dir", type=Path, default=Path.home() / ".cache" / "pipeline-rehearsal",
                    help="generated checkpoints, kept between runs")
    ap.add_argument("--out", type=Path, help="the json (default bench/rehearsal/<preset>.json; none with --tiny)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, for MFU")
    ap.add_argument("--render", action="store_true", help="write docs/rehearsal.md from bench/rehearsal/*.json")
    ap.add_argument("--collect", type=Path, metavar="WORKDIR",
                    help="count FLOPs and write the json of a run already made in WORKDIR (--workdir), to --out")
    args = ap.parse_args(argv)
    if args.collect:
        result = collect(args.collect, args.out)
        print(markdown_table(result))
    if args.preset:
        out = args.out or (None if args.tiny else BENCH / f"{args.preset}.json")
        keep = args.workdir is not None
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"rehearsal-{args.preset}-"))
        try:
            result = rehearse(args.preset, args.tiny, workdir, args.weights_dir, out, args.device, args.peak_tflops,
                              args.models)
        finally:
            if not keep:
                shutil.rmtree(workdir, ignore_errors=True)
        print(markdown_table(result))
        if out is not None:
            print(f"written {out}")
    if args.render or (args.preset and not args.tiny and args.out is None):
        DOCS_PAGE.write_text(render_docs())
        README.write_text(render_readme(README.read_text()))
        print(f"written {DOCS_PAGE} and the README's rehearsal table")
    if not (args.preset or args.render or args.collect):
        ap.error("give --preset, --collect or --render")


if __name__ == "__main__":
    main()
