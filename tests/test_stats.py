"""The paired bootstrap: the mean difference and a CI that covers it, refusing unpaired arms."""

from __future__ import annotations

import pytest

from policysearch.errors import ConfigError
from policysearch.stats import paired_bootstrap


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
