"""The contract between a closed-loop LR controller and a training loop: observation in, LR out.

`ScheduleSpace` says how the controller's observation is built from plain training statistics
(`OBSERVATION_NAMES`, in that order; `RESIDUAL_OBSERVATION_NAMES` for a residual space) and how
its action becomes a learning rate. Schedule-v1 (residual: the action scales a budget-aware base
schedule) and Schedule-v0 (absolute: the action is the LR) build observations with it during
search; `AdaptiveSchedule` rebuilds the same vector in any training loop; the sidecar
`controller.json` stores it, so the contract travels with the controller.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from policysearch.checks import MAX_LR, check_choice, check_int, check_lr, check_number
from policysearch.errors import ConfigError, PolicyFormatError
from policysearch.policies.artifact import require
from policysearch.policies.schedule import LOG10_LR_MIN, named_schedule

__all__ = ["BASES", "OBSERVATION_NAMES", "PEAKS", "RESIDUAL_OBSERVATION_NAMES", "ScheduleSpace"]

# Base schedules a residual space scales: both end near zero, so they know the budget.
BASES: tuple[str, ...] = ("onecycle", "linear")
# Where a residual base schedule's peak LR comes from: the run's own LR ("default": the model's default
# or whatever the optimizer was built with) or an LR range test at the run's start ("range-test",
# `policysearch.train.lr_range`), whose steps the run then gives up so that its images stay the same.
PEAKS: tuple[str, ...] = ("default", "range-test")
#: Steps of an LR range test (`policysearch.train.lr_range`) when a space peaks by one.
DEFAULT_RANGE_STEPS = 20

# The order of the observation vector; the sidecar stores it and loading checks it, so a file
# written for another layout fails loudly instead of feeding the controller shuffled inputs.
OBSERVATION_NAMES: tuple[str, ...] = (
    "progress",
    "train_loss",
    "val_loss",
    "val_metric",
    "train_loss_trend",
    "val_loss_trend",
    "val_metric_trend",
    "lr",
    "grad_norm_mean",
    "grad_norm_std",
    "segments_left",
)

# A residual space (Schedule-v1): the last action instead of the last LR (the LR itself follows the
# base schedule), plus the remaining budget and the run's length, so one controller can serve runs
# of any length.
RESIDUAL_OBSERVATION_NAMES: tuple[str, ...] = (
    *(n if n != "lr" else "lr_factor" for n in OBSERVATION_NAMES),
    "budget_left",
    "horizon",
)

# How each entry is computed, written into the sidecar for anyone re-implementing it elsewhere.
_FORMULAS: dict[str, str] = {
    "progress": "optimizer steps done / total steps",
    "train_loss": "mean training loss of the last segment / loss_scale (1.0 before any training)",
    "val_loss": "validation loss / loss_scale",
    "val_metric": "validation reward metric (accuracy, macro_f1, -ece or -nll)",
    "train_loss_trend": "(train_loss - previous segment's train_loss) / loss_scale (0 at the start)",
    "val_loss_trend": "(val_loss - previous segment's val_loss) / loss_scale (0 at the start)",
    "val_metric_trend": "val_metric - previous segment's val_metric (0 at the start)",
    "lr": "(log10(lr) - log10(lr_min)) / log10(lr_max / lr_min) of the last segment's LR (0.5 at the start)",
    "grad_norm_mean": "log1p(mean total gradient norm over the last segment's steps) (0 at the start)",
    "grad_norm_std": "log1p(sample std of those norms) (0 at the start)",
    "segments_left": "segments not yet trained / segments",
    "lr_factor": "the last segment's action a in [-1, 1] (LR = base schedule * scale ** a; 0 at the start)",
    "budget_left": "fraction of the run's optimizer steps not yet taken: 1 - progress",
    "horizon": "log10(total optimizer steps of the run) / 4",
}

_ACTION = "lr = lr_min * (lr_max / lr_min) ** ((a + 1) / 2), a = the deterministic action clipped to [-1, 1]"
_RESIDUAL_ACTION = ("lr = base(progress; peak = the run's base LR) * scale ** a, a = the deterministic action "
                    "clipped to [-1, 1]; base is policysearch's named schedule of that name")

# A schedule exported from an episode must be a valid LearnedSchedule, so the LR bounds are its bounds.
_LR_FLOOR = 10.0**LOG10_LR_MIN


@dataclass(frozen=True)
class ScheduleSpace:
    """The contract between an LR controller and a training loop: observation in, LR out.

    The action is one number ``a`` in [-1, 1], mapped log-linearly onto ``[lr_min, lr_max]``:
    ``lr = lr_min * (lr_max / lr_min) ** ((a + 1) / 2)``; ``a = -1`` gives exactly ``lr_min``,
    ``a = 1`` exactly ``lr_max``. The observation is :data:`OBSERVATION_NAMES` in that order,
    built by :meth:`observation` from plain numbers, every entry clipped to ``[-clip, clip]``; NaN
    (a diverged run) becomes the worst value: ``-clip`` for the metric and its trend, ``clip`` for
    the rest.

    Residual mode (``base`` set, Schedule-v1): the action scales a budget-aware base schedule
    multiplicatively, ``lr = base(progress) * scale ** a``, where ``base`` is the named schedule
    (:data:`BASES`) with the run's own peak LR (the model's default LR, or whatever the optimizer
    was built with). The centre action ``a = 0`` is the base schedule exactly; ``a = +-1`` multiply
    or divide it by ``scale``. The observation is then :data:`RESIDUAL_OBSERVATION_NAMES`: it adds
    the remaining budget and the run's length (``horizon``), and shows the last action instead of
    the last LR. ``lr_min`` / ``lr_max`` are not used by the action in this mode.

    Attributes:
        lr_min: Smallest LR (positive).
        lr_max: Largest LR (above ``lr_min``, at most ``policysearch.checks.MAX_LR``, 1e3).
        base: None (absolute LRs, Schedule-v0) or a name from :data:`BASES` (residual).
        scale: Residual mode: the largest factor an action applies to the base (above 1).
        peak: Residual mode: where the base's peak LR comes from (:data:`PEAKS`).
        range_steps: ``peak="range-test"``: the range test's steps.
        segments: Decisions per training run (the env's ``episode_length``).
        loss_scale: What losses are divided by: ``log(num_classes)``, the loss of a uniform guess.
        clip: Bound of every observation entry.

    Raises:
        ConfigError: On construction, for any invalid field; the message names it.
    """

    lr_min: float = 1e-4
    lr_max: float = 1.0
    segments: int = 4
    loss_scale: float = math.log(10)
    clip: float = 10.0
    base: str | None = None
    scale: float = 4.0
    peak: str = "default"
    range_steps: int = DEFAULT_RANGE_STEPS

    def __post_init__(self) -> None:
        values = {
            "lr_min": check_number("lr_min", self.lr_min, _LR_FLOOR, MAX_LR, high_open=True),
            "lr_max": check_lr("lr_max", self.lr_max),
            "loss_scale": check_number("loss_scale", self.loss_scale, 0.0, low_open=True),
            "clip": check_number("clip", self.clip, 0.0, low_open=True),
        }
        if not values["lr_max"] > values["lr_min"]:
            raise ConfigError(f"lr_max is {self.lr_max!r}, expected more than lr_min ({self.lr_min!r})")
        for name, value in values.items():
            object.__setattr__(self, name, value)  # frozen; ints become floats so JSON and == agree
        check_int("segments", self.segments, 1)
        if self.base is not None:
            check_choice("base schedule", self.base, BASES)
        object.__setattr__(self, "scale", check_number("scale", self.scale, 1.0, 1e3, low_open=True))
        check_choice("base peak", self.peak, PEAKS)
        if self.peak != "default" and self.base is None:
            raise ConfigError(f"peak={self.peak!r} needs a base schedule (a residual space)")
        check_int("range_steps", self.range_steps, 5)

    @property
    def residual(self) -> bool:
        """Whether the action scales a base schedule (Schedule-v1) rather than set the LR (v0)."""
        return self.base is not None

    @property
    def names(self) -> tuple[str, ...]:
        """The observation's entries, in order."""
        return RESIDUAL_OBSERVATION_NAMES if self.residual else OBSERVATION_NAMES

    @property
    def _worst(self) -> np.ndarray:
        return np.array([-self.clip if "metric" in n else self.clip for n in self.names])

    @property
    def dim(self) -> int:
        """Length of the observation vector."""
        return len(self.names)

    # ------------------------------------------------------------------ residual action
    def base_schedule(self, base_lr: float) -> Any:
        """Residual mode: the base schedule (a ``LearnedSchedule``) peaking at ``base_lr``."""

        if self.base is None:
            raise ConfigError("base_schedule: this space has no base schedule (it sets absolute LRs)")
        return named_schedule(self.base, base_lr)

    def factor(self, action: Any) -> float:
        """Residual mode: the factor ``scale ** a`` an action applies to the base (``a`` clipped to [-1, 1])."""
        a = _one_action(action)
        return float(self.scale ** float(np.clip(a, -1.0, 1.0)))

    def residual_lr(self, action: Any, progress: float, base_lr: float) -> float:
        """Residual mode: the LR at ``progress`` for ``action``: ``base(progress) * scale ** a``."""
        return self.base_schedule(base_lr).lr_at(progress) * self.factor(action)

    # ------------------------------------------------------------------ action
    def lr(self, action: Any) -> float:
        """The LR an action in [-1, 1] sets (values outside are clipped; the ends are exact)."""
        if self.residual:
            raise ConfigError("lr: a residual space's LR depends on progress and the base LR; use residual_lr")
        u = float(np.clip((_one_action(action) + 1.0) / 2.0, 0.0, 1.0))
        # The ends are returned as given: lr_min * (lr_max / lr_min) may miss lr_max by an ulp.
        if u <= 0.0:
            return float(self.lr_min)
        if u >= 1.0:
            return float(self.lr_max)
        lr = self.lr_min * (self.lr_max / self.lr_min) ** u
        return float(min(max(lr, self.lr_min), self.lr_max))

    def lr_position(self, lr: float) -> float:
        """Where ``lr`` lies between the bounds on the log scale: 0 at ``lr_min``, 1 at ``lr_max``."""
        return (math.log10(lr) - math.log10(self.lr_min)) / math.log10(self.lr_max / self.lr_min)

    # ------------------------------------------------------------------ observation
    def observation(self, stats: Mapping[str, Any]) -> np.ndarray:
        """The observation vector for the statistics of a run at a segment boundary.

        Args:
            stats: Plain numbers. Required: ``progress`` (in [0, 1]), ``val_loss`` and
                ``val_metric`` (the reward metric, e.g. accuracy, or -NLL). Optional, with the
                value they take before the first segment: ``train_loss`` (``loss_scale``),
                ``prev_train_loss`` / ``prev_val_loss`` / ``prev_val_metric`` (the current
                value, i.e. a trend of 0), ``lr`` (None: the middle of the range, as no LR has
                been chosen yet), ``grad_norm_mean`` / ``grad_norm_std`` (0) and
                ``segments_left`` (``segments * (1 - progress)``, rounded). Residual mode also
                reads ``action`` (the last action, 0 before any) and requires ``total_steps``
                (the run's optimizer steps, for ``horizon``).

        Returns:
            float32 array of shape ``(dim,)`` in :attr:`names` order.

        Raises:
            ConfigError: If a required key is missing or a value is not a number.
        """
        for key in ("progress", "val_loss", "val_metric"):
            if stats.get(key) is None:
                raise ConfigError(f"stats has no {key!r}: expected keys progress, val_loss and val_metric at least")

        def num(key: str, default: float) -> float:
            value = stats.get(key)
            if value is None:
                return default
            try:
                return float(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"stats[{key!r}] is {value!r}, expected a number") from exc

        progress = num("progress", 0.0)
        scale = self.loss_scale
        train_loss = num("train_loss", scale)
        val_loss = num("val_loss", 0.0)
        metric = num("val_metric", 0.0)
        lr_pos = 0.5  # no LR chosen yet: the middle, whatever the optimizer was built with
        if stats.get("lr") is not None and not self.residual:
            lr_pos = self.lr_position(check_lr("stats['lr']", num("lr", 0.0)))
        left = num("segments_left", round(self.segments * (1.0 - progress)))
        values = [
            progress,
            train_loss / scale,
            val_loss / scale,
            metric,
            (train_loss - num("prev_train_loss", train_loss)) / scale,
            (val_loss - num("prev_val_loss", val_loss)) / scale,
            metric - num("prev_val_metric", metric),
            lr_pos,
            # max(nan, 0.0) is nan, so a NaN norm still gets the NaN handling below.
            math.log1p(max(num("grad_norm_mean", 0.0), 0.0)),
            math.log1p(max(num("grad_norm_std", 0.0), 0.0)),
            left / self.segments,
        ]
        if self.residual:
            if stats.get("total_steps") is None:
                raise ConfigError("stats has no 'total_steps': a residual space's observation needs the run's length")
            total = check_int("stats['total_steps']", stats["total_steps"], 1)
            values[OBSERVATION_NAMES.index("lr")] = float(np.clip(num("action", 0.0), -1.0, 1.0))
            values += [1.0 - progress, math.log10(total) / 4.0]
        # NaN means a diverged run: show it as the worst value rather than as zero (low for the
        # metric and its trend, where higher is better; high for everything else).
        obs = np.asarray(values, dtype=np.float64)
        obs = np.where(np.isnan(obs), self._worst, obs)
        return np.clip(obs, -self.clip, self.clip).astype(np.float32)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """The fields the sidecar stores (the observation part nested under ``observation``)."""
        residual = {"base": self.base, "scale": self.scale} if self.residual else {}
        if self.peak != "default":  # files of default-peak spaces stay as they were
            residual.update(peak=self.peak, range_steps=self.range_steps)
        return {
            "lr_min": self.lr_min,
            "lr_max": self.lr_max,
            "segments": self.segments,
            **residual,
            "action": _RESIDUAL_ACTION if self.residual else _ACTION,
            "observation": {
                "names": list(self.names),
                "loss_scale": self.loss_scale,
                "clip": self.clip,
                "formulas": dict(_FORMULAS),
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> ScheduleSpace:
        """Inverse of :meth:`to_dict`.

        Raises:
            PolicyFormatError: If a field is missing or malformed; the message names it.
        """
        lr_min = require(dict(data), "lr_min", (int, float), source)
        lr_max = require(dict(data), "lr_max", (int, float), source)
        segments = require(dict(data), "segments", int, source)
        obs = require(dict(data), "observation", dict, source)
        obs_source = f"{source} (in 'observation')"
        base = data.get("base")
        if base is not None:
            check_choice(f"{source}: field 'base'", base, BASES, error=PolicyFormatError)
        scale = require(dict(data), "scale", (int, float), source) if base is not None else 4.0
        peak = data.get("peak", "default")
        check_choice(f"{source}: field 'peak'", peak, PEAKS, error=PolicyFormatError)
        range_steps = require(dict(data), "range_steps", int, source) if peak != "default" else DEFAULT_RANGE_STEPS
        expected = RESIDUAL_OBSERVATION_NAMES if base is not None else OBSERVATION_NAMES
        names = require(obs, "names", list, obs_source)
        if tuple(names) != expected:
            raise PolicyFormatError(
                f"{source}: field 'observation.names' is {names!r}, expected {list(expected)!r} "
                "(a file written by another policysearch version; re-export it)"
            )
        loss_scale = require(obs, "loss_scale", (int, float), obs_source)
        clip = require(obs, "clip", (int, float), obs_source)
        try:
            return cls(float(lr_min), float(lr_max), segments, float(loss_scale), float(clip), base, float(scale),
                       peak, range_steps)
        except ConfigError as exc:
            raise PolicyFormatError(f"{source}: {exc}") from exc


def _one_action(action: Any) -> float:
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (1,) or not np.isfinite(a[0]):
        raise ConfigError(f"action is {a.tolist()!r}, expected one finite number in [-1, 1]")
    return float(a[0])
