"""Classification: one label per image."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from policysearch.metrics import HIGHER_IS_BETTER, METRIC_NAMES, classification_metrics
from policysearch.tasks.base import Accumulator, Task

__all__ = ["Classification", "soft_cross_entropy"]


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against soft targets (mixup / cutmix), with optional label smoothing."""
    if label_smoothing:
        targets = targets * (1 - label_smoothing) + label_smoothing / targets.shape[1]
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


class _Logits(Accumulator):
    def __init__(self, num_classes: int) -> None:
        self.num_classes, self.outputs, self.targets = num_classes, [], []

    def add(self, output: torch.Tensor, target: torch.Tensor) -> None:
        self.outputs.append(output.float())
        self.targets.append(target)

    def result(self) -> dict[str, float]:
        return classification_metrics(torch.cat(self.outputs), torch.cat(self.targets), self.num_classes)

    def image_stats(self) -> torch.Tensor:  # correct (1) or not (0): accuracy is their mean
        return (torch.cat(self.outputs).argmax(1) == torch.cat(self.targets)).double().cpu().unsqueeze(1)


class Classification(Task):
    name = "classification"
    target_kind = "label"
    metric_names = METRIC_NAMES
    higher_is_better: ClassVar[dict[str, bool]] = {k: HIGHER_IS_BETTER[k] for k in METRIC_NAMES}
    default_metric = "accuracy"
    default_model = "cnn"
    augment_baselines = ("none", "cropflip", "erasing", "trivial")
    reward_metrics = ("accuracy", "macro_f1", "neg_ece", "neg_nll", "fgsm_accuracy")

    def check_targets(self, x: torch.Tensor, y: Any, num_classes: int, what: str) -> str | None:
        if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.dim() != 1:
            return f"{what} must be an int64 tensor of shape (N,)"
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            return f"{what} holds labels {int(y.min())}..{int(y.max())}, expected 0..{num_classes - 1}"
        return None

    def split_key(self, y: torch.Tensor) -> torch.Tensor:
        return y  # stratified by class

    def output_shape(self, input_shape: tuple[int, int, int], num_classes: int) -> tuple[int, ...]:
        return (num_classes,)

    def plain_target(self, target: torch.Tensor, num_classes: int) -> torch.Tensor:
        return F.one_hot(target, num_classes).float()

    def loss(self, output: torch.Tensor, target: torch.Tensor, data: Any, label_smoothing: float = 0.0) -> torch.Tensor:
        return soft_cross_entropy(output, target, label_smoothing)

    def criterion(self, data: Any) -> Any:
        return lambda logits, y: F.cross_entropy(logits.float(), y)  # hard labels: torch's own, as it always was

    def accumulator(self, data: Any) -> Accumulator:
        return _Logits(data.num_classes)
