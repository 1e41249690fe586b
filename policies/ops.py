"""Batched kernels of the augmentation ops: one function per op, named as in kornia's AutoAugment.

They are pure functions of images and per-sample magnitudes; which op a sample gets and at which
magnitude is sampled in `policysearch.policies.augment`, whose `OPS` table maps each name to its
magnitude range and to its kernel here. Two kinds, as the table's ``geometric`` flag says:

* a colour kernel ``(x, m) -> x`` maps images (B, C, H, W) in [0, 1] and magnitudes (B,) to images
  (the caller clamps them back to [0, 1]);
* a geometric kernel ``(m, h, w) -> (B, 2, 3)`` maps magnitudes to pixel-space affine matrices about
  the image centre, so that all geometric ops of a stage share one `warp` call.

Semantics follow PIL's (what AutoAugment was searched with); see the `augment` module docstring.
"""

from __future__ import annotations

import torch

__all__ = [
    "auto_contrast", "brightness", "color", "contrast", "equalize", "invert", "posterize", "rotate",
    "sharpness", "shear_x", "shear_y", "solarize", "translate_x", "translate_y", "warp",
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
