"""The verification checks against hand-made cases (tests/verify_toy.py): a planted hider must be judged
hidden by the probe and by relearning, a model retrained without the class forgotten; the membership attack
must separate members on an overfitted tiny model and be inconclusive on one that is not."""

from __future__ import annotations

import copy

import pytest
import torch

from helpers import TINY_ARCH, base_params, codec, fashion_subset, torch_threads
from pipeline_lib.runtime.errors import ParamsError
from pipeline_lib.params import verify as vs
from pipeline_lib.verify.membership import membership
from pipeline_lib.verify.probe import linear_probe
from pipeline_lib.verify.relearn import relearn
from pipeline_lib.verify.sweep import sweep
from pipeline_lib.verify.verdict import judge
from verify_toy import HOLE, bar_score, data, fit_closed_form, make_hider
import pipeline_lib.stages.data  # noqa: F401
import pipeline_lib.stages.models  # noqa: F401

BAND = {"band": 0.3, "min_gap": 0.02, "retain_tolerance": 0.1}


@pytest.fixture(scope="module")
def toy():
    with torch_threads(1):
        xr, yr, xf, yf = data(300, 0)
        xr_t, yr_t, xf_t, yf_t = data(100, 0, train=False)
        original = fit_closed_form(torch.cat([xr, xf]))
        models = {"original": original, "retrain": fit_closed_form(xr),
                  "retrained again": fit_closed_form(data(300, 1000)[0]), "hider": make_hider(original)}
    return {"models": models, "train": (torch.cat([xr, xf]), torch.cat([yr, yf])),
            "test": (torch.cat([xr_t, xf_t]), torch.cat([yr_t, yf_t])), "xf": xf, "xf_t": xf_t, "xr_t": xr_t}


def test_the_hider_hides_the_class_in_its_outputs(toy):
    """The hand-made case itself: the hider's outputs look like the retrain model's, the original's do not."""
    m, xf_t = toy["models"], toy["xf_t"]
    assert bar_score(m["original"], xf_t) > 0.9
    assert bar_score(m["hider"], xf_t) < 0.15 and bar_score(m["retrain"], xf_t) < 0.15


def _probe(net, toy):
    (x, y), (xt, yt) = toy["train"], toy["test"]
    return linear_probe(net, x, y, xt, yt, HOLE.expand(len(x), -1, -1, -1), HOLE.expand(len(xt), -1, -1, -1),
                        forget=[1], retain=[0, 2, 7, 9], C=1.0, max_dim=256, seed=0)


def test_probe_finds_the_hidden_class_and_not_the_retrained_one(toy):
    with torch_threads(1):
        res = {name: _probe(net, toy) for name, net in toy["models"].items()}
    assert res["hider"]["forget_recall"] > 0.95 and res["hider"]["forget_auroc"] > 0.95
    assert res["retrain"]["forget_recall"] < 0.3
    assert res["hider"]["retain_recall"] > 0.5  # retain classes stay separable: a probe that works
    checks = {name: {"probe": r} for name, r in res.items()}
    hider = judge(checks["hider"], checks["original"], checks["retrain"], None, None, BAND)
    assert hider["verdict"] == "hidden" and hider["why"] == ["probe"]
    again = judge(checks["retrained again"], checks["original"], checks["retrain"], None, None, BAND)
    assert again["verdict"] == "forgotten"


def _relearn(net, toy, target):
    def score(m):  # class-specific: the dark bar on forget images and not on retain images
        return max(0.0, bar_score(m, toy["xf_t"]) - bar_score(m, toy["xr_t"]))

    return relearn(net, toy["xf"][:20], score, target, train_mask={"kind": "center", "size": 16}, image_size=32,
                   optimizer={"name": "sgd", "lr": 0.05}, batch_size=10, max_steps=40, every=1, tolerance=0.1)


