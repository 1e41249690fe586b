"""Dense-task benchmarks built offline from real images (Fashion-MNIST): a segmentation set and two
restoration sets, so segmentation and restoration can be searched and tested with no download beyond
Fashion-MNIST's own files.

- ``fashion-scenes`` (segmentation, 1 x 64 x 64, 5000 + 1000 scenes): synthetic scenes composed from real
  garments. Each scene is a black 64 x 64 canvas with 1 to 3 garments (uniform), each a random Fashion-MNIST
  image scaled by a factor in [0.75, 1.25] (bilinear, to 21..35 px) at a random position fully inside the
  canvas, later garments occluding earlier ones. A garment's pixel belongs to it when its value is at least
  `FOREGROUND` (26, just over 10 % of 255): the mask there is 1 + its class (0 = background) and the image
  takes its value; fainter pixels (the garments' soft edges) only lighten background and stay background.
  Training scenes use only training images, test scenes only test images, so no garment is seen in both.
- ``fashion-denoise`` (restoration, 1 x 28 x 28, 60000 + 10000): input = the image plus Gaussian noise of
  sigma `NOISE_SIGMA` (0.2 of the [0, 1] range), clipped and rounded to uint8; target = the clean image.
- ``fashion-sr2x`` (restoration, 1 x 28 x 28, 60000 + 10000): input = the image down-sampled 2x (2 x 2 area
  mean, rounded to uint8 as a stored low-resolution image would be), up-sampled back to 28 x 28 bilinearly
  (half-pixel centres, edges clamped: torch's ``interpolate(align_corners=False)``); target = the clean image.

Everything is a pure function of the Fashion-MNIST files and fixed seeds (numpy PCG64 streams, one per set
and part), computed with element-wise numpy operations whose results do not depend on the machine, so the
fingerprint `make_raw` gives is the data set's version. Each builds in about a second from the arrays;
nothing is cached (Fashion-MNIST itself is not).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from policysearch.data.raw import RawDataset, make_raw

__all__ = ["FOREGROUND", "NOISE_SIGMA", "SCENE_COUNTS", "SCENE_SIZE", "compose_scenes", "fashion_denoise",
           "fashion_scenes", "fashion_sr2x", "noisy", "sr2x_input"]

SCENE_SIZE = 64
SCENE_COUNTS = (5000, 1000)  # (train, test) scenes
GARMENTS = (1, 3)  # per scene, inclusive
SCALES = (0.75, 1.25)
FOREGROUND = 26  # a garment pixel >= 26 (> 0.1 * 255) is garment; the digitised background is ~0
NOISE_SIGMA = 0.2
# One seed per set; part 0 (train) and 1 (test) draw from separate streams of it.
_SEEDS = {"fashion-scenes": 6401, "fashion-denoise": 6402}
_CHUNK = 10000  # images per step of the per-image work: bounds the float temporaries to ~60 MB


def _rng(name: str, part: int) -> np.random.Generator:
    return np.random.default_rng([_SEEDS[name], part])


# ---------------------------------------------------------------------- scenes
def _scaled(images: np.ndarray, sizes: np.ndarray, window: int) -> np.ndarray:
    """Each (28, 28) image bilinearly resized to sizes[i] x sizes[i], in the top-left of a zero (window, window)
    square (zero outside the image; pixel-centre mapping)."""
    m, h, w = images.shape
    padded = np.zeros((m, h + 2, w + 2), dtype=np.float64)  # a zero border: samples past an edge fade to 0
    padded[:, 1:-1, 1:-1] = images
    src = (np.arange(window)[None, :] + 0.5) * (h / sizes[:, None]) - 0.5 + 1.0  # +1: the border
    src = np.clip(src, 0.0, h + 1.0)
    lo = np.minimum(np.floor(src).astype(np.int64), h)
    frac = src - lo
    g = np.arange(m)[:, None, None]
    rows = padded[g, lo[:, :, None], np.arange(w + 2)[None, None, :]] * (1.0 - frac)[:, :, None] \
        + padded[g, lo[:, :, None] + 1, np.arange(w + 2)[None, None, :]] * frac[:, :, None]
    r = np.arange(window)[None, :, None]
    out = rows[g, r, lo[:, None, :]] * (1.0 - frac)[:, None, :] + rows[g, r, lo[:, None, :] + 1] * frac[:, None, :]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def compose_scenes(images: np.ndarray, labels: np.ndarray, count: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` scenes (see the module docstring) from garments `images` (N, 28, 28) uint8 of classes `labels`.

    Returns:
        uint8 images (count, 1, 64, 64) and masks (count, 64, 64): 0 background, 1 + class of a garment.
    """
    side = images.shape[1]
    window = round(side * SCALES[1])
    per_scene = rng.integers(GARMENTS[0], GARMENTS[1] + 1, size=count)
    total = int(per_scene.sum())
    picks = rng.integers(0, len(images), size=total)
    sizes = np.rint(side * rng.uniform(*SCALES, size=total)).astype(np.int64)
    room = SCENE_SIZE - sizes + 1
    oy = np.floor(rng.random(total) * room).astype(np.int64)
    ox = np.floor(rng.random(total) * room).astype(np.int64)
    scene = np.repeat(np.arange(count), per_scene)
    layer = np.arange(total) - np.repeat(np.cumsum(per_scene) - per_scene, per_scene)
    # A canvas with a margin: a window reaches up to `window` pixels past a garment's corner.
    canvas = np.zeros((count, SCENE_SIZE + window, SCENE_SIZE + window), dtype=np.uint8)
    mask = np.zeros_like(canvas)
    span = np.arange(window)
    for j in range(GARMENTS[1]):  # layer by layer: each scene at most once per layer, so no write collides
        g = np.flatnonzero(layer == j)
        garment = _scaled(images[picks[g]], sizes[g], window)
        at = (scene[g][:, None, None], oy[g][:, None, None] + span[None, :, None],
              ox[g][:, None, None] + span[None, None, :])
        below_x, below_m = canvas[at], mask[at]
        fg = garment >= FOREGROUND
        canvas[at] = np.where(fg, garment, np.where(below_m == 0, np.maximum(below_x, garment), below_x))
        mask[at] = np.where(fg, (1 + labels[picks[g]]).astype(np.uint8)[:, None, None], below_m)
    return (np.ascontiguousarray(canvas[:, None, :SCENE_SIZE, :SCENE_SIZE]),
            np.ascontiguousarray(mask[:, :SCENE_SIZE, :SCENE_SIZE]))


