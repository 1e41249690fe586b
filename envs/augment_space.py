"""The action spaces of the augment envs: frozen dataclasses that map an action in [-1, 1]^D to the
knobs it sets (`decode`, logged for every decision) and the knobs to an `AugmentPolicy` (`policy`).

- `FullSpace`: Augment-v1's default (``space="full"``): every op's probability and strength, crop,
  flip, mixup, cutmix, random erasing; the centre of the box is no augmentation.
- `SmallSpace`: Augment-v1's ``space="small"``: five RandAugment-like knobs for tiny budgets; the
  centre is no augmentation too.
- `AugmentSpace`: Augment-v0's, kept as it was (its centre turns everything on).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from policysearch.checks import check_choice, check_int, check_number
from policysearch.errors import ConfigError
from policysearch.policies.augment import ERASING_SCALE, MAGNITUDE_SCALES, OPS, TRIVIAL_OPS, AugmentPolicy

__all__ = ["SPACES", "AugmentSpace", "FullSpace", "SmallSpace"]


def _unit(a: float) -> float:
    """Map an action coordinate in [-1, 1] to [0, 1] (the centre 0 to 0.5)."""
    return float(np.clip((a + 1.0) / 2.0, 0.0, 1.0))


def _on(a: float) -> float:
    """Map an action coordinate in [-1, 1] to a probability: ``max(0, a)^2`` (the centre and below: 0)."""
    return float(np.clip(a, 0.0, 1.0)) ** 2


def _check_action(action: Any, dim: int) -> np.ndarray:
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (dim,) or not np.all(np.isfinite(a)):
        shown = f"{a[:4].tolist()}{'...' if a.size > 4 else ''}"
        raise ConfigError(f"action is {shown} (shape {a.shape}), expected {dim} finite numbers")
    return a


def _check_ops_and_mix(space: Any) -> None:
    """The fields every space shares: ops, magnitude scale, mix bounds and alphas."""
    if not space.ops or len(set(space.ops)) != len(space.ops):
        raise ConfigError(f"ops is {space.ops!r}, expected at least one augmentation op, each at most once")
    for op in space.ops:
        check_choice("augmentation op", op, OPS)
    check_choice("magnitude scale", space.magnitude_scale, MAGNITUDE_SCALES)
    check_number("max_mix", space.max_mix, 0.0, 0.5)
    for name in ("mixup_alpha", "cutmix_alpha"):  # checked here too: a bad one would fail only at the first step
        check_number(name, getattr(space, name), 0.0, low_open=True)


def _op_subpolicies(ops: tuple[str, ...], probability: dict[str, float], strength: dict[str, float],
                    ops_per_sample: int, magnitude_scale: str) -> list[list[tuple[str, float, int | None]]]:
    """Sub-policies that draw `ops_per_sample` ops uniformly per sample and apply each with its
    probability at its strength: every ordered tuple of ops is one sub-policy (kornia's format)."""
    choices = []
    for op in ops:
        spec = OPS[op]
        bins: list[int | None] = (
            [None] if spec.standard is None else list(spec.strength_bins(strength[op], magnitude_scale)))
        # Two entries per op keep the op draw uniform when only some ops are two-sided.
        choices += [[(op, probability[op], bins[i % len(bins)])] for i in range(2)]
    return [list(itertools.chain.from_iterable(combo)) for combo in itertools.product(choices, repeat=ops_per_sample)]


@dataclass(frozen=True)
class AugmentSpace:
    """The action space of Augment-v0 and its mapping to an `AugmentPolicy` (kept as it was, so
    Augment-v0 runs stay reproducible; Augment-v1 uses `FullSpace` or `SmallSpace`).

    An action is a vector in [-1, 1]^(2K+4) for K ops; each coordinate a maps to u = (a+1)/2:

    | index      | knob                      | value                                        |
    |------------|---------------------------|----------------------------------------------|
    | 0 .. K-1   | probability of op k       | u^2                                          |
    | K .. 2K-1  | strength of op k          | u: fraction of the op's widest departure     |
    |            |                           | from identity (both signs if two-sided)      |
    | 2K         | crop (pad-and-crop shift) | u * max_crop of the image side               |
    | 2K+1       | horizontal flip           | probability u^2                              |
    | 2K+2       | mixup                     | probability u^2 * max_mix (alpha mixup_alpha)|
    | 2K+3       | cutmix                    | probability u^2 * max_mix (alpha cutmix_alpha)|

    Probabilities are squared so that "off" stays reachable with precision; the centre of the box
    (where an untrained agent starts) turns every op, crop, flip, mixup and cutmix on at once
    (probability 0.25), which is why Augment-v1 re-centres it.

    The policy draws, per sample, `ops_per_sample` ops uniformly from the K ops and applies each
    with its probability at its strength, as kornia-format sub-policies (every ordered tuple of ops
    is one sub-policy), so the exported file loads in kornia's AutoAugment.
    """

    ops: tuple[str, ...] = TRIVIAL_OPS
    ops_per_sample: int = 1
    magnitude_scale: str = "standard"
    max_crop: float = 0.25
    max_mix: float = 0.5
    mixup_alpha: float = 1.0
    cutmix_alpha: float = 1.0

    def __post_init__(self) -> None:
        _check_ops_and_mix(self)
        check_int("ops_per_sample", self.ops_per_sample, 1, 3)
        check_number("max_crop", self.max_crop, 0.0, 0.5)

    @property
    def dim(self) -> int:
        return 2 * len(self.ops) + 4

    def box(self) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, shape=(self.dim,), dtype=np.float32)

    def decode(self, action: Any) -> dict[str, Any]:
        """The knobs an action sets, as plain JSON-able values (logged for every decision)."""
        a = _check_action(action, self.dim)
        k = len(self.ops)
        return {
            "op_probability": {op: round(_unit(a[i]) ** 2, 4) for i, op in enumerate(self.ops)},
            "op_strength": {op: round(_unit(a[k + i]), 4) for i, op in enumerate(self.ops)},
            "crop": round(_unit(a[2 * k]) * self.max_crop, 4),
            "flip": round(_unit(a[2 * k + 1]) ** 2, 4),
            "mixup": round(_unit(a[2 * k + 2]) ** 2 * self.max_mix, 4),
            "cutmix": round(_unit(a[2 * k + 3]) ** 2 * self.max_mix, 4),
        }

    def policy(self, knobs: dict[str, Any], name: str = "learned") -> AugmentPolicy:
        """The AugmentPolicy that `knobs` (from `decode`) describe."""
        return AugmentPolicy(self._subpolicies(knobs), crop=knobs["crop"], flip=knobs["flip"],
                             mixup=(knobs["mixup"], self.mixup_alpha), cutmix=(knobs["cutmix"], self.cutmix_alpha),
                             magnitude_scale=self.magnitude_scale, name=name)

    def _subpolicies(self, knobs: dict[str, Any]) -> list[list[tuple[str, float, int | None]]]:
        return _op_subpolicies(self.ops, knobs["op_probability"], knobs["op_strength"], self.ops_per_sample,
                               self.magnitude_scale)