def test_relearning_brings_the_hider_back_faster_than_retrain(toy):
    m = toy["models"]
    target = max(0.0, bar_score(m["original"], toy["xf_t"]) - bar_score(m["original"], toy["xr_t"]))
    with torch_threads(1):
        runs = {name: _relearn(net, toy, target) for name, net in m.items()}
    assert runs["original"]["relearn_steps"] == 0 and runs["original"]["curve"] == [(0, pytest.approx(target))]
    assert not runs["hider"]["capped"] and not runs["retrain"]["capped"]
    assert runs["hider"]["relearn_steps"] < runs["retrain"]["relearn_steps"]
    checks = {name: {"relearn": {"runs": [r]}} for name, r in runs.items()}
    hider = judge(checks["hider"], checks["original"], checks["retrain"], None, None, BAND)
    assert hider["verdict"] == "hidden" and hider["why"] == ["relearn K=20"]
    again = judge(checks["retrained again"], checks["original"], checks["retrain"], None, None, BAND)
    assert again["verdict"] == "forgotten"
    # the copy is fine-tuned, never the model itself
    assert bar_score(m["hider"], toy["xf_t"]) < 0.15


def test_relearning_marks_a_run_that_never_gets_back_as_capped(toy):
    with torch_threads(1):
        run = relearn(toy["models"]["retrain"], toy["xf"][:20], lambda m: bar_score(m, toy["xf_t"]), 2.0,
                      train_mask={"kind": "center", "size": 16}, image_size=32, optimizer={"name": "sgd", "lr": 1e-4},
                      batch_size=10, max_steps=6, every=3, tolerance=0.1)
    assert run["capped"] and run["relearn_steps"] is None and [s for s, _ in run["curve"]] == [0, 3, 6]


def test_sweep_reports_the_worst_hole_beside_the_mean(toy):
    hider = toy["models"]["original"]

    def scorer(recon):
        dark = float((recon[HOLE.expand_as(recon)] < 0).float().mean())
        return {"accuracy": dark, "fid": 1.0 - dark}

    specs = [{"kind": "center", "size": 8}, {"kind": "center", "size": 16}, {"kind": "random", "ratio": 0.5}]
    with torch_threads(1):
        out = sweep(hider, toy["xf_t"], scorer, specs, [0, 1], 32, 64)
    assert len(out["cells"]) == 6
    acc = [c["forget"]["accuracy"] for c in out["cells"]]
    assert out["worst"]["accuracy"] == max(acc) and out["mean"]["accuracy"] == pytest.approx(sum(acc) / 6)
    assert out["worst"]["fid"] == min(c["forget"]["fid"] for c in out["cells"])
    # random holes differ by seed, geometric ones do not
    assert out["cells"][4]["forget"] != out["cells"][5]["forget"] and out["cells"][0]["forget"] == out["cells"][1]["forget"]


def _tiny_mae(seed: int):
    from pipeline_lib.models import build_model

    torch.manual_seed(seed)
    return build_model("mae", TINY_ARCH, 32, 1)


def test_membership_separates_members_of_an_overfitted_model_and_is_inconclusive_otherwise():
    from pipeline_lib.training.loaders import ImageLoader, mask_sampler
    from pipeline_lib.models.base import FamilyObjective
    from pipeline_lib.training.trainer import fit

    c = codec()
    members = c.encode(fashion_subset(24, classes=[1])[0])
    non_members = c.encode(fashion_subset(24, train=False, classes=[1])[0])
    spec = {"kind": "center", "size": 16}  # trained and scored on the same hole: memorised centres
    with torch_threads(1):
        fresh = _tiny_mae(0)
        overfit = copy.deepcopy(fresh)
        g = torch.Generator().manual_seed(0)
        fit(FamilyObjective(overfit), ImageLoader(members, 24, g, mask_fn=mask_sampler(spec, 32, 4, g)),
            {"epochs": 200, "batch_size": 24, "optimizer": {"name": "adam", "lr": 3e-3}}, torch.device("cpu"))
        strong = membership(overfit, members, non_members, spec, 1, None, 32, seed=0)
        weak = membership(fresh, members, non_members, spec, 1, None, 32, seed=0)
    assert strong["auc"] > 0.8 and strong["powered"] and strong["member_loss"] < strong["non_member_loss"]
    assert not weak["powered"] and abs(weak["auc"] - 0.5) < 0.2
    # the run and retrain are scored, but an original at chance makes the check inconclusive
    verdict = judge({"membership": strong}, {"membership": weak}, {"membership": weak}, None, None, BAND)
    assert verdict["checks"] == {"membership": "inconclusive"} and verdict["verdict"] == "unjudged"


