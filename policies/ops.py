"""The augmentation ops: their batched kernels, one function per op named as in kornia's
AutoAugment, and `OPS`, the one table that maps each name to its magnitude ranges and its kernel.

Kernels are pure functions of images and per-sample magnitudes; which op a sample gets and at which
magnitude is sampled in `policysearch.policies.augment`. `apply_ops` runs a batch through the table.
Two kinds of kernel, as the table's ``geometric`` flag says:

* a colour kernel ``(x, m) -> x`` maps images (B, C, H, W) in [0, 1] and magnitudes (B,) to images
  (the caller clamps them back to [0, 1]);
* a geometric kernel ``(m, h, w) -> (B, 2, 3)`` maps magnitudes to pixel-space affine matrices about
  the image centre, so that all geometric ops of a stage share one `warp` call.

The policy's base ops (pad-and-crop, random erasing) sit outside the op table: they act on every
sample with their own per-sample parameters, which `random_shift` and `erasing_boxes` draw from the
caller's generator (so one seeded generator still drives everything); `erase` applies boxes.

Semantics follow PIL's (what AutoAugment was searched with); see the `augment` module docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "MAGNITUDE_SCALES", "NUM_BINS", "OPS", "OP_NAMES", "TRIVIAL_OPS", "OpSpec", "apply_ops", "auto_contrast",
    "brightness", "color", "contrast", "equalize", "erase", "erasing_boxes", "invert", "posterize", "random_erasing",
    "random_shift", "rotate", "sharpness", "shear_x", "shear_y", "shift", "shift_offsets", "solarize", "translate_x",
    "translate_y", "warp", "warp_mask",
]


# ---------------------------------------------------------------------- colour kernels
def _grey(x: torch.Tensor) -> torch.Tensor:
    """Luma (ITU-R 601, as PIL's ``convert("L")``) of RGB images; the channel mean otherwise."""
    if x.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
        return (x * weights[None, :, None, None]).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


def _factor(m: torch.Tensor) -> torch.Tensor:
    return m[:, None, None, None]


def brightness(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Blend with black: factor 0 is black, 1 the image."""
    return x * _factor(m)


def contrast(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Blend with the image's mean grey."""
    mean = _grey(x).mean(dim=(2, 3), keepdim=True)
    return mean + _factor(m) * (x - mean)


def color(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Blend with the image's grey version (saturation)."""
    grey = _grey(x)
    return grey + _factor(m) * (x - grey)


def sharpness(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Blend with a smoothed image (kornia's PIL-style sharpness)."""
    import kornia

    return kornia.enhance.sharpness(x, m)


def posterize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Keep the `m` (rounded) most significant bits of each 8-bit value."""
    step = torch.pow(2.0, 8.0 - _factor(m).round())
    return torch.floor(x * 255.0 / step) * step / 255.0


def solarize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Invert the values at or above the threshold `m`."""
    return torch.where(x >= _factor(m), 1.0 - x, x)


def equalize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per channel (no magnitude)."""
    import kornia

    return kornia.enhance.equalize(x)


def invert(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """1 - x (no magnitude)."""
    return 1.0 - x


def auto_contrast(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Stretch each channel to [0, 1]; constant channels are left as they are (no magnitude)."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (x - lo) / span.clamp(min=1e-6), x)


# ---------------------------------------------------------------------- geometric kernels
def _identity(m: torch.Tensor) -> torch.Tensor:
    mat = torch.zeros(m.shape[0], 2, 3, device=m.device, dtype=m.dtype)
    mat[:, 0, 0] = 1.0
    mat[:, 1, 1] = 1.0
    return mat


def _centre(h: int, w: int) -> tuple[float, float]:
    return (w - 1) / 2, (h - 1) / 2


def shear_x(m: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """x' = x + m * (y - cy): a horizontal shear that keeps the centre row in place."""
    _, cy = _centre(h, w)
    mat = _identity(m)
    mat[:, 0, 1] = m
    mat[:, 0, 2] = -m * cy
    return mat


def shear_y(m: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """y' = y + m * (x - cx): a vertical shear that keeps the centre column in place."""
    cx, _ = _centre(h, w)
    mat = _identity(m)
    mat[:, 1, 0] = m
    mat[:, 1, 2] = -m * cx
    return mat


def translate_x(m: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A shift by `m` widths (positive: right)."""
    mat = _identity(m)
    mat[:, 0, 2] = m * w
    return mat


def translate_y(m: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A shift by `m` heights (positive: down)."""
    mat = _identity(m)
    mat[:, 1, 2] = m * h
    return mat


def rotate(m: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A rotation by `m` degrees about the image centre."""
    cx, cy = _centre(h, w)
    theta = torch.deg2rad(m)
    cos, sin = torch.cos(theta), torch.sin(theta)
    mat = _identity(m)
    mat[:, 0, 0], mat[:, 0, 1] = cos, -sin
    mat[:, 1, 0], mat[:, 1, 1] = sin, cos
    mat[:, 0, 2] = cx - cos * cx + sin * cy
    mat[:, 1, 2] = cy - sin * cx - cos * cy
    return mat


def warp(x: torch.Tensor, mat: torch.Tensor) -> torch.Tensor:
    """Apply per-sample 2x3 pixel-space matrices (bilinear, zero fill), as one kornia call."""
    import kornia

    h, w = x.shape[-2:]
    return kornia.geometry.transform.warp_affine(x, mat, (h, w), align_corners=True)


def warp_mask(mask: torch.Tensor, mat: torch.Tensor, fill: int) -> torch.Tensor:
    """Warp integer masks (B, H, W) by the same matrices as `warp`, nearest-neighbour; pixels that come
    from outside the image get `fill` (the ignore index)."""
    import kornia

    h, w = mask.shape[-2:]
    shifted = (mask.float() + 1.0)[:, None]  # 0 marks "from outside" after the zero-filled warp
    out = kornia.geometry.transform.warp_affine(shifted, mat, (h, w), mode="nearest", align_corners=True)[:, 0]
    return torch.where(out > 0.5, out - 1.0, torch.full_like(out, float(fill))).round().to(mask.dtype)


# ---------------------------------------------------------------------- base ops: per sample, own sampling
def shift_offsets(x: torch.Tensor, crop: float, g: torch.Generator | None) -> tuple[torch.Tensor, int]:
    """Per-sample crop offsets ``(2, B)`` into the image padded by ``pad`` pixels, and ``pad``."""
    pad = max(1, round(crop * max(x.shape[-2:])))
    return torch.randint(0, 2 * pad + 1, (2, x.shape[0]), device=x.device, generator=g), pad


def shift(x: torch.Tensor, offsets: torch.Tensor, pad: int, fill: float = 0.0) -> torch.Tensor:
    """Pad (B, C, H, W) or (B, H, W) with `fill` and crop back at `offsets`, with two gathers."""
    flat = x.dim() == 3
    if flat:
        x = x[:, None]
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), value=fill)
    rows = offsets[0][:, None] + torch.arange(h, device=x.device)
    cols = offsets[1][:, None] + torch.arange(w, device=x.device)
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * pad))
    out = out.gather(3, cols[:, None, None, :].expand(b, c, h, w))
    return out[:, 0] if flat else out


def random_shift(x: torch.Tensor, crop: float, g: torch.Generator | None) -> torch.Tensor:
    """Pad with zeros and crop back at a random offset, per sample."""
    offsets, pad = shift_offsets(x, crop, g)
    return shift(x, offsets, pad)


def erasing_boxes(
    u: torch.Tensor, h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boxes of kornia's `RandomErasing` (its `RectangleEraseGenerator`) from uniform draws.

    The target area is ``U(scale) * h * w`` and the aspect ratio (height / width) ``U(ratio)``, or,
    when `ratio` straddles 1, ``U(ratio[0], 1)`` or ``U(1, ratio[1])`` picked by a fair coin; the sides
    are rounded and clamped to ``[1, h] x [1, w]`` (so the erased area can miss the target by the
    rounding), and the corner is uniform over the positions where the box fits.

    Args:
        u: uniform draws in [0, 1), shape (5, B): area, coin, ratio, top, left.
        h, w: image size.
        scale: range of the erased area, as a fraction of the image.
        ratio: range of the box's aspect ratio (height / width).

    Returns:
        ``(top, left, height, width)``, each a float tensor of whole pixels, shape (B,).
    """
    area = (scale[0] + (scale[1] - scale[0]) * u[0]) * (h * w)
    lo, hi = ratio
    if lo < 1.0 < hi:
        aspect = torch.where(u[1] < 0.5, lo + (1.0 - lo) * u[2], 1.0 + (hi - 1.0) * u[2])
    else:
        aspect = lo + (hi - lo) * u[2]
    height = torch.round(torch.sqrt(area * aspect)).clamp(1, h)
    width = torch.round(torch.sqrt(area / aspect)).clamp(1, w)
    return torch.floor(u[3] * (h - height + 1)), torch.floor(u[4] * (w - width + 1)), height, width


def erase(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: torch.Tensor, width: torch.Tensor,
          value: float = 0.0) -> torch.Tensor:
    """Fill the half-open box ``[top, top + height) x [left, left + width)`` of each sample with
    `value` (a box of height 0 erases nothing), as kornia's `RandomErasing` does."""
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device, dtype=top.dtype)
    cols = torch.arange(w, device=x.device, dtype=left.dtype)
    in_rows = (rows >= top[:, None]) & (rows < (top + height)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + width)[:, None])
    return x.masked_fill((in_rows[:, :, None] & in_cols[:, None, :])[:, None], value)


def random_erasing(x: torch.Tensor, p: float, scale: tuple[float, float], ratio: tuple[float, float],
                   g: torch.Generator | None, value: float = 0.0) -> torch.Tensor:
    """Random erasing (cutout) per sample: with probability `p` a box as `erasing_boxes` draws it is
    filled with `value`. One (6, B) draw from `g`, whatever `p`, so the stream does not depend on it."""
    u = torch.rand(6, x.shape[0], device=x.device, generator=g)
    top, left, height, width = erasing_boxes(u[1:], x.shape[-2], x.shape[-1], scale, ratio)
    return erase(x, top, left, torch.where(u[0] < p, height, torch.zeros_like(height)), width, value)


# ---------------------------------------------------------------------- the op table
NUM_BINS = 10
"""Magnitude bins per op, as in kornia's AutoAugment (an 11-point scale, bins 0..9)."""

MAGNITUDE_SCALES = ("standard", "wide")


@dataclass(frozen=True)
class OpSpec:
    """One augmentation op: its magnitude ranges, the magnitude at which it does nothing, its kernel.

    ``kernel`` is one of the functions above: for a geometric op it maps magnitudes to
    2x3 pixel-space matrices (all geometric ops of a stage then share one warp), for a colour op it
    maps ``(images, magnitudes)`` to images.
    """

    name: str
    geometric: bool
    standard: tuple[float, float] | None  # kornia / AutoAugment range; None: the op has no magnitude
    wide: tuple[float, float] | None  # TrivialAugment-wide range
    neutral: float | None  # magnitude that leaves the image unchanged
    unit: str
    kernel: Callable[..., torch.Tensor]

    def range(self, scale: str) -> tuple[float, float] | None:
        return self.standard if scale == "standard" else self.wide

    def strength_bins(self, strength: float, scale: str = "standard") -> list[int]:
        """Bins whose magnitude departs from `neutral` by `strength` (0..1) of the widest
        departure the range allows, on both sides when the range has two."""
        rng = self.range(scale)
        if rng is None or self.neutral is None:
            return [0]
        lo, hi = rng
        bins = set()
        for end in (lo, hi):
            if abs(end - self.neutral) < 1e-12:
                continue
            value = self.neutral + strength * (end - self.neutral)
            bins.add(min(NUM_BINS - 1, max(0, int((value - lo) / (hi - lo) * NUM_BINS))))
        return sorted(bins)


OPS: dict[str, OpSpec] = {
    op.name: op
    for op in (
        OpSpec("shear_x", True, (-0.3, 0.3), (-0.99, 0.99), 0.0, "shear factor", shear_x),
        OpSpec("shear_y", True, (-0.3, 0.3), (-0.99, 0.99), 0.0, "shear factor", shear_y),
        OpSpec("translate_x", True, (-0.5, 0.5), (-1.0, 1.0), 0.0, "fraction of width", translate_x),
        OpSpec("translate_y", True, (-0.5, 0.5), (-1.0, 1.0), 0.0, "fraction of height", translate_y),
        OpSpec("rotate", True, (-30.0, 30.0), (-135.0, 135.0), 0.0, "degrees", rotate),
        OpSpec("brightness", False, (0.1, 1.9), (0.01, 1.99), 1.0, "blend factor with black", brightness),
        OpSpec("color", False, (0.1, 1.9), (0.01, 1.99), 1.0, "blend factor with grey (saturation)", color),
        OpSpec("contrast", False, (0.1, 1.9), (0.01, 1.99), 1.0, "blend factor with the mean grey", contrast),
        OpSpec("sharpness", False, (0.1, 1.9), (0.01, 1.99), 1.0, "blend factor with a smoothed image",
               sharpness),
        OpSpec("posterize", False, (4.0, 8.0), (2.0, 8.0), 8.0, "bits kept", posterize),
        OpSpec("solarize", False, (0.0, 1.0), (0.0, 1.0), 1.0, "threshold (fraction of 255)", solarize),
        OpSpec("auto_contrast", False, None, None, None, "-", auto_contrast),
        OpSpec("equalize", False, None, None, None, "-", equalize),
        OpSpec("invert", False, None, None, None, "-", invert),
    )
}
OP_NAMES = tuple(OPS)
# TrivialAugment / RandAugment sample from these (no invert, as in their papers); the empty
# sub-policy stands for their Identity op.
TRIVIAL_OPS = tuple(name for name in OP_NAMES if name != "invert")

_GEOMETRIC = torch.tensor([OPS[n].geometric for n in OP_NAMES])


def apply_ops(x: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor, target: torch.Tensor | None = None,
              target_kind: str = "label", fill: int = 255) -> Any:
    """Apply op ``OP_NAMES[op[i]]`` with ``magnitude[i]`` to sample i (``-1``: nothing), through the
    kernels of `OPS`: one call per colour op in use, and one warp for all geometric ops of the stage.

    Args:
        x: float images in [0, 1], shape (B, C, H, W).
        op: op indices into `OP_NAMES`, shape (B,), ``-1`` for no op.
        magnitude: per-sample magnitudes in the op's own unit, shape (B,).
        target: a dense target that moves with the image: an integer mask (B, H, W) (`target_kind`
            "mask": geometric ops only, nearest-neighbour, `fill` where pixels come from outside) or an
            image (B, C', H, W) in [0, 1] ("image": every op, with the sample's magnitude).
        target_kind: "label" (no target here), "mask" or "image".
        fill: the mask value of pixels from outside the image (the ignore index).

    Returns:
        A new batch in [0, 1] (``x`` itself when no sample gets an op); with a `target`, the pair
        ``(x, target)``.
    """
    present = torch.unique(op[op >= 0]).tolist()
    if not present:
        return x if target is None else (x, target)
    out = x.clone()
    moved = None if target is None else target.clone()
    geometric = (op >= 0) & _GEOMETRIC.to(op.device)[op.clamp(min=0)]
    if bool(geometric.any()):
        idx = geometric.nonzero().squeeze(1)
        h, w = x.shape[-2:]
        sub_op, m = op[idx], magnitude[idx].to(x.dtype)
        mat = torch.empty(len(idx), 2, 3, device=x.device, dtype=x.dtype)  # each row is one op's, below
        for i in present:
            spec = OPS[OP_NAMES[i]]
            if spec.geometric:
                chosen = sub_op == i
                mat[chosen] = spec.kernel(m[chosen], h, w)
        out[idx] = warp(x[idx], mat)
        if moved is not None and target_kind == "mask":
            moved[idx] = warp_mask(moved[idx], mat, fill)
        elif moved is not None:
            moved[idx] = warp(moved[idx], mat)
    for i in present:
        spec = OPS[OP_NAMES[i]]
        if spec.geometric:
            continue
        idx = (op == i).nonzero().squeeze(1)
        out[idx] = spec.kernel(x[idx], magnitude[idx].to(x.dtype)).clamp(0.0, 1.0)
        if moved is not None and target_kind == "image":  # the target is the same scene: same op, same magnitude
            moved[idx] = spec.kernel(moved[idx], magnitude[idx].to(x.dtype)).clamp(0.0, 1.0)
    return out if target is None else (out, moved)

