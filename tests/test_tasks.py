"""I2I task masks: where each kind's hole is, its exact size, alignment to the model grid, and spec checks."""

from __future__ import annotations

import pytest
import torch

from pipeline_lib.data import masks

S = 32  # the pipeline's image size: an 8x8 grid of 4 px MAE patches / VQ tokens


def _mask(spec: dict, granularity: int = 4, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return masks.sample_mask(spec, batch, S, granularity, torch.Generator().manual_seed(seed))


def _box(hole: torch.Tensor) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) inclusive bounds of the hidden pixels of one [S, S] mask."""
    rows = hole.any(dim=1).nonzero().flatten()
    cols = hole.any(dim=0).nonzero().flatten()
    return int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())


def _aligned(mask: torch.Tensor, cell: int) -> bool:
    """Every cell x cell block of the grid is either wholly hidden or wholly visible."""
    b, _, h, w = mask.shape
    blocks = mask.view(b, h // cell, cell, w // cell, cell).permute(0, 1, 3, 2, 4).flatten(3)
    return bool((blocks.all(dim=-1) | ~blocks.any(dim=-1)).all())


def _solid_square(hole: torch.Tensor, top: int, side: int) -> None:
    expected = torch.zeros(S, S, dtype=torch.bool)
    expected[top: top + side, top: top + side] = True
    assert torch.equal(hole, expected), f"hole {_box(hole)} is not rows/cols {top}..{top + side - 1}"


# --- center -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size, top", [(16, 8), (8, 12), (24, 4), (12, 8)])
def test_center_size_is_a_square_on_the_patch_grid(size, top):
    m = _mask({"kind": "center", "size": size})
    assert m.shape == (2, 1, S, S) and m.dtype == torch.bool and torch.equal(m[0], m[1])
    _solid_square(m[0, 0], top, size)  # 12 px: corner floored onto the grid, within a patch of the centre
    assert _aligned(m, 4)
    assert masks.mask_ratio(m) == size * size / (S * S)


def test_center_size_on_a_pixel_grid_keeps_the_old_centring():
    for size in (5, 12, 16):
        assert torch.equal(_mask({"kind": "center", "size": size}, granularity=1), masks.center_mask(2, S, size))


@pytest.mark.parametrize("ratio, granularity, side", [(0.25, 4, 16), (0.25, 1, 16), (0.3, 4, 16), (0.3, 1, 18),
                                                      (0.5625, 4, 24), (0.0625, 4, 8)])
def test_center_ratio_snaps_the_side_to_the_granularity(ratio, granularity, side):
    m = _mask({"kind": "center", "ratio": ratio}, granularity)
    top, bottom, left, right = _box(m[0, 0])
    assert bottom - top + 1 == side and right - left + 1 == side
    assert int(m[0].sum()) == side * side and masks.mask_ratio(m) == side * side / S**2
    assert _aligned(m, granularity)


def test_center_grid_is_the_papers_centre_block_of_patches():
    # paper 1: 224 px images of 16 px patches, the centre 4x4 of the 14x14 grid hidden
    m = masks.sample_mask({"kind": "center", "grid": 4}, 1, 224, 16, torch.Generator())
    assert _box(m[0, 0]) == (80, 143, 80, 143)
    assert int(m.sum()) == 64 * 64 and masks.mask_ratio(m) == pytest.approx(16 / 196)
    assert _aligned(m, 16)
    # the same block asked of a 1 px model with the patch spelled out
    same = masks.sample_mask({"kind": "center", "grid": 4, "patch": 16}, 1, 224, 1, torch.Generator())
    assert torch.equal(m, same)


def test_center_grid_with_a_coarser_patch():
    m = _mask({"kind": "center", "grid": 2, "patch": 8}, granularity=4)
    _solid_square(m[0, 0], 8, 16)
    assert _aligned(m, 8)
    odd = _mask({"kind": "center", "grid": 3, "patch": 8}, granularity=4)[0, 0]
    _solid_square(odd, 0, 24)  # 3 of 4 cells: corner on the cell grid, off-centre by under one cell


@pytest.mark.parametrize("spec, message", [
    ({"kind": "center", "size": 6}, "size 6 px is not a multiple of the 4 px"),
    ({"kind": "center", "ratio": 0.001}, "center ratio 0.001.*is empty"),
    ({"kind": "center", "ratio": 0.99}, "covers the whole 32 px image"),
    ({"kind": "center", "grid": 8}, "grid 8 of 4 px patches .32 px. covers the whole"),
    ({"kind": "center", "grid": 2, "patch": 6}, "patch 6 px is not a multiple of the 4 px"),
    ({"kind": "center", "grid": 1, "patch": 12}, "patch 12 px does not tile the 32 px image"),
])
def test_center_geometry_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        _mask(spec)


# --- extend and outpaint ------------------------------------------------------------------------------------

@pytest.mark.parametrize("side, rows, cols", [("up", slice(0, 8), slice(None)), ("down", slice(24, 32), slice(None)),
                                              ("left", slice(None), slice(0, 8)),
                                              ("right", slice(None), slice(24, 32))])
def test_extend_hides_a_band_along_the_side(side, rows, cols):
    m = _mask({"kind": "extend", "side": side, "ratio": 0.25})
    expected = torch.zeros(S, S, dtype=torch.bool)
    expected[rows, cols] = True
    assert torch.equal(m[0, 0], expected) and torch.equal(m[0], m[1])
    assert masks.mask_ratio(m) == 0.25 and _aligned(m, 4)


@pytest.mark.parametrize("ratio, granularity, width", [(0.3, 4, 8), (0.3, 1, 10), (0.4, 4, 12), (0.5, 8, 16)])
def test_extend_band_width_snaps_to_the_granularity(ratio, granularity, width):
    m = _mask({"kind": "extend", "side": "right", "ratio": ratio}, granularity)
    assert _box(m[0, 0]) == (0, S - 1, S - width, S - 1)
    assert int(m[0].sum()) == width * S and _aligned(m, granularity)


@pytest.mark.parametrize("spec", [{"kind": "outpaint", "size": 16}, {"kind": "outpaint", "ratio": 0.25}])
def test_outpaint_hides_everything_outside_the_centre(spec):
    m = _mask(spec)
    visible = ~m[0, 0]
    _solid_square(visible, 8, 16)
    assert int(m[0].sum()) == S * S - 16 * 16 and masks.mask_ratio(m) == 0.75
    assert _aligned(m, 4)


@pytest.mark.parametrize("spec, message", [
    ({"kind": "extend", "side": "left", "ratio": 0.05}, "extend ratio 0.05 .a band of 0 px.*is empty"),
    ({"kind": "extend", "side": "up", "ratio": 0.95}, "covers the whole 32 px image"),
    ({"kind": "outpaint", "size": 10}, "outpaint size 10 px is not a multiple of the 4 px"),
    ({"kind": "outpaint", "ratio": 0.001}, "visible centre square of 0 px.*is empty"),
    ({"kind": "outpaint", "ratio": 0.99}, "covers the whole"),
])
def test_band_and_frame_geometry_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        _mask(spec)


# --- random and mixed ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("patch, ratio", [(8, 0.5), (8, 0.25), (16, 0.5), (4, 0.75)])
def test_random_patch_override_hides_whole_coarser_patches(patch, ratio):
    m = _mask({"kind": "random", "ratio": ratio, "patch": patch}, granularity=4, batch=16)
    assert _aligned(m, patch)
    cells = (S // patch) ** 2
    hidden = round(cells * ratio)
    assert (m.flatten(1).sum(dim=1) == hidden * patch * patch).all()
    assert len({tuple(row.flatten().tolist()) for row in m}) > 1  # samples differ


def test_random_ratio_rounds_to_whole_patches():
    assert int(_mask({"kind": "random", "ratio": 0.01})[0].sum()) == 16  # 0.64 of 64 patches rounds to one


def test_random_masks_are_determined_by_the_generator():
    spec = {"kind": "random", "ratio": 0.75}
    a, b = _mask(spec, batch=8, seed=3), _mask(spec, batch=8, seed=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, _mask(spec, batch=8, seed=4))
    # with an explicit patch every model family draws the very same holes from the same seed
    spec = {"kind": "random", "ratio": 0.5, "patch": 4}
    assert torch.equal(_mask(spec, granularity=1, batch=8, seed=5), _mask(spec, granularity=4, batch=8, seed=5))


def test_geometric_tasks_leave_the_generator_untouched():
    g = torch.Generator().manual_seed(7)
    state = g.get_state()
    for spec in ({"kind": "center", "ratio": 0.25}, {"kind": "extend", "side": "down", "ratio": 0.25},
                 {"kind": "outpaint", "size": 16}, {"kind": "center", "grid": 2}):
        masks.sample_mask(spec, 3, S, 4, g)
    assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize("spec, message", [
    ({"kind": "random", "ratio": 0.5, "patch": 6}, "random patch 6 px is not a multiple of the 4 px"),
    ({"kind": "random", "ratio": 0.5, "patch": 12}, "does not tile the 32 px image"),
    ({"kind": "random", "ratio": 0.005}, "hides 0 of 64 patches"),
    ({"kind": "random", "ratio": 0.1, "patch": 16}, "hides 0 of 4 patches of 16 px"),
    ({"kind": "mixed", "size": 16, "ratio": 0.999}, "hides 64 of 64"),
])
def test_random_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        _mask(spec)


def test_mixed_with_a_patch_draws_both_kinds():
    spec = {"kind": "mixed", "size": 16, "ratio": 0.5, "patch": 8}
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(30):
        m = masks.sample_mask(spec, 2, S, 4, g)
        if torch.equal(m, masks.center_mask(2, S, 16)):
            seen.add("center")
        else:
            assert _aligned(m, 8) and int(m[0].sum()) == 8 * 64
            seen.add("random")
    assert seen == {"center", "random"}


# --- mask_ratio ---------------------------------------------------------------------------------------------

def test_mask_ratio():
    m = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    assert masks.mask_ratio(m) == 0.0
    m[0, 0, :2] = True
    assert masks.mask_ratio(m) == 8 / 32
    with pytest.raises(ValueError, match="bool tensor, got torch.float32"):
        masks.mask_ratio(m.float())
    with pytest.raises(ValueError, match="empty"):
        masks.mask_ratio(torch.zeros(0, 1, 4, 4, dtype=torch.bool))


# --- check_task ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", [
    {"kind": "center", "size": 16}, {"kind": "center", "ratio": 0.25}, {"kind": "center", "grid": 4, "patch": 4},
    {"kind": "extend", "side": "right", "ratio": 0.25}, {"kind": "outpaint", "size": 16},
    {"kind": "outpaint", "ratio": 0.25}, {"kind": "random", "ratio": 0.75, "patch": 4},
    {"kind": "mixed", "size": 16, "ratio": 0.75, "patch": 8},
])
def test_consistent_tasks_pass_for_every_family(spec):
    masks.check_task(spec, S, [4, 1, 4])  # MAE, diffusion, VQ
    holes = [_mask(spec, g, seed=1) for g in (1, 4)]
    assert torch.equal(holes[0], holes[1])  # the same hole whatever the family


@pytest.mark.parametrize("spec, message", [
    ({"kind": "ring"}, "unknown mask kind 'ring'"),
    ({"size": 16}, "must be a mapping with a 'kind'"),
    ({"kind": "center"}, "exactly one of grid, ratio, size, got none"),
    ({"kind": "center", "size": 16, "ratio": 0.25}, "exactly one of grid, ratio, size, got ratio, size"),
    ({"kind": "center", "size": 16, "patch": 4}, "patch only together with grid"),
    ({"kind": "center", "size": 16, "side": "up"}, "center mask spec does not take side"),
    ({"kind": "extend", "ratio": 0.25}, "extend mask spec is missing side"),
    ({"kind": "extend", "side": "north", "ratio": 0.25}, "side 'north' is not one of up, down, left, right"),
    ({"kind": "outpaint", "size": 16, "ratio": 0.25}, "exactly one of ratio, size"),
    ({"kind": "random"}, "random mask spec is missing ratio"),
    ({"kind": "random", "ratio": 0.5, "size": 8}, "random mask spec does not take size"),
    ({"kind": "mixed", "size": 16}, "mixed mask spec is missing ratio"),
    ({"kind": "random", "ratio": 0}, r"ratio must be a number in \(0, 1\), got 0"),
    ({"kind": "random", "ratio": 1.0}, "got 1.0"),
    ({"kind": "extend", "side": "up", "ratio": -0.2}, "got -0.2"),
    ({"kind": "center", "ratio": True}, "got True"),
    ({"kind": "center", "ratio": "0.5"}, "got '0.5'"),
    ({"kind": "center", "size": 32}, "size 32 px must be smaller than the 32 px image"),
    ({"kind": "outpaint", "size": 40}, "size 40 px must be smaller"),
    ({"kind": "center", "size": 0}, "size must be a positive integer, got 0"),
    ({"kind": "center", "size": 16.0}, "got 16.0"),
    ({"kind": "center", "grid": 2, "patch": 0}, "patch must be a positive integer, got 0"),
])
def test_malformed_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        masks.check_task(spec, S, [4])
    with pytest.raises(ValueError, match=message):  # and sampling refuses the same spec
        _mask(spec)


@pytest.mark.parametrize("spec, grans, message", [
    ({"kind": "random", "ratio": 0.5, "patch": 4}, [1, 8], "patch 4 px is not a multiple of the 8 px"),
    ({"kind": "center", "grid": 2, "patch": 4}, [1, 8], "patch 4 px is not a multiple of the 8 px"),
    ({"kind": "random", "ratio": 0.75}, [1, 4], r"granularities \[1, 4\] see different holes: set patch to a "
                                                r"common multiple such as 4"),
    ({"kind": "mixed", "size": 16, "ratio": 0.75}, [2, 4, 8], r"such as 8"),
    ({"kind": "center", "ratio": 0.3}, [1, 4],
     "not aligned to every granularity: 1 px gives 324 px hidden in rows 7-24.*4 px gives 256 px hidden in rows 8-23"),
    ({"kind": "center", "size": 12}, [1, 4], "1 px gives 144 px hidden in rows 10-21, cols 10-21, 4 px gives 144 px"
                                             " hidden in rows 8-19"),
    ({"kind": "extend", "side": "left", "ratio": 0.3}, [1, 4], "1 px gives 320 px.*4 px gives 256 px"),
    ({"kind": "outpaint", "ratio": 0.3}, [1, 4], "not aligned to every granularity"),
    ({"kind": "center", "size": 6}, [1, 4], "size 6 px is not a multiple of the 4 px"),
    ({"kind": "center", "size": 16}, [], "at least one mask granularity"),
    ({"kind": "center", "size": 16}, [0], "granularity must be a positive integer, got 0"),
    ({"kind": "center", "size": 16}, [5], "image size 32 px is not a multiple of the 5 px"),
])
def test_tasks_that_differ_between_families(spec, grans, message):
    with pytest.raises(ValueError, match=message):
        masks.check_task(spec, S, grans)


def test_a_single_family_may_use_its_own_random_cells():
    masks.check_task({"kind": "random", "ratio": 0.75}, S, [4, 4])
    masks.check_task({"kind": "mixed", "size": 16, "ratio": 0.75}, S, [1])
