"""The report: paper 1 Table 1 in miniature (FID / IS / cosine for retain (R) and forget (F)), the ablation
tables and figures of `plots`, and image grids.

Only the runs params.yaml asks for are read, so results of a grid point that was removed never leak into
the table; a missing metrics file is an error, not a shorter table.

With several forget sets (`splits.sets`), `table_<task>` lists every set's runs (a `set` column; the seed is in
the variant), each set's ablation tables and figures go to `sets/<name>/`, and `table_spread_<task>` /
`table_heldout_<task>` give each setting's mean and spread over seeds and sets. Every run carries the
`forgets` flag (`forgetting`); flagged runs are also listed in `failures_<task>`. `table_border_<task>` gives, per
set, the classifier's accuracy with the filled region blanked (`border`): how low forget accuracy can go by
erasing alone.

On natural images the scores are paper 1's standard ones where the metrics files hold them (`headline_scores`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from . import border, spread, tuning
from ..evaluation import forgetting
from ..params import paths
from ..runtime.atomic import atomic_path, write_text
from ..params.grid import GRID_AXES, parse_variant
from ..params.sets import set_names, set_spec
from .summary import read_run_metrics

LOG = logging.getLogger(__name__)

COLUMNS = [("fid", "FID"), ("is", "IS"), ("cosine", "Cosine"), ("accuracy", "Acc"), ("kid", "KID")]


def collect(params: dict[str, Any], task: str) -> pd.DataFrame:
    """One row per evaluated model and forget set (`set`: its name, "" for the unnamed set)."""
    ds, rows = params["dataset"], []
    natural = params["data"].get("kind") == "image_folder"
    for name in set_names(params):
        for model, method, variant in paths.evaluated_models(params):
            rows.append(_row(paths.set_root(ds, name), name, model, method, variant, task, natural))
    return pd.DataFrame(rows)


def headline_scores(scores: dict[str, Any], natural: bool) -> dict[str, Any]:
    """A set's numbers the tables, figures and forgetting checks lead with. On natural images (a class-folder
    tree) they are paper 1's: Inception-v3 FID and KID, IS from ResNet-50-Places365 where it is configured
    (Places) else from Inception-v3, and the CLIP cosine, each where the metrics file holds it (its weights
    were there; the file's `extractors` block says which were). Otherwise, and always on Fashion-MNIST, the
    pipeline's extractor leads; the standard numbers stay in the metrics files and the summary."""
    if not natural:
        return scores
    inception = scores.get("inception") or {}
    standard = {"fid": inception.get("fid"), "kid": inception.get("kid"),
                "is": scores.get("places_is", inception.get("is")), "cosine": scores.get("clip_cosine")}
    return {**scores, **{k: v for k, v in standard.items() if v is not None}}


def _row(root: str, name: str | None, model: str, method: str, variant: str, task: str,
         natural: bool) -> dict[str, Any]:
    m = read_run_metrics(root, model, method, variant, task)
    m = {**m, **{which: headline_scores(m[which], natural) for which in paths.SETS}}
    row = {"set": name or "", "model": model, "method": method,
           "variant": "" if method == "original" else variant}
    row.update({axis: "" for axis in GRID_AXES})
    if method != "original":
        row.update(parse_variant(variant))
    for key, label in COLUMNS:
        row[f"{label} R"] = m["retain"].get(key, float("nan"))
        row[f"{label} F"] = m["forget"].get(key, float("nan"))
    row["train s"] = m.get("training", {}).get("wall_time_s")
    objectives = m.get("objectives", {})
    row["f1"], row["f2"] = objectives.get("forget", float("nan")), objectives.get("retain", float("nan"))
    return row


def noise_ablation(df: pd.DataFrame) -> pd.DataFrame:
    """l2n by noise target (Σ kind or noise type), each beside its model's original row."""
    l2n = df[df["method"] == "l2n"]
    original = df[df["method"] == "original"].assign(noise="(original)")
    keep = ["model", "alpha", "noise"] + [c for c in df.columns if c.endswith((" R", " F"))]
    out = pd.concat([original, l2n])[keep].sort_values(["model", "alpha"], key=lambda c: c.astype(str), kind="stable")
    return out.reset_index(drop=True)


def methods_table(df: pd.DataFrame) -> pd.DataFrame:
    """Paper 1 Table 1's layout: one row per method (and grid point), the model families side by side."""
    keep = [f"{m} {w}" for m in ("FID", "IS", "Cosine") for w in ("R", "F")]
    models = list(dict.fromkeys(df["model"]))
    rows = list(dict.fromkeys(zip(df["method"], df["variant"])))
    wide = df.set_index(["method", "variant", "model"])[keep].unstack("model")
    wide = wide.reindex(index=pd.MultiIndex.from_tuples(rows, names=["method", "variant"]),
                        columns=[(c, m) for m in models for c in keep])
    wide.columns = [f"{m} {c}" for c, m in wide.columns]
    return wide.reset_index()


def to_markdown(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".3f") + "\n"


def image_grid(params: dict[str, Any], task: str, out: Path, per_set: int, root: str | None = None) -> None:
    """Ground truth, masked input, original and every unlearned model; forget rows above retain rows (of the
    forget set whose results lie under `root`, by default the dataset's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from safetensors.torch import load_file

    ds = root or params["dataset"]
    models = paths.evaluated_models(params)
    # one line per part (family, method, grid point split at "_"), so neighbouring titles never overlap
    columns = ["ground truth", "input"] + ["\n".join([m, meth, *([] if v == "base" else v.split("_"))])
                                            for m, meth, v in models]
    fig, axes = plt.subplots(2 * per_set, len(columns), figsize=(1.1 * len(columns), 1.1 * 2 * per_set + 0.6),
                             squeeze=False)
    for s, which in enumerate(paths.SETS):
        recons = [load_file(str(Path(paths.recon_dir(ds, *m, task)) / f"{which}.safetensors")) for m in models]
        first = recons[0]
        picks = torch.linspace(0, len(first["gt"]) - 1, per_set).round().long()
        for r, i in enumerate(picks):
            masked = first["gt"][i].clone()
            masked[first["mask"][i].bool().expand_as(masked)] = 128
            cells = [first["gt"][i], masked] + [rc["recon"][i] for rc in recons]
            for c, img in enumerate(cells):
                ax = axes[s * per_set + r, c]
                if img.shape[0] == 3:
                    ax.imshow(img.permute(1, 2, 0).numpy())
                else:
                    ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=255)
                ax.set_xticks([]), ax.set_yticks([])
                if s * per_set + r == 0:
                    ax.set_title(columns[c], fontsize=6)
                if c == 0 and r == 0:
                    ax.set_ylabel(which, fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


#: points per group in a t-SNE map (ground truth / original / unlearned x forget / retain)
TSNE_POINTS = 100


def tsne_maps(params: dict[str, Any], task: str, extractor_path: str | Path, reference_dir: str | Path,
              out_dir: Path, root: str | None = None) -> list[Path]:
    """Paper 1 Fig. 4 per model family: embeddings of the ground truth and of the original and first
    unlearned model's reconstructions, forget vs retain, in one t-SNE map each."""
    from safetensors.torch import load_file

    from ..evaluation import scores as evaluate
    from ..evaluation.tsne import embed_tsne, plot_tsne

    ds, written = root or params["dataset"], []
    runs = [m for m in paths.evaluated_models(params) if m[1] not in ("original", "retrain")]
    for model in params["models"]:
        unlearned = next((m for m in runs if m[0] == model), None)
        shown = [("original", (model, *paths.ORIGINAL))] + ([("unlearned", unlearned)] if unlearned else [])
        groups = {}
        for which in paths.SETS:
            ref = evaluate.load_features(Path(reference_dir) / f"{which}.safetensors")["feat"]
            pick = torch.linspace(0, len(ref) - 1, min(TSNE_POINTS, len(ref))).round().long()
            groups[f"ground truth {which}"] = ref[pick]
            for label, key in shown:
                recon = load_file(str(Path(paths.recon_dir(ds, *key, task)) / f"{which}.safetensors"))["recon"]
                feats = evaluate.extract_features(evaluate.at_size(recon[pick], params["data"]["image_size"]),
                                                  extractor_path, params["metrics"]["batch_size"])
                groups[f"{label} {which}"] = feats["feat"]
        out = out_dir / f"tsne_{model}_{task}.png"
        title = f"{model}, {task}: " + (f"original vs {unlearned[1]} {unlearned[2]}" if unlearned else "original")
        plot_tsne(embed_tsne(groups, params["seed"], perplexity=min(30.0, len(pick) - 1)), out, title)
        written.append(out)
    return written


def _write_table(df: pd.DataFrame, tmp: Path, name: str) -> None:
    df.to_csv(tmp / f"{name}.csv", index=False, float_format="%.4f")
    write_text(tmp / f"{name}.md", to_markdown(df))
    # an HTML copy: `snakemake --report` embeds it in the self-contained report
    write_text(tmp / f"{name}.html", df.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="",
                                                border=0, classes="table"))


