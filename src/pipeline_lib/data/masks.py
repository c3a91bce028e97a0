"""I2I tasks as pixel masks: True marks a pixel the model must fill in.

Masks are drawn on the CPU from an explicit generator so every run, on any device, sees the same holes.
Random masks hide whole patches of the model's grid, with the same count in every sample of a batch
(ViT encoders drop hidden tokens, which needs equal lengths).

Every task hole is aligned to the model's mask granularity (MAE patch, VQ token, 1 px for diffusion): a
patch model hides any cell a hole touches, so a misaligned hole would silently become a bigger one.
`check_task` makes sure one task spec gives every model family the very same hole.

Task kinds (spec keys):
  center   exactly one of size (side, px) | ratio (hidden area fraction) | grid (+ patch): a centred square
  extend   side (up/down/left/right) + ratio: a band along that side, the model extends the image there
  outpaint size | ratio of the visible centre square; everything outside it is hidden
  random   ratio of patches hidden, optional patch (a multiple of the granularity) instead of the granularity
  mixed    size + ratio (+ patch): center or random, drawn per batch (training)
"""

from __future__ import annotations

import math
import numbers

import torch

KINDS = ("center", "extend", "outpaint", "random", "mixed")
SIDES = ("up", "down", "left", "right")

#: kind -> (required keys, optional keys, groups of which exactly one key must be present)
_KEYS: dict[str, tuple[set[str], set[str], list[set[str]]]] = {
    "center": (set(), {"size", "ratio", "grid", "patch"}, [{"size", "ratio", "grid"}]),
    "extend": ({"side", "ratio"}, set(), []),
    "outpaint": (set(), {"size", "ratio"}, [{"size", "ratio"}]),
    "random": ({"ratio"}, {"patch"}, []),
    "mixed": ({"size", "ratio"}, {"patch"}, []),
}


# --- mask builders (no validation of the spec as a whole: see check_spec) ------------------------------------

