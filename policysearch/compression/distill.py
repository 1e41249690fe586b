"""Knowledge distillation: fine-tune a (pruned) student on the soft targets of its teacher; and the end
of a compression job built on it (`finish`: prune the teacher by the best plan, distil it for longer,
and compare teacher and student by their `model_card`: test quality, FLOPs, parameters, file size,
CPU latency).

The loss is Hinton et al.'s (2015): ``alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) +
(1 - alpha) * CE(s, y)``. The T^2 factor keeps the soft term's gradients on the scale of the hard
term's whatever the temperature.

The student trains with the `Trainer` itself (seeded batch order on the device, input
normalisation, optimizer with weight-decay groups, bf16 autocast on CUDA, divergence checks, cost
accounting) through its `loss_fn` hook, so a distilled fine-tune sees exactly the batches a plain
fine-tune with the same seed would. Only the loss differs.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from policysearch.checks import check_int, check_lr, check_number
from policysearch.data import DeviceData
from policysearch.device import device_for_data
from policysearch.errors import ConfigError
from policysearch.metrics import count_parameters, flops_per_image, latency_ms
from policysearch.train.evaluate import evaluate
from policysearch.train.trainer import TrainConfig, Trainer, soft_cross_entropy

__all__ = ["DistillStats", "distill", "finish", "kd_loss", "model_card", "state_dict_bytes"]


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
        temperature, alpha: see `kd_loss`.
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

    def loss_fn(student_logits: torch.Tensor, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            teacher_logits = teacher(x)
        # Inference tensors cannot be saved for backward; a plain copy can (and is a constant).
        return kd_loss(student_logits, teacher_logits.float().clone(), target, temperature, alpha)

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
    """Test quality and deployment cost of one model."""
    test = evaluate(model, data, "test")
    card = {
        "test_accuracy": test["accuracy"],
        "test_macro_f1": test["macro_f1"],
        "flops": int(flops_per_image(model, data.input_shape, device=data.device)["forward"]),
        "params": count_parameters(model),
        "file_bytes": state_dict_bytes(model),
        "latency_ms_batch1": latency_ms(model, data.input_shape, 1),
        "latency_ms_batch64": latency_ms(model, data.input_shape, 64),
    }
    model.to(data.device)
    return card


def finish(plan: Any, teacher: nn.Module, data: DeviceData, epochs: float, lr: float, seed: int = 0,
           temperature: float = 4.0, alpha: float = 0.9, batch_size: int = 128) -> tuple[nn.Module, dict[str, Any]]:
    """Apply `plan` to `teacher`, distil the student for `epochs` in batches of `batch_size`, and compare the two.

    Returns:
        The student and ``{"teacher": card, "student": card, "finetune": {...}, "ratios": {...}}``
        where the ratios are student / teacher for FLOPs, parameters, file size and latency.
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
    report = {**cards, "ratios": ratios,
              "accuracy_drop_points": 100 * (cards["teacher"]["test_accuracy"] - cards["student"]["test_accuracy"]),
              "finetune": {"epochs": epochs, "steps": stats.steps, "seconds": stats.seconds, "loss": stats.loss,
                           "diverged": stats.diverged}}
    return student, report
