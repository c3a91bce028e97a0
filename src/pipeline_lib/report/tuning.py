"""Choosing each family's setting on the tuning sets only, by one stated rule, so that the held-out sets judge
a choice they had no part in.

A setting chosen by eye on one class pair need not forget on another. With forget sets that carry a role
(`splits.sets.<name>.role`), the report applies this rule to the runs on the `tuning` sets (seeds averaged per
set) and writes `table_tuning_<task>`; the held-out table then says whether the choice holds.

A setting *passes* on a set when, against the original model on that set,
- forget FID rises (ratio > 1),
- the extractor's accuracy on the forget reconstructions falls clearly: by at least `acc_drop` (relative),
- retain FID stays within `retain_tolerance` (relative).
Per family and method, the chosen setting passes on the most tuning sets; ties go to the setting that keeps
the retain FID within tolerance on more sets, then to the higher mean forget-FID ratio. The middle key matters
when no setting passes: without it the tie went to the largest α, whose forget FID rises most because it breaks
the model (on the U-Net, α 2 multiplied the retain FID by 5). The rule reads only numbers the report already
has. The report applies the same rule to the held-out sets (`held_out_verdicts`, retrain included) to say
which family forgets on which of them.
"""

from __future__ import annotations

import pandas as pd

from .spread import with_ratios

ACC_DROP = 0.05
RETAIN_TOLERANCE = 0.10


def _passes(row: pd.Series, acc_drop: float, retain_tolerance: float) -> list[str]:
    """What a setting's (seed-averaged) scores on one set miss; empty when it passes."""
    missed = []
    if not row["FID F ratio"] > 1.0:
        missed.append("forget FID not up")
    if not row["Acc F"] <= (1.0 - acc_drop) * row["original Acc F"]:
        missed.append(f"forget accuracy down < {acc_drop:.0%}")
    if not row["FID R ratio"] <= 1.0 + retain_tolerance:
        missed.append(f"retain FID up > {retain_tolerance:.0%}")
    return missed


def tuning_table(df: pd.DataFrame, roles: dict[str, str], acc_drop: float = ACC_DROP,
                 retain_tolerance: float = RETAIN_TOLERANCE) -> pd.DataFrame:
    """One row per family, method and setting run on the tuning sets: each set's verdict, the count of sets
    passed and of sets whose retain FID stayed within tolerance, the mean ratios, and `chosen` on the setting
    the rule picks. `df`: `report.collect`'s frame."""
    table = verdict_table(df, roles, "tuning", acc_drop, retain_tolerance)
    if table.empty:
        return table
    table["chosen"] = ""
    for _, group in table[table["complete"]].groupby(["model", "method"], sort=False):
        best = group.sort_values(["passed", "retain kept", "mean FID F ratio"], ascending=False).index[0]
        table.loc[best, "chosen"] = "<- chosen"
    return table.drop(columns=["complete"])


def held_out_verdicts(df: pd.DataFrame, roles: dict[str, str], acc_drop: float = ACC_DROP,
                      retain_tolerance: float = RETAIN_TOLERANCE) -> pd.DataFrame:
    """The same rule on the held-out sets, retrain included: which family passes on which held-out set (the
    headline the choice is judged by), and whether a model that never saw the classes would pass it at all."""
    return verdict_table(df, roles, "held_out", acc_drop, retain_tolerance, references=True).drop(
        columns=["complete"], errors="ignore")


def verdict_table(df: pd.DataFrame, roles: dict[str, str], role: str, acc_drop: float, retain_tolerance: float,
                  references: bool = False) -> pd.DataFrame:
    """Per family, method and setting, the rule's verdict on each set of `role` (seeds averaged per set)."""
    names = [name for name, own in roles.items() if own == role]
    df = with_ratios(df[df["set"].isin(names)])
    originals = df[df["method"] == "original"].set_index(["set", "model"])["Acc F"]
    runs = df[~df["method"].isin(["original"] if references else ["original", "retrain"])]
    scores = ["FID F ratio", "FID R ratio", "Acc F"]
    per_set = runs.groupby(["model", "method", "setting", "set"], sort=False)[scores].mean().reset_index()
    per_set["original Acc F"] = [originals[(s, m)] for s, m in zip(per_set["set"], per_set["model"])]
    rows = []
    for (model, method, setting), own in per_set.groupby(["model", "method", "setting"], sort=False):
        row = {"model": model, "method": method, "variant": setting}
        for _, r in own.iterrows():
            missed = _passes(r, acc_drop, retain_tolerance)
            row[r["set"]] = "pass" if not missed else "; ".join(missed)
        row["passed"] = int(sum(row.get(s) == "pass" for s in names))
        row["retain kept"] = int((own["FID R ratio"] <= 1.0 + retain_tolerance).sum())
        row.update({f"mean {s}": float(own[s].mean()) for s in scores})
        row["complete"] = len(own) == len(names)
        rows.append(row)
    return pd.DataFrame(rows)
