"""Mean and spread of each setting over seeds and forget sets, so a setting is judged on more than the one
class pair (and the one seed) it was tuned on.

Scores are read as ratios to the original model on the same forget set and task (FID F / original FID F,
...), which makes sets of different difficulty comparable. Per set, a setting's runs are averaged over the
seeds; over sets (all of them, and the sets of each `role`), the per-set means are averaged, the set being
the unit that must generalise. Spread is the half-width of a 95 % Student-t confidence interval (empty for a
single value).
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats

from ..params.grid import parse_variant, variant_name
from ..evaluation.forgetting import COLUMN as FLAG

#: the scores summarised: ratios to the original, then the extractor's accuracies
SCORES = ("FID F ratio", "FID R ratio", "Acc F", "Acc R")
CI = " ±95%"
ROLE_ORDER = ("tuning", "held_out")


def ci95(values: pd.Series) -> tuple[float, float]:
    """(mean, half-width of the 95 % t-interval); the half-width is NaN below two values."""
    values = values.dropna()
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = float(values.mean())
    if n < 2:
        return mean, math.nan
    return mean, float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))


def setting_of(method: str, variant: str) -> str:
    """A run's variant without its seed: what the seeds of one setting share."""
    if method == "original":
        return variant
    return variant_name({k: x for k, x in parse_variant(variant).items() if k != "seed"})


def with_ratios(df: pd.DataFrame) -> pd.DataFrame:
    """`df` plus FID F/R ratios to the original of the same set and model, and `setting` (the variant
    without its seed, which the seeds of one setting share)."""
    originals = df[df["method"] == "original"].set_index(["set", "model"])[["FID F", "FID R"]]
    joined = df.join(originals.add_prefix("original "), on=["set", "model"])
    setting = [setting_of(m, v) for m, v in zip(df["method"], df["variant"])]
    return df.assign(**{"FID F ratio": joined["FID F"] / joined["original FID F"],
                        "FID R ratio": joined["FID R"] / joined["original FID R"], "setting": setting})


def _row(key: tuple, sets: str, n: int, failed: str, values: dict[str, pd.Series]) -> dict:
    row = {"model": key[0], "method": key[1], "variant": key[2], "sets": sets, "n": n, "failed": failed}
    for score in SCORES:
        row[score], row[score + CI] = ci95(values[score])
    return row


def spread_table(df: pd.DataFrame, roles: dict[str, str]) -> pd.DataFrame:
    """Per setting: one row per forget set (over its seeds), then one per role (over that role's sets) and
    one over all sets when there are several. `failed` counts flagged runs (`forgetting.flags`)."""
    df = with_ratios(df)
    keys = list(dict.fromkeys(zip(df["model"], df["method"], df["setting"])))
    set_order = list(dict.fromkeys(df["set"]))
    rows = []
    for key in keys:
        runs = df[(df["model"] == key[0]) & (df["method"] == key[1]) & (df["setting"] == key[2])]
        per_set = {}
        for name in set_order:
            own = runs[runs["set"] == name]
            per_set[name] = own[list(SCORES)].mean()
            bad = int(own[FLAG].str.startswith("NO").sum()) if FLAG in own else 0
            rows.append(_row(key, name, len(own), f"{bad}/{len(own)}", {s: own[s] for s in SCORES}))
        groups = [(role, [n for n in set_order if roles.get(n) == role]) for role in ROLE_ORDER]
        for label, names in (groups + [("all", set_order)]) if len(set_order) > 1 else []:
            if not names:
                continue
            means = pd.DataFrame([per_set[n] for n in names])
            own = runs[runs["set"].isin(names)]
            bad = int(own[FLAG].str.startswith("NO").sum()) if FLAG in own else 0
            rows.append(_row(key, f"{label} ({len(names)} sets)", len(names), f"{bad}/{len(own)}",
                             {s: means[s] for s in SCORES}))
    columns = ["model", "method", "variant", "sets", "n", "failed", *(c for s in SCORES for c in (s, s + CI))]
    return pd.DataFrame(rows, columns=columns)


def held_out(spread: pd.DataFrame) -> pd.DataFrame:
    """The headline: each setting's mean and spread over the held-out sets, retrain beside the methods."""
    return spread[spread["sets"].str.startswith("held_out (")].reset_index(drop=True)


def readable(spread: pd.DataFrame) -> pd.DataFrame:
    """Each score as one "mean ± half-width" cell, for Markdown and HTML."""
    out = spread[["model", "method", "variant", "sets", "n", "failed"]].copy()
    for score in SCORES:
        out[score] = [("" if math.isnan(m) else f"{m:.3f}") + ("" if math.isnan(h) else f" ± {h:.3f}")
                      for m, h in zip(spread[score], spread[score + CI])]
    return out
