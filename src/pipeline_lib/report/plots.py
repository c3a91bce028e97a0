"""The papers' ablation tables as DataFrames, and the figures drawn from them.

Every function takes the frame `report.collect` returns (one row per evaluated model) and works on whatever
runs it holds: a method the experiment did not run gives an empty table with the usual columns, or a figure
that says so, never an exception, so a report stage over a partial grid still completes. Figures are written
through `atomic_path`, so an interrupted stage never leaves a truncated PNG behind.

Grid axes are every column that is neither an identifier, a metric (" R" / " F") nor f1/f2; an axis that
varies among the rows a table selects, other than the ones the table is about, is kept as a column so that
rows stay distinguishable.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..runtime.atomic import atomic_path
from ..runtime.errors import DataError

METRICS = ("FID", "IS", "Cosine")
METRIC_COLUMNS = [f"{metric} {which}" for metric in METRICS for which in ("R", "F")]
METHOD_ORDER = ("original", "l2n", "max_loss", "noisy_label", "retain_label", "random_encoder", "ebu",
                "controllable", "retrain")
RETAIN_ORDER = ("real", "proxy", "limited")
_IDENTIFIERS = ("model", "method", "variant", "train s", "f1", "f2")


# --- shared helpers ----------------------------------------------------------------------------------------

def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    """A frame from an experiment with no runs may lack even the identifier columns."""
    missing = {c: pd.Series("", index=df.index, dtype=object) for c in ("model", "method", "variant")
               if c not in df.columns}
    return df.assign(**missing) if missing else df


def _column(df: pd.DataFrame, name: str, fill: Any = "") -> pd.Series:
    """An axis the experiment's grid does not have reads as empty for every row."""
    if name in df.columns:
        return df[name]
    return pd.Series(fill, index=df.index, dtype=object if isinstance(fill, str) else float)


def _axes(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in _IDENTIFIERS and not str(c).endswith((" R", " F"))]


def _real_retain(df: pd.DataFrame) -> pd.Series:
    """Rows trained on the real retain set; "" means the method has no retain axis, i.e. real data."""
    return _column(df, "retain").fillna("").astype(str).isin(["real", ""])


def _varying(rows: pd.DataFrame, axes: Sequence[str]) -> list[str]:
    return [a for a in axes if a in rows.columns and rows[a].astype(str).nunique() > 1]


def _value_key(value: Any) -> tuple:
    """Empty first, then numbers by value, then text: grid values mix floats, numeric strings and ""."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return (0, 0.0, "")
    try:
        return (1, float(value), "")
    except (TypeError, ValueError):
        return (2, 0.0, str(value))


def _method_rank(method: str) -> tuple:
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def _retain_rank(kind: str) -> tuple:
    return (RETAIN_ORDER.index(kind), "") if kind in RETAIN_ORDER else (len(RETAIN_ORDER), kind)


def _sort_rows(rows: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Sort by grid values that may mix types, which pandas' own sort refuses to compare."""
    order = sorted(range(len(rows)), key=lambda i: tuple(_value_key(rows[k].iloc[i]) for k in keys))
    return rows.iloc[order]


def _originals(df: pd.DataFrame, model: str) -> pd.DataFrame:
    return df[(df["method"] == "original") & (df["model"] == model)]


def _concat(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    parts = [p for p in parts if not p.empty]  # empty pieces would only blur the column dtypes
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True).reindex(columns=columns)


def _eps(value: Any, variant: str) -> float:
    try:
        eps = float(value)
    except (TypeError, ValueError):
        raise DataError(f"controllable run '{variant}' has psi 'epsilon' but no numeric eps ({value!r})") from None
    if math.isnan(eps):
        raise DataError(f"controllable run '{variant}' has psi 'epsilon' but no numeric eps")
    return eps


def _setting(psi: Any, eps: Any, variant: str) -> tuple[tuple, str]:
    """Sort rank and paper-3 label of one controllable run: Highest, ε-25%, ..., Lowest."""
    if psi == "highest":
        return (1, 0.0), "Highest"
    if psi == "epsilon":
        value = _eps(eps, variant)
        return (2, value), f"ε-{100 * value:g}%"
    if psi == "lowest":
        return (3, 0.0), "Lowest"
    raise DataError(f"controllable run '{variant}' has psi {psi!r}: expected highest, lowest or epsilon")


# --- tables ------------------------------------------------------------------------------------------------

def alpha_table(df: pd.DataFrame) -> pd.DataFrame:
    """Paper 1 Table 3: how l2n's noise weight α trades retain quality against forgetting, per model.

    Only runs on the real retain set are compared, so α is the one thing that changes; each model's original
    row comes first (α shown as "original") as the point of reference.
    """
    df = _normalise(df)
    l2n = df[(df["method"] == "l2n") & _real_retain(df)]
    extra = _varying(l2n, [a for a in _axes(df) if a not in ("alpha", "retain")])
    columns = ["model", "alpha", *extra, *METRIC_COLUMNS]
    parts = []
    for model in sorted(l2n["model"].unique()):
        parts.append(_originals(df, model).assign(alpha="original"))
        parts.append(_sort_rows(l2n[l2n["model"] == model], ["alpha", *extra]))
    return _concat(parts, columns)


