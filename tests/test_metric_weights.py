"""The standard metric networks' weights: the `weights` stage (download from a local HTTP server, atomic,
sha256-verified, errors naming the params key), a local path verified in place, the ResNet-50-Places365 IS
from CSAIL's file layout, metrics files that name each extractor's file, hash and url, and both engines
planning the stage. No real weights are reachable here: the files are generated (a random-weight torchvision
ResNet-50 saved as CSAIL saved theirs)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers import DEBIAN_DIR, base_params, make_project, run, serve_directory
from pipeline_lib.evaluation import metric_weights
from pipeline_lib.params import weights
from pipeline_lib import stages
import pipeline_lib.stages.data  # noqa: F401
import pipeline_lib.stages.evaluate  # noqa: F401
import pipeline_lib.stages.generate  # noqa: F401
import pipeline_lib.stages.models  # noqa: F401
from pipeline_lib.evaluation import standard_extractors as std
from pipeline_lib.params.load import validate_params
from pipeline_lib.runtime.errors import DataError, ParamsError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PLACES_URL_FILE = std.PLACES_FILE


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _places_params(url: str, sha256: str | None) -> dict:
    params = base_params()
    params["metrics"]["places"] = {"url": url, "sha256": sha256}
    return validate_params(params)


@pytest.fixture(scope="module")
def places_file(tmp_path_factory) -> Path:
    """A random-weight ResNet-50 with 365 outputs in CSAIL's layout: DataParallel's `module.` keys under
    'state_dict' beside 'epoch', 'arch' and 'best_prec1', in torch's legacy (pre-zip) format as in 2017."""
    from torchvision.models import resnet50

    torch.manual_seed(0)
    net = resnet50(num_classes=365)
    path = tmp_path_factory.mktemp("places") / PLACES_URL_FILE
    torch.save({"epoch": 90, "arch": "resnet50", "best_prec1": 54.74,
                "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}},
               path, _use_new_zipfile_serialization=False)
    return path


@pytest.fixture
def served(tmp_path):
    """A directory served over HTTP on the loopback, holding a generated file; yields (url, file)."""
    srv = tmp_path / "srv"
    srv.mkdir()
    payload = srv / PLACES_URL_FILE
    payload.write_bytes(os.urandom(50_000))
    with serve_directory(srv) as base:
        yield base + PLACES_URL_FILE, payload


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --- the weights stage ------------------------------------------------------------------------------------

def test_the_weights_stage_downloads_and_verifies(tmp_path, served):
    """The command both engines run, on a params file naming a url on the local server."""
    url, payload = served
    params = _places_params(url, _sha(payload))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = weights.downloaded(params)["places"]
    assert out == f"data/weights/places/{PLACES_URL_FILE}"
    proc = subprocess.run([sys.executable, "-m", "pipeline_lib", "weights", "--params", "params.yaml", "--kind",
                           "places", "--out", out, "--log", f"logs/weights/places/{PLACES_URL_FILE}.log"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / out).read_bytes() == payload.read_bytes()
    assert _leftovers((tmp_path / out).parent) == [PLACES_URL_FILE]  # no temporary sibling left
    assert "verified" in (tmp_path / f"logs/weights/places/{PLACES_URL_FILE}.log").read_text()


def test_a_wrong_sha256_leaves_nothing_and_names_the_key(tmp_path, served):
    url, payload = served
    params = _places_params(url, "0" * 64)
    out = tmp_path / "data" / "weights" / "places" / PLACES_URL_FILE
    with pytest.raises(DataError) as info:
        stages.evaluate.weights(params, "places", str(out))
    message = str(info.value)
    assert "params metrics.places.sha256" in message and _sha(payload) in message and url in message
    assert _leftovers(out.parent) == []  # no file, no temporary sibling


def test_an_unpinned_sha256_is_refused_with_the_actual_hash(tmp_path, served):
    url, payload = served
    out = tmp_path / "w" / PLACES_URL_FILE
    with pytest.raises(DataError, match=f"params metrics.places.sha256 is null: {re.escape(url)} has sha256 "
                                        f"{_sha(payload)}; pin it there"):
        stages.evaluate.weights(_places_params(url, None), "places", str(out))
    assert _leftovers(out.parent) == []


def test_the_stage_refuses_a_kind_without_a_url(tmp_path):
    with pytest.raises(ParamsError, match="params key 'metrics.inception' has no url to download"):
        stages.evaluate.weights(validate_params(base_params()), "inception", str(tmp_path / "x.pth"))


@pytest.mark.parametrize("spec, message", [
    ({"url": "https://example.org/w.pth"}, "'metrics.places' has a url but no 'sha256'"),
    ({"url": "https://example.org/w.pth", "sha256": None, "weights": "w.pth"}, "'metrics.places' needs either"
                                                                                  " 'url' .* or 'weights' .*, not both"),
    ({}, "'metrics.places' needs either 'url'"),
    ({"url": "https://example.org/", "sha256": None}, "'metrics.places.url' = 'https://example.org/' names no file"),
    ({"url": "file:///w.pth", "sha256": None}, "'metrics.places.url': 'file:///w.pth' does not match"),
    ({"weights": "w.pth", "sha256": "abc"}, "'metrics.places.sha256': 'abc' does not match"),
])
def test_malformed_weights_specs_are_refused_before_any_job(spec, message):
    params = base_params()
    params["metrics"]["places"] = spec
    with pytest.raises(ParamsError, match=message):
        validate_params(params)


def test_an_unknown_kind_is_refused():
    params = base_params()
    params["metrics"]["dino"] = {"weights": "w.pth"}
    with pytest.raises(ParamsError, match=r"params key 'metrics': Additional properties .*'dino'"):
        validate_params(params)


# --- a local path ----------------------------------------------------------------------------------------

def test_a_configured_path_is_used_in_place_and_verified(tmp_path, served):
    _, payload = served
    sha = _sha(payload)
    assert metric_weights.resolve("places", {"weights": str(payload), "sha256": sha}) == {
        "file": str(payload), "sha256": sha}
    assert metric_weights.resolve("places", {"weights": str(payload)}) == {"file": str(payload)}  # not pinned
    with pytest.raises(DataError, match=f"checksum mismatch for {re.escape(str(payload))}: sha256 {sha}, expected "
                                        f"{'1' * 64} \\(params metrics.places.sha256\\)"):
        metric_weights.resolve("places", {"weights": str(payload), "sha256": "1" * 64})
    with pytest.raises(DataError, match=f"params metrics.places.sha256 is null: .* has sha256 {sha}"):
        metric_weights.resolve("places", {"weights": str(payload), "sha256": None})
    absent = tmp_path / "absent.pth.tar"  # not there: the pipeline's extractor stands in, with a note
    assert metric_weights.resolve("places", {"weights": str(absent), "sha256": sha}) == {"file": str(absent)}
    assert std.available({"kind": "places", "weights": str(absent)})[1].startswith(
        f"ResNet-50-Places365 weights not found at {absent}: using the pipeline's extractor")


def test_a_downloaded_file_must_be_there(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="params metrics.places.url: data/weights/places/w.pth is missing: run the "
                                        "weights stage"):
        metric_weights.resolve("places", {"url": "https://example.org/w.pth", "sha256": "0" * 64})


# --- Places365 IS ----------------------------------------------------------------------------------------

def test_places_is_from_csails_file_layout(places_file):
    net = std.load_places_resnet(places_file)
    assert net.fc.out_features == 365
    torch.manual_seed(1)
    images = torch.randint(0, 256, (20, 3, 40, 40), dtype=torch.uint8)
    scores = std.places_scores(images, places_file, batch_size=8, seed=0)
    assert 1.0 < scores["places_is"] <= 365.0 and scores["places_is_std"] >= 0.0
    grey = std.places_scores(images[:, :1], places_file, batch_size=20, seed=0)  # grey images: one channel
    assert 1.0 < grey["places_is"] <= 365.0


def test_an_incompatible_places_file_is_named(tmp_path):
    bad = tmp_path / PLACES_URL_FILE
    torch.save({"state_dict": {"module.fc.weight": torch.zeros(1000, 2048)}}, bad)
    with pytest.raises(DataError, match=f"ResNet-50-Places365 weights at {re.escape(str(bad))} could not be loaded"):
        std.load_places_resnet(bad)


# --- the metrics file ------------------------------------------------------------------------------------

def test_a_metrics_file_names_its_extractors_files_and_hashes(tmp_path, places_file, monkeypatch):
    """Fetched by the weights stage from a url, then read by the metrics stage: the file says which bytes."""
    from test_runs import tiny_params

    monkeypatch.chdir(tmp_path)
    params = tiny_params()
    params["extractor"]["training"].update(subset=256, max_steps=2)
    sha = _sha(places_file)
    with serve_directory(places_file.parent) as base:
        url = base + PLACES_URL_FILE
        params["metrics"]["places"] = {"url": url, "sha256": sha}
        params = validate_params(params)
        weights_file = weights.downloaded(params)["places"]
        stages.evaluate.weights(params, "places", weights_file)
    splits, extractor, model = tmp_path / "splits.json", tmp_path / "extractor.safetensors", tmp_path / "mae.safetensors"
    stages.data.splits(params, str(DEBIAN_DIR), str(splits))
    stages.models.pretrain(params, "mae", str(DEBIAN_DIR), str(model))
    stages.models.train_extractor(params, str(DEBIAN_DIR), str(extractor))
    stages.evaluate.reference(params, str(DEBIAN_DIR), str(splits), str(extractor), str(tmp_path / "reference"))
    stages.generate.generate(params, str(model), str(DEBIAN_DIR), str(splits), "center", str(tmp_path / "recon"))
    stages.evaluate.metrics(params, str(tmp_path / "recon"), str(tmp_path / "reference"), str(extractor), str(model),
                   str(tmp_path / "center.json"))
    result = json.loads((tmp_path / "center.json").read_text())
    assert result["extractors"]["pipeline"]["file"] == str(extractor)
    assert result["extractors"]["places"] == {
        "used": True, "note": f"ResNet-50-Places365 weights at {weights_file}", "file": weights_file, "sha256": sha, "url": url}
    assert result["extractors"]["inception"]["used"] is False  # the default path, absent here
    assert result["extractors"]["inception"]["file"].endswith(std.INCEPTION_FILE)
    for which in ("forget", "retain"):
        assert 1.0 < result[which]["places_is"] <= 365.0
    from pipeline_lib.report.summary import run_row

    assert run_row(result, "base")["F"]["places_is"] == round(result["forget"]["places_is"], 6)


def test_natural_images_lead_with_the_standard_numbers():
    from pipeline_lib.report.tables import headline_scores

    own = {"fid": 10.0, "is": 2.0, "kid": 0.1, "cosine": 0.5, "accuracy": 0.9}
    standard = {"inception": {"fid": 30.0, "is": 5.0, "kid": 0.3}, "clip_cosine": 0.7}
    assert headline_scores({**own, **standard}, natural=False) == {**own, **standard}  # Fashion-MNIST
    assert headline_scores({**own, **standard}, natural=True) == {
        **own, **standard, "fid": 30.0, "is": 5.0, "kid": 0.3, "cosine": 0.7}
    places = headline_scores({**own, **standard, "places_is": 9.0}, natural=True)
    assert places["is"] == 9.0 and places["fid"] == 30.0  # Places: IS from the Places365 classifier
    assert headline_scores(own, natural=True) == own  # no standard weights there: the pipeline's numbers


# --- both engines ----------------------------------------------------------------------------------------

@pytest.mark.engine
def test_both_engines_plan_the_weights_stage_for_a_url(tmp_path):
    root = make_project(tmp_path / "project", dvc_yaml=False)
    params = yaml.safe_load((root / "params.yaml").read_text())
    url, sha = "http://127.0.0.1:9/models/resnet50_places365.pth.tar", "0" * 64
    params["metrics"]["places"] = {"url": url, "sha256": sha}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["python", "-m", "pipeline_lib", "dvc-yaml"], root)
    out = f"data/weights/places/{PLACES_URL_FILE}"
    command = (f"python -m pipeline_lib weights --params params.yaml --kind places --out {out} "
               f"--log logs/weights/places/{PLACES_URL_FILE}.log")
    stages_ = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    assert stages_["weights-places"] == {"cmd": command, "params": ["metrics.places.url", "metrics.places.sha256"],
                                       "outs": [out]}
    assert [k for k in stages_ if k.startswith("weights")] == ["weights-places"]  # the path-configured kinds: none
    metrics = [s for name, s in stages_.items() if name.startswith("metrics-")]
    assert metrics and all(out in s["deps"] for s in metrics)
    from test_engines import snakemake_commands

    planned = run(["snakemake", "--profile", "profiles/local", "-n", "--forceall"], root)
    assert command in snakemake_commands(planned)
    assert len(re.findall(r"^(?:local)?rule weights:", planned, flags=re.M)) == 1
    assert not (root / "data" / "weights").exists()  # planned, nothing fetched