@dataclass(frozen=True)
class FullSpace(AugmentSpace):
    """Augment-v1's default action space (``space="full"``): every op's knobs, crop, flip, mixup,
    cutmix and random erasing, with the centre of the box (all zeros) meaning **no augmentation**.

    An action is a vector in [-1, 1]^(2K+6) for K ops. A probability is ``max(0, a)^2``: 0 for the
    centre and the whole lower half of its axis, 1 at a = 1, so an untrained agent starts from no
    augmentation and turns each knob on by moving away from it. A strength is u = (a+1)/2.

    | index      | knob                      | value                                               |
    |------------|---------------------------|-----------------------------------------------------|
    | 0 .. K-1   | probability of op k       | max(0, a)^2                                         |
    | K .. 2K-1  | strength of op k          | u: fraction of the op's widest departure from       |
    |            |                           | identity (both signs if two-sided)                  |
    | 2K         | crop (pad-and-crop shift) | max(0, a) * max_crop of the image side              |
    | 2K+1       | horizontal flip           | probability max(0, a)^2                             |
    | 2K+2       | mixup                     | probability max(0, a)^2 * max_mix (alpha mixup_alpha) |
    | 2K+3       | cutmix                    | probability max(0, a)^2 * max_mix (alpha cutmix_alpha) |
    | 2K+4       | random erasing            | probability max(0, a)^2                             |
    | 2K+5       | erased area               | the largest erased area fraction, 0.02 + u * (max_erasing - 0.02); |
    |            |                           | area drawn in [0.02, that], aspect ratio in [0.3, 3.3] |

    The strengths' centre (u = 0.5) is the middle of each op's range and, for erasing, the usual
    area range (0.02, 0.33). When every op's probability is 0 the policy holds no sub-policies.
    """

    max_erasing: float = 0.64
    mixup: bool = True  # False for masks (segmentation): the mixup knob is inert, cutmix stays

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("max_erasing", self.max_erasing, ERASING_SCALE[0], 1.0)

    @property
    def dim(self) -> int:
        return 2 * len(self.ops) + 6

    def decode(self, action: Any) -> dict[str, Any]:
        a = _check_action(action, self.dim)
        k = len(self.ops)
        lo = ERASING_SCALE[0]
        return {
            "op_probability": {op: round(_on(a[i]), 4) for i, op in enumerate(self.ops)},
            "op_strength": {op: round(_unit(a[k + i]), 4) for i, op in enumerate(self.ops)},
            "crop": round(float(np.clip(a[2 * k], 0.0, 1.0)) * self.max_crop, 4),
            "flip": round(_on(a[2 * k + 1]), 4),
            "mixup": round(_on(a[2 * k + 2]) * self.max_mix, 4) if self.mixup else 0.0,
            "cutmix": round(_on(a[2 * k + 3]) * self.max_mix, 4),
            "erasing": round(_on(a[2 * k + 4]), 4),
            "erasing_area": round(lo + _unit(a[2 * k + 5]) * (self.max_erasing - lo), 4),
        }

    def policy(self, knobs: dict[str, Any], name: str = "learned") -> AugmentPolicy:
        subs = self._subpolicies(knobs) if any(knobs["op_probability"].values()) else []
        area = knobs["erasing_area"]
        return AugmentPolicy(subs, crop=knobs["crop"], flip=knobs["flip"], erasing=knobs["erasing"],
                             erasing_scale=(min(ERASING_SCALE[0], area), area),
                             mixup=(knobs["mixup"], self.mixup_alpha), cutmix=(knobs["cutmix"], self.cutmix_alpha),
                             magnitude_scale=self.magnitude_scale, name=name)