def test_damage_to_the_retain_set_overrides_the_checks():
    probe = {"probe": {"forget_recall": 0.1}}
    out = judge(probe, {"probe": {"forget_recall": 0.9}}, {"probe": {"forget_recall": 0.1}},
                {"accuracy": 0.5, "fid": 100.0}, {"accuracy": 0.8, "fid": 100.0}, BAND)
    assert out["verdict"] == "damaged" and "retain accuracy" in out["why"][0]
    assert judge(probe, probe, None, None, None, BAND)["verdict"] == "unjudged"


def test_verify_params_are_checked_naming_the_key():
    from pipeline_lib.params.load import validate_params

    params = base_params()
    params["verify"] = {"checks": ["probe", "sweep"], "methods": ["l2n"], "per_model": {"diffusion": {"sweep": {"images": 20}}}}
    validate_params(params)
    assert vs.settings(params, "diffusion", "sweep")["images"] == 20 and vs.settings(params, "mae", "sweep")["images"] == 100
    for bad, key in [({"checks": ["probe", "nope"]}, "verify.checks"), ({"probe": {"Cee": 1}}, "verify.probe.Cee"),
                     ({"relearn": {"K": [0]}}, "verify.relearn.K"), ({"methods": ["ebu"]}, "verify.methods"),
                     ({"sweep": {"masks": [{"kind": "center", "size": 6}]}}, r"verify.sweep.masks\[0\]"),
                     ({"per_model": {"vqgan": {"relearn": {"metric": "loss"}}}}, "verify.per_model.vqgan.relearn.metric"),
                     ({"relearn": {"every": 50, "max_steps": 10}}, "verify.relearn.every")]:
        p = base_params()
        p["verify"] = {"checks": ["probe"], **bad}
        with pytest.raises(ParamsError, match=f"'{key}"):
            validate_params(p)


@pytest.mark.parametrize("layout", [{}, {"layout": "palette", "block_out_channels": [32, 32], "norm_num_groups": 32}])
def test_diffusion_membership_scores_use_a_fixed_timestep_and_noise(layout):
    from test_diffusion import tiny

    with torch_threads(1), torch.no_grad():
        net = tiny(**layout).eval()
        x = codec().encode(fashion_subset(3, classes=[1])[0])
        mask = HOLE.expand(3, -1, -1, -1)
        a, b = net.sample_losses(x, mask, t=100), net.sample_losses(x, mask, t=100)
        c = net.sample_losses(x, mask, t=900)
    assert a.shape == (3,) and torch.equal(a, b) and not torch.equal(a, c)


@pytest.fixture(scope="module")
def stage_files(tmp_path_factory):
    """Real stage inputs at toy scale: splits, a briefly trained extractor, two tiny MAE checkpoints."""
    from pipeline_lib import stages
    from pipeline_lib.models import save_model
    from helpers import DEBIAN_DIR

    root = tmp_path_factory.mktemp("verify_stages")
    params = base_params()
    params["splits"]["eval_per_class"] = 20
    params["extractor"]["training"].update({"epochs": 1, "subset": 3000})
    params["model"]["mae"]["arch"] = dict(TINY_ARCH)
    params["verify"] = {"checks": ["probe", "sweep", "relearn", "membership"],
                        "probe": {"train_per_class": 20, "test_per_class": 10},
                        "sweep": {"images": 20, "masks": [{"kind": "center", "size": 8}, {"kind": "random", "ratio": 0.5, "patch": 4}]},
                        "relearn": {"K": [4], "max_steps": 4, "every": 2, "batch_size": 4, "images": 20},
                        "membership": {"members": 10, "masks": 2}}
    from pipeline_lib.params.load import validate_params

    validate_params(params)
    with torch_threads(1):
        stages.data.splits(params, str(DEBIAN_DIR), str(root / "splits.json"))
        stages.models.train_extractor(params, str(DEBIAN_DIR), str(root / "extractor.safetensors"))
        for seed in (0, 1):
            save_model(_tiny_mae(seed), root / f"mae{seed}.safetensors", {"training": {"wall_time_s": 1.0}})
    return params, root


