"""Class-folder trees (ImageNet, Places-365): the recorded file list, class splits by name, streamed
decoding with resize + centre crop, and each family's own preprocessing."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from folder_tree import (IMAGENET_FORGET, IMAGENET_PROXY, IMAGENET_RETAIN, PLACES_FORGET, PLACES_PROXY,
                         PLACES_RETAIN, folder_params, make_tree)
from pipeline_lib.models import checkpoints
from pipeline_lib.params import load
from pipeline_lib.data import image_folder, streaming
from pipeline_lib.runtime.errors import DataError, ParamsError
from pipeline_lib.training.loaders import BalancedLoader, ImageLoader, mask_sampler
from pipeline_lib.params.sets import make_splits
from pipeline_lib.params import dataset

IMAGENET = IMAGENET_FORGET + IMAGENET_RETAIN + IMAGENET_PROXY
PLACES = PLACES_RETAIN + PLACES_FORGET + PLACES_PROXY


@pytest.fixture(scope="module")
def imagenet_tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("imagenet"), IMAGENET, train=6, val=3)


@pytest.fixture(scope="module")
def imagenet_raw(imagenet_tree, tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    image_folder.record(str(imagenet_tree), raw)
    return raw


def test_class_names_follow_imagenet_and_places():
    assert image_folder.class_name("n01443537") == "n01443537"
    assert image_folder.class_name("airfield") == "airfield"
    assert image_folder.class_name("a/airfield") == "airfield"
    assert image_folder.class_name("/b/bakery/shop") == "bakery/shop"
    assert image_folder.class_name("bakery/shop") == "bakery/shop"


def test_record_lists_files_with_sizes_and_copies_nothing(imagenet_tree, imagenet_raw):
    assert sorted(p.name for p in imagenet_raw.iterdir()) == ["SOURCE.json", "files.tsv"]
    source = json.loads((imagenet_raw / "SOURCE.json").read_text())
    assert source["classes"] == sorted(IMAGENET)
    assert source["images"] == {"train": 6 * len(IMAGENET), "val": 3 * len(IMAGENET)}
    lines = (imagenet_raw / "files.tsv").read_text().splitlines()
    split, cls, rel, size = lines[0].split("\t")
    assert (split, cls) == ("train", sorted(IMAGENET)[0])
    assert int(size) == (imagenet_tree / "train" / rel).stat().st_size


def test_file_list_hash_is_stable_and_sees_a_changed_tree(tmp_path):
    tree = make_tree(tmp_path / "t", IMAGENET_FORGET + IMAGENET_RETAIN, train=2, val=1)
    first = image_folder.record(str(tree), tmp_path / "a")["files_sha256"]
    assert image_folder.record(str(tree), tmp_path / "b")["files_sha256"] == first
    assert (tmp_path / "a" / "files.tsv").read_bytes() == (tmp_path / "b" / "files.tsv").read_bytes()
    make_tree(tmp_path / "extra", [IMAGENET_FORGET[0]], train=1, val=0, seed=5)
    (tree / "train" / IMAGENET_FORGET[0] / "new.JPEG").write_bytes(
        next((tmp_path / "extra" / "train" / IMAGENET_FORGET[0]).iterdir()).read_bytes())
    assert image_folder.record(str(tree), tmp_path / "c")["files_sha256"] != first


def test_places_official_letter_level_names_classes_like_the_standard_tree(tmp_path):
    standard = image_folder.record(str(make_tree(tmp_path / "s", PLACES, 2, 1)), tmp_path / "rs")
    official = image_folder.record(str(make_tree(tmp_path / "o", PLACES, 2, 1, places_letters=True)), tmp_path / "ro")
    assert standard["classes"] == official["classes"] == sorted(PLACES)


def test_flat_official_val_rearranges_with_the_readme_one_liner(tmp_path):
    """docs/paper-scale.md's one line turns Places' flat val_256/ + places365_val.txt into val/<letter>/<category>/."""
    (tmp_path / "val_256").mkdir()
    make_tree(tmp_path / "gen", ["airfield", "bakery/shop"], train=0, val=2, suffix=".jpg")
    cats = "/a/airfield 0\n/b/bakery/shop 1\n"
    labels = []
    for i, path in enumerate(sorted((tmp_path / "gen" / "val").rglob("*.jpg"))):
        name = f"Places365_val_{i + 1:08d}.jpg"
        (tmp_path / "val_256" / name).write_bytes(path.read_bytes())
        labels.append(f"{name} {0 if 'airfield' in str(path) else 1}")
    (tmp_path / "categories_places365.txt").write_text(cats)
    (tmp_path / "places365_val.txt").write_text("\n".join(labels) + "\n")
    one_liner = ("join -1 2 -2 2 <(sort -k2,2 places365_val.txt) <(sort -k2,2 categories_places365.txt) | "
                 "while read n f c; do mkdir -p val$c && ln -s $PWD/val_256/$f val$c/; done")
    subprocess.run(["bash", "-c", one_liner], cwd=tmp_path, check=True)
    (tmp_path / "train").symlink_to(tmp_path / "gen" / "val")  # any train tree with the same classes
    source = image_folder.record(str(tmp_path), tmp_path / "raw")
    assert source["classes"] == ["airfield", "bakery/shop"]
    assert source["per_class"]["val"] == {"airfield": 2, "bakery/shop": 2}


def test_images_directly_in_the_split_are_refused(tmp_path):
    make_tree(tmp_path / "t", IMAGENET_FORGET, 1, 1)
    (tmp_path / "t" / "val" / "stray.JPEG").write_bytes(b"")
    with pytest.raises(DataError, match="one directory per class"):
        image_folder.record(str(tmp_path / "t"), tmp_path / "raw")


def test_validation_names_an_unset_root_and_every_missing_class(imagenet_tree):
    params = folder_params("imagenet", imagenet_tree, IMAGENET_FORGET, IMAGENET_RETAIN)
    load.validate_params(params)
    params["data"]["root"] = None
    with pytest.raises(ParamsError, match="'data.root' is not set"):
        load.validate_params(params)
    params = folder_params("imagenet", imagenet_tree, IMAGENET_FORGET + ["n00000001", "n00000002"], IMAGENET_RETAIN)
    with pytest.raises(ParamsError) as info:
        load.validate_params(params)
    assert "'splits.forget'" in str(info.value) and "n00000001, n00000002" in str(info.value)


def test_validation_reads_per_class_counts_from_the_record(imagenet_tree, imagenet_raw, tmp_path, monkeypatch):
    params = folder_params("imagenet", imagenet_tree, IMAGENET_FORGET, IMAGENET_RETAIN, unlearn_per_class=6,
                           eval_per_class=4)
    monkeypatch.chdir(tmp_path)
    load.validate_params(params)  # no record yet: the splits stage will say it
    (tmp_path / "data" / params["dataset"]).mkdir(parents=True)
    (tmp_path / "data" / params["dataset"] / "raw").symlink_to(imagenet_raw)
    with pytest.raises(ParamsError, match=r"'splits.eval_per_class' = 4 .* only 3"):
        load.validate_params(params)


def test_splits_by_name_draw_per_class_counts_with_the_seed(imagenet_tree, imagenet_raw):
    params = folder_params("imagenet", imagenet_tree, IMAGENET_FORGET, IMAGENET_RETAIN,
                           unlearn_per_class=4, eval_per_class=2)
    reader = dataset.reader(params, imagenet_raw)
    split = make_splits(params, reader.labels(True), reader.labels(False), names=reader.classes)
    assert split["classes"] == {"forget": IMAGENET_FORGET, "retain": IMAGENET_RETAIN, "proxy": IMAGENET_PROXY}
    labels = reader.labels(True)
    for part, names in split["classes"].items():
        got = [reader.classes[c] for c in labels[split["unlearn"][part]].tolist()]
        assert sorted(got) == sorted(n for n in names for _ in range(4))
    assert make_splits(params, reader.labels(True), reader.labels(False), names=reader.classes) == split
    params["seed"] = 1
    assert make_splits(params, reader.labels(True), reader.labels(False), names=reader.classes)["unlearn"] != split["unlearn"]
    params["splits"]["unlearn_per_class"] = 7
    with pytest.raises(ParamsError, match="'splits.unlearn_per_class' = 7 but class 'n0"):
        make_splits(params, reader.labels(True), reader.labels(False), names=reader.classes)


def test_decoding_gives_rgb_resized_and_centre_cropped(imagenet_tree, imagenet_raw):
    params = folder_params("imagenet", imagenet_tree, IMAGENET_FORGET, IMAGENET_RETAIN)
    params["data"]["image_size"] = 40
    reader = dataset.reader(params, imagenet_raw)
    images = reader.images(torch.arange(len(reader.labels(True))), True)
    grey = next(i for i, f in enumerate(images.files) if f.endswith("_00004.JPEG"))  # saved as "L"
    for i in (0, grey):
        x = images[i]
        assert x.shape == (3, 40, 40) and x.dtype == torch.uint8
    assert torch.equal(images[grey][0], images[grey][1])


def test_streamed_batches_are_the_same_for_any_worker_count(imagenet_tree, imagenet_raw):
    params = folder_params("imagenet", imagenet_tree, IMAGENET_FORGET, IMAGENET_RETAIN)
    params["data"]["image_size"] = 32
    reader = dataset.reader(params, imagenet_raw)
    images = reader.images(torch.arange(len(reader.labels(True))), True)
    codec = dataset.codec(params, "mae")

    def epoch(workers):
        streaming.configure(workers)
        g = torch.Generator().manual_seed(0)
        loader = ImageLoader(images, 5, g, mask_fn=mask_sampler({"kind": "random", "ratio": 0.5, "patch": 4}, 32, 4, g),
                             transform=codec.encode)
        return [(b["x"], b["mask"]) for b in loader]

    try:
        single, pooled = epoch(0), epoch(2)
    finally:
        streaming.configure(0)
    assert len(single) == len(pooled) == 8  # 36 images in batches of 5
    for (xa, ma), (xb, mb) in zip(single, pooled):
        assert torch.equal(xa, xb) and torch.equal(ma, mb)


def test_balanced_loader_streams_retain_and_forget(imagenet_tree, imagenet_raw):
    params = folder_params("imagenet", imagenet_tree, IMAGENET_FORGET, IMAGENET_RETAIN)
    params["data"]["image_size"] = 32
    reader = dataset.reader(params, imagenet_raw)
    codec = dataset.codec(params, "diffusion")
    g = torch.Generator().manual_seed(0)
    loader = BalancedLoader(reader.images([0, 1, 2], True), reader.images([6, 7, 8, 9], True), 2, g,
                            mask_sampler({"kind": "center", "size": 8}, 32, 1, g), transform=codec.encode)
    batches = list(loader)
    assert [b["x_f"].shape[0] for b in batches] == [2, 2]
    assert all(b["x_r"].shape == (2, 3, 32, 32) and -1 <= b["x_f"].min() and b["x_f"].max() <= 1 for b in batches)


def test_preprocessing_belongs_to_the_family():
    params = {"data": {"kind": "image_folder", "image_size": 8, "mean": None, "std": None}}
    white = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)
    assert torch.allclose(dataset.codec(params, "vqgan").encode(white), torch.ones(1, 3, 8, 8))
    assert torch.allclose(dataset.codec(params, "diffusion").encode(white * 0), -torch.ones(1, 3, 8, 8))
    mae = dataset.codec(params, "mae")
    x = mae.encode(white)
    assert torch.allclose(x[0, :, 0, 0], (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]))
    assert torch.equal(mae.to_uint8(x), white)
    # a data set that fixes one normalisation (Fashion-MNIST) keeps it for every family
    fixed = {"data": {"image_size": 32, "mean": 0.2, "std": 0.3}}
    assert dataset.codec(fixed, "mae").mean == 0.2


def test_presets_validate_against_a_tree_holding_their_classes(tmp_path):
    import yaml

    from helpers import REPO_ROOT

    for preset in ("imagenet", "places365"):
        params = yaml.safe_load((REPO_ROOT / "presets" / f"{preset}.yaml").read_text())
        with pytest.raises(ParamsError, match="'data.root' is not set"):
            load.validate_params(params)
        root = tmp_path / preset
        for split in ("train", "val"):
            for name in params["splits"]["forget"] + params["splits"]["retain"]:
                (root / split / name).mkdir(parents=True)
        params["data"]["root"] = str(root)
        load.validate_params(params)
        assert {m: params["model"][m]["gpus"] for m in params["models"]} == (
            {"mae": 4, "vqgan": 4} if preset == "imagenet" else {"mae": 4, "vqgan": 4, "diffusion": 8})
        # paper 1: "256 for VQ-GAN and 224 for MAE", each family decoding the same split at its own size
        assert {m: dataset.image_size(params, m) for m in params["models"]} == (
            {"mae": 224, "vqgan": 256} if preset == "imagenet" else {"mae": 224, "vqgan": 256, "diffusion": 256})
        # paper 1 Table 1's official checkpoints, hashes for the user to pin (the stage prints them)
        files = {m: params["model"][m]["checkpoint"] for m in params["models"]}
        assert files["mae"] == {"url": checkpoints.OFFICIAL_URLS["mae"][2], "sha256": None}
        assert files["vqgan"] == {"path": "data/weights/mage-vitb-1600.pth", "sha256": None}
        if preset == "places365":
            assert files["diffusion"] == {"path": "data/weights/16_Network.pth", "sha256": None}
