"""``LearnedSchedule``: a learning-rate schedule as a pure function of training progress.

A schedule is a handful of knots ``(progress, log10 LR)`` on ``[0, 1]`` joined by an
interpolation mode per segment. Because it depends only on progress, not on steps or epochs,
the same file drives a 200-step child run during search and a 100-epoch final run.
:class:`ProgressLR` is the thin ``torch.optim.lr_scheduler.LRScheduler`` that maps optimizer
steps to progress; its ``state_dict`` is JSON and holds no optimizer state.

Example::

    schedule = LearnedSchedule.load("runs/lr/best_schedule.json")
    scheduler = schedule.scheduler(optimizer, total_steps=epochs * len(loader))
    for x, y in batches:
        ...; optimizer.step(); scheduler.step()
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from policysearch.checks import MAX_LR, check_choice, check_int, check_lr, check_number
from policysearch.errors import ConfigError, PolicyFormatError, UnknownNameError
from policysearch.policies.artifact import JsonArtefact, read_provenance, require, unwrap, wrap
from policysearch.policies.schedule_kinds import OPEN_LOOP
from policysearch.policies.zoo import is_zoo, zoo_names

__all__ = [
    "INTERPOLATIONS",
    "LOG10_LR_MAX",
    "LOG10_LR_MIN",
    "SCHEDULES",
    "LearnedSchedule",
    "ProgressLR",
    "load_schedule",
    "named_schedule",
]

INTERPOLATIONS: tuple[str, ...] = ("linear", "log-linear", "cosine", "step")

# Bounds on log10 of any LR a schedule may hold: they catch an LR passed where its log10 was
# meant (or vice versa) while leaving room for the tiny final LRs of standard schedules
# (OneCycleLR ends at base_lr / 2.5e5, i.e. 4e-9 for base_lr = 1e-3).
LOG10_LR_MIN = -12.0
LOG10_LR_MAX = math.log10(MAX_LR)  # 3.0
MAX_KNOTS = 10_000  # a schedule's size bound (a knot per step of a long run is far below it)


def _float_tuple(field_name: str, values: Any) -> tuple[float, ...]:
    """Coerce a sequence of numbers to a tuple of floats, so lists and tuples compare equal."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigError(f"{field_name} is {values!r}, expected a sequence of numbers")
    return tuple(check_number(f"{field_name}[{i}]", v) for i, v in enumerate(values))