def test_the_stages_write_each_check_for_a_checkpoint(stage_files):
    from helpers import DEBIAN_DIR
    from pipeline_lib.stages import verify as vstages

    params, root = stage_files
    data, split, ext, ckpt = str(DEBIAN_DIR), str(root / "splits.json"), str(root / "extractor.safetensors"), str(root / "mae1.safetensors")
    with torch_threads(1):
        vstages.verify_probe(params, ckpt, data, split, str(root / "probe.json"))
        vstages.verify_sweep(params, ckpt, data, split, ext, str(root / "sweep.json"))
        vstages.verify_relearn(params, ckpt, str(root / "mae0.safetensors"), data, split, ext, str(root / "relearn.json"))
        vstages.verify_membership(params, ckpt, data, split, str(root / "membership.json"))
    import json

    probe = json.loads((root / "probe.json").read_text())
    assert probe["train_images"] == 200 and probe["test_images"] == 100 and set(probe["per_class"]) == {"1", "8", "0", "2", "7", "9"}
    sweep_ = json.loads((root / "sweep.json").read_text())
    assert len(sweep_["cells"]) == 2 and "retain" in sweep_["cells"][0] and sweep_["wall_time_s"] > 0
    relearn_ = json.loads((root / "relearn.json").read_text())
    (run,) = relearn_["runs"]
    assert run["K"] == 4 and [s for s, _ in run["curve"]][0] == 0 and relearn_["metric"] == "accuracy"
    member = json.loads((root / "membership.json").read_text())
    assert member["members"] == member["non_members"] == 10 and member["masks"] == 2


def test_the_report_writes_a_verification_table_per_family_and_the_verdict_column(tmp_path, monkeypatch):
    """Hand-written check files for an original, one l2n run and retrain: table, figures, verdict column."""
    import json

    import pandas as pd

    from pipeline_lib.report.tables import _write_table
    from pipeline_lib.report import verification as vreport

    params = base_params()
    params["models"] = ["mae"]
    params["methods"] = {"l2n": {"alpha": [0.25], "noise": ["identity"]}, "retrain": {}}
    params["verify"] = {"checks": ["probe", "relearn"]}
    monkeypatch.chdir(tmp_path)
    recall = {"original": 0.9, "l2n": 0.85, "retrain": 0.3}
    steps = {"original": 0, "l2n": 5, "retrain": None}
    for model, method, variant in vs.verified_models(params):
        probe = {"forget_recall": recall[method], "forget_auroc": 0.9, "retain_recall": 0.8}
        run = {"K": 10, "curve": [[0, 0.1], [5, 0.9]], "relearn_steps": steps[method], "capped": steps[method] is None,
               "max_steps": 50, "target": 0.9}
        for check, result in (("probe", probe), ("relearn", {"metric": "accuracy", "runs": [run]})):
            path = tmp_path / vs.verify_file(params["dataset"], model, method, variant, check)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result))
    metrics = pd.DataFrame([{"model": "mae", "method": m, "variant": v, "Acc R": 0.8, "FID R": 100.0}
                            for m, v in (("original", ""), ("l2n", "alpha-0.25_noise-identity"), ("retrain", "base"))])
    judged = vreport.write(params, tmp_path, {"center": metrics}, _write_table,
                           vreport.collect(params, params["dataset"]))
    table = pd.read_csv(tmp_path / "table_verify_mae_center.csv")
    assert list(table["verdict"]) == ["reference", "hidden", "reference"]
    assert list(table["relearn K=10"]) == ["0", "5", ">50"] and table["K=10 / retrain"][1] == pytest.approx(0.1)
    assert (tmp_path / "relearn_mae.png").stat().st_size > 0 and (tmp_path / "probe_mae.png").stat().st_size > 0
    methods = pd.DataFrame({"method": ["original", "l2n", "retrain"], "variant": ["", "alpha-0.25_noise-identity", ""]})
    assert list(vreport.add_verdicts(methods, judged, ["mae"])["mae verdict"]) == ["reference", "hidden", "reference"]


