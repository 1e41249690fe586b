"""`AugmentPolicy`: an augmentation policy as plain data, applied batched on the training device.

A policy is

* a crop / flip base (random shift with zero padding, i.e. pad-and-crop, and a horizontal flip),
* a list of sub-policies in kornia's AutoAugment form ``[(op_name, probability, magnitude_bin), ...]``
  (`kornia_policy()` gives lists that load into ``kornia.augmentation.auto.AutoAugment(policy=...)``),
  of which **one is drawn per sample** (kornia and torchvision draw one per batch),
* random erasing (cutout) per sample, with kornia's `RandomErasing` semantics (probability, range of
  the erased area fraction, range of the box's aspect ratio, fill value 0),
* mixup and cutmix (probability, alpha) that return soft targets, and
* optionally a schedule: ``(start_progress, policy)`` pieces over training progress in [0, 1].

Order per batch: crop, flip, one sub-policy per sample, erasing, then mixup / cutmix. Erasing and
crop are not op-table entries: kornia's AutoAugment has no such ops, so a sub-policy holding one
would no longer load there.

File format: version 1 has no erasing; a policy that erases anywhere is written as version 2 (with
an ``erasing`` object in every body), so an older reader refuses it rather than silently dropping
the erasing. Both versions are read; a missing ``erasing`` means off.

Magnitudes follow kornia's convention: bin ``b`` in ``0..9`` selects the interval
``[lo + (hi-lo)*b/10, lo + (hi-lo)*(b+1)/10]`` of the op's range, and the value is drawn uniformly
inside it for every sample. `OPS` is the one table of ops: each entry holds the op's magnitude ranges
and its batched kernel; it lives with the kernels in `policysearch.policies.ops` (and is importable
from here), so adding an op is adding one entry; nothing else hard-codes ranges or dispatches on op names.
Operations follow PIL's semantics (what AutoAugment was searched with); kornia's own wrappers differ
in a few scalings (e.g. they read shear fractions as degrees / 180), so a policy run through kornia's
AutoAugment is the same policy with kornia's op implementations, not a bit-identical replay.

Why one module of some 540 lines: the file format, its checks and the batched application are one
class (`AugmentPolicy`); the hand-made policies and `load_policy` at the end are built from it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from policysearch.checks import check_choice, check_int, check_number, check_probability, is_int
from policysearch.errors import ConfigError, PolicyFormatError, PolicyInputError, UnknownNameError
from policysearch.policies import ops
from policysearch.policies.artifact import JsonArtefact, read_provenance, require, unwrap, wrap
from policysearch.policies.ops import MAGNITUDE_SCALES, NUM_BINS, OP_NAMES, OPS, TRIVIAL_OPS, OpSpec, apply_ops
from policysearch.policies.zoo import is_zoo, zoo_names
from policysearch.tasks import IGNORE_INDEX

# The op table lives with its kernels in `ops`; its names stay importable from here.
__all__ = [
    "BUILTIN_POLICIES", "ERASING_RATIO", "ERASING_SCALE", "MAGNITUDE_SCALES", "NUM_BINS", "OPS", "OP_NAMES",
    "TARGET_KINDS", "TRIVIAL_OPS", "AugmentPolicy", "OpSpec", "apply_ops", "builtin_policy", "load_policy",
    "rand_augment", "trivial_augment",
]


BUILTIN_POLICIES = ("none", "cropflip", "trivial", "randaugment", "autoaugment-cifar10", "erasing", "cropflip-erasing",
                    "cropflip-jitter")

JITTER_OPS = ("brightness", "contrast", "color")
JITTER_BINS = (3, 4, 5, 6)
"""cropflip-jitter's photometric jitter: one of brightness, contrast and saturation per sample (p 0.8), a factor
in [0.64, 1.36] (bins 3-6 of the standard 0.1-1.9 range): torchvision's ColorJitter(0.36, 0.36, 0.36) in
spirit, one op at a time as a kornia sub-policy."""

ERASING_SCALE = (0.02, 0.33)
"""Random erasing's default range of the erased area (fraction of the image): Zhong et al. 2020,
torchvision's and kornia's defaults."""
ERASING_RATIO = (0.3, 3.3)
"""Random erasing's default range of the box's aspect ratio (height / width), as above."""

SubPolicy = tuple[tuple[str, float, int | None], ...]

TARGET_KINDS = ("label", "mask", "image")
"""What a policy's `forward` moves with the images (`policysearch.tasks.Task.target_kind`)."""

