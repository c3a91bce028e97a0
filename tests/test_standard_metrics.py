"""Inception-v3 and CLIP scores: the one-line fallback without weights, and real networks from local checkpoints.

No pretrained weights can be fetched here, so the checkpoints are the real architectures (torch-fidelity's
Inception-v3, open_clip's ViT-S-32) with random weights, saved to files the functions load like real ones.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch_fidelity
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from helpers import Uint8RGB, codec, fashion_subset
from pipeline_lib.evaluation import standard_extractors as std
from pipeline_lib.runtime.errors import DataError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = 16
# Inception-v3 sees 299 px (~0.2 s an image on this CPU) and IS takes 10 splits: 10 images for FID of a set with
# itself, 16 where IS must be above 1 (splits of 2 images)
N_INCEPTION = 10
CLIP_ARCH = "ViT-S-32"


def _eval_set(cls: int, n: int = N) -> torch.Tensor:
    images, _ = fashion_subset(n, train=False, classes=[cls])
    c = codec()
    return c.to_uint8(c.encode(images))  # uint8 [N, 1, 32, 32]


class _RandomInception(FeatureExtractorInceptionV3):
    """torch-fidelity's Inception-v3 keeping its random initialisation instead of loading a checkpoint."""

    def load_state_dict(self, state_dict, strict=True, assign=False):
        return None


@pytest.fixture(scope="module")
def inception_dir(tmp_path_factory):
    """A directory holding a complete, randomly initialised `inception-v3-compat` checkpoint."""
    d = tmp_path_factory.mktemp("inception")
    torch.save({}, d / "empty.pth")
    torch.manual_seed(0)
    net = _RandomInception("random", ["2048"], feature_extractor_weights_path=str(d / "empty.pth"))
    for m in net.modules():  # variance-preserving init: PyTorch's default lets 90 layers shrink features to ~1e-8
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.save(net.state_dict(), d / std.INCEPTION_FILE)
    return d


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory):
    open_clip = pytest.importorskip("open_clip", reason="open_clip (the optional 'clip' extra) is not installed")
    torch.manual_seed(0)
    model = open_clip.create_model(CLIP_ARCH, pretrained=None)
    path = tmp_path_factory.mktemp("clip") / "vit-s-32.pt"
    torch.save(model.state_dict(), path)
    return path


# --- no weights ---------------------------------------------------------------------------------------------

def test_missing_inception_weights_give_one_clear_line(tmp_path):
    x = _eval_set(0)
    for configured, where in ((tmp_path / "inception.pth", tmp_path / "inception.pth"),
                              (tmp_path, tmp_path / std.INCEPTION_FILE)):
        ok, reason = std.available({"kind": "inception", "weights": str(configured)})
        assert not ok
        assert reason == (f"Inception-v3 weights not found at {where}: using the pipeline's extractor "
                          f"(put pt_inception-2015-12-05-6726825d.pth there to enable)")
        with pytest.raises(DataError) as info:
            std.inception_scores(x, x, configured, batch_size=8, seed=0)
        assert str(info.value) == reason
    assert std.available({"kind": "inception", "weights": None}) == (
        False, "Inception-v3 weights not configured: using the pipeline's extractor")


def test_missing_clip_weights_give_one_clear_line(tmp_path):
    pytest.importorskip("open_clip", reason="open_clip (the optional 'clip' extra) is not installed")
    path = tmp_path / "clip.pt"
    ok, reason = std.available({"kind": "clip", "arch": CLIP_ARCH, "weights": str(path)})
    assert not ok
    assert reason == (f"CLIP {CLIP_ARCH} weights not found at {path}: using the pipeline's extractor "
                      f"(put an open_clip {CLIP_ARCH} checkpoint there to enable)")
    x = _eval_set(0)
    with pytest.raises(DataError) as info:
        std.clip_cosine(x, x, CLIP_ARCH, path, batch_size=8)
    assert str(info.value) == reason


@pytest.mark.parametrize("spec, message", [
    ({"kind": "dinov2", "weights": None}, "must be 'inception', 'clip' or 'places', got 'dinov2'"),
    ({"weights": None}, "got None"),
    ({"kind": "inception"}, "'inception' needs a 'weights' path"),
    ({"kind": "clip", "weights": None}, "needs an open_clip 'arch' name, got None"),
])
def test_malformed_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        std.available(spec)


def test_unknown_clip_arch():
    pytest.importorskip("open_clip", reason="open_clip (the optional 'clip' extra) is not installed")
    with pytest.raises(ValueError, match="open_clip has no model 'ViT-Q-99'"):
        std.available({"kind": "clip", "arch": "ViT-Q-99", "weights": None})


def test_images_are_checked_before_any_network_loads(tmp_path):
    x = _eval_set(0)
    with pytest.raises(DataError, match=r"reconstructions must be uint8 \[N, 1 or 3, H, W\], got torch.float32"):
        std.inception_scores(x.float(), x, tmp_path, batch_size=8, seed=0)
    with pytest.raises(DataError, match=r"reconstructions \(15, 1, 32, 32\) and ground truth \(16, 1, 32, 32\)"):
        std.clip_cosine(x[1:], x, CLIP_ARCH, tmp_path / "clip.pt", batch_size=8)


