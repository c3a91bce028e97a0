"""t-SNE maps of embeddings on real Fashion-MNIST images: groups stay together, runs repeat, the PNG is written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import fashion_subset, temp_leftovers
from pipeline_lib.evaluation import tsne

GROUPS = {"T-shirt/top": 0, "Trouser": 1, "Bag": 8}
N = 60


def _pixels(cls: int) -> torch.Tensor:
    images, _ = fashion_subset(N, train=False, classes=[cls])
    return images.float() / 255.0  # [N, 28, 28]: embed_tsne flattens whatever follows the batch axis


@pytest.fixture(scope="module")
def groups() -> dict[str, torch.Tensor]:
    return {name: _pixels(cls) for name, cls in GROUPS.items()}


@pytest.fixture(scope="module")
def frame(groups) -> pd.DataFrame:
    return tsne.embed_tsne(groups, seed=0, perplexity=20.0)


def test_frame_layout(frame):
    assert list(frame.columns) == ["x", "y", "group"] and len(frame) == N * len(GROUPS)
    assert list(frame["group"].cat.categories) == list(GROUPS)  # legend order = the caller's order
    assert (frame["group"].value_counts() == N).all()
    assert np.isfinite(frame[["x", "y"]].to_numpy()).all()


def test_points_of_a_class_land_together(frame):
    xy = frame[["x", "y"]].to_numpy()
    labels = frame["group"].to_numpy()
    dist = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(dist, np.inf)
    neighbours = np.argsort(dist, axis=1)[:, :5]
    same = (labels[neighbours] == labels[:, None]).mean()
    assert same > 0.9, f"only {same:.0%} of 5-nearest neighbours share the group"
    centres = frame.groupby("group", observed=True)[["x", "y"]].mean()
    for name in GROUPS:
        own = frame[frame["group"] == name][["x", "y"]].to_numpy()
        spread = np.linalg.norm(own - centres.loc[name].to_numpy(), axis=1).mean()
        nearest_other = min(np.linalg.norm(centres.loc[name] - centres.loc[o]) for o in GROUPS if o != name)
        assert spread < nearest_other, f"{name}: spread {spread:.1f} >= distance {nearest_other:.1f} to another group"


def test_the_same_seed_gives_the_same_map(groups, frame):
    again = tsne.embed_tsne(groups, seed=0, perplexity=20.0)
    assert np.array_equal(again[["x", "y"]].to_numpy(), frame[["x", "y"]].to_numpy())
    assert again["group"].equals(frame["group"])


def test_plot_is_written_atomically(frame, tmp_path):
    out = tmp_path / "figs" / "tsne.png"
    tsne.plot_tsne(frame, out, "forget vs retain")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert temp_leftovers(out.parent) == []
    with pytest.raises(ValueError, match="missing group"):
        tsne.plot_tsne(frame.drop(columns="group"), tmp_path / "bad.png", "t")
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize("groups, perplexity, message", [
    ({}, 30.0, "at least one group"),
    ({"a": torch.zeros(0, 4)}, 30.0, r"group 'a' must be a non-empty \[N, ...\] tensor, got \(0, 4\)"),
    ({"a": torch.zeros(5)}, 30.0, r"got \(5,\)"),
    ({"a": torch.randn(10, 4), "b": torch.randn(10, 3)}, 5.0, "group 'b' has 3 features per sample, the groups "
                                                             "before it 4"),
    ({"a": torch.full((10, 4), float("nan"))}, 5.0, "group 'a' holds non-finite values"),
    ({"a": torch.randn(10, 4), "b": torch.randn(10, 4)}, 20.0, "perplexity 20.0 must be positive and below the 20"),
    ({"a": torch.randn(10, 4)}, 0.0, "perplexity 0.0"),
])
def test_bad_inputs(groups, perplexity, message):
    with pytest.raises(ValueError, match=message):
        tsne.embed_tsne(groups, seed=0, perplexity=perplexity)
