"""Paired comparisons that resolve small gaps: the mean difference and its bootstrap 95 % CI.

Arms are paired by seed (the same initial weights and data order for both arms), so the
difference is taken per seed and the seeds are resampled with replacement. `seeds_and_images`
also resamples the scored images: a CI over seeds alone holds the test set fixed and says
nothing about how a gain of a few tenths of a point would hold on another sample of images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from policysearch.checks import check_int, check_number
from policysearch.errors import ConfigError


def _interval(mean: float, resampled: np.ndarray, level: float) -> dict[str, float]:
    """The percentile interval of the resampled means at `level`, and their share above zero."""
    tail = (1.0 - level) / 2.0
    return {"mean": mean, "low": float(np.quantile(resampled, tail)), "high": float(np.quantile(resampled, 1.0 - tail)),
            "p_above_zero": float((resampled > 0).mean())}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = 10_000, level: float = 0.95,
                     seed: int = 0) -> dict[str, float]:
    """Mean of ``a - b`` over paired seeds, with a percentile bootstrap CI at `level`.

    Returns:
        ``{"mean", "low", "high", "n", "p_above_zero"}``: the CI is ``[low, high]``;
        `p_above_zero` is the share of resampled means above zero.

    Raises:
        ConfigError: The arms differ in length, or have fewer than 2 pairs.
    """
    check_int("resamples", resamples, 100)
    check_number("level", level, 0.0, 1.0, low_open=True, high_open=True)
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ConfigError(f"paired arms have {x.shape} and {y.shape} values, expected equal 1-D lengths >= 2")
    diff = x - y
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    return {**_interval(float(diff.mean()), means, level), "n": len(diff)}


def nested_bootstrap(diffs: Sequence[Sequence[float]], resamples: int = 10_000, level: float = 0.95,
                     seed: int = 0) -> dict[str, float]:
    """Mean paired difference over independent searches × paired seeds, with a two-level bootstrap CI.

    ``diffs[s][k]`` is the paired difference (arm minus baseline) of search `s` at evaluation seed
    `k`. Each resample draws searches with replacement, then seeds with replacement within each
    drawn search, so the CI carries both the spread between searches and the seed noise.

    Returns:
        ``{"mean", "low", "high", "searches", "seeds", "p_above_zero"}``.

    Raises:
        ConfigError: Ragged rows, fewer than 2 searches, or fewer than 2 seeds.
    """
    check_int("resamples", resamples, 100)
    check_number("level", level, 0.0, 1.0, low_open=True, high_open=True)
    try:
        d = np.asarray(diffs, dtype=np.float64)
    except ValueError as exc:
        raise ConfigError("nested differences are ragged: every search needs the same seeds") from exc
    if d.ndim != 2 or d.shape[0] < 2 or d.shape[1] < 2:
        raise ConfigError(f"nested differences have shape {d.shape}, expected (searches >= 2, seeds >= 2)")
    n_search, n_seed = d.shape
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n_search, size=(resamples, n_search))
    cols = rng.integers(0, n_seed, size=(resamples, n_search, n_seed))
    means = d[rows[:, :, None], cols].mean(axis=(1, 2))
    return {**_interval(float(d.mean()), means, level), "searches": n_search, "seeds": n_seed}


def seeds_and_images(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], resamples: int = 2_000,
                     level: float = 0.95, seed: int = 0, chunk: int = 100) -> dict[str, float]:
    """Mean of ``a - b`` over paired seeds and the scored images, with a two-way bootstrap CI.

    ``a[k][i]`` is arm A's score (1 correct, 0 wrong) of image `i` at seed `k`; `b` likewise, on the
    same images in the same order. Each resample draws seeds with replacement and, independently,
    images with replacement (the same images for every drawn seed: they are one test set), so the CI
    carries both the training noise and the sampling of the images scored.

    Returns:
        ``{"mean", "low", "high", "seeds", "images", "p_above_zero"}``.

    Raises:
        ConfigError: The arms differ in shape, or have fewer than 2 seeds or 2 images.
    """
    check_int("resamples", resamples, 100)
    check_int("chunk", chunk, 1)
    check_number("level", level, 0.0, 1.0, low_open=True, high_open=True)
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ConfigError(f"paired arms have shapes {x.shape} and {y.shape}, expected equal (seeds >= 2, images >= 2)")
    diff = x - y
    n_seed, n_image = diff.shape
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        # How often each seed and each image is drawn: the resampled mean is a weighted sum.
        seed_counts = np.stack([np.bincount(r, minlength=n_seed) for r in rng.integers(0, n_seed, (size, n_seed))])
        image_counts = np.stack([np.bincount(r, minlength=n_image) for r in rng.integers(0, n_image, (size, n_image))])
        means[start:start + size] = np.einsum("rs,si,ri->r", seed_counts, diff, image_counts) / (n_seed * n_image)
    return {**_interval(float(diff.mean()), means, level), "seeds": n_seed, "images": n_image}