def epsilon_table(df: pd.DataFrame) -> pd.DataFrame:
    """Paper 3 Table 2: the controllable method from most (Highest) to least (Lowest) forgetting, per model.

    Rows go Original, Highest, one ε-constrained row per ε in ascending order, Lowest; f1 (forget objective)
    and f2 (retain objective) show where each run landed, NaN for the original. Real-retain runs only.
    """
    df = _normalise(df)
    ctrl = df[(df["method"] == "controllable") & _real_retain(df)]
    extra = _varying(ctrl, [a for a in _axes(df) if a not in ("psi", "eps", "retain")])
    columns = ["model", "setting", *extra, *METRIC_COLUMNS, "f1", "f2"]
    parts = []
    for model in sorted(ctrl["model"].unique()):
        runs = ctrl[ctrl["model"] == model]
        settings = [_setting(p, e, v) for p, e, v in
                    zip(_column(runs, "psi"), _column(runs, "eps"), runs["variant"])]
        runs = runs.assign(setting=[label for _, label in settings])
        order = sorted(range(len(runs)), key=lambda i: (settings[i][0],
                                                        *(_value_key(runs[a].iloc[i]) for a in extra)))
        parts.append(_originals(df, model).assign(setting="Original"))
        parts.append(runs.iloc[order])
    return _concat(parts, columns)