def fashion_scenes(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                   classes: Sequence[str], source: str) -> RawDataset:
    """``fashion-scenes`` from Fashion-MNIST's (images (N, 28, 28), labels) parts and class names."""
    parts = [compose_scenes(*arrays, count, _rng("fashion-scenes", i))
             for i, (arrays, count) in enumerate(zip((train, test), SCENE_COUNTS))]
    tensors = [torch.from_numpy(a) for part in parts for a in part]
    return make_raw("fashion-scenes", *tensors, ["background", *classes], source, task="segmentation")


# ---------------------------------------------------------------------- restoration
def noisy(images: np.ndarray, rng: np.random.Generator, sigma: float = NOISE_SIGMA) -> np.ndarray:
    """`images` (uint8, any shape (N, ...)) plus Gaussian noise of `sigma` (in [0, 1] units), clipped, uint8."""
    out = np.empty_like(images)
    for start in range(0, len(images), _CHUNK):
        clean = images[start:start + _CHUNK].astype(np.float32)
        noise = rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(sigma * 255.0)
        out[start:start + _CHUNK] = np.clip(np.rint(clean + noise), 0, 255).astype(np.uint8)
    return out


def _upsample_matrix(size: int) -> np.ndarray:
    """(2 size, size) bilinear 2x up-sampling weights: half-pixel centres, edges clamped."""
    src = np.clip((np.arange(2 * size) + 0.5) / 2.0 - 0.5, 0, size - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, size - 1)
    weights = np.zeros((2 * size, size))
    np.add.at(weights, (np.arange(2 * size), lo), 1.0 - (src - lo))
    np.add.at(weights, (np.arange(2 * size), hi), src - lo)
    return weights


def sr2x_input(images: np.ndarray) -> np.ndarray:
    """The 2x super-resolution input of uint8 images (N, H, W), H and W even: 2 x 2 area mean rounded to
    uint8, then bilinear up-sampling back to (H, W), rounded. The weights (1, 3/4, 1/4) keep every
    intermediate value exact in float64, so the result does not depend on the summation order."""
    n, h, w = images.shape
    rows, cols = _upsample_matrix(h // 2), _upsample_matrix(w // 2)
    out = np.empty_like(images)
    for start in range(0, n, _CHUNK):
        block = images[start:start + _CHUNK].astype(np.float64)
        low = np.rint(block.reshape(-1, h // 2, 2, w // 2, 2).mean(axis=(2, 4)))
        out[start:start + _CHUNK] = np.clip(np.rint(rows @ low @ cols.T), 0, 255).astype(np.uint8)
    return out


def _restoration(name: str, degrade: list[np.ndarray], clean: list[np.ndarray], source: str) -> RawDataset:
    x_train, x_test = (torch.from_numpy(x[:, None]) for x in degrade)
    y_train, y_test = (torch.from_numpy(np.ascontiguousarray(y[:, None])) for y in clean)
    return make_raw(name, x_train, y_train, x_test, y_test, [], source, task="restoration")


def fashion_denoise(train: np.ndarray, test: np.ndarray, source: str) -> RawDataset:
    """``fashion-denoise`` from Fashion-MNIST's training and test images (N, 28, 28)."""
    inputs = [noisy(images, _rng("fashion-denoise", i)) for i, images in enumerate((train, test))]
    return _restoration("fashion-denoise", inputs, [train, test], source)


def fashion_sr2x(train: np.ndarray, test: np.ndarray, source: str) -> RawDataset:
    """``fashion-sr2x`` from Fashion-MNIST's training and test images (N, 28, 28)."""
    return _restoration("fashion-sr2x", [sr2x_input(train), sr2x_input(test)], [train, test], source)
