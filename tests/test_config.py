"""params.yaml validation: schema errors and semantic errors name the key path; the CLI reports them in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from helpers import DEBIAN_DIR, PARAMS_PATH, REPO_ROOT, base_params
from pipeline_lib.params import grid as config
from pipeline_lib.params import load
from pipeline_lib.data.datasets import CLASSES
from pipeline_lib.runtime.errors import ParamsError
from pipeline_lib.params.sets import resolve_classes


def _raises_naming(params: dict, *needles: str) -> str:
    with pytest.raises(ParamsError) as info:
        load.validate_params(params)
    msg = str(info.value)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


# --- the real file ---------------------------------------------------------------------------------------

def test_real_params_load_and_are_returned_unchanged():
    loaded = load.load_params(PARAMS_PATH)
    assert loaded == yaml.safe_load(PARAMS_PATH.read_text())
    assert loaded["models"] and loaded["tasks"]


def test_real_params_classes_resolve_to_disjoint_known_sets():
    params = base_params()
    classes = resolve_classes(params)
    assert classes["forget"] == [CLASSES.index(c) for c in params["splits"]["forget"]]
    assert classes["retain"] == [CLASSES.index(c) for c in params["splits"]["retain"]]
    everything = classes["forget"] + classes["retain"] + classes["proxy"]
    assert sorted(everything) == list(range(len(CLASSES)))


def test_load_params_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="does not exist"):
        load.load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [0\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load.load_params(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ParamsError, match="mapping"):
        load.load_params(scalar)


def test_load_params_on_a_bad_copy_names_the_key(tmp_path):
    params = base_params()
    params["splits"]["unlearn_per_class"] = 0
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match=r"splits\.unlearn_per_class"):
        load.load_params(path)


# --- schema errors -------------------------------------------------------------------------------------------

def _set(params: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = params
    for p in parents:
        node = node[p]
    node[leaf] = value


@pytest.mark.parametrize(
    "dotted, value, needle",
    [
        ("splits.unlearn_per_class", 0, "'splits.unlearn_per_class'"),
        ("splits.eval_per_class", "150", "'splits.eval_per_class'"),        # wrong type
        ("data.image_size", 32.5, "'data.image_size'"),                     # wrong type
        ("data.std", 0, "'data.std'"),
        ("unlearn.norm", "l1", "'unlearn.norm'"),
        ("unlearn.training.optimizer.name", "rmsprop", "'unlearn.training.optimizer.name'"),
        ("model.mae.arch.depth", 0, "'model.mae.arch.depth'"),
        ("runtime.amp", "yes", "'runtime.amp'"),
        ("methods.l2n.alpha", [], "'methods.l2n.alpha'"),
    ],
)
def test_schema_error_names_key_path(dotted, value, needle):
    params = base_params()
    _set(params, dotted, value)
    _raises_naming(params, needle)


def test_list_item_error_names_index():
    params = base_params()
    params["methods"]["l2n"]["alpha"] = [0.25, -1.0]
    _raises_naming(params, "'methods.l2n.alpha[1]'")


def test_bad_item_type_in_class_list_names_the_item():
    params = base_params()
    params["splits"]["forget"] = ["Trouser", 1.5]
    _raises_naming(params, "'splits.forget[1]'")


def test_drawn_forget_classes_avoid_listed_retain_classes():
    listed = ["T-shirt/top", "Pullover", "Sneaker", "Ankle boot", "Dress", "Coat", "Shirt"]
    for seed in range(6):
        params = base_params()
        params["seed"] = seed
        params["splits"]["retain"] = listed
        params["splits"]["forget"] = {"count": 3}
        classes = resolve_classes(params)
        assert sorted(classes["forget"]) == [1, 5, 8]  # the only three classes not listed for retain


def test_unknown_top_level_key_is_named():
    params = base_params()
    params["seeed"] = 3
    _raises_naming(params, "seeed")


def test_unknown_nested_key_is_named():
    params = base_params()
    params["splits"]["forgett"] = ["Bag"]
    _raises_naming(params, "'splits'", "forgett")


def test_missing_required_key_is_named():
    params = base_params()
    del params["unlearn"]["norm"]
    _raises_naming(params, "'unlearn'", "norm")


def test_bad_checkpoint_sha256_is_named():
    params = base_params()
    params["model"]["mae"]["checkpoint"] = {"url": "http://127.0.0.1:1/x.pth", "sha256": "ABC"}
    _raises_naming(params, "'model.mae.checkpoint.sha256'")
    params["model"]["mae"]["checkpoint"] = {"url": "http://127.0.0.1:1/x.pth", "sha256": "0" * 64}
    assert load.validate_params(params) is params


# --- semantic errors -------------------------------------------------------------------------------------

def test_overlapping_forget_and_retain():
    params = base_params()
    params["splits"]["forget"] = ["Trouser", "Bag"]
    params["splits"]["retain"] = ["Bag", "Pullover"]
    msg = _raises_naming(params, "splits.forget", "splits.retain", "Bag")
    assert "Trouser" not in msg


def test_overlap_by_name_and_index():
    params = base_params()
    params["splits"]["forget"] = ["Trouser"]
    params["splits"]["retain"] = [CLASSES.index("Trouser"), 0]
    _raises_naming(params, "overlap", "Trouser")


def test_unknown_class_name():
    params = base_params()
    params["splits"]["forget"] = ["Trouser", "Handbag"]
    _raises_naming(params, "'splits.forget[1]'", "Handbag")


@pytest.mark.parametrize("index", [10, -1])
def test_out_of_range_class_index(index):
    params = base_params()
    params["splits"]["retain"] = [0, index]
    _raises_naming(params, "'splits.retain[1]'", str(index))


def test_duplicate_class_in_one_list():
    params = base_params()
    params["splits"]["retain"] = ["Pullover", 2]
    _raises_naming(params, "'splits.retain'", "twice")


@pytest.mark.parametrize("key", ["forget", "retain"])
def test_empty_class_list(key):
    params = base_params()
    params["splits"][key] = []
    _raises_naming(params, f"'splits.{key}'")


def test_task_listed_but_not_defined():
    params = base_params()
    params["tasks"] = ["center", "outpaint"]
    _raises_naming(params, "'task.outpaint'", "tasks")


def test_model_listed_but_not_defined():
    params = base_params()
    del params["model"]["mae"]
    _raises_naming(params, "'model.mae'")


def test_task_mask_too_large_and_missing_fields():
    params = base_params()
    params["task"]["center"]["size"] = params["data"]["image_size"]
    _raises_naming(params, "'task.center'", "size 32 px")
    params = base_params()
    params["task"]["center"] = {"kind": "center"}
    _raises_naming(params, "'task.center'", "exactly one of grid, ratio, size")
    params = base_params()
    params["unlearn"]["mask"] = {"kind": "mixed", "size": 16}
    _raises_naming(params, "'unlearn.mask'", "missing ratio")


def test_tasks_must_give_every_family_the_same_hole():
    params = base_params()
    # mae/vqgan cells are 4 px, diffusion's 1 px
    params["task"]["center"] = {"kind": "center", "size": 14}  # not a multiple of 4 px
    _raises_naming(params, "'task.center'", "4 px mask granularity")
    params["task"]["center"] = {"kind": "random", "ratio": 0.5}  # each family would hide its own cells
    _raises_naming(params, "'task.center'", "patch")
    params["task"]["center"] = {"kind": "random", "ratio": 0.5, "patch": 4}
    load.validate_params(params)
    params["models"] = ["diffusion"]  # 1 px cells: a 14 px hole is fine for diffusion alone
    params["task"]["center"] = {"kind": "center", "size": 14}
    load.validate_params(params)


def test_crossval_names_defined_tasks():
    params = base_params()
    params["crossval"] = {"inpaint": "center", "outpaint": "outpaint"}
    _raises_naming(params, "'crossval.outpaint'", "outpaint")
    params["task"]["outpaint"] = {"kind": "outpaint", "size": 16}
    load.validate_params(params)
    params["tasks"] = ["center", "xval"]
    _raises_naming(params, "'tasks[1]'")


# --- {count: N} drawing ------------------------------------------------------------------------------------

def _count_params(forget, retain, seed=0):
    params = base_params()
    params["seed"] = seed
    params["splits"]["forget"] = forget
    params["splits"]["retain"] = retain
    return load.validate_params(params)


def test_count_drawing_is_deterministic_and_disjoint():
    a = resolve_classes(_count_params({"count": 2, "seed": 5}, {"count": 3}))
    b = resolve_classes(_count_params({"count": 2, "seed": 5}, {"count": 3}))
    assert a == b
    assert len(a["forget"]) == 2 and len(a["retain"]) == 3
    assert not set(a["forget"]) & set(a["retain"])
    assert set(a["forget"]) | set(a["retain"]) | set(a["proxy"]) == set(range(len(CLASSES)))
    assert len(a["proxy"]) == len(CLASSES) - 5


def test_count_drawing_depends_on_the_seed():
    # forget is drawn first, from all ten classes; retain is drawn from what is left
    draws = {tuple(resolve_classes(_count_params({"count": 3, "seed": s}, {"count": 2}))["forget"]) for s in range(8)}
    assert len(draws) > 1, "eight seeds all drew the same forget classes"
    # without an explicit seed the top-level seed is used
    by_top = {tuple(resolve_classes(_count_params({"count": 3}, {"count": 2}, seed=s))["forget"]) for s in range(8)}
    assert len(by_top) > 1
    assert resolve_classes(_count_params({"count": 3}, {"count": 2}, seed=4))["forget"] == \
        resolve_classes(_count_params({"count": 3, "seed": 4}, {"count": 2}, seed=0))["forget"]


def test_count_retain_never_draws_listed_forget_classes():
    forget = ["Trouser", "Bag", "Sandal"]
    for s in range(10):
        classes = resolve_classes(_count_params(forget, {"count": 7, "seed": s}))
        assert sorted(classes["retain"]) == sorted(set(range(10)) - {CLASSES.index(c) for c in forget})
        assert classes["proxy"] == []


def test_count_larger_than_free_classes():
    params = base_params()
    params["splits"]["forget"] = ["Trouser", "Bag", "Sandal"]
    params["splits"]["retain"] = {"count": 8}
    _raises_naming(params, "'splits.retain.count'", "8")


def test_count_zero_is_a_schema_error():
    params = base_params()
    params["splits"]["forget"] = {"count": 0}
    _raises_naming(params, "'splits.forget.count'")


# --- variants ------------------------------------------------------------------------------------------------

def test_variant_names_round_trip():
    for alpha in [0.25, 1.0, 3, 0.001]:
        for noise in ["identity", "lowrank", "batch_stats"]:
            name = config.variant_name({"alpha": alpha, "noise": noise})
            assert name == f"alpha-{alpha}_noise-{noise}"
            assert config.parse_variant(name) == {"alpha": float(alpha), "noise": noise}
    with pytest.raises(ParamsError, match="unknown variant"):
        config.parse_variant("beta-0.3")


def test_unlearn_runs_cover_the_grid():
    params = base_params()
    params["methods"]["l2n"] = {"alpha": [0.1, 0.25], "noise": ["identity", "uniform"]}
    params["models"] = ["mae"]
    runs = config.unlearn_runs(params)
    assert [r["variant"] for r in runs] == ["alpha-0.1_noise-identity", "alpha-0.1_noise-uniform",
                                            "alpha-0.25_noise-identity", "alpha-0.25_noise-uniform"]
    params["models"] = ["mae", "vqgan", "diffusion"]
    runs = config.unlearn_runs(params)
    assert len(runs) == 12 and [r["model"] for r in runs[::4]] == ["mae", "vqgan", "diffusion"]


def test_controllable_runs_expand_into_phase_one_and_two():
    params = base_params()
    params["models"] = ["mae"]
    params["methods"] = {"controllable": {"alpha": [1.0], "eps": [0.25, 0.75]}, "retrain": {}}
    runs = config.unlearn_runs(params)
    assert [r["variant"] for r in runs] == ["alpha-1.0_psi-highest", "alpha-1.0_psi-lowest",
                                            "alpha-1.0_psi-epsilon_eps-0.25", "alpha-1.0_psi-epsilon_eps-0.75"]
    assert config.phase_one_anchors(runs[2]) == ["alpha-1.0_psi-highest", "alpha-1.0_psi-lowest"]
    assert config.phase_one_anchors(runs[0]) == []
    # retrain is a reference model, not an unlearning run, but it is evaluated
    from pipeline_lib.params import paths

    assert ("mae", "retrain", "base") in paths.evaluated_models(params)
    assert config.parse_variant("base") == {}


def test_variant_axes_parse_back_with_their_types():
    point = {"alpha": 0.6, "noise": "batch_stats", "sigma": 0.5, "gamma": 1.0, "retain": "proxy"}
    name = config.variant_name(point)
    assert name == "alpha-0.6_noise-batch_stats_sigma-0.5_gamma-1.0_retain-proxy"
    assert config.parse_variant(name) == point


def test_method_options_are_checked_against_the_method():
    params = base_params()
    params["methods"]["ebu"] = {"alpha": [0.6], "sigma": [0.5], "gamma": [1.0], "options": {"regoin": "full"}}
    _raises_naming(params, "'methods.ebu.options.regoin'", "region")
    params["methods"]["ebu"]["options"] = {"sigma": 0.3}  # a grid axis, not an option
    _raises_naming(params, "'methods.ebu.options.sigma'")
    params["methods"]["ebu"]["options"] = {"region": "full"}
    load.validate_params(params)


def test_per_model_settings_are_checked_and_merged():
    params = base_params()
    params["methods"]["l2n"]["per_model"] = {"gan": {"training": {"epochs": 9}}}
    _raises_naming(params, "'methods.l2n.per_model.gan'", "not a model defined under 'model'")
    params["methods"]["l2n"]["per_model"] = {"mae": {"options": {"noise_inptu": "image"}}}
    _raises_naming(params, "'methods.l2n.per_model.mae.options.noise_inptu'", "noise_input")
    params["methods"]["l2n"]["per_model"] = {"mae": {"options": {"noise_input": "pixels"}}}
    _raises_naming(params, "'methods.l2n.per_model.mae.options.noise_input'", "target, image")
    params["methods"]["l2n"]["per_model"] = {"mae": {"training": {"epochs": 9}, "options": {"noise_input": "image"}}}
    load.validate_params(params)
    training, options = config.run_settings(params, "l2n", "mae")
    assert training == {**params["unlearn"]["training"], "epochs": 9}
    assert options == {"noise_input": "image"}
    # what the engines compare to decide a re-run: only the named family's entry joins the method's settings
    assert config.method_settings(params, "l2n", "mae")["per_model"] == params["methods"]["l2n"]["per_model"]["mae"]
    assert "per_model" not in config.method_settings(params, "l2n")
    # a family's own grid axes: its variants, and only its, change
    params["methods"]["l2n"]["per_model"]["diffusion"] = {"alpha": [1.0, 2.0]}
    load.validate_params(params)
    variants = {(r["model"], r["variant"]) for r in config.unlearn_runs(params) if r["method"] == "l2n"}
    assert ("diffusion", "alpha-2.0_noise-identity") in variants
    assert ("mae", "alpha-2.0_noise-identity") not in variants
    assert {v for m, v in variants if m == "mae"} == {
        config.variant_name(p) for p in config.method_points("l2n", params["methods"]["l2n"])}


def test_editing_a_familys_alpha_list_leaves_the_points_that_stay_unchanged_for_both_engines():
    """Dropping α 1.5 and 2 from the U-Net's grid (the tuning preset to the robustness preset) must not re-run α 1:
    the settings Snakemake compares and the keys DVC tracks hold the family's fixed settings, not its axes."""
    params = base_params()
    own = {"alpha": [1.0, 1.5, 2.0], "training": {"epochs": 15}, "options": {"noise_input": "image"}}
    params["methods"]["l2n"]["per_model"]["diffusion"] = own
    before = config.method_settings(params, "l2n", "diffusion")
    params["methods"]["l2n"]["per_model"]["diffusion"] = {**own, "alpha": [1.0]}
    assert config.method_settings(params, "l2n", "diffusion") == before
    assert before["per_model"] == {"training": {"epochs": 15}, "options": {"noise_input": "image"}}
    assert config.method_setting_keys(params, "l2n", "diffusion") == [
        "methods.l2n.per_model.diffusion.training", "methods.l2n.per_model.diffusion.options"]
    params["methods"]["l2n"]["per_model"]["vqgan"] = {"alpha": [1.0]}  # axes only: nothing to track
    assert config.method_setting_keys(params, "l2n", "vqgan") == []
    assert "per_model" not in config.method_settings(params, "l2n", "vqgan")
    params["methods"]["l2n"]["training"] = {"epochs": 3}
    assert config.method_setting_keys(params, "l2n", "mae") == ["methods.l2n.training"]