def test_wide_encoder_features_are_hashed_to_a_fixed_linear_sketch():
    from pipeline_lib.verify.probe import sketch

    f = torch.randn(5, 10_000, generator=torch.Generator().manual_seed(0))
    a, b = sketch(f, 256, seed=3), sketch(f, 256, seed=3)
    assert a.shape == (5, 256) and torch.equal(a, b) and not torch.equal(a, sketch(f, 256, seed=4))
    assert torch.allclose(sketch(2 * f, 256, seed=3), 2 * a)  # linear
    assert sketch(f[:, :100], 256, seed=3) is not None and sketch(f[:, :100], 256, seed=3).shape == (5, 100)
    ratio = a.norm(dim=1) / f.norm(dim=1)  # norms survive roughly
    assert ((ratio > 0.8) & (ratio < 1.2)).all()


def test_the_spread_table_pools_seeds_with_the_gap_to_retrain():
    """Two seeds of one setting: one row, mean ± 95 % CI of each figure, the gap to retrain, verdict counts."""
    from pipeline_lib.report import verification as vreport

    def checks(recall, steps):
        return {"probe": {"forget_recall": recall},
                "relearn": {"runs": [{"K": 10, "relearn_steps": steps, "capped": steps is None, "max_steps": 50}]}}

    results = {("mae", "original", "base"): checks(0.9, 0),
               ("mae", "l2n", "alpha-0.25_noise-identity_seed-0"): checks(0.8, 10),
               ("mae", "l2n", "alpha-0.25_noise-identity_seed-1"): checks(0.6, 20),
               ("mae", "retrain", "base"): checks(0.3, None)}
    judged = {k: {"verdict": v} for k, v in zip(results, ["reference", "hidden", "forgotten", "reference"])}
    table = vreport.spread_table({None: (results, judged)}).set_index("method")
    l2n = table.loc["l2n"]
    assert l2n["variant"] == "alpha-0.25_noise-identity" and l2n["runs"] == 2
    assert l2n["verdicts"] == "hidden 1/2, forgotten 1/2"
    assert l2n["probe recall F"].startswith("0.700 ± 1.27")  # t(0.975, 1) * 0.1414 / sqrt(2) = 1.271
    assert l2n["probe recall F - retrain"].startswith("0.400 ± ")
    assert l2n["relearn steps K=10 - retrain"].startswith("-35.000 ± ")  # capped retrain counts as 50 steps
    assert table.loc["retrain", "relearn steps K=10"] == "50.000 (1/1 at the cap)"
    assert "cap" not in l2n["relearn steps K=10"] and "relearn capped K=10" not in table.columns
    assert table.loc["original", "runs"] == 1 and "±" not in table.loc["original", "probe recall F"]


def test_the_relearning_figure_gives_the_seeds_of_a_setting_one_colour_and_one_legend_entry(tmp_path, monkeypatch):
    """Three seeds and twenty settings would otherwise give a legend per run that covers the panels."""
    from pipeline_lib.report import plots
    from pipeline_lib.report import verification as vreport

    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda fig, out: drawn.update(fig=fig))
    run = {"runs": [{"K": 10, "curve": [[0, 0.5], [10, 0.9]], "target": 0.9}], "metric": "accuracy"}
    results = {("mae", "l2n", f"alpha-0.25_noise-identity_seed-{s}"): {"relearn": run} for s in (0, 1, 2)}
    results[("mae", "retrain", "base")] = {"relearn": run}
    vreport.plot_relearn("mae", results, tmp_path / "relearn_mae.png")
    ax = drawn["fig"].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["l2n alpha-0.25_noise-identity (3 runs)", "retrain"]
    colours = [line.get_color() for line in ax.get_lines()[:4]]
    assert colours[0] == colours[1] == colours[2] != colours[3]
