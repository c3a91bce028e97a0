"""The numeric summary DVC diffs: numbers only, keyed so that a changed α moves values, not keys."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import base_params
from pipeline_lib.params import paths
from pipeline_lib.runtime.errors import DataError
from pipeline_lib.report.summary import run_key, summary_file, write_summaries


def _write_metrics(root: Path, params: dict, fid_forget: float) -> None:
    for model, method, variant in paths.evaluated_models(params):
        path = root / paths.metrics_file(params["dataset"], model, method, variant, "center")
        path.parent.mkdir(parents=True, exist_ok=True)
        sets = {which: {"fid": fid_forget if which == "forget" else 50.0, "is": 2.0, "kid": float("nan"),
                        "cosine": 0.9, "accuracy": 0.5, "inception": {"fid": 12.5}} for which in ("forget", "retain")}
        path.write_text(json.dumps({"extractor": "a note", "recon": "a path", "extractors": {"pipeline": {"used": True}},
                                    **sets, "training": {"wall_time_s": 3.5}, "objectives": {"forget": 1.0}}))


@pytest.fixture
def in_tmp(tmp_path):
    cwd = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(cwd)


def test_run_keys_drop_numeric_axes():
    assert run_key("alpha-0.25_noise-identity") == "noise-identity"
    assert run_key("alpha-0.5_noise-identity") == "noise-identity"
    assert run_key("alpha-0.25_psi-epsilon_eps-0.5") == "psi-epsilon"
    assert run_key("base") == "base" and run_key("alpha-1.0") == "base"


def test_the_summary_holds_numbers_only_and_keeps_its_keys_when_alpha_changes(in_tmp):
    params = base_params()
    params["methods"]["l2n"]["alpha"] = [0.25]
    _write_metrics(in_tmp, params, 100.0)
    write_summaries(params)
    first = json.loads(Path(summary_file("fashion_mnist", "center")).read_text())

    def leaves(node, prefix=""):
        for k, v in node.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    flat = dict(leaves(first))
    assert all(isinstance(v, (int, float)) for v in flat.values()), flat
    assert flat["mae.l2n.noise-identity.F.fid"] == 100.0 and flat["mae.l2n.noise-identity.alpha"] == 0.25
    assert flat["mae.original.base.R.inception_fid"] == 12.5 and flat["mae.l2n.noise-identity.train_s"] == 3.5
    assert not any(k.endswith(".kid") for k in flat)  # NaN is no number to diff

    params["methods"]["l2n"]["alpha"] = [0.5]
    _write_metrics(in_tmp, params, 300.0)
    write_summaries(params)
    second = dict(leaves(json.loads(Path(summary_file("fashion_mnist", "center")).read_text())))
    assert set(second) == set(flat)
    assert second["mae.l2n.noise-identity.alpha"] == 0.5 and second["mae.l2n.noise-identity.F.fid"] == 300.0


def test_two_alphas_get_distinct_keys(in_tmp):
    params = base_params()
    params["methods"]["l2n"]["alpha"] = [0.25, 0.5]
    _write_metrics(in_tmp, params, 100.0)
    write_summaries(params)
    runs = json.loads(Path(summary_file("fashion_mnist", "center")).read_text())["mae"]["l2n"]
    assert runs["noise-identity"]["alpha"] == 0.25 and runs["noise-identity~1"]["alpha"] == 0.5


def test_a_missing_metrics_file_is_named(in_tmp):
    with pytest.raises(DataError, match="metrics file results/fashion_mnist/metrics/.*is missing"):
        write_summaries(base_params())
