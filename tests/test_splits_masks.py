"""Class splits on the real labels, and the geometry of the task masks."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import base_params, fashion
from pipeline_lib.data import masks
from pipeline_lib.data.datasets import CLASSES
from pipeline_lib.runtime.errors import ParamsError
from pipeline_lib.params.sets import make_splits


def _labels():
    return fashion(True)[1], fashion(False)[1]


def _split(params=None):
    params = params or base_params()
    train_labels, test_labels = _labels()
    return params, make_splits(params, train_labels, test_labels)


# --- splits ------------------------------------------------------------------------------------------------

def test_indices_come_from_the_right_classes():
    params, split = _split()
    train_labels, test_labels = _labels()
    forget = {CLASSES.index(c) for c in params["splits"]["forget"]}
    retain = {CLASSES.index(c) for c in params["splits"]["retain"]}
    proxy = set(range(10)) - forget - retain
    expected = {"forget": forget, "retain": retain, "proxy": proxy}
    for part, labels in (("unlearn", train_labels), ("eval", test_labels)):
        for name, idx in split[part].items():
            got = set(labels[torch.tensor(idx)].tolist())
            assert got == expected[name], f"{part}/{name}: classes {got}, expected {expected[name]}"
    assert set(split["eval"]) == {"forget", "retain"}
    assert set(split["unlearn"]) == {"forget", "retain", "proxy"}


def test_counts_per_class_and_uniqueness():
    params, split = _split()
    train_labels, test_labels = _labels()
    s = params["splits"]
    for part, labels, per_class, size in (("unlearn", train_labels, s["unlearn_per_class"], 60000),
                                          ("eval", test_labels, s["eval_per_class"], 10000)):
        for name, idx in split[part].items():
            assert len(set(idx)) == len(idx), f"{part}/{name} repeats an index"
            assert all(0 <= i < size for i in idx)
            counts = torch.bincount(labels[torch.tensor(idx)], minlength=10)
            for c in split["class_indices"][name]:
                assert int(counts[c]) == per_class, f"{part}/{name}/{CLASSES[c]}: {int(counts[c])} != {per_class}"


def test_proxy_is_the_classes_in_neither_split():
    params, split = _split()
    named = set(params["splits"]["forget"]) | set(params["splits"]["retain"])
    assert set(split["classes"]["proxy"]) == set(CLASSES) - named
    assert split["classes"]["forget"] == params["splits"]["forget"]
    assert split["classes"]["retain"] == params["splits"]["retain"]
    assert [CLASSES[i] for i in split["class_indices"]["proxy"]] == split["classes"]["proxy"]


def test_forget_and_retain_never_share_an_image():
    _, split = _split()
    for part in ("unlearn", "eval"):
        sets = [set(v) for v in split[part].values()]
        for i in range(len(sets)):
            for j in range(i + 1, len(sets)):
                assert not sets[i] & sets[j]


def test_splits_are_deterministic_for_a_seed_and_json_serialisable():
    params, a = _split()
    _, b = _split(base_params())
    assert a == b
    assert json.loads(json.dumps(a)) == a
    other = base_params()
    other["seed"] = params["seed"] + 1
    _, c = _split(other)
    assert c["unlearn"]["forget"] != a["unlearn"]["forget"]
    assert c["eval"]["retain"] != a["eval"]["retain"]


def test_small_counts_give_small_splits():
    params = base_params()
    params["splits"]["unlearn_per_class"] = 3
    params["splits"]["eval_per_class"] = 2
    _, split = _split(params)
    assert len(split["unlearn"]["forget"]) == 3 * len(params["splits"]["forget"])
    assert len(split["eval"]["retain"]) == 2 * len(params["splits"]["retain"])


@pytest.mark.parametrize("key, value", [("unlearn_per_class", 6001), ("eval_per_class", 1001)])
def test_too_many_images_per_class(key, value):
    params = base_params()
    params["splits"][key] = value
    train_labels, test_labels = _labels()
    with pytest.raises(ParamsError) as info:
        make_splits(params, train_labels, test_labels)
    assert f"splits.{key}" in str(info.value) and str(value) in str(info.value)


def test_largest_possible_count_works():
    params = base_params()
    params["splits"]["eval_per_class"] = 1000  # every test image of the class
    _, split = _split(params)
    _, test_labels = _labels()
    forget = split["class_indices"]["forget"]
    assert sorted(split["eval"]["forget"]) == torch.isin(test_labels, torch.tensor(forget)).nonzero().flatten().tolist()


# --- masks --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("image_size, size", [(32, 16), (32, 8), (28, 14), (32, 4)])
def test_center_mask_geometry(image_size, size):
    m = masks.center_mask(3, image_size, size)
    assert m.shape == (3, 1, image_size, image_size) and m.dtype == torch.bool
    assert torch.equal(m[0], m[1]) and torch.equal(m[0], m[2])
    rows = m[0, 0].any(dim=1).nonzero().flatten()
    cols = m[0, 0].any(dim=0).nonzero().flatten()
    top, bottom = int(rows.min()), int(rows.max())
    left, right = int(cols.min()), int(cols.max())
    assert bottom - top + 1 == size and right - left + 1 == size
    assert m[0, 0, top: bottom + 1, left: right + 1].all()  # a solid square
    assert top == image_size - 1 - bottom and left == image_size - 1 - right  # centred (even sizes)
    assert float(m.float().mean()) == pytest.approx(size**2 / image_size**2)


def test_center_mask_odd_hole_is_centred_within_a_pixel():
    m = masks.center_mask(1, 32, 5)[0, 0]
    rows = m.any(dim=1).nonzero().flatten()
    assert len(rows) == 5 and abs(int(rows.min()) - (31 - int(rows.max()))) <= 1
    assert int(m.sum()) == 25


@pytest.mark.parametrize("ratio", [0.75, 0.5, 0.1, 0.9])
def test_random_patch_mask_hides_whole_patches(ratio):
    image_size, patch, batch = 32, 4, 16
    g = torch.Generator().manual_seed(0)
    m = masks.random_patch_mask(batch, image_size, patch, ratio, g)
    assert m.shape == (batch, 1, image_size, image_size) and m.dtype == torch.bool
    grid = image_size // patch
    blocks = m.view(batch, grid, patch, grid, patch).permute(0, 1, 3, 2, 4).reshape(batch, grid * grid, patch * patch)
    whole = blocks.all(dim=-1)
    none = ~blocks.any(dim=-1)
    assert (whole | none).all(), "a patch is partly hidden"
    expected = int(round(ratio * grid * grid))
    assert (whole.sum(dim=1) == expected).all()
    assert int(m[0].sum()) == expected * patch * patch
    # samples get different patches, and a fixed seed gives the same masks
    assert len({tuple(row.tolist()) for row in whole}) > 1
    again = masks.random_patch_mask(batch, image_size, patch, ratio, torch.Generator().manual_seed(0))
    assert torch.equal(m, again)


def test_sample_mask_kinds():
    g = torch.Generator().manual_seed(1)
    center = masks.sample_mask({"kind": "center", "size": 16}, 4, 32, 4, g)
    assert torch.equal(center, masks.center_mask(4, 32, 16))
    rnd = masks.sample_mask({"kind": "random", "ratio": 0.5}, 4, 32, 4, g)
    assert (rnd.flatten(1).sum(dim=1) == 32 * 16).all()
    kinds = set()
    for _ in range(40):
        m = masks.sample_mask({"kind": "mixed", "size": 16, "ratio": 0.75}, 2, 32, 4, g)
        kinds.add("center" if torch.equal(m, masks.center_mask(2, 32, 16)) else "random")
    assert kinds == {"center", "random"}
    with pytest.raises(ValueError):
        masks.sample_mask({"kind": "ring"}, 1, 32, 4, g)


def test_apply_mask_fills_only_hidden_pixels():
    x = torch.randn(2, 1, 32, 32)
    m = masks.center_mask(2, 32, 16)
    y = masks.apply_mask(x, m, fill=-7.0)
    assert (y[m] == -7.0).all()
    assert torch.equal(y[~m], x[~m])