def test_output_losses_on_a_sampler_need_the_full_output():
    """VQ-GAN and diffusion reconstruct by sampling: an output-space loss on them must name region full."""
    params = base_params()
    params["methods"]["max_loss"] = {"alpha": [0.25]}
    _raises_naming(params, "'methods.max_loss'", "'vqgan'", "methods.max_loss.per_model.vqgan.options.region: full")
    params["methods"]["max_loss"]["per_model"] = {m: {"options": {"region": "full"}} for m in ("vqgan", "diffusion")}
    load.validate_params(params)
    params["methods"]["controllable"] = {"alpha": [10.0], "eps": [0.5], "options": {"space": "encoder"}}
    load.validate_params(params)  # encoder features: no reconstruction to train through
    params["models"] = ["mae"]  # the MAE's reconstruct is one pass
    params["methods"]["ebu"] = {"alpha": [0.6], "sigma": [0.5], "gamma": [1.0]}
    load.validate_params(params)


def test_limited_retain_needs_its_size():
    params = base_params()
    params["methods"]["l2n"]["retain"] = ["real", "limited"]
    _raises_naming(params, "'unlearn.limited_per_class'")
    params["unlearn"]["limited_per_class"] = 10
    load.validate_params(params)


def test_unknown_method_and_family_are_schema_errors():
    params = base_params()
    params["methods"]["l2m"] = {"alpha": [0.25]}
    _raises_naming(params, "l2m")
    params = base_params()
    params["models"] = ["mae", "gan"]
    _raises_naming(params, "'models[1]'")


# --- the CLI -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda p: p["splits"].__setitem__("unlearn_per_class", 0), "splits.unlearn_per_class"),
        (lambda p: p["splits"].__setitem__("forget", ["Trouser", "Handbag"]), "splits.forget[1]"),
    ],
    ids=["schema", "semantic"],
)
def test_cli_reports_bad_params_in_one_line(tmp_path, edit, needle):
    params = base_params()
    edit(params)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(params))
    out = tmp_path / "splits.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline_lib", "splits", "--params", str(bad), "--data-dir", str(DEBIAN_DIR),
         "--out", str(out)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert needle in lines[0]
    assert not out.exists()