# Bounds on a policy's size: every op of a sub-policy runs on every batch, so one of thousands of ops
# would make a one-epoch run take minutes. Published policies use 1-3 ops per sub-policy, at most a
# few hundred sub-policies (RandAugment with N = 3 ops: 21,952).
MAX_OPS_PER_SUB_POLICY = 16
MAX_SUB_POLICIES = 100_000
MAX_SCHEDULE_PIECES = 1_000
MAX_MIX_ALPHA = 100.0  # Beta(alpha, alpha) is already a point mass at 0.5 long before; 1e308 breaks it


def _check_subpolicies(raw: Any, source: str = "sub_policies") -> tuple[SubPolicy, ...]:
    if not isinstance(raw, (list, tuple)):
        raise ConfigError(f"{source} is a {type(raw).__name__}, expected a list of sub-policies")
    if len(raw) > MAX_SUB_POLICIES:
        raise ConfigError(f"{source} holds {len(raw):,} sub-policies, expected at most {MAX_SUB_POLICIES:,}")
    checked = []
    for i, sub in enumerate(raw):
        if not isinstance(sub, (list, tuple)):
            raise ConfigError(f"{source}[{i}] is {sub!r}, expected a list of (op_name, probability, magnitude_bin)")
        if len(sub) > MAX_OPS_PER_SUB_POLICY:
            raise ConfigError(f"{source}[{i}] holds {len(sub):,} ops, expected at most {MAX_OPS_PER_SUB_POLICY} "
                              "(each runs on every image of every batch)")
        entries = []
        for j, entry in enumerate(sub):
            where = f"{source}[{i}][{j}]"
            if not isinstance(entry, (list, tuple)) or len(entry) != 3:
                raise ConfigError(f"{where} is {entry!r}, expected (op_name, probability, magnitude_bin)")
            name, prob, mag = entry
            check_choice("augmentation op", name, OP_NAMES)
            prob = check_probability(f"{where} ({name}) probability", prob)
            if OPS[name].standard is None:
                if mag is not None and not is_int(mag):  # ignored, kept as written for kornia
                    raise ConfigError(f"{where} ({name}) magnitude bin is {mag!r}, expected null or an int")
            else:
                check_int(f"{where} ({name}) magnitude bin", mag, 0, NUM_BINS - 1)
            entries.append((str(name), prob, mag))
        checked.append(tuple(entries))
    return tuple(checked)


def _check_mix(label: str, value: Any) -> tuple[float, float]:
    """A mix op's ``(probability, alpha)``; the parts are named as the JSON fields ("mixup.alpha"),
    so a message reads the same from a constructor and from a file."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"{label} is {value!r}, expected (probability, alpha)")
    return (check_probability(f"{label}.p", value[0]),
            check_number(f"{label}.alpha", value[1], 0.0, MAX_MIX_ALPHA, low_open=True))


def _check_interval(label: str, value: Any, high: float | None) -> tuple[float, float]:
    """A range ``(lo, hi)`` with ``0 < lo <= hi`` (``<= high`` when given)."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"{label} is {value!r}, expected (low, high)")
    lo = check_number(f"{label} low", value[0], 0.0, high, low_open=True)
    hi = check_number(f"{label} high", value[1], lo, high)
    return lo, hi