@dataclass(frozen=True)
class LearnedSchedule(JsonArtefact):
    """A learning-rate schedule over normalised training progress in ``[0, 1]``.

    Attributes:
        progress: Knot positions: strictly increasing, first ``0.0``, last ``1.0``, at least 2.
        log10_lr: log10 of the LR at each knot, within ``[LOG10_LR_MIN, LOG10_LR_MAX]``.
        interpolation: One mode from :data:`INTERPOLATIONS` for every segment, or a tuple with
            one mode per segment (``len(progress) - 1``). Between knots ``a`` and ``b`` at
            fraction ``t``: ``"linear"`` interpolates the LR, ``"log-linear"`` its log10,
            ``"cosine"`` follows a half cosine from LR(a) to LR(b), ``"step"`` holds LR(a).
        name: A short label for reports.
        provenance: Where the schedule came from (see ``policies.artifact.provenance``);
            not part of equality.

    Raises:
        ConfigError: On construction, if any field is invalid; the message names it.
    """

    KIND: ClassVar[str] = "lr_schedule"
    SCHEDULE_KIND: ClassVar[str] = OPEN_LOOP
    FORMAT_VERSION: ClassVar[int] = 1

    progress: tuple[float, ...]
    log10_lr: tuple[float, ...]
    interpolation: str | tuple[str, ...] = "log-linear"
    name: str = "learned"
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        progress = _float_tuple("progress", self.progress)
        log10_lr = _float_tuple("log10_lr", self.log10_lr)
        # Frozen dataclass: normalise lists to tuples so equality survives a JSON round trip.
        object.__setattr__(self, "progress", progress)
        object.__setattr__(self, "log10_lr", log10_lr)

        if len(progress) < 2:
            raise ConfigError(f"progress has {len(progress)} knot(s), expected at least 2 (0.0 and 1.0)")
        if len(progress) > MAX_KNOTS:
            raise ConfigError(f"progress has {len(progress):,} knots, expected at most {MAX_KNOTS:,}")
        if progress[0] != 0.0 or progress[-1] != 1.0:
            raise ConfigError(
                f"progress runs from {progress[0]!r} to {progress[-1]!r}, expected it to start at 0.0 and end at 1.0"
            )
        for i in range(1, len(progress)):
            if progress[i] <= progress[i - 1]:
                raise ConfigError(
                    f"progress[{i}] is {progress[i]!r} after {progress[i - 1]!r}, expected strictly increasing knots"
                )
        if len(log10_lr) != len(progress):
            raise ConfigError(
                f"log10_lr has {len(log10_lr)} values, expected {len(progress)} (one per progress knot)"
            )
        for i, v in enumerate(log10_lr):
            if not LOG10_LR_MIN <= v <= LOG10_LR_MAX:
                lr = f" (LR {10.0 ** v:.3g})" if abs(v) < 300 else ""  # 10 ** 1e308 overflows
                raise ConfigError(
                    f"log10_lr[{i}] is {v!r}{lr}, expected within "
                    f"[{LOG10_LR_MIN}, {LOG10_LR_MAX}]; give log10 of the LR, e.g. -3 for 1e-3"
                )

        interpolation = self.interpolation
        segments = len(progress) - 1
        if isinstance(interpolation, str):
            modes: tuple[str, ...] = (interpolation,)
        elif isinstance(interpolation, Sequence):
            interpolation = tuple(interpolation)
            if len(interpolation) != segments:
                raise ConfigError(
                    f"interpolation has {len(interpolation)} modes, expected one string or {segments} "
                    f"(one per segment between the {len(progress)} knots)"
                )
            modes = interpolation
            object.__setattr__(self, "interpolation", interpolation)
        else:
            raise ConfigError(f"interpolation is {interpolation!r}, expected a string or a sequence of strings")
        for mode in modes:
            check_choice("interpolation", mode, INTERPOLATIONS)

        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"name is {self.name!r}, expected a non-empty string")
        if not isinstance(self.provenance, dict):
            raise ConfigError(f"provenance is {self.provenance!r}, expected a dict")

    # ------------------------------------------------------------------ evaluation

    def mode(self, segment: int) -> str:
        """Interpolation mode of segment ``segment`` (between knots ``segment`` and ``segment + 1``)."""
        return self.interpolation if isinstance(self.interpolation, str) else self.interpolation[segment]

    def lr_at(self, progress: float) -> float:
        """The learning rate at ``progress`` (clipped to ``[0, 1]``).

        Raises:
            ConfigError: If ``progress`` is NaN.
        """
        p = float(progress)
        if math.isnan(p):
            raise ConfigError("lr_at got progress=nan, expected a number in [0, 1]")
        p = min(max(p, 0.0), 1.0)
        # Segment i spans [progress[i], progress[i+1]); p == 1.0 belongs to the last segment.
        i = min(bisect.bisect_right(self.progress, p) - 1, len(self.progress) - 2)
        x0, x1 = self.progress[i], self.progress[i + 1]
        l0, l1 = self.log10_lr[i], self.log10_lr[i + 1]
        t = (p - x0) / (x1 - x0)
        mode = self.mode(i)
        if mode == "step":
            return 10.0**l0
        if mode == "log-linear":
            return 10.0 ** (l0 + t * (l1 - l0))
        lr0, lr1 = 10.0**l0, 10.0**l1
        if mode == "linear":
            return lr0 + t * (lr1 - lr0)
        # cosine, written as torch's OneCycleLR._annealing_cos so the two agree to rounding.
        return lr1 + (lr0 - lr1) / 2.0 * (math.cos(math.pi * t) + 1.0)

    def lrs(self, progress: Sequence[float]) -> list[float]:
        """:meth:`lr_at` for each value of ``progress``."""
        return [self.lr_at(p) for p in progress]

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_lrs(
        cls,
        lrs: Sequence[float],
        progress: Sequence[float] | None = None,
        interpolation: str | Sequence[str] = "step",
        name: str = "learned",
        provenance: dict[str, Any] | None = None,
    ) -> LearnedSchedule:
        """Build a schedule from plain LRs, e.g. the per-segment LRs chosen in an RL episode.

        Args:
            lrs: Learning rates (positive). Without ``progress``, ``lrs[i]`` starts segment ``i``
                of ``len(lrs)`` equal segments, and a final knot at 1.0 repeats the last LR, so
                in ``"step"`` mode segment ``i`` trains at exactly ``lrs[i]``.
            progress: Knot positions, one per LR (then the knots are exactly these).
            interpolation: As for the class; ``"step"`` by default.
            name: As for the class.
            provenance: As for the class.

        Raises:
            ConfigError: If an LR is not positive, finite and at most ``MAX_LR``, or the lengths disagree.
        """
        values = list(lrs) if isinstance(lrs, Sequence) and not isinstance(lrs, str) else None
        if not values:
            raise ConfigError(f"lrs is {lrs!r}, expected a non-empty sequence of learning rates")
        for i, lr in enumerate(values):
            check_lr(f"lrs[{i}]", lr)
        logs = [math.log10(lr) for lr in values]
        if progress is None:
            n = len(values)
            knots = [i / n for i in range(n)] + [1.0]
            logs.append(logs[-1])
        else:
            knots = list(progress)
            if len(knots) != len(values):
                raise ConfigError(
                    f"progress has {len(knots)} knots but lrs has {len(values)} values; expected one knot per LR"
                )
        if not isinstance(interpolation, str):
            interpolation = tuple(interpolation)
        return cls(tuple(knots), tuple(logs), interpolation, name, dict(provenance or {}))

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        """The schedule as a JSON-able dict in the common artefact envelope."""
        interpolation = self.interpolation if isinstance(self.interpolation, str) else list(self.interpolation)
        body = {
            "name": self.name,
            "interpolation": interpolation,
            "progress": list(self.progress),
            "log10_lr": list(self.log10_lr),
        }
        return wrap(self.KIND, self.FORMAT_VERSION, body, self.provenance)

    @classmethod
    def from_dict(cls, d: Any, source: str = "<dict>") -> LearnedSchedule:
        """Inverse of :meth:`to_dict`.

        Args:
            d: The decoded JSON.
            source: Where it came from, for error messages (a file path).

        Raises:
            PolicyFormatError: If the envelope or any field is malformed; the message names the field.
        """
        data = unwrap(d, cls.KIND, cls.FORMAT_VERSION, source)
        name = require(data, "name", str, source)
        interpolation = require(data, "interpolation", (str, list), source)
        progress = require(data, "progress", list, source)
        log10_lr = require(data, "log10_lr", list, source)
        prov = read_provenance(data, source)
        for field_name, values in (("progress", progress), ("log10_lr", log10_lr)):
            for i, v in enumerate(values):
                check_number(f"{source}: field '{field_name}[{i}]'", v, error=PolicyFormatError)
        if isinstance(interpolation, list):
            for i, v in enumerate(interpolation):
                if not isinstance(v, str):
                    raise PolicyFormatError(f"{source}: field 'interpolation[{i}]' is {v!r}, expected a string")
            interpolation = tuple(interpolation)
        try:
            return cls(tuple(progress), tuple(log10_lr), interpolation, name, prov)
        except ConfigError as exc:
            # Validation messages already name the field; add where the bad value came from.
            raise PolicyFormatError(f"{source}: {exc}") from exc


    # ------------------------------------------------------------------ torch

    def scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int) -> ProgressLR:
        """A :class:`ProgressLR` that runs this schedule over ``total_steps`` optimizer steps."""
        return ProgressLR(optimizer, self, total_steps)


