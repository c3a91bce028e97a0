"""Ablation tables and figures (pipeline_lib.report.plots) on hand-built frames shaped like `report.collect`'s output."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline_lib.report import plots
from pipeline_lib.runtime.errors import DataError
from pipeline_lib.report.plots import METRIC_COLUMNS

AXES = ("alpha", "noise", "sigma", "gamma", "psi", "eps", "retain")
MODELS = {"mae": 0.0, "vqgan": 100.0, "diffusion": 200.0}  # offset that keeps each model's numbers apart


def _row(model: str, method: str, fid_r: float, fid_f: float, f1: float = math.nan, f2: float = math.nan,
         **axes) -> dict:
    """One row as collect() writes it: every axis present, "" where the run has none."""
    row = {"model": model, "method": method,
           "variant": "" if method == "original" else "_".join(f"{a}-{v}" for a, v in axes.items())}
    row.update({a: "" for a in AXES})
    row.update(axes)
    row.update({"FID R": fid_r, "FID F": fid_f, "IS R": fid_r / 10, "IS F": fid_f / 10,
                "Cosine R": 1 / fid_r, "Cosine F": 1 / fid_f, "Acc R": 0.9, "Acc F": 0.1,
                "KID R": 0.01, "KID F": 0.02, "train s": None if method == "original" else 12.0,
                "f1": f1, "f2": f2})
    return row


def _experiment() -> pd.DataFrame:
    """Three models; l2n over α (plus a proxy-retain run), controllable over ψ/ε, max_loss over retain kinds."""
    rows = []
    for model, k in MODELS.items():
        rows.append(_row(model, "original", 10 + k, 11 + k))
        for alpha in (0.5, 0.1, 0.25):  # deliberately not in order
            rows.append(_row(model, "l2n", 12 + k + 10 * alpha, 40 + k + 100 * alpha,
                             f1=-alpha, f2=alpha, alpha=alpha, noise="identity", retain="real"))
        rows.append(_row(model, "l2n", 20 + k, 60 + k, f1=0.0, f2=0.0, alpha=0.25, noise="identity", retain="proxy"))
        eps_values = ("0.75", "0.25", "0.5") if model == "vqgan" else (0.75, 0.25, 0.5)  # strings must work too
        settings = [("lowest", ""), *(("epsilon", e) for e in eps_values), ("highest", "")]
        for i, (psi, eps) in enumerate(settings):
            rows.append(_row(model, "controllable", 30 + k + i, 50 + k + i, f1=1.0 + i, f2=5.0 - i,
                             gamma=1.0, psi=psi, eps=eps, retain="real"))
        rows.append(_row(model, "controllable", 99 + k, 99 + k, f1=9.0, f2=9.0, gamma=1.0, psi="highest",
                         retain="proxy"))
        for j, kind in enumerate(("limited", "real", "proxy")):
            rows.append(_row(model, "max_loss", 15 + k + j, 45 + k + j, f1=0.5, f2=0.5, retain=kind))
        rows.append(_row(model, "noisy_label", 14 + k, 30 + k, f1=0.5, f2=0.5, sigma="1.0"))
        rows.append(_row(model, "retrain", 13 + k, 35 + k, f1=0.5, f2=0.5))
    return pd.DataFrame(rows)


def _assert_png(path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.verify()
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], f"temporary files left behind: {leftovers}"


# --- alpha_table -------------------------------------------------------------------------------------------

def test_alpha_table_orders_models_then_alpha_with_the_original_first():
    table = plots.alpha_table(_experiment())
    assert list(table.columns) == ["model", "alpha", *METRIC_COLUMNS]  # noise is constant, retain filtered
    expected = [(m, a) for m in sorted(MODELS) for a in ("original", 0.1, 0.25, 0.5)]
    assert list(zip(table["model"], table["alpha"])) == expected


def test_alpha_table_values_come_from_the_real_retain_runs():
    table = plots.alpha_table(_experiment()).set_index(["model", "alpha"])
    k = MODELS["vqgan"]
    assert table.loc[("vqgan", 0.25), "FID R"] == pytest.approx(12 + k + 2.5)  # the proxy run has FID R 120
    assert table.loc[("vqgan", 0.25), "FID F"] == pytest.approx(40 + k + 25)
    assert table.loc[("vqgan", "original"), "FID F"] == pytest.approx(11 + k)
    assert table.loc[("mae", 0.1), "Cosine R"] == pytest.approx(1 / 13)


def test_alpha_table_keeps_a_noise_column_when_l2n_ran_several_noise_targets():
    df = pd.concat([_experiment(), pd.DataFrame([_row("mae", "l2n", 1.0, 2.0, alpha=0.25, noise="batch_stats",
                                                      retain="real")])], ignore_index=True)
    table = plots.alpha_table(df)
    assert list(table.columns) == ["model", "alpha", "noise", *METRIC_COLUMNS]
    mae = table[table["model"] == "mae"]
    assert list(zip(mae["alpha"], mae["noise"])) == [("original", ""), (0.1, "identity"), (0.25, "batch_stats"),
                                                     (0.25, "identity"), (0.5, "identity")]


def test_alpha_table_is_empty_without_l2n_runs():
    df = _experiment()
    table = plots.alpha_table(df[df["method"] != "l2n"])
    assert table.empty and list(table.columns) == ["model", "alpha", *METRIC_COLUMNS]
    assert plots.alpha_table(pd.DataFrame()).empty


def test_alpha_table_without_a_retain_axis_takes_every_l2n_run():
    df = _experiment()
    df = df[(df["retain"] != "proxy")].drop(columns=["retain"])
    assert len(plots.alpha_table(df)) == 3 * 4


# --- epsilon_table -----------------------------------------------------------------------------------------

SETTINGS = ["Original", "Highest", "ε-25%", "ε-50%", "ε-75%", "Lowest"]


def test_epsilon_table_rows_go_original_highest_epsilons_lowest_per_model():
    table = plots.epsilon_table(_experiment())
    assert list(table.columns) == ["model", "setting", *METRIC_COLUMNS, "f1", "f2"]
    assert list(zip(table["model"], table["setting"])) == [(m, s) for m in sorted(MODELS) for s in SETTINGS]


def test_epsilon_table_values_and_objectives():
    table = plots.epsilon_table(_experiment()).set_index(["model", "setting"])
    k = MODELS["vqgan"]  # vqgan's eps are strings
    # settings were written lowest, 0.75, 0.25, 0.5, highest: i = 0..4
    for setting, i in [("Lowest", 0), ("ε-75%", 1), ("ε-25%", 2), ("ε-50%", 3), ("Highest", 4)]:
        assert table.loc[("vqgan", setting), "FID R"] == pytest.approx(30 + k + i)
        assert table.loc[("vqgan", setting), "FID F"] == pytest.approx(50 + k + i)
        assert table.loc[("vqgan", setting), "f1"] == pytest.approx(1.0 + i)
        assert table.loc[("vqgan", setting), "f2"] == pytest.approx(5.0 - i)
    original = table.loc[("vqgan", "Original")]
    assert original["FID R"] == pytest.approx(10 + k) and np.isnan(original["f1"]) and np.isnan(original["f2"])


def test_epsilon_table_labels_any_eps_and_only_those_present():
    df = pd.DataFrame([_row("mae", "original", 1, 1),
                       _row("mae", "controllable", 2, 2, psi="epsilon", eps=0.125, retain="real"),
                       _row("mae", "controllable", 2, 2, psi="epsilon", eps=0.1, retain="real")])
    assert list(plots.epsilon_table(df)["setting"]) == ["Original", "ε-10%", "ε-12.5%"]


def test_epsilon_table_works_without_f1_f2_columns_and_rejects_unknown_psi():
    df = _experiment().drop(columns=["f1", "f2"])
    assert plots.epsilon_table(df)[["f1", "f2"]].isna().all().all()
    bad = pd.DataFrame([_row("mae", "controllable", 2, 2, psi="middle", retain="real")])
    with pytest.raises(DataError, match="middle"):
        plots.epsilon_table(bad)
    bad = pd.DataFrame([_row("mae", "controllable", 2, 2, psi="epsilon", eps="", retain="real")])
    with pytest.raises(DataError, match="eps"):
        plots.epsilon_table(bad)


def test_epsilon_table_is_empty_without_controllable_runs():
    df = _experiment()
    table = plots.epsilon_table(df[df["method"] != "controllable"])
    assert table.empty and list(table.columns) == ["model", "setting", *METRIC_COLUMNS, "f1", "f2"]


# --- pareto_front ------------------------------------------------------------------------------------------

def test_pareto_front_on_a_known_set():
    points = pd.DataFrame({"x": [1, 2, 3, 2, 4, 3, 1, np.nan, 0],
                           "y": [5, 3, 3, 3, 1, 4, 6, 0, np.nan]},
                          index=list("ABCDEFGHI"))
    front = plots.pareto_front(points, "x", "y")
    # C is level with B on y but worse on x; F is dominated; G is level with A on x but worse on y;
    # B and D tie exactly and are both kept; H and I have a NaN and are ignored
    assert list(front.index) == ["A", "B", "D", "E"]
    assert list(front.columns) == ["x", "y"]


def test_pareto_front_matches_the_definition_on_random_points():
    rng = random.Random(0)
    points = pd.DataFrame({"x": [rng.randint(0, 6) for _ in range(60)], "y": [rng.randint(0, 6) for _ in range(60)]})
    front = set(plots.pareto_front(points, "x", "y").index)
    for j, b in points.iterrows():
        dominated = any((a.x <= b.x and a.y <= b.y) and (a.x < b.x or a.y < b.y) for _, a in points.iterrows())
        assert (j in front) == (not dominated)


def test_pareto_front_of_nothing_is_empty():
    assert plots.pareto_front(pd.DataFrame({"x": [np.nan], "y": [1.0]}), "x", "y").empty
    assert plots.pareto_front(pd.DataFrame({"x": [], "y": []}), "x", "y").empty


# --- retain_table ------------------------------------------------------------------------------------------

def test_retain_table_puts_the_retain_kinds_of_one_setting_side_by_side():
    table = plots.retain_table(_experiment())
    # axes that differ between the rows shown are kept; sigma and eps are "" for all of them
    assert list(table.columns) == ["model", "method", "alpha", "noise", "gamma", "psi", "retain", *METRIC_COLUMNS]
    expected = []
    for model in sorted(MODELS):
        expected += [(model, "l2n", 0.25, "real"), (model, "l2n", 0.25, "proxy"),  # methods in METHOD_ORDER
                     (model, "max_loss", "", "real"), (model, "max_loss", "", "proxy"),
                     (model, "max_loss", "", "limited"),
                     (model, "controllable", "", "real"), (model, "controllable", "", "proxy")]
    assert list(zip(table["model"], table["method"], table["alpha"], table["retain"])) == expected
    mae = table.set_index(["model", "method", "retain"])
    assert mae.loc[("mae", "l2n", "proxy"), "FID R"] == pytest.approx(20)
    assert mae.loc[("mae", "max_loss", "limited"), "FID F"] == pytest.approx(45)


def test_retain_table_is_empty_when_every_method_used_one_kind():
    df = _experiment()
    table = plots.retain_table(df[df["retain"].isin(["real", ""])])
    assert table.empty and "retain" in table.columns
    assert plots.retain_table(pd.DataFrame()).empty


# --- figures -----------------------------------------------------------------------------------------------

def test_figures_are_written_as_png(tmp_path):
    df = _experiment()
    plots.plot_alpha(df, tmp_path / "alpha" / "alpha.png")
    plots.plot_pareto(df, tmp_path / "pareto" / "pareto.png")
    _assert_png(tmp_path / "alpha" / "alpha.png")
    _assert_png(tmp_path / "pareto" / "pareto.png")


def test_figures_say_which_method_is_missing(tmp_path, monkeypatch):
    texts: list[str] = []
    save = plots._save

    def recording_save(fig, out_png):
        texts.extend(t.get_text() for ax in fig.axes for t in ax.texts)
        save(fig, out_png)

    monkeypatch.setattr(plots, "_save", recording_save)
    originals_only = _experiment().query("method == 'original'")
    plots.plot_alpha(originals_only, tmp_path / "alpha.png")
    plots.plot_pareto(originals_only, tmp_path / "pareto.png")
    assert "no l2n runs in this experiment" in texts
    assert "no controllable runs in this experiment" in texts
    _assert_png(tmp_path / "alpha.png")
    _assert_png(tmp_path / "pareto.png")


@pytest.mark.parametrize("df", [pd.DataFrame(), _experiment().drop(columns=["f1", "f2"])], ids=["empty", "no-f1-f2"])
def test_figures_survive_missing_data(tmp_path, df):
    plots.plot_alpha(df, tmp_path / "alpha.png")
    plots.plot_pareto(df, tmp_path / "pareto.png")
    _assert_png(tmp_path / "alpha.png")
    _assert_png(tmp_path / "pareto.png")


def test_an_alpha_figure_with_several_noise_targets(tmp_path):
    extra = [_row(m, "l2n", 5.0 + a, 50.0, alpha=a, noise="batch_stats", retain="real")
             for m, a in itertools.product(MODELS, (0.1, 0.5))]
    plots.plot_alpha(pd.concat([_experiment(), pd.DataFrame(extra)], ignore_index=True), tmp_path / "a.png")
    _assert_png(tmp_path / "a.png")
