"""Tasks beyond classification: metrics, augmentation that moves the target, training and evaluation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from policysearch.data.raw import make_raw
from policysearch.errors import ConfigError, PolicyInputError
from policysearch.policies.augment import AugmentPolicy, builtin_policy
from policysearch.tasks import IGNORE_INDEX, get_task
from policysearch.tasks.dense import confusion, psnr, segmentation_scores, ssim
from policysearch.train.trainer import TrainConfig, Trainer


# ---------------------------------------------------------------------- metrics
def test_segmentation_scores_match_a_hand_count():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, IGNORE_INDEX, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 1]])
    scores = segmentation_scores(confusion(pred, target, 3), ["bg", "a", "b"])
    # class 0: tp 1, fp 1 (a 2 predicted as 0; the ignored pixel does not count), fn 1 -> 1/3
    # class 1: tp 3, fp 1, fn 0 -> 3/4; class 2: tp 1, fp 0, fn 1 -> 1/2
    assert scores["iou/bg"] == pytest.approx(1 / 3)
    assert scores["iou/a"] == pytest.approx(3 / 4)
    assert scores["iou/b"] == pytest.approx(1 / 2)
    assert scores["miou"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(5 / 7)


def test_a_class_absent_everywhere_is_left_out_of_the_mean():
    target = torch.tensor([[0, 1]])
    scores = segmentation_scores(confusion(target, target, 3))
    assert scores["miou"] == 1.0 and math.isnan(scores["iou/2"])


def test_psnr_and_ssim():
    clean = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    noisy = (clean + 0.1).clamp(0, 1)
    mse = (noisy - clean).pow(2).flatten(1).mean(1)
    assert torch.allclose(psnr(noisy, clean), 10 * torch.log10(1 / mse))
    assert torch.allclose(ssim(clean, clean), torch.ones(3), atol=1e-4)
    assert bool((ssim(noisy, clean) < 0.999).all())


def test_reward_metric_must_fit_the_task():
    assert get_task("segmentation").reward_metric(None) == "miou"
    assert get_task("restoration").reward_metric("ssim") == "ssim"
    with pytest.raises(ConfigError, match="not measured on segmentation"):
        get_task("segmentation").reward_metric("accuracy")


# ---------------------------------------------------------------------- augmentation with a target
def _square(size: int = 32, top: int = 4, left: int = 20, side: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.zeros(4, 3, size, size)
    x[:, :, top : top + side, left : left + side] = 1.0
    mask = torch.zeros(4, size, size, dtype=torch.int64)
    mask[:, top : top + side, left : left + side] = 1
    return x, mask


def _agreement(x: torch.Tensor, mask: torch.Tensor) -> float:
    """Share of labelled pixels where "the object is there" agrees between image and mask."""
    keep = mask != IGNORE_INDEX
    return float(((x.mean(1) > 0.5) == (mask == 1))[keep].float().mean())


def test_a_rotated_mask_still_covers_its_rotated_object():
    x, mask = _square()
    policy = AugmentPolicy([[("rotate", 1.0, 9)]])  # 24-30 degrees
    out, moved = policy(x, mask, 2, generator=torch.Generator().manual_seed(0), target_kind="mask")
    assert not torch.equal(moved, mask)  # it did move
    assert _agreement(out, moved) > 0.97
    assert _agreement(out, mask) < 0.97  # the unmoved mask would not fit


def test_kornia_pipeline_moves_the_mask_with_the_image():
    x, mask = _square()
    policy = AugmentPolicy([[("rotate", 1.0, 9)]], flip=0.5)
    pipeline = policy.kornia_pipeline(data_keys=["input", "mask"])
    torch.manual_seed(0)
    out, moved = pipeline(x, mask[:, None].float())
    moved = moved[:, 0].round().long()
    assert not torch.equal(moved, mask)
    assert _agreement(out, moved) > 0.97


def test_photometric_ops_leave_the_mask_and_geometric_ones_fill_it_with_ignore():
    x, mask = _square()
    g = torch.Generator().manual_seed(1)
    _, same = AugmentPolicy([[("brightness", 1.0, 9)], [("solarize", 1.0, 2)]])(x, mask, 2, generator=g,
                                                                                target_kind="mask")
    assert torch.equal(same, mask)
    _, shifted = AugmentPolicy([[("translate_x", 1.0, 9)]])(x, mask, 2, generator=g, target_kind="mask")
    assert bool((shifted == IGNORE_INDEX).any())  # pixels from outside the image carry no label
    _, cropped = AugmentPolicy(crop=0.25)(x, mask, 2, generator=g, target_kind="mask")
    assert bool((cropped == IGNORE_INDEX).any())


def test_erasing_and_cutmix_carry_the_mask():
    x, mask = _square()
    g = torch.Generator().manual_seed(2)
    erased_x, erased = AugmentPolicy(erasing=1.0, erasing_scale=(0.2, 0.3))(x, mask, 2, generator=g,
                                                                              target_kind="mask")
    ignored = erased == IGNORE_INDEX
    assert bool(ignored.any())
    assert bool((erased_x.permute(1, 0, 2, 3)[:, ignored] == 0).all())  # the erased box is the ignored one
    assert torch.equal(erased[~ignored], mask[~ignored])
    x2, mask2 = x.clone(), mask.clone()
    x2[2:] = 0.0
    mask2[2:] = 0
    out, mixed = AugmentPolicy(cutmix=(1.0, 1.0))(x2, mask2, 2, generator=g, target_kind="mask")
    assert _agreement(out, mixed) == 1.0  # the pasted region brought its labels


def test_mixup_is_refused_for_masks_and_blends_image_targets():
    x, mask = _square()
    with pytest.raises(PolicyInputError, match="mixup"):
        AugmentPolicy(mixup=(1.0, 1.0))(x, mask, 2, generator=torch.Generator(), target_kind="mask")
    target = x.clone()
    out, blended = AugmentPolicy(mixup=(1.0, 1.0))(x, target, 3, generator=torch.Generator(), target_kind="image")
    assert torch.allclose(out, blended)  # input and target got the same blend


def test_image_targets_get_every_op_alike():
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    policy = builtin_policy("trivial")
    out, target = policy(x, x.clone(), 1, generator=torch.Generator().manual_seed(4), target_kind="image")
    assert torch.allclose(out, target)


def test_a_mask_of_the_wrong_shape_is_refused():
    x, mask = _square()
    with pytest.raises(PolicyInputError, match="int64 mask"):
        builtin_policy("cropflip")(x, mask[:, :8], 2, target_kind="mask")
    with pytest.raises(PolicyInputError, match="mask values"):
        builtin_policy("cropflip")(x, mask + 5, 2, target_kind="mask")


# ---------------------------------------------------------------------- training and evaluation
def _fcn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(input_shape[0], 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, num_classes, 3, padding=1))


def _squares(task: str) -> object:
    from dense_helpers import squares

    return squares(task, n=160, size=16, train=120, val=20)


@pytest.mark.parametrize("task, metric, floor", [("segmentation", "miou", 0.9), ("restoration", "psnr", 20.0)])
def test_dense_tasks_train_evaluate_and_repeat(task, metric, floor):
    data = _squares(task)
    assert data.task == task
    runs = []
    for _ in range(2):
        trainer = Trainer(data, TrainConfig(model=_fcn, lr=0.05 if task == "segmentation" else 0.01, batch_size=20), 80)
        before = trainer.evaluate("test")[metric]
        trainer.train_segment(80, augment=builtin_policy("cropflip"))
        runs.append(trainer.evaluate("test"))
    assert runs[0] == runs[1]  # deterministic on the CPU
    assert runs[0][metric] > floor and runs[0][metric] > before


def test_a_classifier_is_refused_for_dense_data():
    data = _squares("segmentation")
    with pytest.raises(ConfigError, match="expected \\(2, 3, 16, 16\\)"):
        Trainer(data, TrainConfig(model="mlp", batch_size=20), 10)


def test_a_mask_with_values_beyond_the_classes_is_refused():
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    y = torch.full((4, 8, 8), 7, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="expected class indices 0..2"):
        make_raw("bad", x, y, x, y, ["a", "b", "c"], "tensors", task="segmentation")
