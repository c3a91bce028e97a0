"""The dress rehearsal (bench/rehearsal.py): its checkpoint writer matches the official code's layouts, its
wiring runs at tiny size so the script cannot rot, and docs/rehearsal.md is what its renderer makes of the
committed measurements (numbers generated, never typed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from helpers import REPO_ROOT
from pipeline_lib.models.palette_official import schedule_buffers

sys.path.insert(0, str(REPO_ROOT / "bench"))

import official_weights  # noqa: E402
import rehearsal  # noqa: E402

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "official"


def _official(name: str) -> dict[str, tuple[int, ...]]:
    tensors = load_file(str(FIXTURES / f"{name}.safetensors"))
    return {k[len("ckpt."):]: tuple(v.shape) for k, v in tensors.items() if k.startswith("ckpt.")}


@pytest.mark.parametrize("name, shapes", [
    # the fixtures' sizes (tests/fixtures/official/README.md), made by the papers' own code
    ("mae_vit", lambda: official_weights.mae_shapes(32, 8, 32, 2, 32, 1, 4.0)),
    ("maskgit_vqgan", lambda: official_weights.maskgit_vqgan_shapes(64, 16, 32, (1, 2), 2)),
    ("mage_vit", lambda: official_weights.mage_shapes(32, 32, 2, 32, 1, 4.0, codebook_size=64, downsample=2,
                                                      patch_size=4)),
    ("palette_unet", lambda: {**official_weights.palette_unet_shapes([32, 32], 2),
                              **{k: tuple(v.shape) for k, v in schedule_buffers("linear", 10, 1e-4, 0.2).items()}}),
])
def test_the_writer_has_the_official_codes_keys_and_shapes(name, shapes):
    assert shapes() == _official(name)


def test_the_published_sizes_are_the_published_models():
    """ViT-L/16 MAE (with its decoder), MAGE ViT-B on MaskGIT's VQGAN, Palette's U-Net of about 62 M parameters."""
    import math

    def millions(s):
        return sum(math.prod(v) for k, v in s.items() if not k.endswith("position_ids")) / 1e6

    mae = official_weights.mae_shapes(224, 16, 1024, 24, 512, 8, 4.0)
    assert mae["pos_embed"] == (1, 197, 1024) and 329 < millions(mae) < 331
    mage = official_weights.mage_shapes(256, 768, 12, 768, 8, 4.0, codebook_size=1024, downsample=16)
    assert mage["token_emb.word_embeddings.weight"] == (2025, 768)
    vq = official_weights.maskgit_vqgan_shapes(1024, 256, 128)
    assert vq["encoder.conv_out.weight"] == (256, 512, 1, 1)
    palette = official_weights.palette_unet_shapes([64, 128, 256, 512], 2)
    assert 62 < millions(palette) < 63 and palette["denoise_fn.input_blocks.0.0.weight"] == (64, 6, 3, 3)


@pytest.mark.engine
@pytest.mark.slow
def test_the_rehearsal_runs_its_wiring_at_tiny_size(tmp_path):
    """The whole chain (weights written and served, preset + overlay, project copy, Snakemake over the DAG,
    measurements, FLOP counts, json, table) on the ImageNet preset's MAE family at 32 px. One family only: the
    full tiny DAG of either preset takes minutes (the metrics jobs load Inception-v3 and CLIP each)."""
    out = tmp_path / "imagenet.json"
    proc = subprocess.run([sys.executable, "bench/rehearsal.py", "--preset", "imagenet", "--tiny", "--models", "mae",
                           "--out", str(out), "--weights-dir", str(tmp_path / "weights"), "--device", "cpu"],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["machine"]) >= {"cpu", "cpus", "torch_threads", "torch", "load_average"}
    assert result["command"] == "python bench/rehearsal.py --preset imagenet --tiny --models mae"
    stages = result["stages"]
    jobs = {"data": 1, "splits": 1, "weights": 2, "pretrain": 1, "extractor": 1, "reference": 1, "noise": 1,
            "unlearn": 1, "generate": 2, "metrics": 2, "summary": 1, "aggregate": 1}
    assert {rule: e["jobs"] for rule, e in stages.items()} == jobs
    for rule, entry in stages.items():  # every job measured, Snakemake's benchmark or the monitor
        assert set(entry) >= {"jobs", "wall_s", "max_rss_mb", "flops_per_image", "images", "images_per_s"}, rule
        assert entry["wall_s"] > 0 and entry["max_rss_mb"] > 50, (rule, entry)
    # 2 forget + 2 retain classes x 2 val images, reconstructed by the original and the unlearned MAE
    assert stages["generate"]["images"] == stages["metrics"]["images"] == 16
    assert stages["unlearn"]["images"] == 8  # one step: 4 forget + 4 retain images
    for rule in ("unlearn", "generate", "metrics", "extractor", "reference"):
        assert stages[rule]["flops_per_image"] > 0, rule
    # the metric networks: Inception-v3 (~5.7 GFLOP at 299 px) and CLIP, on a reconstruction and its truth
    assert stages["metrics"]["flops_per_image"] > 2 * 5e9
    table = rehearsal.markdown_table(result)
    assert table.splitlines()[0].startswith("| rule | jobs | wall s | peak RSS MB | GFLOP / image")
    assert "|   generate / mae | 2 |" in proc.stdout


def test_the_docs_page_is_rendered_from_the_committed_measurements():
    assert (REPO_ROOT / "docs" / "rehearsal.md").read_text() == rehearsal.render_docs(), (
        "docs/rehearsal.md is generated: python bench/rehearsal.py --render")
    readme = (REPO_ROOT / "README.md").read_text()
    assert "<!-- generated: rehearsal -->" in readme
    assert readme == rehearsal.render_readme(readme), "the README's rehearsal table is generated: --render"


def test_mfu_is_achieved_flops_over_the_peak():
    stages = {"unlearn": {"flops_per_image": 2e12, "images_per_s": 10.0},
              "metrics": {"flops_per_image": 1e10, "images_per_s": 5.0}}
    rehearsal.add_mfu(stages, 100e12)
    assert stages["unlearn"]["mfu"] == 0.2 and "mfu" not in stages["metrics"]
    assert rehearsal.peak_tflops_for("NVIDIA H100 80GB HBM3", None) == 989.0
    assert rehearsal.peak_tflops_for("Some GPU", 50.0) == 50.0
