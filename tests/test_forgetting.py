"""The report over forget sets and seeds, on planted metrics files: the failure flag on a run whose forget
scores did not move, and each setting's mean ± 95 % CI per set, per role and over all sets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from helpers import base_params
from pipeline_lib.params import load, paths
from pipeline_lib.evaluation import forgetting
from pipeline_lib.report import tables as report, spread

ORIGINAL = {"forget": {"fid": 100.0, "accuracy": 0.9}, "retain": {"fid": 50.0, "accuracy": 0.8}}
#: (set, seed) -> forget FID, forget accuracy of the l2n run; ("a", 1) did not move at all
RUNS = {("a", 0): (200.0, 0.5), ("a", 1): (100.0, 0.9), ("b", 0): (150.0, 0.6), ("b", 1): (180.0, 0.4)}


def planted(root: Path) -> dict:
    params = base_params()
    params["models"], params["methods"], params["seeds"] = ["mae"], {"l2n": {"alpha": [0.25]}}, [0, 1]
    params["splits"] = {"unlearn_per_class": 10, "eval_per_class": 10, "sets": {
        "a": {"forget": ["Trouser", "Bag"], "retain": ["Coat"], "role": "tuning"},
        "b": {"forget": ["Sandal", "Shirt"], "retain": ["Coat"], "role": "held_out"}}}
    params = load.validate_params(params)
    for name in ("a", "b"):
        set_root = paths.set_root(params["dataset"], name)
        files = {("original", "base"): ORIGINAL}
        for seed in (0, 1):
            fid, acc = RUNS[(name, seed)]
            files[("l2n", f"alpha-0.25_seed-{seed}")] = {"forget": {"fid": fid, "accuracy": acc},
                                                         "retain": {"fid": 55.0, "accuracy": 0.8}}
        for (method, variant), scores in files.items():
            path = root / paths.metrics_file(set_root, "mae", method, variant, "center")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(scores))
    return params


@pytest.fixture
def frame(tmp_path, monkeypatch):
    params = planted(tmp_path)
    monkeypatch.chdir(tmp_path)
    df = report.collect(params, "center")
    df[forgetting.COLUMN] = forgetting.flags(df)
    return params, df


def test_a_run_whose_forget_scores_did_not_move_is_flagged(frame):
    _, df = frame
    flags = dict(zip(zip(df["set"], df["variant"]), df[forgetting.COLUMN]))
    assert flags[("a", "alpha-0.25_seed-1")].startswith("NO: forget FID not above the original's; forget accuracy")
    assert flags[("a", "alpha-0.25_seed-0")] == flags[("b", "alpha-0.25_seed-1")] == "yes"
    assert flags[("a", "")] == ""  # the original itself
    failed = forgetting.failures(df)
    assert len(failed) == 1 and failed.loc[0, "set"] == "a" and failed.loc[0, "variant"] == "alpha-0.25_seed-1"
    assert failed.loc[0, "original FID F"] == 100.0


def test_spread_over_seeds_and_sets_with_a_95_percent_interval(frame):
    params, df = frame
    table = spread.spread_table(df, {"a": "tuning", "b": "held_out"})
    l2n = table[table["method"] == "l2n"].set_index("sets")
    assert list(l2n.index) == ["a", "b", "tuning (1 sets)", "held_out (1 sets)", "all (2 sets)"]
    assert set(table["variant"]) == {"", "alpha-0.25"}  # the seeds of one setting are pooled
    # set a: ratios 2.0 and 1.0 over two seeds -> 1.5 ± t(0.975, 1) * 0.707 / sqrt(2)
    assert l2n.loc["a", "FID F ratio"] == pytest.approx(1.5)
    assert l2n.loc["a", "FID F ratio ±95%"] == pytest.approx(12.7062 * math.sqrt(0.5) / math.sqrt(2), rel=1e-4)
    assert l2n.loc["a", "failed"] == "1/2" and l2n.loc["b", "failed"] == "0/2"
    # over sets: the mean of the per-set means (1.5, 1.65)
    assert l2n.loc["all (2 sets)", "FID F ratio"] == pytest.approx(1.575)
    assert l2n.loc["all (2 sets)", "failed"] == "1/4" and l2n.loc["all (2 sets)", "n"] == 2
    assert l2n.loc["held_out (1 sets)", "Acc F"] == pytest.approx(0.5)
    assert math.isnan(l2n.loc["held_out (1 sets)", "Acc F ±95%"])
    headline = spread.held_out(table)
    assert list(headline["method"]) == ["original", "l2n"]
    shown = spread.readable(headline)
    assert shown.loc[1, "FID F ratio"] == "1.650"  # one held-out set: no interval
    first = spread.readable(table[(table["method"] == "l2n") & (table["sets"] == "a")]).iloc[0]
    assert first["FID F ratio"] == "1.500 ± 6.353"


def test_the_dvc_summary_nests_each_sets_numbers_under_its_name(frame):
    from pipeline_lib.report.summary import summarise

    params, _ = frame
    out = summarise(params, "center")
    assert list(out) == ["a", "b"]
    assert out["a"]["mae"]["l2n"]["seed-1"]["F"]["fid"] == 100.0 and out["b"]["mae"]["l2n"]["seed-0"]["alpha"] == 0.25


def test_the_setting_is_chosen_on_the_tuning_sets_only(frame):
    """Two settings on tuning set a (seeds averaged): the one that forgets clearly at an unchanged retain FID is
    chosen, whatever it does on the held-out set b, which the rule never reads."""
    from pipeline_lib.report import tuning

    _, df = frame
    extra = df[(df["method"] == "l2n")].copy()  # a second setting: forget FID barely up, accuracy unchanged
    extra["variant"] = extra["variant"].str.replace("alpha-0.25", "alpha-0.1")
    extra["FID F"], extra["Acc F"] = 101.0, 0.9
    extra.loc[extra["set"] == "b", ["FID F", "Acc F"]] = [500.0, 0.0]  # a held-out triumph must not count
    table = tuning.tuning_table(pd.concat([df, extra], ignore_index=True), {"a": "tuning", "b": "held_out"})
    rows = table.set_index("variant")
    assert list(rows.columns[:5]) == ["model", "method", "a", "passed", "retain kept"]  # only the tuning set
    # alpha-0.25 on a: FID ratio (2.0 + 1.0) / 2 = 1.5, accuracy (0.5 + 0.9) / 2 = 0.7 <= 0.95 * 0.9, retain 1.1
    assert rows.loc["alpha-0.25", "a"] == "pass" and rows.loc["alpha-0.25", "chosen"] == "<- chosen"
    assert rows.loc["alpha-0.1", "a"] == "forget accuracy down < 5%" and rows.loc["alpha-0.1", "chosen"] == ""
    assert rows.loc["alpha-0.25", "mean FID F ratio"] == pytest.approx(1.5)


def test_when_no_setting_passes_the_one_that_keeps_the_retain_set_is_chosen(frame):
    """Neither setting passes on tuning set a; the one with the larger forget-FID ratio got it by wrecking the
    retain set (retain FID x5), so the rule takes the other: forgetting bought by breaking the model is no choice."""
    from pipeline_lib.report import tuning

    _, df = frame
    runs = df[df["method"] == "l2n"]
    kept, broken = runs.copy(), runs.copy()
    kept["variant"], broken["variant"] = "alpha-1.0", "alpha-2.0"
    kept["FID F"], kept["Acc F"] = 150.0, 0.9       # forget FID up, accuracy unchanged: fails on accuracy
    broken["FID F"], broken["Acc F"], broken["FID R"] = 600.0, 0.9, 250.0  # fails on accuracy and retain
    originals = df[df["method"] == "original"]
    table = tuning.tuning_table(pd.concat([originals, kept, broken], ignore_index=True), {"a": "tuning"})
    rows = table.set_index("variant")
    assert (rows["passed"] == 0).all()
    assert rows.loc["alpha-2.0", "mean FID F ratio"] > rows.loc["alpha-1.0", "mean FID F ratio"]
    assert rows.loc["alpha-1.0", "retain kept"] == 1 and rows.loc["alpha-2.0", "retain kept"] == 0
    assert rows.loc["alpha-1.0", "chosen"] == "<- chosen" and rows.loc["alpha-2.0", "chosen"] == ""


def test_the_held_out_sets_get_the_same_rule_with_retrain_beside(frame):
    """On held-out set b the l2n runs (seeds averaged: FID 165, accuracy 0.5, retain 55) pass; a planted retrain
    whose forget accuracy did not fall is named as failing; tuning set a is not read."""
    from pipeline_lib.report import tuning

    _, df = frame
    retrain = df[(df["method"] == "original")].copy()
    retrain["method"], retrain["variant"] = "retrain", "base"
    retrain["FID F"] = retrain["FID F"] * 1.2
    table = tuning.held_out_verdicts(pd.concat([df, retrain], ignore_index=True), {"a": "tuning", "b": "held_out"})
    rows = table.set_index("method")
    assert "a" not in table.columns and "chosen" not in table.columns
    assert rows.loc["l2n", "b"] == "pass" and rows.loc["l2n", "passed"] == 1
    assert rows.loc["retrain", "b"] == "forget accuracy down < 5%" and rows.loc["retrain", "passed"] == 0
