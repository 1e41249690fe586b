"""``PeakRule``: a learned choice of a hand-made schedule's peak LR, made once at the run's start.

Before the first step, the rule measures the curvature at the run's initial weights
(`policysearch.sharpness`: power iteration on the Hessian of a few training images; the shipped rule's
probe, 32 images x 4 iterations, costs 288 images' training), reads three features — ``log10(lr
* sharpness)``, ``log10(total steps)`` and whether the optimizer is adaptive — and picks, from a
short list of factors of the model's default peak (1 among them), the one whose predicted gain over
factor 1 is highest: ``score_k = W_k . clip(z) + b_k`` with ``z`` the standardised features and
``score = 0`` for factor 1. The run then follows the base schedule (onecycle by default) at
``factor x`` the default peak. Factor 1 is the base schedule itself, bit for bit, so where the rule
sees nothing worth changing it returns the hand-made schedule. A rule that lists the kinds of nets its table
showed a gain for (``decides_for``, by `policysearch.sharpness.layer_kinds`) keeps factor 1 for any other net
without measuring anything: the probe's images are spent only where the rule has evidence it may use them.

`policysearch.contrib.peak_rule_search` learns it from a table of outcomes over a task distribution.
Stored as plain JSON (``kind: "peak_rule"``); `train_run` (hence ``policysearch train --schedule
FILE`` and the benchmarks) applies it, and a plain loop calls :meth:`PeakRule.factor_for` (one batch,
the model before its first step) and trains its schedule at that factor of its peak.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from policysearch.checks import check_choice
from policysearch.errors import ConfigError, PolicyFormatError
from policysearch.policies.artifact import read_json, read_provenance, require, unwrap, wrap, write_json
from policysearch.policies.schedule import named_schedule
from policysearch.policies.schedule_kinds import PEAK_RULE
from policysearch.policies.zoo import resolve_zoo
from policysearch.sharpness import START_FEATURES, batch_statistics, layer_kinds, start_statistics

__all__ = ["PeakRule"]

_BASES = ("onecycle", "linear", "cosine", "warmup-cosine")


class PeakRule:
    """Pick a factor of the default peak LR from the run's start statistics (module docstring).

    Args:
        base: The named schedule the factor scales.
        factors: The factors to choose from, 1 among them.
        features: The names of the features read (``policysearch.sharpness.START_FEATURES``).
        mean, std: Standardisation of each feature.
        weights: ``(len(factors), len(features))`` score weights on standardised features (factor 1's
            row all zero).
        biases: One per factor (factor 1's zero).
        low, high: The range each feature is clipped to before scoring (the table's range).
        images, iterations: The curvature estimate's batch and power-iteration steps.
        guard: Keep factor 1 (the base schedule itself) for a run whose features lie outside the
            table the rule was fitted on (`low`, `high`): the rule decides only where it has seen data;
            and, with `decides_for`, for a net of other layer kinds, before the probe.
        decides_for: The layer kinds (`policysearch.sharpness.layer_kinds`) of the table's nets for which some
            factor other than 1 gained on average (`policysearch.contrib.peak_rule_search.fit_rule`). With the
            guard, a net of other kinds keeps the base schedule and pays for no probe. None: every net.
    """

    KIND: ClassVar[str] = "peak_rule"
    SCHEDULE_KIND: ClassVar[str] = PEAK_RULE
    FORMAT_VERSION: ClassVar[int] = 1

    def __init__(self, base: str, factors: list[float], features: list[str], mean: Any, std: Any, weights: Any,
                 biases: Any, low: Any, high: Any, images: int = 64, iterations: int = 6,
                 provenance: dict[str, Any] | None = None, guard: bool = True,
                 decides_for: list[list[str]] | None = None) -> None:
        self.guard = bool(guard)
        self.decides_for = None if decides_for is None else sorted({tuple(str(k) for k in kinds)
                                                                    for kinds in decides_for})

        self.base = check_choice("peak rule base schedule", base, _BASES)
        self.factors = [float(f) for f in factors]
        if not self.factors or any(not np.isfinite(f) or f <= 0 for f in self.factors):
            raise ConfigError(f"peak rule factors {factors!r}: expected positive numbers")
        if 1.0 not in self.factors:
            raise ConfigError("peak rule factors need 1 (the base schedule at the default peak) among them")
        self.features = [str(f) for f in features]
        for name in self.features:
            check_choice("peak rule feature", name, START_FEATURES)
        k, d = len(self.factors), len(self.features)
        self.mean, self.std = self._array("mean", mean, (d,)), self._array("std", std, (d,))
        if np.any(self.std <= 0):
            raise ConfigError("peak rule std: expected positive numbers")
        self.weights = self._array("weights", weights, (k, d))
        self.biases = self._array("biases", biases, (k,))
        self.low, self.high = self._array("low", low, (d,)), self._array("high", high, (d,))
        if np.any(self.low > self.high):
            raise ConfigError("peak rule clip range has low above high")
        self.images, self.iterations = int(images), int(iterations)
        if self.images < 1 or self.iterations < 1:
            raise ConfigError("peak rule images and iterations: expected positive integers")
        self.provenance = provenance or {}

    @staticmethod
    def _array(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
        try:
            arr = np.array(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"peak rule {name}: expected numbers ({exc})") from exc
        if arr.shape != shape or not np.isfinite(arr).all():
            raise ConfigError(f"peak rule {name}: expected finite numbers of shape {shape}, got shape {arr.shape}")
        return arr

    # ------------------------------------------------------------------ deciding
    def scores(self, values: dict[str, float]) -> np.ndarray:
        """Each factor's predicted gain over factor 1 (points) for these feature values."""
        x = np.array([float(values[name]) for name in self.features])
        z = (np.clip(x, self.low, self.high) - self.mean) / self.std
        return self.weights @ z + self.biases

    def outside(self, values: dict[str, float]) -> list[str]:
        """The features of `values` outside the range of the table the rule was fitted on."""
        return [name for name, lo, hi in zip(self.features, self.low, self.high)
                if not lo <= float(values[name]) <= hi]

    def choose(self, values: dict[str, float]) -> float:
        """The factor with the highest score (factor 1 on a tie: the base schedule unless a change pays);
        with the guard, factor 1 for features outside the fitted table."""
        if self.guard and self.outside(values):
            return 1.0
        scores = self.scores(values)
        one = self.factors.index(1.0)
        best = int(np.argmax(scores))
        return self.factors[best] if scores[best] > scores[one] else 1.0

    def skips_probe(self, model: Any) -> bool:
        """Whether the rule keeps factor 1 for `model` without measuring it: guarded, and a net of layer kinds
        its table showed no gain for (or never had)."""
        return self._skips(layer_kinds(model))

    def _skips(self, kinds: tuple[str, ...]) -> bool:
        return self.guard and self.decides_for is not None and kinds not in self.decides_for

    def select(self, model: Any, data: Any, config: Any, total_steps: int) -> tuple[Any, dict[str, Any]]:
        """The schedule for a run of `total_steps` of `model` (initial weights) on `data` with
        `config` (its ``lr`` the default peak, ``seed`` the batch the curvature is measured on), and a
        record of the decision (factor, features, scores, the estimate and its images)."""

        kinds = layer_kinds(model)
        if self._skips(kinds):  # nothing measured, nothing charged: the base schedule itself
            record = {"factor": 1.0, "peak_lr": float(config.lr), "features": {}, "scores": [], "guard": self.guard,
                      "outside_table": [], "skipped": f"a net of {', '.join(kinds)} layers, which its table showed "
                                                      "no gain for",
                      "sharpness": None, "loss": None, "grad_norm": None, "images": 0, "seconds": 0.0}
            return named_schedule(self.base, float(config.lr)), record
        stats = start_statistics(model, data, config.seed, self.images, self.iterations)
        values = stats.features(float(config.lr), total_steps, config.optimizer)
        factor = self.choose(values)
        record = {"factor": factor, "peak_lr": float(config.lr) * factor, "features": values,
                  "scores": [round(float(s), 6) for s in self.scores(values)], "guard": self.guard,
                  "outside_table": self.outside(values), **stats.to_dict()}
        return named_schedule(self.base, float(config.lr) * factor), record

    def factor_for(self, model: Any, x: Any, y: Any, lr: float, total_steps: int, optimizer: str = "sgd") -> float:
        """The factor for a plain training loop: `model` at its initial weights, one batch `x`, `y`
        (about ``self.images`` images, normalised as the loop feeds them), the default peak `lr`, the
        run's `total_steps` and optimizer ("sgd" or "adamw"). Train at ``factor * lr``."""

        if self.skips_probe(model):
            return 1.0
        stats = batch_statistics(model, x, y, 0, self.iterations)
        return self.choose(stats.features(float(lr), int(total_steps), optimizer))

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        body = {"base": self.base, "factors": self.factors, "features": self.features,
                "mean": self.mean.tolist(), "std": self.std.tolist(), "weights": self.weights.tolist(),
                "biases": self.biases.tolist(), "low": self.low.tolist(), "high": self.high.tolist(),
                "images": self.images, "iterations": self.iterations,
                "decides_for": None if self.decides_for is None else [list(k) for k in self.decides_for]}
        return wrap(self.KIND, self.FORMAT_VERSION, body, self.provenance)

    def save(self, path: str | Path) -> Path:
        """Write the rule as JSON (atomically); return the path."""
        return write_json(Path(path), self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> PeakRule:
        data = unwrap(data, cls.KIND, cls.FORMAT_VERSION, source)
        fields = {name: require(data, name, list, source)
                  for name in ("factors", "features", "mean", "std", "weights", "biases", "low", "high")}
        base = require(data, "base", str, source)
        images = require(data, "images", int, source)
        iterations = require(data, "iterations", int, source)
        decides_for = data.get("decides_for")  # absent in rules written before it existed: every net
        if decides_for is not None and not (isinstance(decides_for, list) and all(
                isinstance(k, list) and all(isinstance(x, str) for x in k) for k in decides_for)):
            raise PolicyFormatError(f"{source}: decides_for: expected null or lists of layer kinds, "
                                    f"got {decides_for!r}")
        try:
            return cls(base, images=images, iterations=iterations, provenance=read_provenance(data, source),
                       decides_for=decides_for, **fields)
        except ConfigError as exc:
            raise PolicyFormatError(f"{source}: {exc}") from exc

    @classmethod
    def load(cls, path: str | Path) -> PeakRule:
        """Read a rule written by `save`, or ``"zoo:peak-rule"`` (shipped)."""
        return cls.from_dict(read_json(resolve_zoo(path, (cls.KIND,))), str(path))
