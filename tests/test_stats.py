"""The paired bootstrap: the mean difference and a CI that covers it, refusing unpaired arms."""

from __future__ import annotations

import pytest

from policysearch.errors import ConfigError
from policysearch.stats import nested_bootstrap, paired_bootstrap


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
