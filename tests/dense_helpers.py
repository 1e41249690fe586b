"""Helpers shared by the dense-task tests (not a test module)."""

from __future__ import annotations

from typing import Any

import torch

from policysearch.data import prepare
from policysearch.data.raw import make_raw


def squares(task: str, n: int, size: int, train: int, val: int) -> Any:
    """Squares of two brightnesses (class 1 at 100, class 2 at 200) at seeded places on black: a 3-class
    mask per image for segmentation, the clean image of a noisy copy (noise sigma 40 of 255) for
    restoration; `train` images for training and validation (`val` of them), the rest for test."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    y = torch.zeros(n, size, size, dtype=torch.uint8)
    for i in range(n):
        r, c = torch.randint(0, size - 6, (2,), generator=g).tolist()
        x[i, 0, r : r + 6, c : c + 6] = 100 * (i % 2 + 1)
        y[i, r : r + 6, c : c + 6] = i % 2 + 1
    if task == "restoration":
        noisy = (x.float() + torch.randn(x.shape, generator=g) * 40).clamp(0, 255).to(torch.uint8)
        raw = make_raw("denoise", noisy[:train], x[:train], noisy[train:], x[train:], [], "tensors", task=task)
    else:
        raw = make_raw("squares", x[:train], y[:train], x[train:], y[train:], ["bg", "a", "b"], "tensors", task=task)
    return prepare(raw, val_size=val)