def center_mask(batch: int, image_size: int, size: int, cell: int = 1) -> torch.Tensor:
    """A centred size x size hole; its top-left corner is floored onto the `cell` grid (centred within a cell)."""
    mask = torch.zeros(batch, 1, image_size, image_size, dtype=torch.bool)
    start = cell * ((image_size - size) // (2 * cell))
    mask[:, :, start : start + size, start : start + size] = True
    return mask


def random_patch_mask(batch: int, image_size: int, patch: int, ratio: float, g: torch.Generator) -> torch.Tensor:
    grid = image_size // patch
    n = grid * grid
    hidden = int(round(n * ratio))
    order = torch.rand(batch, n, generator=g).argsort(dim=1)
    patch_mask = torch.zeros(batch, n, dtype=torch.bool)
    patch_mask.scatter_(1, order[:, :hidden], True)
    patch_mask = patch_mask.view(batch, 1, grid, grid)
    return patch_mask.repeat_interleave(patch, 2).repeat_interleave(patch, 3)


def extend_mask(batch: int, image_size: int, side: str, width: int) -> torch.Tensor:
    """A band `width` px wide along `side`: the model continues the image toward that side."""
    mask = torch.zeros(batch, 1, image_size, image_size, dtype=torch.bool)
    band = {"up": (slice(0, width), slice(None)), "down": (slice(image_size - width, None), slice(None)),
            "left": (slice(None), slice(0, width)), "right": (slice(None), slice(image_size - width, None))}
    if side not in band:
        raise ValueError(f"extend side '{side}' is not one of {', '.join(SIDES)}")
    rows, cols = band[side]
    mask[:, :, rows, cols] = True
    return mask


def mask_ratio(mask: torch.Tensor) -> float:
    """The fraction of pixels hidden, over the whole tensor."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"mask_ratio needs a bool tensor, got {getattr(mask, 'dtype', type(mask).__name__)}")
    if mask.numel() == 0:
        raise ValueError("mask_ratio of an empty mask is undefined")
    return int(mask.sum()) / mask.numel()


def apply_mask(x: torch.Tensor, mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """T(x): the partial input, hidden pixels set to `fill` (0 = the mean in normalised space)."""
    return x.masked_fill(mask, fill)


# --- specs -> masks -------------------------------------------------------------------------------------------

def sample_mask(spec: dict, batch: int, image_size: int, patch: int, g: torch.Generator) -> torch.Tensor:
    """One batch of masks from a task spec; `patch` is the model's mask granularity.

    Only random kinds draw from `g` (`mixed` draws its choice first), so geometric tasks never shift the
    generator that other random draws share.
    """
    check_spec(spec, image_size)
    _check_granularity(image_size, patch)
    kind = spec["kind"]
    if kind == "mixed":
        _random_patch(spec, image_size, patch)  # fail before drawing, whichever kind is drawn
        _center_side(spec, image_size, patch)
        kind = "center" if torch.rand(1, generator=g).item() < 0.5 else "random"
    if kind == "random":
        return random_patch_mask(batch, image_size, _random_patch(spec, image_size, patch), spec["ratio"], g)
    return geometric_mask(spec, image_size, patch).expand(batch, -1, -1, -1).clone()


def geometric_mask(spec: dict, image_size: int, granularity: int) -> torch.Tensor:
    """The fixed [1, 1, S, S] hole of a center, extend or outpaint spec, aligned to `granularity`."""
    kind = spec["kind"]
    if kind in ("center", "mixed"):
        side, cell = _center_side(spec, image_size, granularity)
        return center_mask(1, image_size, side, cell)
    if kind == "outpaint":
        side = _square_side(spec, image_size, granularity, "outpaint", "visible centre square")
        return ~center_mask(1, image_size, side, granularity)
    if kind == "extend":
        width = _snap(spec["ratio"] * image_size, granularity)
        _check_extent(width, image_size, f"extend ratio {spec['ratio']} (a band of {width} px after snapping to "
                                         f"the {granularity} px granularity)")
        return extend_mask(1, image_size, spec["side"], width)
    raise ValueError(f"mask kind '{kind}' has no fixed geometry")


def _center_side(spec: dict, image_size: int, granularity: int) -> tuple[int, int]:
    """(hole side in px, cell its corner is aligned to) of a center spec."""
    if "grid" in spec and spec["kind"] == "center":
        patch = spec.get("patch", granularity)
        _check_patch(patch, granularity, image_size, "center")
        side = spec["grid"] * patch
        _check_extent(side, image_size, f"center grid {spec['grid']} of {patch} px patches ({side} px)")
        return side, patch
    return _square_side(spec, image_size, granularity, spec["kind"], "hole"), granularity


def _square_side(spec: dict, image_size: int, granularity: int, kind: str, what: str) -> int:
    if "size" in spec:
        size = spec["size"]
        if size % granularity:
            raise ValueError(f"{kind} size {size} px is not a multiple of the {granularity} px mask granularity")
        _check_extent(size, image_size, f"{kind} size {size} px")
        return size
    side = _snap(math.sqrt(spec["ratio"]) * image_size, granularity)
    _check_extent(side, image_size, f"{kind} ratio {spec['ratio']} (a {what} of {side} px after snapping to the "
                                    f"{granularity} px granularity)")
    return side


def _random_patch(spec: dict, image_size: int, granularity: int) -> int:
    patch = spec.get("patch", granularity)
    _check_patch(patch, granularity, image_size, spec["kind"])
    n = (image_size // patch) ** 2
    hidden = int(round(n * spec["ratio"]))
    if not 0 < hidden < n:
        raise ValueError(f"{spec['kind']} ratio {spec['ratio']} hides {hidden} of {n} patches of {patch} px: "
                         f"a task must hide some but not all of them")
    return patch


def _snap(length: float, granularity: int) -> int:
    """The multiple of `granularity` nearest to `length` (halves round up)."""
    return granularity * math.floor(length / granularity + 0.5)


def _check_extent(length: int, image_size: int, what: str) -> None:
    if length <= 0:
        raise ValueError(f"{what} is empty")
    if length >= image_size:
        raise ValueError(f"{what} covers the whole {image_size} px image")


def _check_patch(patch: int, granularity: int, image_size: int, kind: str) -> None:
    if patch % granularity:
        raise ValueError(f"{kind} patch {patch} px is not a multiple of the {granularity} px mask granularity")
    if image_size % patch:
        raise ValueError(f"{kind} patch {patch} px does not tile the {image_size} px image")


def _check_granularity(image_size: int, granularity: int) -> None:
    if not _is_int(granularity) or granularity < 1:
        raise ValueError(f"mask granularity must be a positive integer, got {granularity!r}")
    if image_size % granularity:
        raise ValueError(f"image size {image_size} px is not a multiple of the {granularity} px mask granularity")


# --- validation -------------------------------------------------------------------------------------------------

def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_spec(spec: dict, image_size: int) -> None:
    """Keys and value ranges of one spec, independent of any model."""
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError(f"a mask spec must be a mapping with a 'kind', got {spec!r}")
    kind = spec["kind"]
    if kind not in _KEYS:
        raise ValueError(f"unknown mask kind '{kind}': expected one of {', '.join(KINDS)}")
    required, optional, one_of = _KEYS[kind]
    keys = set(spec) - {"kind"}
    if missing := required - keys:
        raise ValueError(f"{kind} mask spec is missing {', '.join(sorted(missing))}")
    if extra := keys - required - optional:
        raise ValueError(f"{kind} mask spec does not take {', '.join(sorted(extra))}")
    for group in one_of:
        if len(keys & group) != 1:
            raise ValueError(f"{kind} mask spec needs exactly one of {', '.join(sorted(group))}, "
                             f"got {', '.join(sorted(keys & group)) or 'none'}")
    if "patch" in spec and kind == "center" and "grid" not in spec:
        raise ValueError("center mask spec takes patch only together with grid")
    if "ratio" in spec:
        r = spec["ratio"]
        if not isinstance(r, numbers.Real) or isinstance(r, bool) or not 0 < r < 1:
            raise ValueError(f"{kind} ratio must be a number in (0, 1), got {r!r}")
    for key in ("size", "grid", "patch"):
        if key in spec and (not _is_int(spec[key]) or spec[key] < 1):
            raise ValueError(f"{kind} {key} must be a positive integer, got {spec[key]!r}")
    if "size" in spec and spec["size"] >= image_size:
        raise ValueError(f"{kind} size {spec['size']} px must be smaller than the {image_size} px image")
    if "side" in spec and spec["side"] not in SIDES:
        raise ValueError(f"{kind} side {spec['side']!r} is not one of {', '.join(SIDES)}")


def check_task(spec: dict, image_size: int, granularities: list[int]) -> None:
    """Raise ValueError unless `spec` gives every model family (one mask granularity each) the same hole."""
    check_spec(spec, image_size)
    grans = sorted(set(granularities))
    if not grans:
        raise ValueError("check_task needs at least one mask granularity")
    for gran in grans:
        _check_granularity(image_size, gran)
    kind = spec["kind"]
    if kind in ("random", "mixed"):
        for gran in grans:
            _random_patch(spec, image_size, gran)
        if "patch" not in spec and len(grans) > 1:
            common = math.lcm(*grans)
            raise ValueError(f"{kind} masks without a patch hide each model's own cells, so granularities "
                             f"{grans} see different holes: set patch to a common multiple such as {common}")
    if kind == "random":
        return
    holes = {gran: geometric_mask(spec, image_size, gran)[0, 0] for gran in grans}
    first = grans[0]
    for gran in grans[1:]:
        if not torch.equal(holes[first], holes[gran]):
            raise ValueError(f"{kind} task {spec} is not aligned to every granularity: {first} px gives "
                             f"{_describe(holes[first])}, {gran} px gives {_describe(holes[gran])}")


def _describe(hole: torch.Tensor) -> str:
    rows = hole.any(dim=1).nonzero().flatten()
    cols = hole.any(dim=0).nonzero().flatten()
    return (f"{int(hole.sum())} px hidden in rows {int(rows.min())}-{int(rows.max())}, "
            f"cols {int(cols.min())}-{int(cols.max())}")
