"""The border-only accuracy floor (pipeline_lib.report.border) on real Fashion-MNIST images and a real extractor file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from helpers import base_params, codec, fashion_subset
from pipeline_lib.report import border
from pipeline_lib.evaluation import extractor
from pipeline_lib.params import paths

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def extractor_path(tmp_path_factory):
    torch.manual_seed(0)
    net = extractor.Classifier(1, 10, base_params()["extractor"]["feature_dim"])
    path = tmp_path_factory.mktemp("extractor") / "classifier.safetensors"
    c = codec()
    extractor.save_extractor(net, path, c.mean, c.std, {})
    return path


def _recon_file(path: Path, mask: torch.Tensor, n: int = 64) -> Path:
    images, labels = fashion_subset(n, train=False)
    c = codec()
    gt = c.to_uint8(c.encode(images))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"gt": gt, "recon": gt.clone(), "labels": labels, "mask": mask.expand_as(gt).contiguous()}, str(path))
    return path


def _centre(size: int = 32, hole: int = 16) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size, dtype=torch.uint8)
    lo = (size - hole) // 2
    mask[..., lo:lo + hole, lo:lo + hole] = 1
    return mask


def test_fills_replace_only_the_hole():
    c = codec()
    gt = c.to_uint8(c.encode(fashion_subset(8, train=False)[0]))
    mask = _centre().expand_as(gt)
    for fill in border.FILLS:
        out = border.filled(gt, mask, fill, seed=0)
        assert torch.equal(out[mask == 0], gt[mask == 0])
    assert (border.filled(gt, mask, "black", 0)[mask == 1] == 0).all()
    assert (border.filled(gt, mask, "white", 0)[mask == 1] == 255).all()
    assert torch.equal(border.filled(gt, mask, "noise", 3), border.filled(gt, mask, "noise", 3))


def test_an_empty_hole_leaves_every_fill_at_the_ground_truth(tmp_path, extractor_path):
    recon = _recon_file(tmp_path / "forget.safetensors", torch.zeros(1, 1, 32, 32, dtype=torch.uint8))
    acc = border.border_accuracy(recon, extractor_path, batch_size=32, seed=0)
    assert len(set(acc.values())) == 1


def test_a_hole_over_the_whole_image_leaves_one_answer(tmp_path, extractor_path):
    """A black image is the same input for every label: accuracy is the share of the one class it is called."""
    recon = _recon_file(tmp_path / "forget.safetensors", torch.ones(1, 1, 32, 32, dtype=torch.uint8))
    labels = fashion_subset(64, train=False)[1]
    acc = border.border_accuracy(recon, extractor_path, batch_size=32, seed=0)["black"]
    shares = {float((labels == k).double().mean()) for k in range(10)}
    assert acc in shares


def test_the_table_reads_each_named_sets_original_reconstructions(tmp_path, extractor_path, monkeypatch):
    params = base_params()
    params["splits"]["sets"] = {"a": {}, "b": {}}  # set_names reads only the names
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        recon = Path(paths.recon_dir(paths.set_root(params["dataset"], name), params["models"][0], *paths.ORIGINAL,
                                     "center"))
        for which in paths.SETS:
            _recon_file(recon / f"{which}.safetensors", _centre())
    table = border.border_table(params, "center", extractor_path)
    assert list(zip(table["set"], table["images"])) == [("a", "forget"), ("a", "retain"), ("b", "forget"),
                                                         ("b", "retain")]
    assert list(table.columns[2:]) == list(border.FILLS)
    assert table[list(border.FILLS)].stack().between(0, 1).all()


def test_the_command_names_a_missing_reconstruction_instead_of_a_traceback(tmp_path, monkeypatch, capsys):
    """Before a run (a fresh clone), the command says which file is missing and what makes it."""
    from helpers import PARAMS_PATH

    monkeypatch.chdir(tmp_path)
    assert border.main(["--params", str(PARAMS_PATH)]) == 2
    err = capsys.readouterr().err
    assert "results/fashion_mnist/recon/mae/original/base/center/forget.safetensors is missing" in err
    assert "generate stage" in err and "Traceback" not in err
    (tmp_path / "bad.yaml").write_text("seed: [\n")
    assert border.main(["--params", "bad.yaml"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
