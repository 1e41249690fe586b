"""Shared fixtures: tiny, real data (scikit-learn's 8x8 digits) so every test runs in seconds."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tests use tiny tensors, where one thread is as fast as two, and it keeps the suite from
    slowing ~50x when the two cores are shared with another job (OpenMP threads spin against it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def estimated_energy():
    """Energy is estimated from seconds in tests: starting CodeCarbon costs seconds per run
    (tests/test_energy.py checks CodeCarbon itself once, when it is installed)."""
    before = os.environ.get("POLICYSEARCH_ENERGY")
    os.environ["POLICYSEARCH_ENERGY"] = "estimate"
    yield
    if before is None:
        os.environ.pop("POLICYSEARCH_ENERGY", None)
    else:
        os.environ["POLICYSEARCH_ENERGY"] = before


@pytest.fixture(scope="session")
def digits():
    """Digits split with a 400-image training part: enough to learn, small enough to be fast."""
    from policysearch.data import prepare

    return prepare("digits", val_size=100, train_size=400, seed=0, device="cpu")


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 16, 16, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    return x, y
