"""Split arithmetic: stratified train / validation splits and stratified subsamples.

Every split is a pure function of the labels and a seed (a numpy ``default_rng``), with class shares
rounded by largest remainder, so the same seed gives the same indices on any machine.
"""

from __future__ import annotations

import numpy as np
import torch

from policysearch.checks import check_int, is_int, is_number
from policysearch.data.raw import labels_to_int64
from policysearch.errors import ConfigError

__all__ = ["check_seed", "stratified_split", "stratified_subset"]


def _allocate(counts: np.ndarray, total: int, caps: np.ndarray, at_least_one: bool) -> np.ndarray:
    """Share ``total`` among classes in proportion to ``counts`` (largest remainder).

    Each class gets between its floor (1 where ``at_least_one`` and its cap allows, else 0)
    and ``caps``. Ties go to the lower class index, so the result is deterministic.
    """
    quota = total * counts / counts.sum()
    floor = np.where(at_least_one & (caps >= 1), 1, 0).astype(np.int64)
    alloc: np.ndarray = np.clip(np.floor(quota).astype(np.int64), floor, caps)
    diff = int(total - alloc.sum())
    # Usually fewer than num_classes steps; more only when caps bind.
    while diff > 0:
        room = np.where(alloc < caps, quota - alloc, -np.inf)
        i = int(np.argmax(room))
        if room[i] == -np.inf:
            raise ConfigError(f"cannot place {total} samples: classes hold only {caps.sum()}.")
        alloc[i] += 1
        diff -= 1
    while diff < 0:
        excess = np.where(alloc > floor, alloc - quota, -np.inf)
        i = int(np.argmax(excess))
        if excess[i] == -np.inf:
            raise ConfigError(
                f"cannot place only {total} samples while keeping one per class "
                f"({int(floor.sum())} classes)."
            )
        alloc[i] -= 1
        diff += 1
    return alloc


def check_seed(seed: object) -> int:
    """``seed`` as an int, or a ConfigError unless it is a non-negative integer (bools refused)."""
    return check_int("seed", seed, 0)


def stratified_split(
    y: torch.Tensor, val_size: float | int, train_size: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split sample indices into a training and a validation part, stratified by label.

    The validation part takes each class in proportion to its frequency (largest-remainder
    rounding), with at least one sample of every class that has two or more when
    ``val_size`` allows it; every class keeps at least one training sample. The validation
    part does not depend on ``train_size``, so proxy runs on a smaller training set are scored
    on the same validation images.

    Args:
        y: Integer labels, shape (N,).
        val_size: Fraction in (0, 1) of N (rounded, at least 1), or a count >= 1.
        train_size: If given, the training part is a stratified subsample of this many of the
            remaining samples (at least one per class); None keeps all of them.
        seed: Seed of a numpy ``default_rng``; the same seed gives the same split.

    Returns:
        ``(train_idx, val_idx)``: sorted, disjoint int64 index tensors into ``y``.

    Raises:
        ConfigError: ``val_size`` or ``train_size`` out of range for these labels (the message
            gives the values and the limits).
    """
    seed = check_seed(seed)
    labels = labels_to_int64(y, "y")
    n = len(labels)
    if n < 2:
        raise ConfigError(f"need at least 2 samples to split; got {n}.")
    values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    k = len(values)
    capacity = n - k  # every class keeps one training sample

    if is_int(val_size) and val_size >= 1:
        n_val = int(val_size)
    elif is_number(val_size) and not is_int(val_size) and 0 < val_size < 1:
        n_val = max(1, round(float(val_size) * n))
    else:
        raise ConfigError(f"val_size is {val_size!r}, expected a fraction in (0, 1) or a count >= 1")
    if n_val > capacity:
        raise ConfigError(
            f"val_size {val_size!r} asks for {n_val} of {n} samples, but at most {capacity} can "
            f"go to validation so that each of the {k} classes keeps a training sample."
        )

    val_alloc = _allocate(
        counts, n_val, counts - 1, at_least_one=n_val >= int((counts >= 2).sum())
    )
    rng = np.random.default_rng(seed)
    # Group indices by class (stable, so the grouping itself does not depend on the seed),
    # then shuffle within each class: the first val_alloc[c] go to validation.
    by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    shuffled = [rng.permutation(idx) for idx in by_class]
    val_parts = [s[:a] for s, a in zip(shuffled, val_alloc, strict=True)]
    pools = [s[a:] for s, a in zip(shuffled, val_alloc, strict=True)]

    if train_size is not None:
        pool_counts = counts - val_alloc
        available = int(pool_counts.sum())
        if not is_int(train_size) or not k <= train_size <= available:
            raise ConfigError(
                f"train_size is {train_size!r}, expected an int between the number of classes ({k}) and the "
                f"samples left after validation ({available}); lower train_size or val_size, or pass "
                "train_size=None to use all."
            )
        train_alloc = _allocate(pool_counts, int(train_size), pool_counts, at_least_one=True)
        pools = [p[:a] for p, a in zip(pools, train_alloc, strict=True)]

    train_idx = np.sort(np.concatenate(pools))
    val_idx = np.sort(np.concatenate(val_parts))
    return torch.from_numpy(train_idx.astype(np.int64)), torch.from_numpy(val_idx.astype(np.int64))


def stratified_subset(y: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Sorted indices of a stratified subsample of ``size`` samples (at least one per class)."""
    labels = y.numpy()
    values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    alloc = _allocate(counts, size, counts, at_least_one=size >= len(values))
    rng = np.random.default_rng(seed)
    by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    picked = [rng.permutation(idx)[:a] for idx, a in zip(by_class, alloc, strict=True)]
    return torch.from_numpy(np.sort(np.concatenate(picked)).astype(np.int64))
