"""The verification part of the report: a table per family (original, runs, retrain) with every check's
figure and the verdict, relearning-curve and probe figures, and the verdict column of the methods table.

Only the models params asks for are read; a missing check file is an error naming the stage to run.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from . import spread
from ..runtime.errors import DataError
from ..verify.relearn import effective_steps
from ..params.verify import settings, task_name, verified_models, verify_file
from ..verify.verdict import judge

Key = tuple[str, str, str]


def collect(params: dict[str, Any], root: str) -> dict[Key, dict[str, dict]]:
    """Every check's result on one forget set (`root`: its set root, the dataset for the unnamed set)."""
    out = {}
    for key in verified_models(params):
        out[key] = {}
        for check in params["verify"]["checks"]:
            path = Path(verify_file(root, *key, check))
            if not path.is_file():
                raise DataError(f"verification file {path} is missing: run the verify_{check} stage for it")
            out[key][check] = json.loads(path.read_text())
    return out


def _retain(df: pd.DataFrame | None, key: Key) -> dict[str, float] | None:
    if df is None:
        return None
    model, method, variant = key
    rows = df[(df["model"] == model) & (df["method"] == method)
              & (df["variant"] == ("" if method == "original" else variant))]
    return None if rows.empty else {"accuracy": float(rows["Acc R"].iloc[0]), "fid": float(rows["FID R"].iloc[0])}


def verdicts(params: dict[str, Any], results: dict[Key, dict], metrics: pd.DataFrame | None) -> dict[Key, dict]:
    """Verdict of every run; the original and retrain rows are the references ("reference")."""
    out = {}
    for key, checks in results.items():
        model, method, _ = key
        if method in ("original", "retrain"):
            out[key] = {"verdict": "reference", "why": [], "checks": {}}
            continue
        original = results[(model, "original", "base")]
        retrain = results.get((model, "retrain", "base"))
        out[key] = judge(checks, original, retrain, _retain(metrics, key), _retain(metrics, (model, "original", "base")),
                         settings(params, model, "verdict"))
    return out


def _steps(run: dict) -> str:
    return f">{run['max_steps']}" if run["capped"] else str(run["relearn_steps"])


def table(params: dict[str, Any], model: str, results: dict[Key, dict], judged: dict[Key, dict]) -> pd.DataFrame:
    rows = []
    retrain = results.get((model, "retrain", "base"), {}).get("relearn")
    for key, checks in results.items():
        if key[0] != model:
            continue
        row: dict[str, Any] = {"method": key[1], "variant": "" if key[2] == "base" else key[2]}
        if "probe" in checks:
            p = checks["probe"]
            row.update({"probe recall F": p["forget_recall"], "probe AUROC F": p["forget_auroc"],
                        "probe recall R": p["retain_recall"]})
        if "sweep" in checks:
            s = checks["sweep"]
            row.update({"worst Acc F": s["worst"]["accuracy"], "mean Acc F": s["mean"]["accuracy"],
                        "worst FID F": s["worst"]["fid"], "mean FID F": s["mean"]["fid"]})
        if "relearn" in checks:
            for i, run in enumerate(checks["relearn"]["runs"]):
                row[f"relearn K={run['K']}"] = _steps(run)
                if retrain is not None:
                    base = effective_steps(retrain["runs"][i])
                    row[f"K={run['K']} / retrain"] = effective_steps(run) / base if base else float("nan")
        if "membership" in checks:
            m = checks["membership"]
            row.update({"MIA AUC": m["auc"], "MIA TPR@1%FPR": m["tpr_at_1fpr"],
                        "MIA power": "yes" if m["powered"] else "no"})
        v = judged[key]
        row["verdict"] = v["verdict"]
        row["why"] = "; ".join(v["why"])
        rows.append(row)
    return pd.DataFrame(rows)


def plot_relearn(model: str, results: dict[Key, dict], out_png: Path) -> None:
    """Held-out forget score against fine-tuning steps, one panel per K, one line per model."""
    from .plots import _pyplot, _save, _say

    plt, _ = _pyplot()
    keys = [k for k in results if k[0] == model and "relearn" in results[k]]
    ks = [r["K"] for r in results[keys[0]]["relearn"]["runs"]] if keys else []
    fig, axes = plt.subplots(1, max(1, len(ks)), figsize=(4.5 * max(1, len(ks)), 3.4), squeeze=False)
    if not keys:
        _say(axes[0, 0], "no relearning check")
    # one colour and one legend entry per setting: its seeds share them (a legend per run outgrows the figure)
    setting = {key: (key[1], spread.setting_of(key[1], key[2])) for key in keys}
    settings = list(dict.fromkeys(setting.values()))
    runs = Counter(setting.values())
    colours = plt.get_cmap("tab20" if len(settings) > 10 else "tab10")
    for i, k in enumerate(ks):
        ax = axes[0, i]
        labelled = set()
        for key in keys:
            run = results[key]["relearn"]["runs"][i]
            steps, values = zip(*run["curve"])
            method, variant = setting[key]
            label = method if variant == "base" else f"{method} {variant}"
            label += f" ({runs[setting[key]]} runs)" if runs[setting[key]] > 1 else ""
            ax.plot(steps, values, marker="o", ms=3, color=colours(settings.index(setting[key]) % colours.N),
                    label=None if setting[key] in labelled else label)
            labelled.add(setting[key])
        run = results[keys[0]]["relearn"]["runs"][i]
        ax.axhline(run["target"], color="k", lw=0.8, ls="--")
        ax.set_title(f"{model}: relearning on K={k} forget images", fontsize=9)
        ax.set_xlabel("fine-tuning steps")
        ax.set_ylabel(f"held-out forget {results[keys[0]]['relearn']['metric']}")
    if keys:
        axes[0, -1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    _save(fig, out_png)


def plot_probe(model: str, results: dict[Key, dict], out_png: Path) -> None:
    """Linear-probe recall of the forget and retain classes per model."""
    from .plots import _pyplot, _save, _say

    plt, _ = _pyplot()
    keys = [k for k in results if k[0] == model and "probe" in results[k]]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(keys) + 2), 3.4))
    if not keys:
        _say(ax, "no probe check")
    else:
        labels = [k[1] if k[2] == "base" else f"{k[1]}\n{k[2].replace('_', chr(10))}" for k in keys]
        xs = range(len(keys))
        ax.bar([x - 0.2 for x in xs], [results[k]["probe"]["forget_recall"] for k in keys], 0.4, label="forget")
        ax.bar([x + 0.2 for x in xs], [results[k]["probe"]["retain_recall"] for k in keys], 0.4, label="retain")
        ax.set_xticks(list(xs), labels, fontsize=6)
        ax.set_ylim(0, 1)
        ax.set_ylabel("linear-probe recall")
        ax.set_title(f"{model}: linear probe on the frozen encoder", fontsize=9)
        ax.legend(fontsize=7)
    _save(fig, out_png)