# --- Inception-v3 -------------------------------------------------------------------------------------------

def test_inception_scores_of_identical_sets(inception_dir):
    tshirts = _eval_set(0, N_INCEPTION)
    assert std.available({"kind": "inception", "weights": str(inception_dir)}) == (
        True, f"Inception-v3 weights at {inception_dir / std.INCEPTION_FILE}")
    same = std.inception_scores(tshirts, tshirts.clone(), inception_dir, batch_size=8, seed=0)
    assert set(same) == {"fid", "is", "is_std", "kid", "kid_std", "images"} and same["images"] == N_INCEPTION
    assert all(math.isfinite(same[k]) for k in ("fid", "is", "is_std", "kid", "kid_std"))
    assert abs(same["fid"]) < 1e-3
    assert same["is"] >= 1.0 - 1e-6


def test_inception_scores_equal_torch_fidelity(inception_dir):
    """The same checkpoint through torch-fidelity's own calculate_metrics.

    Matching IS and KID shows both feature layers (logits and 2048-d pool) and the grey-to-RGB input agree;
    FID on those features is evaluate.fid, checked against torch-fidelity in test_metrics, so the reference
    skips its own FID (a 2048-d matrix square root costs seconds).
    """
    tshirts, trousers = _eval_set(0), _eval_set(1)
    weights = inception_dir / std.INCEPTION_FILE
    ours = std.inception_scores(trousers, tshirts, weights, batch_size=N, seed=0)
    theirs = torch_fidelity.calculate_metrics(
        input1=Uint8RGB(trousers), input2=Uint8RGB(tshirts), isc=True, kid=True, isc_splits=10,
        kid_subsets=100, kid_subset_size=N // 2, rng_seed=0, feature_extractor="inception-v3-compat",
        feature_extractor_weights_path=str(weights), cuda=False, cache=False, verbose=False, batch_size=N,
        save_cpu_ram=True,
    )
    assert ours["images"] == N
    assert ours["fid"] > 1.0 and math.isfinite(ours["fid"])  # random weights still separate trousers from T-shirts
    # random logits barely differ between images: compare IS by its excess over 1
    assert ours["is"] - 1 == pytest.approx(theirs["inception_score_mean"] - 1, rel=1e-3)
    assert ours["is_std"] == pytest.approx(theirs["inception_score_std"], rel=1e-3)
    assert ours["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4, abs=1e-7)
    assert ours["kid_std"] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-4)


def test_an_incompatible_inception_checkpoint_is_named(tmp_path):
    bad = tmp_path / std.INCEPTION_FILE
    torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    x = _eval_set(0)[:4]
    with pytest.raises(DataError, match=f"Inception-v3 weights at {bad} could not be loaded: .*state_dict"):
        std.inception_scores(x, x, tmp_path, batch_size=4, seed=0)


# --- CLIP ---------------------------------------------------------------------------------------------------

def test_clip_cosine_from_a_local_checkpoint(clip_weights):
    tshirts, trousers = _eval_set(0), _eval_set(1)
    assert std.available({"kind": "clip", "arch": CLIP_ARCH, "weights": str(clip_weights)})[0]
    same = std.clip_cosine(tshirts, tshirts.clone(), CLIP_ARCH, clip_weights, batch_size=5)
    other = std.clip_cosine(trousers, tshirts, CLIP_ARCH, clip_weights, batch_size=16)
    assert same == pytest.approx(1.0, abs=1e-9)
    assert math.isfinite(other) and -1.0 <= other < same - 1e-6
    assert std.clip_cosine(trousers, tshirts, CLIP_ARCH, clip_weights, batch_size=3) == pytest.approx(other, abs=1e-6)


def test_clip_cosine_matches_open_clips_own_pipeline(clip_weights):
    """Our tensor resize + normalise against open_clip's PIL preprocessing and encode_image, image by image."""
    import open_clip
    from PIL import Image

    tshirts, trousers = _eval_set(0)[:4], _eval_set(1)[:4]
    model, _, preprocess = open_clip.create_model_and_transforms(CLIP_ARCH, pretrained=str(clip_weights))
    model.eval()
    with torch.no_grad():
        def embed(images):
            pil = [Image.fromarray(img[0].numpy()) for img in images]  # 2-D uint8: mode L
            return model.encode_image(torch.stack([preprocess(p) for p in pil])).double()

        expected = torch.nn.functional.cosine_similarity(embed(trousers), embed(tshirts), dim=1).mean()
    ours = std.clip_cosine(trousers, tshirts, CLIP_ARCH, clip_weights, batch_size=4)
    assert ours == pytest.approx(float(expected), abs=5e-4)  # bicubic in torch vs PIL


def test_an_incompatible_clip_checkpoint_is_named(tmp_path):
    pytest.importorskip("open_clip", reason="open_clip (the optional 'clip' extra) is not installed")
    bad = tmp_path / "clip.pt"
    torch.save({"visual.proj": torch.zeros(2, 2)}, bad)
    x = _eval_set(0)[:2]
    with pytest.raises(DataError, match=f"CLIP {CLIP_ARCH} weights at {bad} could not be loaded"):
        std.clip_cosine(x, x, CLIP_ARCH, bad, batch_size=2)
