"""Tests for policysearch.metrics: agreement with scikit-learn / torch, and cost accounting."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from torch import nn

from policysearch.errors import ConfigError, UnknownNameError
from policysearch.metrics import (
    COST_METRICS,
    HIGHER_IS_BETTER,
    METRIC_NAMES,
    REWARD_METRICS,
    Cost,
    classification_metrics,
    cost_units,
    count_parameters,
    flops_per_image,
    format_mean_std,
    peak_memory_mb,
    reward_value,
    summarize,
)


def _sklearn(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    y_true, y_pred = targets.numpy(), logits.argmax(1).numpy()
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    return {"accuracy": accuracy_score(y_true, y_pred), "macro_precision": p, "macro_recall": r, "macro_f1": f}


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_sklearn(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n, c = 200, 7
    targets = torch.randint(0, c, (n,), generator=g)
    # Logits loosely correlated with the targets so every metric is away from 0 and 1.
    logits = torch.randn(n, c, generator=g) + 1.5 * F.one_hot(targets, c)
    got = classification_metrics(logits, targets, c)
    assert tuple(got) == METRIC_NAMES
    assert all(type(v) is float for v in got.values())
    for key, expected in _sklearn(logits, targets).items():
        assert got[key] == pytest.approx(expected, abs=1e-9), key


def test_absent_classes_are_left_out_of_macro_average() -> None:
    # 10 classes declared, only 0..2 occur; class 2 only among the predictions.
    targets = torch.tensor([0, 0, 1, 1, 1, 0])
    preds = torch.tensor([0, 2, 1, 1, 0, 0])
    logits = F.one_hot(preds, 10).float() * 5
    got = classification_metrics(logits, targets, 10)
    for key, expected in _sklearn(logits, targets).items():
        assert got[key] == pytest.approx(expected, abs=1e-12), key


def test_ece_zero_for_confident_correct_predictions() -> None:
    targets = torch.arange(10) % 4
    logits = F.one_hot(targets, 4).float() * 100.0
    got = classification_metrics(logits, targets, 4)
    assert got["accuracy"] == 1.0
    assert got["ece"] == pytest.approx(0.0, abs=1e-6)


def test_ece_is_error_rate_for_confident_predictions() -> None:
    targets = torch.arange(20) % 4
    preds = targets.clone()
    preds[:7] = (preds[:7] + 1) % 4  # 7 of 20 confidently wrong
    logits = F.one_hot(preds, 4).float() * 100.0
    got = classification_metrics(logits, targets, 4)
    assert got["accuracy"] == pytest.approx(13 / 20)
    assert got["ece"] == pytest.approx(1 - got["accuracy"], abs=1e-6)


def test_ece_of_uniform_predictions() -> None:
    # Confidence 0.25 everywhere and accuracy 0.25 (argmax ties go to class 0): calibrated.
    targets = torch.arange(8) % 4
    got = classification_metrics(torch.zeros(8, 4), targets, 4)
    assert got["ece"] == pytest.approx(0.0, abs=1e-6)


def test_nll_matches_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(50, 5, generator=g) * 3, torch.randint(0, 5, (50,), generator=g)
    got = classification_metrics(logits, targets, 5)
    assert got["nll"] == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)


def test_classification_metrics_rejects_bad_input() -> None:
    logits = torch.zeros(4, 3)
    with pytest.raises(ConfigError, match="expected \\(N, 5\\)"):
        classification_metrics(logits, torch.zeros(4, dtype=torch.long), 5)
    with pytest.raises(ConfigError, match="targets have shape"):
        classification_metrics(logits, torch.zeros(3, dtype=torch.long), 3)
    with pytest.raises(ConfigError, match="labels in \\[0, 2\\]"):
        classification_metrics(logits, torch.tensor([0, 1, 2, 3]), 3)
    with pytest.raises(ConfigError, match="0 samples"):
        classification_metrics(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), 3)


def test_higher_is_better_covers_every_metric() -> None:
    from policysearch.tasks import TASKS, get_task

    every_task = {m for t in TASKS for m in get_task(t).metric_names}
    assert set(METRIC_NAMES) <= every_task and set(HIGHER_IS_BETTER) == every_task
    for t in TASKS:  # each task's own table agrees with the shared one
        assert all(HIGHER_IS_BETTER[m] == up for m, up in get_task(t).higher_is_better.items())
    assert not HIGHER_IS_BETTER["ece"] and not HIGHER_IS_BETTER["nll"] and HIGHER_IS_BETTER["macro_f1"]
    assert HIGHER_IS_BETTER["miou"] and HIGHER_IS_BETTER["psnr"] and not HIGHER_IS_BETTER["mse"]


def test_flops_of_linear_layer() -> None:
    layer = nn.Linear(10, 5)
    flops = flops_per_image(layer, (10,))
    assert flops["forward"] == 2 * 10 * 5
    assert flops["train"] > flops["forward"]
    assert all(p.grad is None for p in layer.parameters())


def test_flops_restores_mode_grads_and_buffers() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flops = flops_per_image(model, (1, 8, 8))
    assert flops["train"] > flops["forward"] > 0
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k

    # Existing gradients (mid-training) survive a measurement untouched.
    model.train()
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    flops_per_image(model, (1, 8, 8))
    assert model.training
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))

    # Not even for a moment: the train pass runs on a copy. A model handed to a spawned worker lives in
    # shared memory, where a train-mode forward (later undone) raced with other workers doing the same.
    seen = []  # (module id, training) of every forward call; deep copies carry the hooks along
    handles = [m.register_forward_pre_hook(lambda m, _: seen.append((id(m), m.training))) for m in model.modules()]
    flops_per_image(model, (1, 8, 8))
    for h in handles:
        h.remove()
    own = {id(m) for m in model.modules()}
    assert any(i in own for i, _ in seen) and any(t for _, t in seen)  # the model ran, and a train pass too
    assert not any(t for i, t in seen if i in own), "the model itself ran only in eval mode"


def test_count_parameters() -> None:
    model = nn.Sequential(nn.Linear(10, 5), nn.Linear(5, 2))
    assert count_parameters(model) == 10 * 5 + 5 + 5 * 2 + 2
    model[0].requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 5 * 2 + 2


def test_peak_memory_mb_on_cpu_is_positive() -> None:
    assert peak_memory_mb("cpu") > 0


def test_cost_accumulates() -> None:
    cost = Cost(flops_per_image=100, params=55)
    cost.add(1.5, 64, 300)
    cost.add(0.5, 32, 300)
    assert cost.seconds == 2.0
    assert cost.images == 96
    assert cost.train_flops == 96 * 300
    d = cost.to_dict()
    assert d == {
        "seconds": 2.0,
        "images": 96,
        "train_flops": 28800.0,
        "flops_per_image": 100,
        "params": 55,
        "peak_memory_mb": 0.0,
    }
    with pytest.raises(ConfigError):
        cost.add(-1.0, 1, 1)


def test_summarize_and_format() -> None:
    assert summarize([0.5]) == (0.5, 0.0)
    mean, std = summarize([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == pytest.approx(1.0)
    assert format_mean_std([0.91, 0.93]) == f"0.9200 ± {math.sqrt(2) * 0.01:.4f}"
    assert format_mean_std([1.0], digits=2) == "1.00 ± 0.00"
    with pytest.raises(ConfigError):
        summarize([])


def test_reward_value_negates_the_lower_is_better_metrics() -> None:
    metrics = {"accuracy": 0.75, "macro_f1": 0.5, "ece": 0.125, "nll": 0.25, "fgsm_accuracy": 0.375,
               "miou": 0.625, "pixel_accuracy": 0.875, "psnr": 24.5, "ssim": 0.5, "mse": 0.0625}
    values = {name: reward_value(metrics, name) for name in REWARD_METRICS}
    assert values == {"accuracy": 0.75, "macro_f1": 0.5, "neg_ece": -0.125, "neg_nll": -0.25, "fgsm_accuracy": 0.375,
                      "miou": 0.625, "pixel_accuracy": 0.875, "psnr": 24.5, "ssim": 0.5, "neg_mse": -0.0625}
    with pytest.raises(ConfigError, match="another task"):
        reward_value({"accuracy": 0.75}, "miou")
    with pytest.raises(UnknownNameError, match="Did you mean 'accuracy'"):
        reward_value(metrics, "acuracy")


def test_cost_units_are_seconds_or_tflops() -> None:
    assert COST_METRICS == ("seconds", "tflops")
    assert cost_units("seconds", 2.5, 3e12) == 2.5
    assert cost_units("tflops", 2.5, 3e12) == pytest.approx(3.0)
    with pytest.raises(UnknownNameError, match="cost metric"):
        cost_units("flops", 1.0, 1.0)
