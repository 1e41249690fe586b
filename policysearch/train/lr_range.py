"""The learning-rate range test (Smith 2017, "Cyclical learning rates"; fastai's ``lr_find``): train
a throwaway copy of the run's model from its own initial weights while the LR grows exponentially,
and read a peak LR off the loss curve.

It answers one question a schedule cannot: is the model's default peak LR right for *this* run
(data set, size, batch, weight decay)? Its images are real training cost, so a run that uses it
should be charged for them (`RangeTest.images`; `benchmarks/schedule_zero_shot.py` shortens the
main run by as many steps, so every arm trains on the same number of images).

    test = lr_range_test(data, TrainConfig(model="cnn", seed=0))
    peak = test.suggestion()          # where the smoothed loss falls fastest per decade of LR
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from policysearch.checks import check_choice, check_int, check_lr, check_number
from policysearch.errors import ConfigError
from policysearch.policies.schedule_space import DEFAULT_RANGE_STEPS
from policysearch.train.trainer import Trainer

__all__ = ["DEFAULT_RULE", "DEFAULT_STEPS", "RULES", "RangeTest", "lr_range_test"]

# How a peak LR is read off the curve: the LR where the smoothed loss falls fastest per decade
# ("steepest"), or the LR at the smoothed loss's minimum divided by 10 (fastai's classic "min/10").
RULES: tuple[str, ...] = ("steepest", "min/10")
# The defaults were chosen on 7 tasks of the LR controllers' training distribution (digits mlp / cnn
# / vit, Fashion-MNIST mlp / cnn on 1,000-4,000 images; 3 seeds; onecycle at 0.5 / 1 / 2 x the
# default peak; benchmarks/lr_range_calibration.py): a 20-step sweep read by "steepest" lost the
# least against the best of the three scales (0.11 points on average; 40 steps 0.24, "min/10" 1.57).
DEFAULT_RULE = "steepest"
DEFAULT_STEPS = DEFAULT_RANGE_STEPS  # the steps a schedule space records for its range test


@dataclass(frozen=True)
class RangeTest:
    """One range test's curve and what it costs.

    Attributes:
        lrs: the LR of every step taken.
        losses: each step's training loss (before its update).
        smoothed: the debiased exponential moving average of `losses` the rules read.
        steps: steps taken (fewer than asked when the loss exploded).
        images: training images consumed (steps x batch size): charge them to the run.
        stopped: why it ended early ("" when it ran every step).
        seconds: its training time.
    """

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    steps: int
    images: int
    stopped: str = ""
    seconds: float = 0.0

    def lr_at_min_loss(self) -> float:
        return self.lrs[min(range(len(self.smoothed)), key=self.smoothed.__getitem__)]

    def lr_steepest(self) -> float:
        """The LR where the smoothed loss drops fastest per decade of LR, up to its minimum."""
        end = min(range(len(self.smoothed)), key=self.smoothed.__getitem__)
        if end < 2:
            return self.lrs[0]
        logs = [math.log10(lr) for lr in self.lrs]
        slopes = [(self.smoothed[i + 1] - self.smoothed[i - 1]) / (logs[i + 1] - logs[i - 1]) for i in range(1, end)]
        return self.lrs[1 + min(range(len(slopes)), key=slopes.__getitem__)]

    def suggestion(self, rule: str = DEFAULT_RULE) -> float:
        """The peak LR this curve suggests, by `rule` (see `RULES`)."""
        check_choice("range-test rule", rule, RULES)
        return self.lr_at_min_loss() / 10 if rule == "min/10" else self.lr_steepest()

    def summary(self, rule: str = DEFAULT_RULE) -> dict[str, Any]:
        """What a run records of its range test: the suggestion, the rule, the cost."""
        return {"peak_lr": self.suggestion(rule), "rule": rule, "steps": self.steps, "images": self.images,
                "stopped": self.stopped}


def lr_range_test(data: Any, config: Any, steps: int = DEFAULT_STEPS, lr_low: float | None = None,
                  lr_high: float | None = None, smoothing: float = 0.8, stop_factor: float = 4.0) -> RangeTest:
    """Train a fresh model of `config` (same seed: same initial weights and first batches as the run)
    for `steps` steps with the LR growing exponentially from `lr_low` to `lr_high` (default: the
    config's LR / 100 and x 10), and stop once the smoothed loss exceeds `stop_factor` x its minimum
    or turns NaN. The run itself is not touched.
    """

    check_int("range-test steps", steps, 5)
    check_number("range-test smoothing", smoothing, 0.0, 1.0, high_open=True)
    check_number("range-test stop factor", stop_factor, 1.0, low_open=True)
    low = check_lr("range-test lr_low", lr_low if lr_low is not None else config.lr / 100)
    high = check_lr("range-test lr_high", lr_high if lr_high is not None else config.lr * 10)
    if not low < high:
        raise ConfigError(f"range test: lr_low {low:g} must be below lr_high {high:g}")
    trainer = Trainer(data, replace(config, lr=low), total_steps=steps)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    average, stopped, seconds = 0.0, "", 0.0
    for i in range(steps):
        lr = low * (high / low) ** (i / (steps - 1))
        stats = trainer.train_segment(1, lr=lr)
        seconds += stats.seconds
        if stats.diverged or not math.isfinite(stats.train_loss):
            stopped = f"loss not finite at LR {lr:.3g}"
            break
        average = smoothing * average + (1 - smoothing) * stats.train_loss
        lrs.append(lr)
        losses.append(stats.train_loss)
        smoothed.append(average / (1 - smoothing ** (i + 1)))
        if smoothed[-1] > stop_factor * min(smoothed):
            stopped = f"loss above {stop_factor:g}x its minimum at LR {lr:.3g}"
            break
    if not lrs:
        raise ConfigError(f"range test: the loss diverged at its first LR {low:g}; lower lr_low")
    images = trainer.step * config.batch_size
    return RangeTest(tuple(lrs), tuple(losses), tuple(smoothed), trainer.step, images, stopped, seconds)