def add_verdicts(methods: pd.DataFrame, judged: dict[Key, dict], models: list[str]) -> pd.DataFrame:
    """The methods table (one row per method and variant, families side by side) with a verdict per family."""
    out = methods.copy()
    for model in models:
        out[f"{model} verdict"] = [judged.get((model, m, v or "base"), {}).get("verdict", "")
                                   for m, v in zip(out["method"], out["variant"])]
    return out


def write(params: dict[str, Any], tmp: Path, metrics: dict[str, pd.DataFrame], write_table,
          results: dict[Key, dict[str, dict]]) -> dict[Key, dict]:
    """One forget set's tables and figures into its report directory `tmp`; returns the verdicts for its methods
    table. `metrics`: that set's rows of the metrics table, by task; `results`: its checks (`collect`)."""
    task = task_name(params)
    judged = verdicts(params, results, metrics.get(task))
    for model in params["models"]:
        write_table(table(params, model, results, judged), tmp, f"table_verify_{model}_{task}")
        if "relearn" in params["verify"]["checks"]:
            plot_relearn(model, results, tmp / f"relearn_{model}.png")
        if "probe" in params["verify"]["checks"]:
            plot_probe(model, results, tmp / f"probe_{model}.png")
    return judged


def _figures(checks: dict[str, dict]) -> dict[str, float]:
    """The figures of one model's checks that the spread table averages (higher = more of the class, except
    the relearn steps)."""
    out = {}
    if "probe" in checks:
        out["probe recall F"] = checks["probe"]["forget_recall"]
    if "sweep" in checks:
        out["worst Acc F"] = checks["sweep"]["worst"]["accuracy"]
    for run in checks.get("relearn", {}).get("runs", []):
        out[f"relearn steps K={run['K']}"] = float(effective_steps(run))
    if "membership" in checks:
        out["MIA AUC"] = checks["membership"]["auc"]
    return out


def _at_cap(checks: dict[str, dict]) -> set[str]:
    """The relearn figures of `_figures` that are the step cap standing in for a run that never got back."""
    return {f"relearn steps K={run['K']}" for run in checks.get("relearn", {}).get("runs", []) if run["capped"]}


def spread_table(per_set: dict[str | None, tuple[dict[Key, dict], dict[Key, dict]]]) -> pd.DataFrame:
    """Per family, method and setting (seeds and sets pooled): each check's figure as mean ± 95 % CI over the
    runs, its gap to the retrain model of the run's own set (run − retrain), and how the runs were judged.
    `per_set`: set name -> (results, verdicts) as `collect` and `verdicts` give them."""
    records = []
    for name, (results, judged) in per_set.items():
        for key, checks in results.items():
            model, method, variant = key
            own = _figures(checks)
            retrain = _figures(results.get((model, "retrain", "base"), {}))
            records.append({"model": model, "method": method, "setting": spread.setting_of(method, variant),
                            "verdict": judged[key]["verdict"], "at cap": _at_cap(checks), **own,
                            **{f"{f} - retrain": v - retrain[f] for f, v in own.items() if f in retrain}})
    df = pd.DataFrame(records)
    figures = [c for c in df.columns if c not in ("model", "method", "setting", "verdict", "at cap")]
    rows = []
    for (model, method, setting), runs in df.groupby(["model", "method", "setting"], sort=False):
        verdicts = runs["verdict"].value_counts()
        row = {"model": model, "method": method, "variant": "" if setting == "base" else setting, "runs": len(runs),
               "verdicts": ", ".join(f"{v} {n}/{len(runs)}" for v, n in verdicts.items())}
        for figure in figures:
            mean, half = spread.ci95(runs[figure])
            row[figure] = ("" if pd.isna(mean) else f"{mean:.3f}") + ("" if pd.isna(half) else f" ± {half:.3f}")
        for figure, at_cap in Counter(f for capped in runs["at cap"] for f in capped).items():
            row[figure] += f" ({at_cap}/{len(runs)} at the cap)"  # the cap stands in: the mean is a lower bound
        rows.append(row)
    return pd.DataFrame(rows)