def retain_table(df: pd.DataFrame) -> pd.DataFrame:
    """Methods run on several kinds of retain data (real / proxy / limited), the kinds in adjacent rows.

    Only settings (model, method, other grid values) that exist for at least two retain kinds are shown,
    since a single kind has nothing to be compared with; "" (no retain axis) counts as real data.
    """
    df = _normalise(df)
    axes = [a for a in _axes(df) if a != "retain"]
    runs = df[df["method"] != "original"].assign(retain=_column(df, "retain").fillna("").astype(str)
                                                 .replace("", "real"))
    several = runs
    if not runs.empty:
        setting = runs[["model", "method", *axes]].astype(str).agg("\x1f".join, axis=1)
        several = runs[runs.groupby(setting, sort=False)["retain"].transform("nunique") > 1]
    extra = _varying(several, axes)
    columns = ["model", "method", *extra, "retain", *METRIC_COLUMNS]
    order = sorted(range(len(several)), key=lambda i: (
        several["model"].iloc[i], _method_rank(several["method"].iloc[i]),
        *(_value_key(several[a].iloc[i]) for a in extra), _retain_rank(several["retain"].iloc[i])))
    return _concat([several.iloc[order]], columns)


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The rows no other row beats on both x and y (both minimised), sorted by x then y, index kept.

    A row is dominated when another is no worse on both and strictly better on one, so identical points are
    all kept, while a point level with another on x but worse on y is not. Rows with a NaN in x or y are
    ignored; to maximise a column, pass its negation.
    """
    values = points[[x, y]].apply(pd.to_numeric, errors="coerce")
    keep = values.notna().all(axis=1).to_numpy()
    pts, values = points[keep], values[keep]
    xs, ys = values[x].to_numpy(float), values[y].to_numpy(float)
    no_worse = (xs[:, None] <= xs[None, :]) & (ys[:, None] <= ys[None, :])
    better = (xs[:, None] < xs[None, :]) | (ys[:, None] < ys[None, :])
    dominated = (no_worse & better).any(axis=0)  # column j: some row i dominates row j
    front = pts[~dominated]
    return front.iloc[np.lexsort((ys[~dominated], xs[~dominated]))]


# --- figures -----------------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    return plt, sns


def _save(fig, out_png: str | os.PathLike) -> None:
    plt, _ = _pyplot()
    try:
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)


def _say(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _palette(sns, names: Sequence[str]) -> dict[str, Any]:
    return dict(zip(names, sns.color_palette(n_colors=max(len(names), 1))))


def plot_alpha(df: pd.DataFrame, out_png: str | os.PathLike) -> None:
    """FID, IS and cosine of retain (R, ●) and forget (F, ✕) sets against α, one line per model.

    Dashed (R) and dotted (F) horizontal lines mark each model's original, which is what α trades away from.
    """
    plt, sns = _pyplot()
    table = alpha_table(df)
    is_original = table["alpha"].astype(str) == "original"
    runs = table[~is_original].assign(alpha=lambda t: pd.to_numeric(t["alpha"], errors="coerce"))
    if runs.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        _say(ax, "no l2n runs in this experiment")
        _save(fig, out_png)
        return
    extra = [c for c in table.columns if c not in ("model", "alpha", *METRIC_COLUMNS)]
    runs = runs.assign(line=[m + "".join(f", {a}={v}" for a, v in zip(extra, vals)) for m, *vals in
                             runs[["model", *extra]].itertuples(index=False)])
    lines = list(dict.fromkeys(runs["line"]))
    colours = _palette(sns, lines)
    model_colour: dict[str, Any] = {}
    for line, model in zip(runs["line"], runs["model"]):
        model_colour.setdefault(model, colours[line])  # an original takes the colour of its model's first line
    long = runs.melt(id_vars=["line", "alpha"], value_vars=METRIC_COLUMNS, var_name="column")
    long = long.assign(metric=long["column"].str[:-2], set=long["column"].str[-1:],
                       value=pd.to_numeric(long["value"], errors="coerce"))
    alphas = runs["alpha"].dropna()
    log_x = len(alphas) > 0 and alphas.min() > 0 and alphas.max() / alphas.min() >= 20
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS) + 2, 3.6))
    from matplotlib.lines import Line2D

    for ax, metric in zip(axes, METRICS):
        last = ax is axes[-1]
        sns.lineplot(data=long[long["metric"] == metric], x="alpha", y="value", hue="line", hue_order=lines,
                     palette=colours, style="set", style_order=["R", "F"], markers=True, dashes=False, ax=ax,
                     legend="auto" if last else False)
        for _, row in table[is_original].iterrows():
            colour = model_colour.get(row["model"], "grey")
            for which, ls in (("R", "--"), ("F", ":")):
                value = pd.to_numeric(row[f"{metric} {which}"], errors="coerce")
                if pd.notna(value):
                    ax.axhline(value, color=colour, ls=ls, lw=1)
        if log_x:
            ax.set_xscale("log")
        ax.set(title=f"{metric} against α", xlabel="α", ylabel=metric)
        if last:
            handles, labels = ax.get_legend_handles_labels()
            handles += [Line2D([], [], color="grey", ls="--"), Line2D([], [], color="grey", ls=":")]
            labels += ["original R", "original F"]
            ax.legend(handles, labels, bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=7)
    fig.tight_layout()
    _save(fig, out_png)


def plot_pareto(df: pd.DataFrame, out_png: str | os.PathLike) -> None:
    """(a) the controllable runs' f1 against f2 with each model's Pareto front, both objectives minimised;
    (b) forget FID against retain FID for every run, with each model's front over all methods.

    In (b) good unlearning means a low retain FID and a high forget FID, so the front minimises FID R and
    −FID F; the axes still show the FIDs themselves.
    """
    plt, sns = _pyplot()
    df = _normalise(df)
    models = sorted(df["model"].unique())
    colours = _palette(sns, models)
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(13, 4.8))

    ctrl = df[df["method"] == "controllable"]
    pts = ctrl.assign(f1=pd.to_numeric(_column(ctrl, "f1", np.nan), errors="coerce"),
                      f2=pd.to_numeric(_column(ctrl, "f2", np.nan), errors="coerce")).dropna(subset=["f1", "f2"])
    if ctrl.empty:
        _say(ax_a, "no controllable runs in this experiment")
    elif pts.empty:
        _say(ax_a, "the controllable runs have no f1 / f2 values")
    else:
        sns.scatterplot(data=pts, x="f1", y="f2", hue="model", hue_order=[m for m in models if m in set(pts["model"])],
                        palette=colours, ax=ax_a)
        for model, group in pts.groupby("model", sort=True):
            front = pareto_front(group, "f1", "f2")
            ax_a.plot(front["f1"], front["f2"], color=colours[model], lw=1)
        for p, e, v, fx, fy in zip(_column(pts, "psi"), _column(pts, "eps"), pts["variant"], pts["f1"], pts["f2"]):
            ax_a.annotate(_setting(p, e, v)[1], (fx, fy), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax_a.set(title="(a) controllable: forget objective f1 vs retain objective f2",
                 xlabel="f1 (forget objective, lower is better)", ylabel="f2 (retain objective, lower is better)")

    fid = df.assign(**{c: pd.to_numeric(_column(df, c, np.nan), errors="coerce") for c in ("FID R", "FID F")})
    fid = fid.dropna(subset=["FID R", "FID F"])
    if fid.empty:
        _say(ax_b, "no runs with FID values in this experiment")
    else:
        methods = sorted(fid["method"].unique(), key=_method_rank)
        sns.scatterplot(data=fid, x="FID R", y="FID F", hue="model",
                        hue_order=[m for m in models if m in set(fid["model"])], palette=colours, style="method",
                        style_order=methods, s=50, ax=ax_b)
        for model, group in fid.groupby("model", sort=True):
            front = pareto_front(group.assign(neg_fid_f=-group["FID F"]), "FID R", "neg_fid_f")
            ax_b.plot(front["FID R"], front["FID F"], color=colours[model], lw=1, ls="--")
        ax_b.set(title="(b) all methods: forgetting vs retained quality",
                 xlabel="retain FID (lower is better)", ylabel="forget FID (higher is more forgetting)")
        ax_b.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=7)
    fig.tight_layout()
    _save(fig, out_png)
