"""Reward metrics and cost terms shared by every policysearch env."""

from __future__ import annotations

from policysearch.errors import UnknownNameError

REWARD_METRICS = ("accuracy", "macro_f1", "neg_ece", "neg_nll")
COST_METRICS = ("seconds", "tflops")


def reward_value(metrics: dict[str, float], reward_metric: str) -> float:
    """The scalar a search maximises: accuracy, macro F1, -ECE or -NLL."""
    if reward_metric not in REWARD_METRICS:
        raise UnknownNameError("reward metric", reward_metric, REWARD_METRICS)
    if reward_metric.startswith("neg_"):
        return -float(metrics[reward_metric[4:]])
    return float(metrics[reward_metric])


def cost_units(cost_metric: str, seconds: float, train_flops: float) -> float:
    """A segment's cost in the units `cost_weight` multiplies: seconds or TFLOPs."""
    if cost_metric not in COST_METRICS:
        raise UnknownNameError("cost metric", cost_metric, COST_METRICS)
    return seconds if cost_metric == "seconds" else train_flops / 1e12
