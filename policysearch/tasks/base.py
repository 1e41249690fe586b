"""The task protocol: what differs between classification, segmentation and restoration."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from policysearch.errors import ConfigError

__all__ = ["IGNORE_INDEX", "Accumulator", "Task"]

IGNORE_INDEX = 255
"""Mask value of pixels without a label (outside the image after a geometric op, erased, or so marked by
the user, as in Pascal VOC's masks); excluded from the loss and the metrics."""


class Accumulator:
    """Collects a split's outputs batch by batch, then gives the task's metrics (`result`) and each image's
    share of the default metric (`image_stats`), for tests that resample images."""

    def add(self, output: torch.Tensor, target: torch.Tensor) -> None:
        raise NotImplementedError

    def result(self) -> dict[str, float]:
        raise NotImplementedError

    def image_stats(self) -> torch.Tensor:
        """``(N, d)`` float64: one row per image, in order, such that `Task.score_from_stats` of the rows'
        sum is the task's default metric over those images."""
        raise NotImplementedError


class Task:
    """One kind of prediction. Subclasses set the class attributes and implement the methods.

    Attributes:
        name: "classification", "segmentation" or "restoration".
        target_kind: how augmentation treats the target: "label" (one per image), "mask" (moves with
            the geometric ops, nearest-neighbour, `IGNORE_INDEX` where pixels come from outside;
            photometric ops leave it), "image" (every op applies to input and target alike).
        metric_names: the headline metrics of tables, in order.
        higher_is_better: the direction of every metric `accumulator` reports.
        default_metric: what a search maximises and the protocol compares unless told otherwise.
        reward_metrics: what a search may maximise on this task (a lower-is-better metric as ``neg_NAME``).
        loss_metric: the evaluated metric that is the training loss on a split (closed-loop LR controllers
            and the schedule env observe it).
        default_model: the built-in network the command line trains when ``--model`` is not given.
    """

    name: str = ""
    target_kind: str = ""
    metric_names: tuple[str, ...] = ()
    higher_is_better: ClassVar[dict[str, bool]] = {}
    default_metric: str = ""
    reward_metrics: tuple[str, ...] = ()
    loss_metric: str = "nll"
    default_model: str = "unet"  # what --model defaults to on this task's data
    #: The hand-made augmentation policies the augmentation protocol compares with (`builtin_policy` names):
    #: for dense targets, the segmentation recipes — flip with a shift, the same with photometric jitter, and
    #: TrivialAugment (its geometric ops move the target, its photometric ones touch the image only for masks).
    augment_baselines: tuple[str, ...] = ("none", "cropflip", "cropflip-jitter", "trivial")

    def reward_metric(self, requested: str | None) -> str:
        """`requested` when this task measures it, the task's default for None; else a ConfigError."""
        if requested is None:
            return self.default_metric
        if requested not in self.reward_metrics:
            raise ConfigError(f"reward metric {requested!r} is not measured on {self.name} data; choose one of "
                              f"{', '.join(self.reward_metrics)} (default {self.default_metric})")
        return requested

    # ------------------------------------------------------------------ data
    def check_targets(self, x: torch.Tensor, y: Any, num_classes: int, what: str) -> str | None:
        """None when `y` holds valid targets of images `x` (uint8 NCHW), else what is wrong (one line)."""
        raise NotImplementedError

    def split_key(self, y: torch.Tensor) -> torch.Tensor:
        """The labels the train / val split stratifies by (a constant: a plain seeded split)."""
        return torch.zeros(len(y), dtype=torch.int64)

    def loss_scale(self, num_classes: int) -> float:
        """A typical loss at the start, to put losses on a common scale in observations: log K for class
        scores (an untrained net's cross-entropy)."""
        return math.log(max(num_classes, 2))

    def output_size(self, num_classes: int, channels: int) -> int:
        """The model's output channels (class scores, or image channels)."""
        return num_classes

    def output_shape(self, input_shape: tuple[int, int, int], num_classes: int) -> tuple[int, ...]:
        """What the model returns per image."""
        raise NotImplementedError

    # ------------------------------------------------------------------ training
    def batch_target(self, y: torch.Tensor) -> torch.Tensor:
        """A batch of stored targets in the form augmentation and the loss take."""
        return y

    def plain_target(self, target: torch.Tensor, num_classes: int) -> torch.Tensor:
        """The training target of an un-augmented batch (classification: one-hot)."""
        return target

    def loss(self, output: torch.Tensor, target: torch.Tensor, data: Any, label_smoothing: float = 0.0) -> torch.Tensor:
        """The training loss of a batch (`data` gives the normalisation, for image targets)."""
        raise NotImplementedError

    def criterion(self, data: Any) -> Any:
        """``loss(outputs, stored_targets)`` of un-augmented batches, e.g. for curvature estimates."""
        return lambda output, y: self.loss(output, self.plain_target(self.batch_target(y), data.num_classes), data)

    # ------------------------------------------------------------------ evaluation
    def accumulator(self, data: Any) -> Accumulator:
        """A fresh collector of one split's metrics."""
        raise NotImplementedError

    def score_from_stats(self, totals: torch.Tensor, count: int | torch.Tensor) -> torch.Tensor:
        """The default metric of images whose `Accumulator.image_stats` rows sum to `totals` (``(..., d)``;
        `count` images): the mean of a per-image score by default (accuracy, PSNR)."""
        return totals[..., 0] / count

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
