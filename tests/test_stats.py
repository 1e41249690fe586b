"""The paired bootstrap: the mean difference and a CI that covers it, refusing unpaired arms."""

from __future__ import annotations

import numpy as np
import pytest

from policysearch.analysis.stats import nested_bootstrap, paired_bootstrap, seeds_and_images
from policysearch.errors import ConfigError


def test_paired_bootstrap_mean_and_interval() -> None:
    a = [0.90, 0.91, 0.92, 0.93, 0.94]
    b = [0.89, 0.90, 0.91, 0.92, 0.93]  # a is 0.01 better on every seed
    out = paired_bootstrap(a, b)
    assert out["mean"] == pytest.approx(0.01) and out["low"] == pytest.approx(0.01) == out["high"]
    assert out["p_above_zero"] == 1.0 and out["n"] == 5
    noisy = paired_bootstrap([1, -1, 1, -1, 0.2], [0, 0, 0, 0, 0])
    assert noisy["low"] < noisy["mean"] < noisy["high"] and noisy["low"] < 0 < noisy["high"]


def test_paired_bootstrap_refuses_unpaired_arms() -> None:
    with pytest.raises(ConfigError, match="paired"):
        paired_bootstrap([1, 2, 3], [1, 2])
    with pytest.raises(ConfigError):
        paired_bootstrap([1], [2])


def test_nested_bootstrap_carries_the_spread_between_searches() -> None:
    # Same seed noise in both; the second set's searches disagree, so its CI must be wider.
    noise = [0.1, -0.1, 0.05, -0.05, 0.0]
    agree = [[1.0 + e for e in noise] for _ in range(5)]
    disagree = [[m + e for e in noise] for m in (-1.0, 0.0, 1.0, 2.0, 3.0)]
    a, b = nested_bootstrap(agree), nested_bootstrap(disagree)
    assert a["mean"] == pytest.approx(1.0) and b["mean"] == pytest.approx(1.0)
    assert a["low"] > 0.8 and a["high"] < 1.2
    assert b["high"] - b["low"] > 5 * (a["high"] - a["low"])
    assert (a["searches"], a["seeds"]) == (5, 5) and a["p_above_zero"] == 1.0


def test_nested_bootstrap_refuses_ragged_or_tiny_input() -> None:
    with pytest.raises(ConfigError, match="ragged"):
        nested_bootstrap([[1.0, 2.0], [1.0]])
    with pytest.raises(ConfigError, match="searches >= 2"):
        nested_bootstrap([[1.0, 2.0, 3.0]])


def test_seeds_and_images_carries_the_sampling_of_the_images() -> None:

    rng = np.random.default_rng(0)
    images = 4000
    b = (rng.random(images) < 0.9).astype(float)
    a = b.copy()
    a[rng.choice(images, 40, replace=False)] = 1.0  # A fixes up to 40 images B gets wrong, the same at every seed
    a_seeds, b_seeds = np.tile(a, (5, 1)), np.tile(b, (5, 1))
    # Identical seeds: a CI over seeds alone has no width; over images it has the binomial one.
    seeds_only = paired_bootstrap(a_seeds.mean(axis=1), b_seeds.mean(axis=1))
    assert seeds_only["low"] == seeds_only["high"] == pytest.approx(seeds_only["mean"])
    both = seeds_and_images(a_seeds, b_seeds)
    diff = a - b
    half_width = 1.96 * diff.std() / np.sqrt(images)
    assert both["mean"] == pytest.approx(diff.mean())
    assert both["high"] - both["mean"] == pytest.approx(half_width, rel=0.2)
    assert both["mean"] - both["low"] == pytest.approx(half_width, rel=0.2)
    # Seed noise only (every image moves together): about the seeds-only CI.
    shift = np.array([0.0, 0.01, -0.01, 0.02, 0.005])[:, None]
    a_noisy = np.broadcast_to(shift, (5, images)) + 0.5
    b_flat = np.full((5, images), 0.5)
    noisy = seeds_and_images(a_noisy, b_flat, seed=1)
    plain = paired_bootstrap(a_noisy.mean(axis=1), b_flat.mean(axis=1), seed=1)
    assert noisy["high"] - noisy["low"] == pytest.approx(plain["high"] - plain["low"], rel=0.15)


def test_seeds_and_images_refuses_mismatched_or_tiny_input() -> None:

    with pytest.raises(ConfigError, match="shapes"):
        seeds_and_images(np.ones((3, 10)), np.ones((3, 11)))
    with pytest.raises(ConfigError, match="shapes"):
        seeds_and_images(np.ones((1, 10)), np.ones((1, 10)))
    with pytest.raises(ConfigError, match="shapes"):
        seeds_and_images([1.0, 0.0], [0.0, 1.0])
