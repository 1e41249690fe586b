"""What a compression plan of a network may choose: each channel group's kept-count bounds and the
exact FLOPs model behind AMC's clip. Shared by Compress-v0, the plan's baseline constructors and the
compass search, so that all of them clip the same way."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from policysearch.channels.flops import FlopsModel, layer_flops
from policysearch.channels.groups import channel_groups
from policysearch.checks import check_number
from policysearch.errors import ConfigError

__all__ = ["PlanSpace"]


class PlanSpace:
    """What a plan of `model` may choose: its channel groups, each group's kept-count bounds, and the
    exact FLOPs model behind AMC's clip. Shared by the env and the `CompressionPlan.uniform` /
    `CompressionPlan.random` constructors, so that all three clip the same way."""

    def __init__(self, model: nn.Module, example: torch.Tensor, flops_target: float, min_keep: float,
                 max_keep: float = 1.0) -> None:
        check_number("flops_target (a fraction of the teacher's FLOPs)", flops_target, 0.0, 1.0, low_open=True)
        check_number("min_keep", min_keep, 0.0, 1.0, low_open=True)
        check_number("max_keep", max_keep, 0.0, 1.0, low_open=True)
        if min_keep > max_keep:
            raise ConfigError(f"min_keep is {min_keep!r}, expected at most max_keep ({max_keep!r})")
        self.groups = channel_groups(model, example)
        self.flops_model = FlopsModel(model, layer_flops(model, example), self.groups)
        self.min_keep, self.max_keep = float(min_keep), float(max_keep)
        self.min_count = [max(1, math.ceil(g.channels * min_keep - 1e-9)) for g in self.groups]
        self.max_count = [max(lo, math.floor(g.channels * max_keep + 1e-9))
                          for g, lo in zip(self.groups, self.min_count)]
        self.target_flops = flops_target * self.flops_model.total

    def fractions(self, counts: Sequence[int]) -> list[float]:
        """Kept fractions of `counts` (decided groups) with every later group at its minimum."""
        done = [c / g.channels for c, g in zip(counts, self.groups)]
        return done + [lo / g.channels for g, lo in zip(self.groups[len(done):], self.min_count[len(done):])]

    def flops_ok(self, counts: Sequence[int]) -> bool:
        return self.flops_model([c / g.channels for c, g in zip(counts, self.groups)]) <= self.target_flops

    def max_allowed(self, counts: Sequence[int]) -> int:
        """The most channels the next group may keep, later groups at their minimum (AMC's clip)."""
        i = len(counts)
        g = self.groups[i]
        fractions = self.fractions(counts)
        fractions[i] = 0.0
        base = self.flops_model(fractions)
        fractions[i] = 1.0
        slope = self.flops_model(fractions) - base
        if slope <= 0:
            return g.channels
        allowed = min(g.channels, math.floor((self.target_flops - base) / slope * g.channels + 1e-9))
        while allowed > self.min_count[i]:
            fractions[i] = allowed / g.channels
            if self.flops_model(fractions) <= self.target_flops:
                break
            allowed -= 1
        return max(allowed, self.min_count[i])

    def clip(self, wanted: Sequence[int]) -> list[int]:
        """AMC's clip of a whole vector of wanted counts, group by group."""
        counts: list[int] = []
        for i, w in enumerate(wanted):
            w = min(self.max_count[i], max(self.min_count[i], int(w)))
            counts.append(max(self.min_count[i], min(w, self.max_allowed(counts))))
        return counts

    def uniform_counts(self, ratio: float, fixed: Mapping[int, int] | None = None,
                       base: Sequence[int] | None = None) -> list[int]:
        """Every group at one keep ratio (rounded, within its bounds), not clipped; the groups in
        `fixed` (index -> kept count) keep that count instead. With `base` (kept counts), `ratio`
        multiplies those counts instead of the full widths: the plan's shape scaled."""
        widths = [g.channels for g in self.groups] if base is None else list(base)
        counts = [min(hi, max(lo, round(w * ratio)))
                  for w, lo, hi in zip(widths, self.min_count, self.max_count)]
        for index, count in (fixed or {}).items():
            if not self.min_count[index] <= count <= self.max_count[index]:
                raise ConfigError(f"group {self.groups[index].name} cannot keep {count} channels: its bounds are "
                                  f"{self.min_count[index]}..{self.max_count[index]}")
            counts[index] = count
        return counts

    def largest_uniform(self, ok: Any = None, cap: float = 1.0, fixed: Mapping[int, int] | None = None,
                        base: Sequence[int] | None = None) -> float:
        """The largest common keep ratio <= `cap` whose counts meet the FLOPs target (and `ok(counts)`);
        with `fixed`, the ratio of the other groups; with `base`, the largest multiplier of those
        counts (`cap` ignored) (see `uniform_counts`)."""
        def feasible(r: float) -> bool:
            counts = self.uniform_counts(r, fixed, base)
            return self.flops_ok(counts) and (ok is None or ok(counts))

        lo, hi = self.min_keep, min(cap, self.max_keep)
        if base is not None:  # from every group at its minimum to every group at its maximum
            lo = min(m / max(1, b) for m, b in zip(self.min_count, base))
            hi = max(m / max(1, b) for m, b in zip(self.max_count, base))
        if feasible(hi):
            return hi
        if not feasible(lo):
            raise ConfigError(f"no uniform keep ratio >= min_keep={self.min_keep} meets the targets; "
                              "raise the targets or lower min_keep")
        for _ in range(30):  # bisection: FLOPs and parameters grow with the ratio
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if feasible(mid) else (lo, mid)
        return lo

    def shifted_counts(self, counts: Sequence[int], index: int, factor: float) -> list[int]:
        """`counts` with group `index`'s count times `factor` (rounded, within its bounds) and every other
        group at the largest common keep ratio that meets the FLOPs target: a plan at the same budget
        that moves FLOPs into (factor > 1) or out of one group. Used to test whether a plan is a local
        optimum of the accuracy after fine-tuning."""
        return self._moved(counts, index, factor, None, base=None)

    def moved_counts(self, counts: Sequence[int], index: int, factor: float, ok: Any = None) -> list[int]:
        """`counts` with group `index`'s count times `factor` (rounded, within its bounds) and every other
        group's count times the largest common multiplier that meets the FLOPs target (and `ok`): one
        step of a coordinate search from any plan, which keeps the other groups' proportions (from a
        uniform plan, `shifted_counts` up to rounding)."""
        return self._moved(counts, index, factor, ok, base=counts)

    def _moved(self, counts: Sequence[int], index: int, factor: float, ok: Any,
               base: Sequence[int] | None) -> list[int]:
        """Group `index` at its count times `factor`; the others at the largest common ratio of `base`
        (None: the full widths) that meets the targets."""
        check_number("factor", factor, 0.0, None, low_open=True)
        fixed = {index: min(self.max_count[index], max(self.min_count[index], round(counts[index] * factor)))}
        return self.uniform_counts(self.largest_uniform(ok, fixed=fixed, base=base), fixed, base=base)

    def random_counts(self, rng: np.random.Generator) -> list[int]:
        """Uniform random keep ratios in [min_keep, max_keep] per group, clipped group by group as the env does."""
        wanted = [round(g.channels * (self.min_keep + rng.uniform() * (self.max_keep - self.min_keep)))
                  for g in self.groups]
        return self.clip(wanted)