def _set_dir(tmp: Path, name: str | None) -> Path:
    """Where one forget set's tables and figures go: the report itself for the unnamed set, else sets/<name>."""
    out = tmp if name is None else tmp / "sets" / name
    out.mkdir(parents=True, exist_ok=True)
    return out


def _per_set(params: dict[str, Any], df: pd.DataFrame, task: str, out: Path, extractor_path: str | Path,
             reference_dir: str | Path, root: str, judged: dict | None = None) -> None:
    """One forget set's ablation tables and figures (the single set's are the report's own); `judged`: the
    verification verdicts, a column per family in the methods table."""
    from . import plots
    from . import verification as verify_report

    methods = methods_table(df)
    if judged is not None:
        methods = verify_report.add_verdicts(methods, judged, list(params["models"]))
    _write_table(methods, out, f"table_methods_{task}")
    _write_table(noise_ablation(df), out, f"table_noise_{task}")
    _write_table(plots.alpha_table(df), out, f"table_alpha_{task}")
    _write_table(plots.epsilon_table(df), out, f"table_epsilon_{task}")
    _write_table(plots.retain_table(df), out, f"table_retain_{task}")
    plots.plot_alpha(df, out / f"alpha_{task}.png")
    plots.plot_pareto(df, out / f"pareto_{task}.png")
    image_grid(params, task, out / f"grid_{task}.png", params["generate"]["grid_images"], root)
    tsne_maps(params, task, extractor_path, reference_dir, out, root)


