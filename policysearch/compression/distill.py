"""Knowledge distillation: fine-tune a (pruned) student on the soft targets of its teacher; and the end
of a compression job built on it (`finish`: prune the teacher by the best plan, distil it for longer,
and compare teacher and student by their `model_card`: test quality by the data's task metrics, FLOPs,
parameters, file size, CPU latency).

The loss is Hinton et al.'s (2015): ``alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) +
(1 - alpha) * CE(s, y)``. The T^2 factor keeps the soft term's gradients on the scale of the hard
term's whatever the temperature. Dense tasks use the same mix, chosen by the data's task
(`KD_LOSSES`, keyed by `policysearch.tasks.Task.target_kind`):

- segmentation (`segmentation_kd_loss`): the KL per pixel over the class dimension, averaged over all
  pixels, plus the per-pixel cross-entropy on the mask (`IGNORE_INDEX` pixels left out);
- restoration (`restoration_kd_loss`): ``alpha * MSE(s, t) + (1 - alpha) * MSE(s, y)``, the target
  normalised as the model's input is (the model predicts in normalised units).

The student trains with the `Trainer` itself (seeded batch order on the device, input
normalisation, optimizer with weight-decay groups, bf16 autocast on CUDA, divergence checks, cost
accounting) through its `loss_fn` hook, so a distilled fine-tune sees exactly the batches a plain
fine-tune with the same seed would. Only the loss differs.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from policysearch.checks import check_int, check_lr, check_number
from policysearch.data import DeviceData
from policysearch.device import device_for_data
from policysearch.errors import ConfigError
from policysearch.metrics import HIGHER_IS_BETTER, count_parameters, difference_unit, flops_per_image, latency_ms
from policysearch.tasks import IGNORE_INDEX, get_task
from policysearch.train.evaluate import evaluate
from policysearch.train.trainer import TrainConfig, Trainer, soft_cross_entropy

__all__ = ["KD_LOSSES", "DistillStats", "card_metrics", "distill", "finish", "kd_loss", "kd_loss_for", "model_card",
           "quality_drop", "restoration_kd_loss", "segmentation_kd_loss", "state_dict_bytes"]


def _check_kd(temperature: float, alpha: float) -> None:
    check_number("temperature", temperature, 0.0, low_open=True)
    check_number("alpha (the soft term's weight)", alpha, 0.0, 1.0)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> torch.Tensor:
    """The distillation loss of a batch (a scalar tensor).

    Args:
        student_logits: ``(N, K)``.
        teacher_logits: ``(N, K)``; treated as constants.
        targets: ``(N,)`` class labels or ``(N, K)`` soft targets (mixup / cutmix).
        temperature: T > 0; both logit sets are divided by it before the softmax.
        alpha: weight of the soft (KL) term in [0, 1]; ``1 - alpha`` weighs the hard-label cross-entropy.

    Returns:
        ``alpha * T^2 * KL + (1 - alpha) * CE``; the KL term is exactly 0 when the student's
        logits equal the teacher's.
    """
    _check_kd(temperature, alpha)
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise ConfigError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)}: "
            "expected the same (N, K) shape"
        )
    s, t = student_logits.float(), teacher_logits.detach().float()
    log_p_student = F.log_softmax(s / temperature, dim=1)
    log_p_teacher = F.log_softmax(t / temperature, dim=1)
    # log_target: the teacher's log-probabilities enter directly, so identical logits give
    # identical tensors and a KL of exactly 0 (no exp / log round trip).
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    loss = alpha * temperature**2 * kl
    if alpha < 1.0:
        if targets.ndim == 1:
            targets = F.one_hot(targets.long(), s.shape[1]).float()
        loss = loss + (1.0 - alpha) * soft_cross_entropy(s, targets)
    return loss


def segmentation_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    masks: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> torch.Tensor:
    """The distillation loss of a batch of segmentations (a scalar tensor): `kd_loss` per pixel.

    Args:
        student_logits: ``(N, K, H, W)`` class scores per pixel.
        teacher_logits: the same shape; treated as constants.
        masks: ``(N, H, W)`` integer class indices, `IGNORE_INDEX` (255) where no label applies.
        temperature, alpha: as in `kd_loss`.

    Returns:
        ``alpha * T^2 * KL + (1 - alpha) * CE``: the KL of the teacher's softened class distribution to the
        student's at each pixel, averaged over every pixel (the teacher has a prediction for unlabelled
        pixels too); the cross-entropy summed over the labelled pixels and divided by their number (at
        least 1), as the segmentation task's training loss is. The KL term is exactly 0 when the logits
        are equal.
    """
    _check_kd(temperature, alpha)
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 4:
        raise ConfigError(
            f"student scores {tuple(student_logits.shape)} and teacher scores {tuple(teacher_logits.shape)}: "
            "expected the same (N, K, H, W) shape"
        )
    n, _, h, w = student_logits.shape
    if tuple(masks.shape) != (n, h, w):
        raise ConfigError(f"masks have shape {tuple(masks.shape)}, expected {(n, h, w)} (one per image)")
    s, t = student_logits.float(), teacher_logits.detach().float()
    log_p_student = F.log_softmax(s / temperature, dim=1)
    log_p_teacher = F.log_softmax(t / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="sum", log_target=True) / (n * h * w)
    loss = alpha * temperature**2 * kl
    if alpha < 1.0:
        masks = masks.long()
        ce = F.cross_entropy(s, masks, ignore_index=IGNORE_INDEX, reduction="sum")
        loss = loss + (1.0 - alpha) * ce / (masks != IGNORE_INDEX).sum().clamp(min=1)
    return loss


def restoration_kd_loss(
    student_images: torch.Tensor,
    teacher_images: torch.Tensor,
    targets: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    alpha: float = 0.9,
) -> torch.Tensor:
    """The distillation loss of a batch of restored images (a scalar tensor).

    Args:
        student_images: ``(N, C, H, W)`` in the input's normalised units (what the model returns).
        teacher_images: the same shape and units; treated as constants.
        targets: ``(N, C, H, W)`` clean images as floats in [0, 1], un-normalised (the trainer's target).
        mean, std: ``(C,)`` the data's normalisation (``data.mean``, ``data.std``), applied to `targets`.
        alpha: weight of the teacher term in [0, 1]; ``1 - alpha`` weighs the target term.

    Returns:
        ``alpha * MSE(student, teacher) + (1 - alpha) * MSE(student, (targets - mean) / std)``; exactly 0
        when the three agree.
    """
    _check_kd(1.0, alpha)
    if student_images.shape != teacher_images.shape or student_images.ndim != 4:
        raise ConfigError(
            f"student images {tuple(student_images.shape)} and teacher images {tuple(teacher_images.shape)}: "
            "expected the same (N, C, H, W) shape"
        )
    if targets.shape != student_images.shape:
        raise ConfigError(f"targets have shape {tuple(targets.shape)}, expected the outputs' "
                          f"{tuple(student_images.shape)}")
    s = student_images.float()
    loss = alpha * F.mse_loss(s, teacher_images.detach().float())
    if alpha < 1.0:
        normalised = (targets.float() - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
        loss = loss + (1.0 - alpha) * F.mse_loss(s, normalised)
    return loss


KdLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any, float, float], torch.Tensor]

KD_LOSSES: dict[str, KdLoss] = {
    "label": lambda s, t, y, data, temperature, alpha: kd_loss(s, t, y, temperature, alpha),
    "mask": lambda s, t, y, data, temperature, alpha: segmentation_kd_loss(s, t, y, temperature, alpha),
    "image": lambda s, t, y, data, temperature, alpha: restoration_kd_loss(s, t, y, data.mean, data.std, alpha),
}
"""The distillation loss of each kind of target (`policysearch.tasks.Task.target_kind`), called as
``loss(student_out, teacher_out, target, data, temperature, alpha)``: what `distill` uses for the data's task."""


def kd_loss_for(task: Any) -> KdLoss:
    """The distillation loss of a task (a name, a `Task`, or None for classification): see `KD_LOSSES`."""
    kind = get_task(task).target_kind
    if kind not in KD_LOSSES:
        raise ConfigError(f"no distillation loss for targets of kind {kind!r} (task {get_task(task).name!r}); "
                          f"known: {', '.join(KD_LOSSES)}")
    return KD_LOSSES[kind]


@dataclass
class DistillStats:
    """What one `distill` call did.

    Attributes:
        steps: optimizer steps taken (fewer than asked when the loss diverged).
        images: training images the student saw.
        seconds: wall-clock time of the loop.
        loss: mean distillation loss over the steps.
        train_flops: student forward + backward FLOPs plus teacher forward FLOPs over all images.
        diverged: None, or where the loss became NaN / inf.
    """

    steps: int
    images: int
    seconds: float
    loss: float
    train_flops: float
    diverged: str | None = None


def _config(data: DeviceData, lr: float, batch_size: int, seed: int, weight_decay: float = 5e-4) -> TrainConfig:
    # TrainConfig insists on a registered model name; with `model=` given the Trainer never builds
    # it, and optimizer and lr are explicit, so the name has no effect.
    return TrainConfig(model="mlp", batch_size=batch_size, optimizer="sgd", lr=lr, weight_decay=weight_decay,
                       seed=seed, device=str(data.device))


def distill(
    student: nn.Module,
    teacher: nn.Module,
    data: DeviceData,
    steps: int,
    lr: float,
    temperature: float = 4.0,
    alpha: float = 0.9,
    batch_size: int = 128,
    seed: int = 0,
    augment: Any = None,
    device: str | torch.device | None = None,
    weight_decay: float = 5e-4,
) -> DistillStats:
    """Fine-tune `student` in place on `teacher`'s soft targets (SGD, Nesterov, cosine-decayed LR).

    Args:
        student: the model to train (moved to ``data.device``; left in train mode).
        teacher: the frozen reference; runs in eval mode under ``torch.inference_mode``.
        data: device-resident splits; batches come from the training split.
        steps: optimizer steps (0 does nothing).
        lr: peak learning rate, decayed to 0 over `steps` on a half cosine.
        temperature, alpha: see `kd_loss`; the loss is that of the data's task (`kd_loss_for`: per pixel for
            segmentation, `restoration_kd_loss` for restoration, where the temperature plays no part).
        batch_size: images per step.
        seed: batch order and augmentation draws (a seeded torch.Generator, not the global RNG).
        augment: an `AugmentPolicy` applied to each batch (the teacher sees the augmented batch).
        device: None, "auto" or the device of `data` (the tensors live there; anything else is an error).
        weight_decay: L2 on weights (not on norms and biases).

    Returns:
        The loop's statistics; on a NaN / inf loss the loop stops and ``diverged`` says where.
    """
    check_int("steps", steps, 0)
    check_lr("lr", lr)
    _check_kd(temperature, alpha)
    device_for_data(device, data.device)
    dev = data.device
    teacher_was_training = teacher.training
    teacher = teacher.to(dev).eval()
    teacher_flops = flops_per_image(teacher, data.input_shape, device=dev)["forward"]
    kd = kd_loss_for(getattr(data, "task", None))

    def loss_fn(student_logits: torch.Tensor, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            teacher_logits = teacher(x)
        # Inference tensors cannot be saved for backward; a plain copy can (and is a constant).
        return kd(student_logits, teacher_logits.float().clone(), target, data, temperature, alpha)

    trainer = Trainer(data, _config(data, lr, batch_size, seed, weight_decay), total_steps=max(steps, 1),
                      model=student, loss_fn=loss_fn)
    stats = trainer.train_segment(steps, augment, lr=lambda p: lr * 0.5 * (1.0 + math.cos(math.pi * p)))
    teacher.train(teacher_was_training)
    return DistillStats(
        steps=stats.steps,
        images=stats.images,
        seconds=stats.seconds,
        loss=stats.train_loss,
        train_flops=float(stats.images) * (trainer.train_flops_per_image + teacher_flops),
        diverged=f"distillation {trainer.diverged}" if trainer.diverged else None,
    )


# ---------------------------------------------------------------------- the end of a compression job
def state_dict_bytes(model: nn.Module) -> int:
    """Size of the model's weights as a torch.save file (what a deployment ships)."""
    buffer = io.BytesIO()  # the size of the file, without writing one
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return buffer.getbuffer().nbytes


def model_card(model: nn.Module, data: DeviceData) -> dict[str, Any]:
    """Test quality and deployment cost of one model.

    Quality is the data's task's headline metrics on the test split (`card_metrics`), each as
    ``test_<metric>``: ``test_accuracy``, ``test_macro_f1``, ... for a classifier; ``test_miou``,
    ``test_pixel_accuracy``, ``test_nll`` for a segmentation; ``test_psnr``, ``test_ssim``, ``test_mse`` for a
    restoration.
    """
    test = evaluate(model, data, "test")
    card = {
        **{f"test_{name}": test[name] for name in card_metrics(data)},
        "flops": int(flops_per_image(model, data.input_shape, device=data.device)["forward"]),
        "params": count_parameters(model),
        "file_bytes": state_dict_bytes(model),
        "latency_ms_batch1": latency_ms(model, data.input_shape, 1),
        "latency_ms_batch64": latency_ms(model, data.input_shape, 64),
    }
    model.to(data.device)
    return card


def card_metrics(data: DeviceData) -> tuple[str, ...]:
    """The quality metrics a `model_card` of a model of `data` lists: its task's default metric first, then the
    task's other headline metrics (`policysearch.tasks.Task.metric_names`)."""
    task = get_task(data.task)
    return (task.default_metric, *[m for m in task.metric_names if m != task.default_metric])


def finish(plan: Any, teacher: nn.Module, data: DeviceData, epochs: float, lr: float, seed: int = 0,
           temperature: float = 4.0, alpha: float = 0.9, batch_size: int = 128) -> tuple[nn.Module, dict[str, Any]]:
    """Apply `plan` to `teacher`, distil the student for `epochs` in batches of `batch_size`, and compare the two.

    Returns:
        The student and ``{"teacher": card, "student": card, "metric": ..., "<metric>_drop_<unit>": ...,
        "finetune": {...}, "ratios": {...}}`` where the ratios are student / teacher for FLOPs, parameters,
        file size and latency, and the drop is the teacher's test figure of the data's task metric minus the
        student's (positive: the student is worse) in points for fractions (``accuracy_drop_points``,
        ``miou_drop_points``) and in dB for PSNR (``psnr_drop_dB``; `policysearch.metrics.difference_unit`).
    """
    teacher = teacher.to(data.device).eval()
    example = torch.zeros(1, *data.input_shape, device=data.device)
    student = plan.apply(teacher, example)
    steps = max(0, round(epochs * max(1, len(data.y_train) // batch_size)))
    stats = distill(student, teacher, data, steps=steps, lr=lr, temperature=temperature, alpha=alpha, seed=seed,
                    batch_size=batch_size)
    cards = {"teacher": model_card(teacher, data), "student": model_card(student, data)}
    ratios = {key: cards["student"][key] / cards["teacher"][key]
              for key in ("flops", "params", "file_bytes", "latency_ms_batch1", "latency_ms_batch64")}
    report = {**cards, "ratios": ratios, **quality_drop(cards["teacher"], cards["student"], data),
              "finetune": {"epochs": epochs, "steps": stats.steps, "seconds": stats.seconds, "loss": stats.loss,
                           "diverged": stats.diverged}}
    return student, report


def quality_drop(teacher_card: dict[str, Any], student_card: dict[str, Any], data: DeviceData) -> dict[str, Any]:
    """``{"metric": m, "<m>_drop_<unit>": teacher - student}`` for the data's task metric m (positive: the
    student is worse), in `policysearch.metrics.difference_unit`'s unit: points of accuracy or mIoU, dB of PSNR."""
    metric = get_task(data.task).default_metric
    factor, unit = difference_unit(metric)
    sign = 1.0 if HIGHER_IS_BETTER.get(metric, True) else -1.0
    drop = sign * factor * (teacher_card[f"test_{metric}"] - student_card[f"test_{metric}"])
    return {"metric": metric, f"{metric}_drop_{unit}": drop}
