"""The metric extractor and scores: FID/IS/cosine/accuracy in evaluate.score against torch-fidelity's own pipeline."""

from __future__ import annotations

import math

import pytest
import torch
import torch_fidelity

from helpers import Uint8RGB, base_params, codec, fashion_subset
from pipeline_lib.evaluation import scores as evaluate, extractor
from pipeline_lib.training import trainer
from pipeline_lib.runtime.errors import DataError
from pipeline_lib.training.loaders import ImageLoader
from pipeline_lib.params import dataset

N = 120  # images per evaluation set

# torch-fidelity asks its DataLoader for 4 workers on this 2-core machine
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A Classifier trained for a few steps on 2000 real training images and saved as the pipeline does."""
    params = base_params()
    c = dataset.codec(params)
    images, labels = fashion_subset(2000, train=True)
    torch.manual_seed(0)
    net = extractor.Classifier(1, 10, params["extractor"]["feature_dim"])
    g = torch.Generator().manual_seed(0)
    loader = ImageLoader(c.encode(images), 100, g, labels=labels)
    stats = trainer.fit(extractor.ClassifierObjective(net), loader,
                        {"epochs": 1, "batch_size": 100, "optimizer": {"name": "adam", "lr": 2e-3}},
                        torch.device("cpu"), desc="extractor-test")
    path = tmp_path_factory.mktemp("extractor") / "classifier.safetensors"
    extractor.save_extractor(net, path, c.mean, c.std, {"training": stats})
    return net.eval(), path, stats


def _eval_set(cls: int, offset: int = 0):
    images, labels = fashion_subset(N, train=False, classes=[cls], offset=offset)
    c = codec()
    return c.to_uint8(c.encode(images)), labels


def _features(images, path):
    return evaluate.extract_features(images, path, batch_size=64)


def test_extractor_learned_something(trained):
    net, _, stats = trained
    assert stats["final_losses"]["loss"] < stats["first_loss"]
    images, labels = fashion_subset(500, train=False)
    with torch.no_grad():
        acc = (net(codec().encode(images)).argmax(1) == labels).float().mean()
    assert float(acc) > 0.5  # far above chance (0.1)


def test_save_load_extractor_round_trip(trained):
    net, path, _ = trained
    loaded, info = extractor.load_extractor(path)
    assert info["feature_dim"] == net.feature.out_features and info["num_classes"] == 10 and info["in_chans"] == 1
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    with pytest.raises(DataError, match="missing"):
        extractor.load_extractor(path.with_name("nope.safetensors"))


def test_features_match_the_classifier(trained):
    net, path, _ = trained
    images, _ = _eval_set(0)
    feats = _features(images, path)
    assert feats["feat"].shape == (N, net.feature.out_features)
    with torch.no_grad():
        x = images.float().div(255.0)
        c = codec()
        expected = net.features((x - c.mean) / c.std)
    assert torch.allclose(feats["feat"].float(), expected, atol=1e-5)


def test_fid_of_a_set_with_itself_is_zero_and_other_classes_score_higher(trained):
    _, path, _ = trained
    tshirts, labels = _eval_set(0)
    ref = _features(tshirts, path)
    same = evaluate.score(_features(tshirts, path), ref, labels, seed=0)
    assert abs(same["fid"]) < 1e-3
    assert same["cosine"] == pytest.approx(1.0, abs=1e-9)
    # other T-shirts: small; trousers: much larger
    other_tshirts, _ = _eval_set(0, offset=N)
    trousers, _ = _eval_set(1)
    near = evaluate.score(_features(other_tshirts, path), ref, labels, seed=0)["fid"]
    far = evaluate.score(_features(trousers, path), ref, labels, seed=0)
    assert far["fid"] > 1.0 and far["fid"] > 3 * near
    assert far["cosine"] < same["cosine"]


def test_fid_and_is_equal_torch_fidelity(trained):
    _, path, _ = trained
    a, labels = _eval_set(0)
    b, _ = _eval_set(7)
    ours = evaluate.score(_features(b, path), _features(a, path), labels, seed=0)
    extractor.register()
    theirs = torch_fidelity.calculate_metrics(
        input1=Uint8RGB(b), input2=Uint8RGB(a), fid=True, isc=True, isc_splits=10, rng_seed=0,
        feature_extractor=extractor.EXTRACTOR_NAME, feature_extractor_weights_path=str(path),
        cuda=False, cache=False, verbose=False, batch_size=50,
    )
    ref_fid = theirs["frechet_inception_distance"]
    assert ref_fid > 1.0
    assert ours["fid"] == pytest.approx(ref_fid, rel=1e-3)
    assert ours["is"] == pytest.approx(theirs["inception_score_mean"], rel=1e-3)
    assert ours["is_std"] == pytest.approx(theirs["inception_score_std"], rel=1e-3, abs=1e-6)


def test_accuracy_and_cosine_computed_independently(trained):
    net, path, _ = trained
    a, labels = _eval_set(3)
    b, _ = _eval_set(3, offset=N)
    fa, fb = _features(a, path), _features(b, path)
    result = evaluate.score(fb, fa, labels, seed=0)
    with torch.no_grad():
        c = codec()
        pred = net(((b.float() / 255.0) - c.mean) / c.std).argmax(1)
    assert result["accuracy"] == pytest.approx(float((pred == labels).double().mean()), abs=1e-12)
    cos = torch.stack([torch.dot(u.double(), v.double()) / (u.double().norm() * v.double().norm())
                       for u, v in zip(fb["feat"], fa["feat"])]).mean()
    assert result["cosine"] == pytest.approx(float(cos), rel=1e-9)
    assert result["images"] == N
    assert all(math.isfinite(result[k]) for k in ("fid", "is", "is_std", "cosine", "accuracy"))


def test_score_rejects_mismatched_sizes(trained):
    _, path, _ = trained
    a, labels = _eval_set(0)
    fa = _features(a, path)
    short = {k: v[:-1] for k, v in fa.items()}
    with pytest.raises(DataError, match="reconstructions"):
        evaluate.score(short, fa, labels, seed=0)


def test_features_save_load_round_trip(trained, tmp_path):
    _, path, _ = trained
    a, _ = _eval_set(5)
    fa = _features(a, path)
    evaluate.save_features(fa, tmp_path / "ref" / "forget.safetensors")
    back = evaluate.load_features(tmp_path / "ref" / "forget.safetensors")
    assert set(back) == set(fa) and all(torch.equal(back[k], fa[k]) for k in fa)
    with pytest.raises(DataError, match="reference stage"):
        evaluate.load_features(tmp_path / "ref" / "retain.safetensors")


# --- KID ----------------------------------------------------------------------------------------------------

def test_kid_is_near_zero_for_a_set_with_itself_and_grows_with_the_shift(trained):
    _, path, _ = trained
    tshirts, labels = _eval_set(0)
    ref = _features(tshirts, path)
    same = evaluate.score(_features(tshirts, path), ref, labels, seed=0)
    other_tshirts, _ = _eval_set(0, offset=N)
    trousers, _ = _eval_set(1)
    near = evaluate.score(_features(other_tshirts, path), ref, labels, seed=0)
    far = evaluate.score(_features(trousers, path), ref, labels, seed=0)
    assert far["kid"] > 0 and far["kid_std"] > 0
    # the unbiased MMD^2 of a set with itself is slightly negative (about -4 % of the trouser score here)
    assert abs(same["kid"]) < 0.06 * far["kid"]
    assert abs(near["kid"]) < 0.1 * far["kid"]
    assert all(math.isfinite(r[k]) for r in (same, near, far) for k in ("kid", "kid_std"))


def test_kid_equals_torch_fidelity_and_is_seeded(trained):
    _, path, _ = trained
    a, labels = _eval_set(0)
    b, _ = _eval_set(7)
    fa, fb = _features(a, path), _features(b, path)
    ours = evaluate.score(fb, fa, labels, seed=3)
    extractor.register()
    theirs = torch_fidelity.calculate_metrics(
        input1=Uint8RGB(b), input2=Uint8RGB(a), kid=True, kid_subsets=100, kid_subset_size=N // 2, rng_seed=3,
        feature_extractor=extractor.EXTRACTOR_NAME, feature_extractor_weights_path=str(path),
        cuda=False, cache=False, verbose=False, batch_size=50, save_cpu_ram=True,
    )
    assert ours["kid"] > 0
    assert ours["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4)
    assert ours["kid_std"] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-4)
    again = evaluate.score(fb, fa, labels, seed=3)
    assert (again["kid"], again["kid_std"]) == (ours["kid"], ours["kid_std"])
    assert evaluate.score(fb, fa, labels, seed=4)["kid"] != ours["kid"]


@pytest.mark.parametrize("n, size", [(4, 2), (48, 24), (150, 75), (900, 450), (2001, 1000), (5000, 1000)])
def test_kid_subset_size(n, size):
    assert evaluate.kid_subset_size(n) == size


def test_kid_refuses_sets_too_small_for_pairs():
    with pytest.raises(DataError, match="at least 4 images per set, got 3"):
        evaluate.kid(torch.randn(3, 8), torch.randn(3, 8), seed=0)