@dataclass(frozen=True)
class SmallSpace:
    """Augment-v1's small action space (``space="small"``): five RandAugment-like knobs for tiny
    search budgets, decoded into the same `AugmentPolicy`. The centre of the box (all zeros) is **no
    augmentation**: every probability is ``max(0, a)^2``, 0 at the centre and below; u = (a+1)/2.

    | index | knob                             | value                                                  |
    |-------|----------------------------------|--------------------------------------------------------|
    | 0     | ops per sample N                 | 1 + floor(u * max_ops_per_sample), at most max_ops_per_sample |
    | 1     | magnitude M (one for every op)   | u: fraction of each op's widest departure from identity |
    | 2     | probability of applying each op  | max(0, a)^2                                            |
    | 3     | random erasing                   | probability max(0, a)^2; area (0.02, 0.33), ratio (0.3, 3.3) |
    | 4     | mix                              | probability max(0, a)^2 * max_mix, half mixup (alpha   |
    |       |                                  | mixup_alpha), half cutmix (alpha cutmix_alpha)         |

    Per sample, N ops are drawn uniformly from `ops` (as RandAugment does) and each is applied with
    the probability at magnitude M; no crop or flip (translate_x / translate_y do shifts). With
    `max_ops_per_sample` 2 a policy holds at most (2K)^2 sub-policies (676 for the 13 default ops);
    3 would make 17,576 per policy, too many to rebuild every segment, hence the default.
    """

    ops: tuple[str, ...] = TRIVIAL_OPS
    max_ops_per_sample: int = 2
    magnitude_scale: str = "standard"
    max_mix: float = 0.5
    mixup_alpha: float = 1.0
    cutmix_alpha: float = 1.0
    mixup: bool = True  # False for masks (segmentation): the mix knob is all cutmix

    def __post_init__(self) -> None:
        _check_ops_and_mix(self)
        check_int("max_ops_per_sample", self.max_ops_per_sample, 1, 3)

    @property
    def dim(self) -> int:
        return 5

    def box(self) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, shape=(self.dim,), dtype=np.float32)

    def decode(self, action: Any) -> dict[str, Any]:
        """The knobs an action sets, as plain JSON-able values (logged for every decision)."""
        a = _check_action(action, self.dim)
        n = self.max_ops_per_sample
        return {
            "ops_per_sample": min(n, 1 + int(_unit(a[0]) * n)),
            "magnitude": round(_unit(a[1]), 4),
            "probability": round(_on(a[2]), 4),
            "erasing": round(_on(a[3]), 4),
            "mix": round(_on(a[4]) * self.max_mix, 4),
        }

    def policy(self, knobs: dict[str, Any], name: str = "learned") -> AugmentPolicy:
        """The AugmentPolicy that `knobs` (from `decode`) describe."""
        p, m = knobs["probability"], knobs["magnitude"]
        subs = _op_subpolicies(self.ops, dict.fromkeys(self.ops, p), dict.fromkeys(self.ops, m),
                               knobs["ops_per_sample"], self.magnitude_scale) if p > 0 else []
        mixup = knobs["mix"] / 2 if self.mixup else 0.0  # without mixup (masks) the mix knob is all cutmix
        return AugmentPolicy(subs, erasing=knobs["erasing"], mixup=(mixup, self.mixup_alpha),
                             cutmix=(knobs["mix"] - mixup, self.cutmix_alpha), magnitude_scale=self.magnitude_scale,
                             name=name)


SPACES = ("full", "small")