class ProgressLR(torch.optim.lr_scheduler.LRScheduler):
    """Maps optimizer steps to progress ``step / total_steps`` and sets every param group's LR
    to ``schedule.lr_at(progress)``.

    Call order as for any torch scheduler: ``optimizer.step()`` then ``scheduler.step()``.
    Stepping past ``total_steps`` keeps the final LR.

    ``state_dict()`` is ``{"last_epoch", "total_steps", "schedule"}``: JSON-able and free of the
    optimizer. ``load_state_dict`` restores it and sets the param groups' LR at once, so a
    resumed run continues with exactly the LRs of an uninterrupted one even if the optimizer's
    own state was not restored.

    Args:
        optimizer: The wrapped optimizer.
        schedule: The schedule to follow.
        total_steps: Number of optimizer steps that make up progress 1.0.
        last_epoch: Index of the last step taken; -1 for a fresh run.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: LearnedSchedule,
        total_steps: int,
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(schedule, LearnedSchedule):
            raise ConfigError(f"schedule is {type(schedule).__name__}, expected a LearnedSchedule")
        _check_total_steps(total_steps)
        # Set before super().__init__, which already calls get_lr() for step 0.
        self.schedule = schedule
        self.total_steps = int(total_steps)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        """LR of every param group at the current step."""
        lr = self.schedule.lr_at(self.last_epoch / self.total_steps)
        return [lr] * len(self.optimizer.param_groups)

    def state_dict(self) -> dict[str, Any]:
        """``{"last_epoch", "total_steps", "schedule"}`` — plain JSON, no optimizer."""
        return {
            "last_epoch": int(self.last_epoch),
            "total_steps": self.total_steps,
            "schedule": self.schedule.to_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output and apply the LR of the restored step.

        Raises:
            PolicyFormatError: If the state is malformed.
        """
        source = "ProgressLR state_dict"
        last_epoch = require(state_dict, "last_epoch", int, source)
        total_steps = require(state_dict, "total_steps", int, source)
        schedule = LearnedSchedule.from_dict(require(state_dict, "schedule", dict, source), source)
        try:
            _check_total_steps(total_steps)
        except ConfigError as exc:
            raise PolicyFormatError(f"{source}: {exc}") from exc
        self.last_epoch = last_epoch
        self.total_steps = total_steps
        self.schedule = schedule
        lr = schedule.lr_at(last_epoch / total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [lr] * len(self.optimizer.param_groups)


def _check_total_steps(total_steps: Any) -> None:
    check_int("total_steps", total_steps, 1)


# ---------------------------------------------------------------------- built-in schedules

SCHEDULES: tuple[str, ...] = ("constant", "step", "cosine", "onecycle", "warmup-cosine", "linear")


def named_schedule(name: str, base_lr: float, total_steps: int | None = None) -> LearnedSchedule:
    """A standard schedule as a :class:`LearnedSchedule`, for baselines and as a starting point.

    - ``"constant"``: ``base_lr`` throughout.
    - ``"step"``: ``base_lr``, x0.1 at 50% and again at 75% progress.
    - ``"cosine"``: half cosine from ``base_lr`` to ``base_lr * 1e-4`` (``CosineAnnealingLR``
      with ``T_max = total_steps``, ``eta_min = base_lr * 1e-4``).
    - ``"onecycle"``: ``OneCycleLR`` defaults: cosine from ``base_lr / 25`` up to ``base_lr`` at
      30% progress, then cosine down to ``base_lr / (25 * 1e4)``.
    - ``"warmup-cosine"``: linear warmup from ``base_lr * 0.01`` to ``base_lr`` over the first
      5%, then half cosine to ``base_lr * 1e-4``.
    - ``"linear"``: linear decay from ``base_lr`` to zero at the end (the budget-aware schedule of
      Li, Yumer & Ramanan, "Budgeted training", ICLR 2020). A schedule's LRs must be positive, so
      the last knot is ``10 ** LOG10_LR_MIN`` (1e-12): zero to any precision that matters.

    Args:
        name: One of :data:`SCHEDULES`.
        base_lr: The peak learning rate.
        total_steps: Optional. Only ``"onecycle"`` uses it: torch's ``OneCycleLR`` peaks at step
            ``0.3 * total_steps - 1`` and reaches its final LR at step ``total_steps - 1``, one
            step earlier than progress 0.3 and 1.0. Given ``total_steps``, the knots are placed
            there so ``ProgressLR`` reproduces ``OneCycleLR`` step for step; without it the
            shape is the step-count-free ideal (peak at 0.3, end at 1.0).

    Raises:
        UnknownNameError: For a name not in :data:`SCHEDULES` ("Did you mean ...").
        ConfigError: For a non-positive ``base_lr`` or an LR outside the allowed range.
    """
    check_lr("base_lr", base_lr)
    if total_steps is not None:
        _check_total_steps(total_steps)
    lg = math.log10
    top = lg(base_lr)
    if name == "constant":
        return LearnedSchedule((0.0, 1.0), (top, top), "step", name)
    if name == "step":
        return LearnedSchedule(
            (0.0, 0.5, 0.75, 1.0), (top, lg(base_lr * 0.1), lg(base_lr * 0.01), lg(base_lr * 0.01)), "step", name
        )
    if name == "cosine":
        return LearnedSchedule((0.0, 1.0), (top, lg(base_lr * 1e-4)), "cosine", name)
    if name == "onecycle":
        start = base_lr / 25.0
        end = start / 1e4
        # Torch's phase boundaries in steps; only meaningful when the warm-up spans a step or more.
        if total_steps is not None and 0.3 * total_steps - 1 > 0:
            peak_at = (float(0.3 * total_steps) - 1) / total_steps
            end_at = (total_steps - 1) / total_steps
            return LearnedSchedule(
                (0.0, peak_at, end_at, 1.0),
                (lg(start), top, lg(end), lg(end)),
                ("cosine", "cosine", "step"),
                name,
            )
        return LearnedSchedule((0.0, 0.3, 1.0), (lg(start), top, lg(end)), "cosine", name)
    if name == "warmup-cosine":
        return LearnedSchedule(
            (0.0, 0.05, 1.0), (lg(base_lr * 0.01), top, lg(base_lr * 1e-4)), ("linear", "cosine"), name
        )
    if name == "linear":
        return LearnedSchedule((0.0, 1.0), (top, min(LOG10_LR_MIN, top)), "linear", name)
    raise UnknownNameError("schedule", name, SCHEDULES)


def load_schedule(spec: str, base_lr: float, total_steps: int | None = None) -> LearnedSchedule:
    """A built-in schedule by name, or a :class:`LearnedSchedule` JSON file by path.

    Args:
        spec: A name from :data:`SCHEDULES`, a path (ending in ``.json`` or existing), or ``zoo:NAME``
            of a shipped open-loop schedule (a shipped controller or peak rule: `resolve_schedule`).
        base_lr: Peak LR for built-in schedules; ignored for files, which hold absolute LRs.
        total_steps: Passed to :func:`named_schedule`; ignored for files.

    Raises:
        UnknownNameError: If ``spec`` is neither a known name nor a file.
        PolicyFormatError: If the file is missing or malformed.
    """
    if spec in SCHEDULES:
        return named_schedule(spec, base_lr, total_steps)
    if is_zoo(spec) or str(spec).endswith(".json") or Path(spec).exists():
        return LearnedSchedule.load(spec)  # zoo:NAME of another kind: the message names its loader
    raise UnknownNameError("schedule", spec, (*SCHEDULES, *(f"zoo:{n}" for n in zoo_names((LearnedSchedule.KIND,)))))
