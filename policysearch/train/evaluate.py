"""Evaluate one model on one split: the only place that batches a split through a model.

`evaluate(model, data, split)` returns accuracy, macro precision / recall / F1, ECE and NLL
(`policysearch.metrics`). It owns what a model sees at test time: uint8 images scaled to [0, 1] and
normalised with the training split's mean and std (`normalise`), batches under
`torch.inference_mode`, and on CUDA a channels_last model and input under bf16 autocast. The
`Trainer` feeds its training batches through the same `normalise`, `autocast` and `to_device`, so a
model is always evaluated on exactly the inputs it was trained on. Evaluating touches no global RNG.

The multi-seed comparison of whole policies lives in `policysearch.analysis.compare`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from policysearch.checks import check_int
from policysearch.data import DeviceData
from policysearch.data.preprocess import normalise
from policysearch.device import autocast, to_device
from policysearch.errors import ConfigError
from policysearch.metrics import ATTACK_REWARD_METRICS
from policysearch.tasks import get_task
from policysearch.train.robustness import REWARD_EPSILON, attack_accuracy

__all__ = ["EVAL_BATCH_SIZE", "evaluate", "image_stats", "predict"]

EVAL_BATCH_SIZE = 1024


def predict(
    model: nn.Module, data: DeviceData, split: str = "val", *, batch_size: int = EVAL_BATCH_SIZE, amp: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32) and labels of a whole split.

    Args:
        model: the classifier; moved to ``data.device`` (see `to_device`) and left in eval mode.
        data: device-resident splits.
        split: "train", "val" or "test".
        batch_size: images per forward pass (the figures do not depend on it beyond float rounding).
        amp: bf16 autocast on CUDA (ignored on the CPU).
    """
    check_int("batch_size", batch_size, 1)
    # Outside inference_mode: parameters moved to another device there would become inference tensors.
    model = to_device(model, data.device)
    x_all, y_all = data.split_arrays(split)
    model.eval()
    outs = []
    with torch.inference_mode():
        for start in range(0, len(y_all), batch_size):
            x = x_all[start : start + batch_size].float().div_(255.0)
            with autocast(data.device, amp):
                outs.append(model(normalise(x, data)).float())
    return torch.cat(outs), y_all


def evaluate(
    model: nn.Module, data: DeviceData, split: str = "val", *, batch_size: int = EVAL_BATCH_SIZE, amp: bool = True,
    reward_metric: str | None = None,
) -> dict[str, float]:
    """The data's task metrics of `model` on "train", "val" or "test": accuracy, macro P / R / F1, ECE and
    NLL (classification); mIoU, pixel accuracy, NLL and ``iou/<class>`` (segmentation); PSNR, SSIM and MSE
    (restoration). Outputs are reduced batch by batch, so a split of dense outputs never sits in memory.

    Args and side effects as in `predict`; when `reward_metric` is measured under attack
    (`policysearch.metrics.ATTACK_REWARD_METRICS`, e.g. "fgsm_accuracy"), that figure is added, at
    `policysearch.train.robustness.REWARD_EPSILON`.
    """
    metrics = _accumulate(model, data, split, batch_size, amp).result()
    if reward_metric in ATTACK_REWARD_METRICS:
        task = get_task(data.task)
        if task.target_kind != "label":
            raise ConfigError(f"{reward_metric} is measured on classifiers; this is {task.name} data")
        metrics.update(attack_accuracy(model, data, split, REWARD_EPSILON, (ATTACK_REWARD_METRICS[reward_metric],)))
    return metrics


def image_stats(model: nn.Module, data: DeviceData, split: str = "val", *, batch_size: int = EVAL_BATCH_SIZE,
                amp: bool = True) -> torch.Tensor:
    """Each image's share of the task's default metric on `split` (`policysearch.tasks.Accumulator.image_stats`):
    ``(N, d)`` float64 rows whose sum `Task.score_from_stats` turns into the metric, for tests over images."""
    return _accumulate(model, data, split, batch_size, amp).image_stats()


def _accumulate(model: nn.Module, data: DeviceData, split: str, batch_size: int, amp: bool) -> Any:
    """The task's accumulator after one pass over `split` (outputs reduced batch by batch)."""
    task = get_task(data.task)
    check_int("batch_size", batch_size, 1)
    model = to_device(model, data.device)
    x_all, y_all = data.split_arrays(split)
    model.eval()
    scores = task.accumulator(data)
    with torch.inference_mode():
        for start in range(0, len(y_all), batch_size):
            x = x_all[start : start + batch_size].float().div_(255.0)
            with autocast(data.device, amp):
                out = model(normalise(x, data)).float()
            scores.add(out, task.batch_target(y_all[start : start + batch_size]))
    return scores
