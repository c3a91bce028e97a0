"""Forget sets and seeds as grid axes: every split-dependent job runs per set (under the set's own paths),
unlearning repeats per seed, both engines plan the same commands, and editing one set re-plans only its jobs.
The default params (one unnamed set, no `seeds`) keep today's paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from helpers import base_params, init_dvc_repo, make_project, run
from pipeline_lib.params import grid as config
from pipeline_lib.params import load, paths
from pipeline_lib.engines.dvc_yaml import render, stages
from pipeline_lib.runtime.errors import ParamsError
from pipeline_lib.params.sets import resolve_classes, set_names
import pipeline_lib.stages.data  # noqa: F401

SETS = {"trouser-bag": {"forget": ["Trouser", "Bag"], "retain": ["T-shirt/top", "Pullover", "Sneaker", "Ankle boot"],
                        "role": "tuning"},
        "drawn": {"forget": {"count": 2, "seed": 3}, "retain": {"count": 4, "seed": 3}, "role": "held_out"}}


def with_axes(params: dict, seeds: list[int] | None = (0, 1)) -> dict:
    """`params` with the two sets of SETS instead of its one split (and `seeds`, if given)."""
    for key in ("forget", "retain"):
        params["splits"].pop(key)
    params["splits"]["sets"] = yaml.safe_load(yaml.safe_dump(SETS))
    if seeds is not None:
        params["seeds"] = list(seeds)
    return load.validate_params(params)


def test_default_params_keep_their_paths_and_names():
    params = load.validate_params(base_params())
    assert set_names(params) == [None] and paths.set_roots(params) == ["fashion_mnist"]
    text = render(params)
    assert "/sets/" not in text and "seed-" not in text and "--set" not in text
    assert "--splits data/fashion_mnist/splits.json" in text
    assert [r["variant"] for r in config.unlearn_runs(params)][0] == "alpha-0.5_noise-identity"


def test_two_sets_give_two_independent_unlearning_runs_each():
    params = with_axes(base_params(), seeds=None)
    runs = config.unlearn_runs(params)
    unlearn = [s for s in stages(params) if s.name.startswith("unlearn-")]
    assert len(unlearn) == 2 * len(runs)
    for name in SETS:
        own = [s for s in unlearn if s.name.startswith(f"unlearn-{name}-")]
        assert len(own) == len(runs)
        for stage in own:  # its own split, noise and output; the shared original model
            assert f"--splits data/fashion_mnist/sets/{name}/splits.json" in stage.cmd
            assert f"--noise data/fashion_mnist/sets/{name}/noise/" in stage.cmd
            assert f"--out data/fashion_mnist/sets/{name}/models/" in stage.cmd
            assert "--original data/fashion_mnist/models/" in stage.cmd
    # shared once: data, pre-training, extractor; per set: splits, reference, noise
    names = [s.name for s in stages(params)]
    assert names.count("extractor") == 1 and "pretrain-mae" in names
    assert {"splits-trouser-bag", "splits-drawn", "reference-drawn", "noise-drawn-identity"} <= set(names)
    # the original model is scored on each set's evaluation images, from its one checkpoint
    original = [s for s in stages(params) if s.name.startswith("generate-") and "-mae-original-" in s.name]
    assert len(original) == 2 and all("models/mae/original/base/" in s.cmd for s in original)
    drawn = resolve_classes(params, "drawn")
    assert drawn != resolve_classes(params, "trouser-bag") and len(drawn["forget"]) == 2


def test_two_seeds_give_two_runs_each():
    params = base_params()
    params["seeds"] = [0, 1]
    params["models"] = ["mae"]
    params["methods"] = {"l2n": {"alpha": [0.25]}, "controllable": {"alpha": [1.0], "eps": [0.5]}}
    runs = config.unlearn_runs(load.validate_params(params))
    assert [r["variant"] for r in runs] == [
        "alpha-0.25_seed-0", "alpha-0.25_seed-1",
        "alpha-1.0_psi-highest_seed-0", "alpha-1.0_psi-highest_seed-1",
        "alpha-1.0_psi-lowest_seed-0", "alpha-1.0_psi-lowest_seed-1",
        "alpha-1.0_psi-epsilon_eps-0.5_seed-0", "alpha-1.0_psi-epsilon_eps-0.5_seed-1"]
    assert config.parse_variant("alpha-0.25_seed-1") == {"alpha": 0.25, "seed": 1}
    assert config.run_seed(params, runs[1]) == 1 and config.run_seed(params, {}) == params["seed"]
    # Phase II of a seed reads that seed's Phase I runs
    assert config.phase_one_anchors(runs[-1]) == ["alpha-1.0_psi-highest_seed-1", "alpha-1.0_psi-lowest_seed-1"]


@pytest.mark.parametrize("edit, needle", [
    (lambda p: p["splits"].update(forget=["Bag"]), "give either 'forget' and 'retain'"),
    (lambda p: p["splits"]["sets"].update({"a.b": SETS["drawn"]}), "'splits.sets'"),
    (lambda p: p["splits"]["sets"]["drawn"].update(forget=["Trouser", "Handbag"]), "splits.sets.drawn.forget[1]"),
    (lambda p: p["splits"]["sets"]["trouser-bag"].update(retain=["Trouser", "Coat"]), "'splits.sets.trouser-bag.retain' overlap"),
    (lambda p: p["splits"]["sets"]["drawn"].update(role="test"), "splits.sets.drawn.role"),
    (lambda p: p["splits"]["sets"].update(again=SETS["trouser-bag"]), "'splits.sets.again' selects the same"),
    (lambda p: p.update(seeds=[1, 1]), "'seeds'"),
], ids=["both", "name", "class", "overlap", "role", "duplicate", "seeds"])
def test_bad_axes_fail_naming_the_key(edit, needle):
    params = with_axes(base_params())
    edit(params)
    with pytest.raises(ParamsError, match=re.escape(needle)):
        load.validate_params(params)


def test_the_splits_stage_needs_the_set_it_writes(tmp_path):
    from pipeline_lib import stages

    params = with_axes(base_params())
    for name, why in ((None, "name one with --set"), ("nope", "not 'nope'")):
        with pytest.raises(ParamsError, match=why):
            stages.data.splits(params, "unused", str(tmp_path / "splits.json"), name)


def _planned(log: str) -> set[str]:
    found = re.findall(r"^(?:Shell command:)?\s*(python -m pipeline_lib .*)$", log, flags=re.M)
    return {" ".join(cmd.split()) for cmd in found}


def _fake_outputs(log: str, root: Path) -> None:
    """Stand-ins for every planned output, so that a dry run after an edit plans only what the edit feeds."""
    for line in re.findall(r"^\s*output: (.*)$", log, flags=re.M):
        for out in map(Path, line.split(", ")):
            if out.suffix in (".json", ".safetensors"):
                (root / out).parent.mkdir(parents=True, exist_ok=True)
                (root / out).touch()
            else:
                (root / out).mkdir(parents=True, exist_ok=True)


def test_both_engines_plan_the_same_commands_and_rerun_only_the_changed_set(tmp_path):
    """Two sets x two seeds through Snakemake and DVC (dry runs): identical commands; after one set's classes
    change, each engine plans that set's jobs and the report, nothing of the other set."""
    root = make_project(tmp_path / "project", dvc_yaml=False)
    params = with_axes(yaml.safe_load((root / "params.yaml").read_text()))
    params["methods"]["retrain"] = {}
    params["verify"] = {"checks": ["probe"], "methods": ["l2n"]}  # checked per set against its own retrain
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["python", "-m", "pipeline_lib", "dvc-yaml"], root)
    smk = run(["snakemake", "--profile", "profiles/local", "-n", "--forceall"], root)
    init_dvc_repo(root)
    dvc = run(["dvc", "repro", "--dry", "--force"], root)
    dvc_cmds = {" ".join(line[2:].split()) for line in dvc.splitlines() if line.startswith("> python -m pipeline_lib")}
    assert _planned(smk) == dvc_cmds
    # data, extractor, tokenizer, 3 pretrain, then per set: splits, reference, 2 noise, 3 retrain,
    # 8 unlearn (4 runs x 2 seeds), 14 generate, 14 metrics and 14 probes (3 original + 8 + 3 retrain);
    # summary, aggregate
    assert len(dvc_cmds) == 6 + 2 * (1 + 1 + 2 + 3 + 8 + 14 + 14 + 14) + 2
    assert sum(" verify-probe " in c and "/sets/drawn/verify/" in c for c in dvc_cmds) == 14
    assert sum(" unlearn " in c and "seed-1" in c and "/sets/drawn/" in c for c in dvc_cmds) == 4

    # `--touch` records a job's params only while its outputs are missing (Snakemake 9.27): before and after
    run(["snakemake", "--profile", "profiles/local", "--touch"], root)
    _fake_outputs(smk, root)
    run(["snakemake", "--profile", "profiles/local", "--touch"], root)
    committed = (root / "params.yaml").read_text()
    params["splits"]["sets"]["drawn"]["forget"] = {"count": 2, "seed": 4}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    replanned = _planned(run(["snakemake", "--profile", "profiles/local", "-n"], root))
    jobs = [c for c in replanned if " aggregate " not in c and " summary " not in c]
    assert len(jobs) == 1 + 1 + 2 + 3 + 8 + 14 + 14 + 14
    assert all("/sets/drawn" in c and "trouser-bag" not in c for c in jobs)

    (root / "params.yaml").write_text(committed)
    run(["dvc", "commit", "-f", "-q"], root)  # the stand-ins as DVC's current outputs of the committed params
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # DVC plans the stages whose own dependencies changed: the edited set's split (the rest follows its hash)
    dvc_dry = run(["dvc", "repro", "--dry"], root)
    assert re.findall(r"Running stage '([^']+)'", dvc_dry) == ["splits-drawn", "aggregate"]


def test_verification_runs_on_every_forget_set_against_its_own_retrain():
    """The checks run per set: each set's l2n runs and retrain, the shared original, under the set's paths."""
    from pipeline_lib.params.verify import all_verify

    params = base_params()
    params["methods"]["retrain"] = {}
    params = with_axes(params, seeds=None)
    probes = [s for s in stages(params) if s.name.startswith("verify_probe-")]
    per_set = len(params["models"]) * 3  # original, l2n, retrain of each family
    assert len(probes) == 2 * per_set
    for name in SETS:
        own = [s for s in probes if s.name.startswith(f"verify_probe-{name}-")]
        assert len(own) == per_set
        for stage in own:
            assert f"--splits data/fashion_mnist/sets/{name}/splits.json" in stage.cmd
            assert f"--out results/fashion_mnist/sets/{name}/verify/" in stage.cmd
            checkpoint = stage.cmd.split("--checkpoint ")[1].split()[0]
            assert checkpoint.startswith(f"data/fashion_mnist/sets/{name}/models/") != ("/original/" in checkpoint)
    outs = {o for s in stages(params) if s.name.startswith("verify_") for o in s.outs}
    assert outs == set(all_verify(params))