class AugmentPolicy(JsonArtefact, nn.Module):
    """An augmentation policy applied to a float batch in [0, 1] on its own device.

    Args:
        sub_policies: kornia-style sub-policies; one is drawn uniformly **per sample**.
        crop: largest random shift, as a fraction of the image side (pad-and-crop); 0 disables.
        flip: probability of a horizontal flip.
        erasing: probability of erasing a random box of a sample (random erasing / cutout, per sample).
        erasing_scale: range of the erased area, as a fraction of the image (kornia's ``scale``).
        erasing_ratio: range of the box's aspect ratio, height / width (kornia's ``ratio``).
        mixup: ``(probability, alpha)`` of mixing the batch with a shuffled copy (per batch).
        cutmix: ``(probability, alpha)`` of pasting a box from a shuffled copy (per batch);
            mixup and cutmix are exclusive, so their probabilities must sum to at most 1.
        magnitude_scale: ``"standard"`` (kornia's ranges) or ``"wide"`` (TrivialAugment-wide's).
        schedule: ``[(start_progress, AugmentPolicy), ...]`` starting at 0; when given, the piece
            whose start is the last one at or below the current progress is applied and this
            policy's own fields are ignored.
        name: a label carried into reports.
        provenance: where the policy came from (search run, dataset fingerprint, ...).
    """

    KIND = "augment_policy"
    FORMAT_VERSION = 2  # written only by policies that erase; see the module docstring

    def __init__(
        self,
        sub_policies: Sequence[Sequence[Sequence[Any]]] = (),
        *,
        crop: float = 0.0,
        flip: float = 0.0,
        erasing: float = 0.0,
        erasing_scale: tuple[float, float] = ERASING_SCALE,
        erasing_ratio: tuple[float, float] = ERASING_RATIO,
        mixup: tuple[float, float] = (0.0, 1.0),
        cutmix: tuple[float, float] = (0.0, 1.0),
        magnitude_scale: str = "standard",
        schedule: Sequence[tuple[float, AugmentPolicy]] | None = None,
        name: str = "custom",
        provenance: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.sub_policies = _check_subpolicies(sub_policies)
        self.crop = check_number("crop (a fraction of the image side)", crop, 0.0, 0.5)
        self.flip = check_probability("flip", flip)
        self.erasing = check_probability("erasing.p", erasing)
        self.erasing_scale = _check_interval("erasing.scale", erasing_scale, 1.0)
        self.erasing_ratio = _check_interval("erasing.ratio", erasing_ratio, None)
        self.mixup, self.cutmix = _check_mix("mixup", mixup), _check_mix("cutmix", cutmix)
        if self.mixup[0] + self.cutmix[0] > 1.0 + 1e-9:
            raise ConfigError(f"mixup.p + cutmix.p is {self.mixup[0] + self.cutmix[0]!r}, expected at most 1 "
                              "(they are exclusive per batch)")
        self.magnitude_scale = check_choice("magnitude scale", magnitude_scale, MAGNITUDE_SCALES)
        self.name = name
        self.provenance = dict(provenance or {})
        self.starts: tuple[float, ...] = ()
        self.pieces = nn.ModuleList()
        if schedule and len(schedule) > MAX_SCHEDULE_PIECES:
            raise ConfigError(f"schedule holds {len(schedule):,} pieces, expected at most {MAX_SCHEDULE_PIECES:,}")
        if schedule:
            starts = [check_number(f"schedule[{i}] start", s, 0.0, 1.0, high_open=True)
                      for i, (s, _) in enumerate(schedule)]
            if starts[0] != 0.0 or any(b <= a for a, b in itertools.pairwise(starts)):
                raise ConfigError(f"schedule starts are {starts}, expected strictly increasing values in [0, 1) from 0")
            for _, piece in schedule:
                if not isinstance(piece, AugmentPolicy) or piece.pieces:
                    raise ConfigError("schedule pieces must be AugmentPolicy objects without a schedule")
            self.starts = tuple(starts)
            self.pieces.extend(piece for _, piece in schedule)
        self._build_tables()
        # A policy is fixed once built; the trainer asks this every segment (every step in closed loop).
        self.is_identity = self._compute_is_identity()
        self.last_subpolicy: torch.Tensor | None = None  # per-sample choice of the last call, for replay
        self._inputs_checked = False  # off the CPU, values are checked on the first call only

    # ------------------------------------------------------------------ tables
    def _build_tables(self) -> None:
        """Sub-policies as (K, S) tensors so that a per-sample choice is one gather."""
        k = max(1, len(self.sub_policies))
        s = max([1] + [len(sp) for sp in self.sub_policies])
        op = torch.full((k, s), -1, dtype=torch.long)
        prob = torch.zeros(k, s)
        mag_bin = torch.zeros(k, s)
        for i, sub in enumerate(self.sub_policies):
            for j, (name, p, b) in enumerate(sub):
                op[i, j] = OP_NAMES.index(name)
                prob[i, j] = p
                mag_bin[i, j] = 0 if b is None else b
        lo = torch.tensor([(OPS[n].range(self.magnitude_scale) or (0.0, 0.0))[0] for n in OP_NAMES])
        hi = torch.tensor([(OPS[n].range(self.magnitude_scale) or (0.0, 0.0))[1] for n in OP_NAMES])
        for name, value in (("_op", op), ("_prob", prob), ("_bin", mag_bin), ("_lo", lo), ("_hi", hi)):
            self.register_buffer(name, value, persistent=False)

    # ------------------------------------------------------------------ application
    def at(self, progress: float | None) -> AugmentPolicy:
        """The policy in force at `progress` (itself when there is no schedule)."""
        if not self.pieces:
            return self
        p = 0.0 if progress is None else float(progress)
        index = max(i for i, start in enumerate(self.starts) if start <= p) if p >= 0 else 0
        return self.pieces[index]  # type: ignore[return-value]

    def _compute_is_identity(self) -> bool:
        if self.pieces:
            return all(piece.is_identity for piece in self.pieces)  # type: ignore[union-attr]
        no_ops = all(p == 0.0 for sub in self.sub_policies for _, p, _ in sub)
        return (no_ops and self.crop == 0 and self.flip == 0 and self.erasing == 0 and self.mixup[0] == 0
                and self.cutmix[0] == 0)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        num_classes: int,
        progress: float | None = None,
        generator: torch.Generator | None = None,
        *,
        target_kind: str = "label",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a batch and its targets together.

        Args:
            x: float images in [0, 1], shape (B, C, H, W).
            y: the targets, as `target_kind` says: int64 labels (B,) ("label", classification); an
                int64 mask (B, H, W) of class indices, `IGNORE_INDEX` for unlabelled pixels ("mask",
                segmentation); a float image (B, C', H, W) in [0, 1] ("image", restoration).
            num_classes: width of the soft targets; the classes of a mask.
            progress: training progress in [0, 1], for scheduled policies.
            generator: a torch.Generator on x's device; all randomness comes from it.
            target_kind: "label", "mask" or "image" (`policysearch.tasks.Task.target_kind`).

        How each op treats a dense target: crop, flip, the geometric ops (shear, translate, rotate) and
        erasing's box move a mask or image target with the input (a mask nearest-neighbour, with
        `IGNORE_INDEX` where pixels come from outside the image or were erased); the photometric ops
        change the input only when the target is a mask, and both alike when it is an image (it shows
        the same scene); cutmix pastes the partner's target region with its pixels; mixup is defined for
        an image target (the same blend) and refused for a mask (a class index has no blend).

        Returns:
            The augmented images and the targets: soft targets (B, num_classes) whose rows sum to one
            for labels; the moved mask or image otherwise.

        Raises:
            PolicyInputError: `x` is not a float32 (B, C, H, W) batch in [0, 1], `y` does not fit
                `target_kind` (values are checked on the CPU at every call, on other devices at the
                first, to add no synchronisation to a training step), or mixup meets a mask.
        """
        check_choice("target kind", target_kind, TARGET_KINDS)
        self._check_batch(x, y, num_classes, target_kind)
        policy = self.at(progress)
        dense = target_kind != "label"
        targets = y if dense else torch.nn.functional.one_hot(y, num_classes).to(x.dtype)
        if policy.crop > 0:
            offsets, pad = ops.shift_offsets(x, policy.crop, generator)
            x = ops.shift(x, offsets, pad)
            if dense:
                targets = ops.shift(targets, offsets, pad, IGNORE_INDEX if target_kind == "mask" else 0.0)
        if policy.flip > 0:
            flip = torch.rand(x.shape[0], device=x.device, generator=generator) < policy.flip
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            if dense:
                turn = flip.view(-1, *([1] * (targets.dim() - 1)))
                targets = torch.where(turn, targets.flip(-1), targets)
        if policy.sub_policies:
            x, moved = policy._apply_subpolicies(x, targets if dense else None, target_kind, generator)
            targets = moved if dense else targets
        if policy.erasing > 0:
            x, targets = policy._apply_erasing(x, targets, target_kind, generator)
        if policy.mixup[0] > 0 or policy.cutmix[0] > 0:
            x, targets = policy._apply_mix(x, targets, target_kind, generator)
        return x, targets

    def _check_batch(self, x: Any, y: Any, num_classes: int, target_kind: str = "label") -> None:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise PolicyInputError(f"the policy takes a tensor batch and tensor labels, got {type(x).__name__} and "
                                   f"{type(y).__name__}")
        if x.dim() != 4:
            hint = "; add the batch dimension with x[None]" if x.dim() == 3 else ""
            raise PolicyInputError(f"the policy takes a batch of shape (B, C, H, W), got shape {tuple(x.shape)}{hint}")
        if x.dtype != torch.float32:
            hint = (" (uint8 pixels: pass x.float() / 255)" if x.dtype == torch.uint8 else
                    " (convert with x.float())" if x.is_floating_point() else "")
            raise PolicyInputError(f"the policy takes float32 images in [0, 1], got {x.dtype}{hint}")
        b, _, h, w = x.shape
        if target_kind == "label" and (y.dtype != torch.int64 or y.shape != (b,)):
            raise PolicyInputError(f"the policy takes int64 labels of shape ({b},), got {y.dtype} of shape "
                                   f"{tuple(y.shape)}")
        if target_kind == "mask" and (y.dtype != torch.int64 or y.shape != (b, h, w)):
            raise PolicyInputError(f"the policy takes an int64 mask of shape ({b}, {h}, {w}) with the images, got "
                                   f"{y.dtype} of shape {tuple(y.shape)} (masks: pass mask.long())")
        if target_kind == "image" and (y.dtype != torch.float32 or y.dim() != 4 or y.shape[0] != b
                                       or y.shape[-2:] != x.shape[-2:]):
            raise PolicyInputError(f"the policy takes a float32 target image of shape ({b}, C, {h}, {w}) with the "
                                   f"images, got {y.dtype} of shape {tuple(y.shape)}")
        if x.device.type != "cpu" and self._inputs_checked:
            return
        self._inputs_checked = True
        if x.numel() and (float(x.min()) < -1e-4 or float(x.max()) > 1 + 1e-4):
            scale = " (0..255 pixels: divide by 255)" if float(x.max()) > 2 else " (undo any normalisation first)"
            raise PolicyInputError(f"the policy takes images in [0, 1], got values in [{float(x.min()):.3g}, "
                                   f"{float(x.max()):.3g}]{scale}; normalise after augmenting")
        if target_kind == "label" and y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise PolicyInputError(f"labels must be 0..{num_classes - 1} (num_classes={num_classes}), got "
                                   f"{int(y.min())}..{int(y.max())}")
        if target_kind == "mask" and y.numel():
            bad = (y < 0) | ((y >= num_classes) & (y != IGNORE_INDEX))
            if bool(bad.any()):
                raise PolicyInputError(f"mask values must be 0..{num_classes - 1} or {IGNORE_INDEX} (ignored), got "
                                       f"{int(y[bad][0])}")

    def _apply_subpolicies(self, x: torch.Tensor, target: torch.Tensor | None, target_kind: str,
                           g: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, dev = x.shape[0], x.device
        choice = torch.randint(len(self.sub_policies), (b,), device=dev, generator=g)
        self.last_subpolicy = choice
        for stage in range(self._op.shape[1]):
            op = self._op[choice, stage]
            applied = (op >= 0) & (torch.rand(b, device=dev, generator=g) < self._prob[choice, stage])
            u = torch.rand(b, device=dev, generator=g)
            safe_op = op.clamp(min=0)
            lo, hi = self._lo[safe_op], self._hi[safe_op]
            magnitude = lo + (hi - lo) * (self._bin[choice, stage] + u) / NUM_BINS
            chosen = torch.where(applied, op, torch.full_like(op, -1))
            if target is None:
                x = apply_ops(x, chosen, magnitude)
            else:
                x, target = apply_ops(x, chosen, magnitude, target, target_kind, IGNORE_INDEX)
        return x, target

    def _apply_erasing(self, x: torch.Tensor, targets: torch.Tensor, target_kind: str,
                       g: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        # The same draws as ops.random_erasing; a dense target loses the same box (a mask: ignored there).
        u = torch.rand(6, x.shape[0], device=x.device, generator=g)
        top, left, height, width = ops.erasing_boxes(u[1:], x.shape[-2], x.shape[-1], self.erasing_scale,
                                                      self.erasing_ratio)
        height = torch.where(u[0] < self.erasing, height, torch.zeros_like(height))
        x = ops.erase(x, top, left, height, width)
        if target_kind == "mask":
            targets = ops.erase(targets[:, None], top, left, height, width, IGNORE_INDEX)[:, 0]
        elif target_kind == "image":
            targets = ops.erase(targets, top, left, height, width)
        return x, targets

    def _apply_mix(
        self, x: torch.Tensor, targets: torch.Tensor, target_kind: str, g: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # One scalar draw decides the op; lambda comes from numpy's Beta, seeded from `g`.
        draws = torch.rand(2, generator=g, device=x.device).cpu()
        u, seed = float(draws[0]), int(draws[1] * 2**31)
        rng = np.random.default_rng(seed)
        partner = x.flip(0)
        partner_targets = targets.flip(0)
        if u < self.mixup[0]:
            if target_kind == "mask":
                raise PolicyInputError("mixup blends two images, and a mask's class indices have no blend: a "
                                       "segmentation policy takes cutmix (the pasted region brings its mask)")
            lam = float(rng.beta(self.mixup[1], self.mixup[1]))
            return lam * x + (1 - lam) * partner, lam * targets + (1 - lam) * partner_targets
        if u < self.mixup[0] + self.cutmix[0]:
            lam = float(rng.beta(self.cutmix[1], self.cutmix[1]))
            h, w = x.shape[-2:]
            cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
            cy, cx = int(rng.integers(h)), int(rng.integers(w))
            y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
            x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
            x = x.clone()
            x[..., y0:y1, x0:x1] = partner[..., y0:y1, x0:x1]
            if target_kind != "label":  # the pasted region brings its mask / target pixels
                targets = targets.clone()
                targets[..., y0:y1, x0:x1] = partner_targets[..., y0:y1, x0:x1]
                return x, targets
            kept = 1 - (y1 - y0) * (x1 - x0) / (h * w)  # the box actually pasted, after clipping
            return x, kept * targets + (1 - kept) * partner_targets
        return x, targets

    # ------------------------------------------------------------------ export
    @property
    def phases(self) -> tuple[AugmentPolicy, ...]:
        """The policies in force over training: the schedule's pieces, or this policy alone."""
        return tuple(self.pieces) if self.pieces else (self,)  # type: ignore[arg-type]

    def kornia_policy(self, phase: int | None = None) -> list[list[tuple[str, float, int | None]]]:
        """Sub-policies for ``kornia.augmentation.auto.AutoAugment(policy=...)``, never an empty list.

        kornia's AutoAugment takes only the sub-policies (and draws one per batch, not per sample);
        crop, flip, erasing and mixup / cutmix are not part of it (kornia's RandomCrop,
        RandomHorizontalFlip, RandomErasing, RandomMixUpV2 and RandomCutMixV2 do them). kornia's colour
        ops take 3 channels: a grey batch goes in as ``x.expand(-1, 3, -1, -1)`` and back by ``.mean(1)``.

        Args:
            phase: index of one phase (`phases`: the schedule's pieces, from ``starts[phase]`` on).
                None: the whole policy flattened into one list, every phase's sub-policies each
                repeated so that a phase's share of the draws is its share of training (within 1 %).

        Returns:
            Lists of ``(op_name, probability, magnitude_bin)``; a phase without ops is ``[]`` (kornia's
            identity), so a policy without any op gives ``[[]]``.

        Raises:
            ConfigError: `phase` is not an index of `phases`.
        """
        phases = self.phases
        if phase is not None:
            check_int(f"phase (the policy has {len(phases)})", phase, 0, len(phases) - 1)
            return _kornia_lists(phases[phase].sub_policies)
        ends = (*self.starts[1:], 1.0) if self.pieces else (1.0,)
        starts = self.starts or (0.0,)
        lists = [_kornia_lists(p.sub_policies) for p in phases]
        # Each sub-policy of phase i should weigh duration_i / len_i: the smallest integer repeats.
        weights = [Fraction(end - start).limit_denominator(100) / len(sub)
                   for start, end, sub in zip(starts, ends, lists)]
        common = math.lcm(*(w.denominator for w in weights))
        counts = [int(w * common) for w in weights]
        divisor = math.gcd(*counts)
        return [sub for subs, n in zip(lists, counts) for _ in range(n // divisor) for sub in subs]

    def kornia_pipeline(self, data_keys: Sequence[str] = ("input",), phase: int | None = None) -> nn.Module:
        """This policy as kornia augmentations, for a plain loop that uses kornia: one
        ``kornia.augmentation.AugmentationSequential`` over `data_keys` (e.g. ``["input", "mask"]``:
        kornia moves a mask with the geometric ops and leaves it out of the intensity ops).

        Pieces: the shift as ``RandomAffine(translate=crop)`` (kornia's affine, zero fill; our pad-and-crop
        shifts by whole pixels), ``RandomHorizontalFlip(flip)``, ``AutoAugment(kornia_policy(phase))``
        (one sub-policy per batch, not per sample) and ``RandomErasing``. Mixup and cutmix are left out
        (kornia's mix ops take labels, not masks): add ``RandomMixUpV2`` / ``RandomCutMixV2`` for labels.
        A grey batch goes in as RGB (``x.expand(-1, 3, -1, -1)``): kornia's colour ops take 3 channels.
        """
        import kornia.augmentation as K
        from kornia.augmentation.auto import AutoAugment

        source = self.phases[phase if phase is not None else 0]  # a schedule's base ops: the first phase's
        steps: list[nn.Module] = []
        if source.crop > 0:
            steps.append(K.RandomAffine(degrees=0.0, translate=(source.crop, source.crop), p=1.0))
        if source.flip > 0:
            steps.append(K.RandomHorizontalFlip(p=source.flip))
        if any(p.sub_policies for p in self.phases):
            steps.append(AutoAugment(policy=self.kornia_policy(phase)))
        if source.erasing > 0:
            steps.append(K.RandomErasing(p=source.erasing, scale=source.erasing_scale, ratio=source.erasing_ratio))
        return K.AugmentationSequential(*steps, data_keys=list(data_keys))

    def kornia_subpolicies(self) -> list[list[tuple[str, float, int | None]]]:
        """`kornia_policy()`: the whole policy's sub-policies (kept for code written against it)."""
        return self.kornia_policy()

    def _body(self, with_erasing: bool) -> dict[str, Any]:
        body = {
            "name": self.name,
            "sub_policies": [[list(entry) for entry in sub] for sub in self.sub_policies],
            "magnitude_scale": self.magnitude_scale,
            "crop": self.crop,
            "flip": self.flip,
            "mixup": {"p": self.mixup[0], "alpha": self.mixup[1]},
            "cutmix": {"p": self.cutmix[0], "alpha": self.cutmix[1]},
        }
        if with_erasing:
            body["erasing"] = {"p": self.erasing, "scale": list(self.erasing_scale),
                               "ratio": list(self.erasing_ratio)}
        return body

    def to_dict(self) -> dict[str, Any]:
        # Version 1 unless something erases: files without erasing stay readable by older policysearch.
        erases = any(p.erasing > 0 for p in (self, *self.phases))
        body = self._body(erases)
        body["schedule"] = (
            [{"start": s, "policy": piece._body(erases)} for s, piece in zip(self.starts, self.pieces)]  # type: ignore[operator]
            if self.pieces
            else None
        )
        return wrap(self.KIND, 2 if erases else 1, body, self.provenance)

    @classmethod
    def _from_body(cls, data: dict[str, Any], source: str, provenance: dict[str, Any] | None = None,
                   schedule: list[tuple[float, AugmentPolicy]] | None = None) -> AugmentPolicy:
        try:
            mix = {}
            for key in ("mixup", "cutmix"):
                entry = require(data, key, dict, source)
                mix[key] = (float(require(entry, "p", (int, float), f"{source}: {key}")),
                            float(require(entry, "alpha", (int, float), f"{source}: {key}")))
            erasing: dict[str, Any] = {}
            if data.get("erasing") is not None:  # absent (version 1) or null: no erasing
                entry, where = require(data, "erasing", dict, source), f"{source}: erasing"
                erasing["erasing"] = float(require(entry, "p", (int, float), where))
                for key in ("scale", "ratio"):
                    if key in entry:
                        erasing[f"erasing_{key}"] = tuple(require(entry, key, list, where))
            return cls(
                require(data, "sub_policies", list, source),
                crop=float(require(data, "crop", (int, float), source)),
                flip=float(require(data, "flip", (int, float), source)),
                **erasing,
                mixup=mix["mixup"],
                cutmix=mix["cutmix"],
                magnitude_scale=require(data, "magnitude_scale", str, source),
                name=str(data.get("name", "custom")),
                schedule=schedule,
                provenance=provenance,
            )
        except ConfigError as exc:
            raise PolicyFormatError(f"{source}: {exc}") from exc

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> AugmentPolicy:
        data = unwrap(data, cls.KIND, cls.FORMAT_VERSION, source)
        schedule = None
        if data.get("schedule"):
            raw = require(data, "schedule", list, source)
            schedule = []
            for i, piece in enumerate(raw):
                where = f"{source}: schedule[{i}]"
                if not isinstance(piece, dict):
                    raise PolicyFormatError(f"{where}: expected an object with 'start' and 'policy'")
                start = float(require(piece, "start", (int, float), where))
                schedule.append((start, cls._from_body(require(piece, "policy", dict, where), where)))
        return cls._from_body(data, source, provenance=read_provenance(data, source), schedule=schedule)


    def describe(self) -> str:
        """A one-line human summary for tables and logs."""
        if self.pieces:
            return " | ".join(f"@{s:.2f}: {p.describe()}" for s, p in zip(self.starts, self.pieces))  # type: ignore[union-attr]
        parts = []
        if self.crop:
            parts.append(f"crop {self.crop:.3g}")
        if self.flip:
            parts.append(f"flip {self.flip:.2g}")
        if self.erasing:
            parts.append(f"erasing p={self.erasing:.2g} area {self.erasing_scale[0]:.2g}-{self.erasing_scale[1]:.2g}")
        if self.sub_policies:
            parts.append(f"{len(self.sub_policies)} sub-policies")
        for label, (p, a) in (("mixup", self.mixup), ("cutmix", self.cutmix)):
            if p:
                parts.append(f"{label} p={p:.2g} a={a:.2g}")
        return ", ".join(parts) or "identity"

    def extra_repr(self) -> str:
        return f"name={self.name!r}, {self.describe()}"


# ---------------------------------------------------------------------- built-ins
def trivial_augment(magnitude_scale: str = "wide", ops: Sequence[str] = TRIVIAL_OPS) -> list[list[tuple]]:
    """TrivialAugment as sub-policies: one op drawn uniformly (identity included), then a magnitude
    uniformly over its range. Every op gets NUM_BINS entries so that op choice stays uniform."""
    subs: list[list[tuple]] = [[] for _ in range(NUM_BINS)]  # identity
    for name in ops:
        if OPS[name].standard is None:
            subs += [[(name, 1.0, None)] for _ in range(NUM_BINS)]
        else:
            subs += [[(name, 1.0, b)] for b in range(NUM_BINS)]
    return subs


def rand_augment(n: int = 2, strength: float = 0.3, ops: Sequence[str] = TRIVIAL_OPS) -> list[list[tuple]]:
    """RandAugment(N, M) as sub-policies: every ordered N-tuple of ops at strength M (0..1 of each op's
    widest departure from identity, both signs where the range has two); identity included."""
    check_int("randaugment n", n, 1)
    check_number("randaugment strength", strength, 0.0, 1.0)
    choices: list[list[tuple]] = [[], []]  # identity, twice like the two-sided ops
    for name in ops:
        bins = OPS[name].strength_bins(strength)
        mags = [None] if OPS[name].standard is None else bins
        entries = [(name, 1.0, m) for m in mags]
        choices += [[entries[i % len(entries)]] for i in range(2)]
    return [list(itertools.chain.from_iterable(combo)) for combo in itertools.product(choices, repeat=n)]


def builtin_policy(name: str) -> AugmentPolicy:
    """A named baseline policy (see BUILTIN_POLICIES)."""
    cropflip = {"crop": 0.125, "flip": 0.5}
    if name == "none":
        return AugmentPolicy(name="none")
    if name == "cropflip":
        return AugmentPolicy(name="cropflip", **cropflip)
    if name == "trivial":
        return AugmentPolicy(trivial_augment(), magnitude_scale="wide", name="trivial", **cropflip)
    if name == "randaugment":
        return AugmentPolicy(rand_augment(2, 0.3), name="randaugment", **cropflip)
    if name == "autoaugment-cifar10":
        from kornia.augmentation.auto.autoaugment.autoaugment import cifar10_policy

        return AugmentPolicy(cifar10_policy, name="autoaugment-cifar10", **cropflip)
    if name == "erasing":  # the common Fashion-MNIST recipe: random erasing alone
        return AugmentPolicy(name="erasing", erasing=0.5)
    if name == "cropflip-erasing":
        return AugmentPolicy(name="cropflip-erasing", erasing=0.5, **cropflip)
    if name == "cropflip-jitter":  # the usual segmentation recipe: flip, shift, photometric jitter
        jitter = [[(op, 0.8, b)] for op in JITTER_OPS for b in JITTER_BINS]
        return AugmentPolicy(jitter, name="cropflip-jitter", **cropflip)
    raise UnknownNameError("augmentation policy", name, BUILTIN_POLICIES)


def _kornia_lists(sub_policies: Sequence[SubPolicy]) -> list[list[tuple[str, float, int | None]]]:
    """Sub-policies as lists of tuples; none at all is one empty (identity) sub-policy."""
    return [[tuple(entry) for entry in sub] for sub in sub_policies] or [[]]  # type: ignore[misc]


def load_policy(spec: str | Path | AugmentPolicy) -> AugmentPolicy:
    """A built-in name, ``zoo:NAME`` (a shipped policy), a JSON file path, or an AugmentPolicy (returned as is)."""
    if isinstance(spec, AugmentPolicy):
        return spec
    text = str(spec)
    if text in BUILTIN_POLICIES:
        return builtin_policy(text)
    if is_zoo(text) or text.endswith(".json") or Path(text).exists():
        return AugmentPolicy.load(text)
    raise UnknownNameError("augmentation policy", text,
                           (*BUILTIN_POLICIES, *(f"zoo:{n}" for n in zoo_names((AugmentPolicy.KIND,)))))
