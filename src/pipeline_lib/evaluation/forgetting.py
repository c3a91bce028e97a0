"""Did a run forget? A flag per run, so a setting that does not unlearn on some forget set is said in the
tables and the report instead of being left to the reader.

A run fails when its forget-set FID is not above its original model's (same forget set, same task) or the
extractor's accuracy on its forget reconstructions is not below the original's. A missing score fails too.
"""

from __future__ import annotations

import pandas as pd

#: the flag's column in the report's tables
COLUMN = "forgets"
#: (metric column, the direction forgetting must move it, words for the failure)
CHECKS = (("FID F", +1, "forget FID not above the original's"),
          ("Acc F", -1, "forget accuracy not below the original's"))


def _failed(run: pd.Series, original: pd.Series) -> list[str]:
    failed = []
    for column, sign, words in CHECKS:
        moved = sign * (run[column] - original[column])
        if not moved > 0:  # NaN (a missing score) fails as well
            failed.append(words)
    return failed


def flags(df: pd.DataFrame) -> pd.Series:
    """"yes" or "NO: <why>" per row of `report.collect`'s frame; "" for the original models themselves."""
    originals = {(r["set"], r["model"]): r for _, r in df[df["method"] == "original"].iterrows()}
    out = []
    for _, row in df.iterrows():
        if row["method"] == "original":
            out.append("")
            continue
        failed = _failed(row, originals[(row["set"], row["model"])])
        out.append("NO: " + "; ".join(failed) if failed else "yes")
    return pd.Series(out, index=df.index, name=COLUMN)


def failures(df: pd.DataFrame) -> pd.DataFrame:
    """The flagged runs (of a frame that has the COLUMN), each beside its original's forget scores."""
    originals = df[df["method"] == "original"].set_index(["set", "model"])[["FID F", "Acc F"]]
    bad = df[df[COLUMN].str.startswith("NO")]
    merged = bad.join(originals.add_prefix("original "), on=["set", "model"])
    return merged[["set", "model", "method", "variant", "FID F", "original FID F", "Acc F", "original Acc F",
                   COLUMN]].reset_index(drop=True)