def _spread(params: dict[str, Any], df: pd.DataFrame, task: str, tmp: Path) -> None:
    """Each setting's mean ± 95 % CI over seeds and sets, and the held-out headline when sets have roles."""
    roles = {name: set_spec(params, name).get("role") for name in set_names(params) if name is not None}
    table = spread.spread_table(df, roles)
    table.to_csv(tmp / f"table_spread_{task}.csv", index=False, float_format="%.4f")
    _write_text_tables(spread.readable(table), tmp, f"table_spread_{task}")
    if "tuning" in roles.values():  # each family's setting chosen on the tuning sets only (pipeline_lib.report.tuning)
        _write_table(tuning.tuning_table(df, roles), tmp, f"table_tuning_{task}")
    if "held_out" in roles.values():
        headline = spread.held_out(table)
        headline.to_csv(tmp / f"table_heldout_{task}.csv", index=False, float_format="%.4f")
        _write_text_tables(spread.readable(headline), tmp, f"table_heldout_{task}")
        _write_table(tuning.held_out_verdicts(df, roles), tmp, f"table_heldout_verdicts_{task}")


def _write_text_tables(df: pd.DataFrame, tmp: Path, name: str) -> None:
    write_text(tmp / f"{name}.md", to_markdown(df))
    write_text(tmp / f"{name}.html", df.to_html(index=False, na_rep="", border=0, classes="table"))


def write_report(params: dict[str, Any], out: str | Path, extractor_path: str | Path,
                 reference_dirs: dict[str, str | Path]) -> None:
    """Every table and figure; `reference_dirs` maps each set root (`paths.set_roots`) to its reference
    features (for the t-SNE maps)."""
    from . import verification as verify_report
    from ..params import verify as verify_settings

    out = Path(out)
    names = set_names(params)
    with atomic_path(out, directory=True) as tmp:
        judged, verify_task = {}, None
        if verify_settings.enabled(params):  # each set's verification tables and figures, and verdict column
            verify_task = verify_settings.task_name(params)
            metrics, per_set = collect(params, verify_task), {}
            for name in names:
                results = verify_report.collect(params, paths.set_root(params["dataset"], name))
                judged[name] = verify_report.write(params, _set_dir(tmp, name),
                                                   {verify_task: metrics[metrics["set"] == (name or "")]},
                                                   _write_table, results)
                per_set[name] = (results, judged[name])
            _write_text_tables(verify_report.spread_table(per_set), tmp, f"table_verify_spread_{verify_task}")
        for task in paths.eval_tasks(params):
            df = collect(params, task)
            df[forgetting.COLUMN] = forgetting.flags(df)
            hidden = [*GRID_AXES, "f1", "f2", "KID R", "KID F"] + (["set"] if names == [None] else [])
            df.drop(columns=["set"] if names == [None] else []).to_csv(tmp / f"table_{task}.csv", index=False,
                                                                       float_format="%.4f")
            shown = df.drop(columns=hidden)
            write_text(tmp / f"table_{task}.md", to_markdown(shown))
            write_text(tmp / f"table_{task}.html", shown.to_html(index=False, float_format=lambda v: f"{v:.3f}",
                                                                 na_rep="", border=0))
            failed = forgetting.failures(df)
            _write_table(failed, tmp, f"failures_{task}")
            for _, run in failed.iterrows():
                LOG.warning("%s: %s %s %s%s did not forget (%s)", task, run["model"], run["method"], run["variant"],
                            f" on set {run['set']}" if run["set"] else "", run[forgetting.COLUMN])
            _spread(params, df, task, tmp)
            if task in params["tasks"]:  # what the classifier reads from the border alone (pipeline_lib.report.border)
                _write_table(border.border_table(params, task, extractor_path), tmp, f"table_border_{task}")
            for name in names:
                root = paths.set_root(params["dataset"], name)
                own = df[df["set"] == (name or "")].drop(columns=["set", forgetting.COLUMN])
                _per_set(params, own, task, _set_dir(tmp, name), extractor_path, reference_dirs[root], root,
                         judged.get(name) if task == verify_task else None)
