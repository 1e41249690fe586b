"""The end of a compression job: prune the teacher by the best plan, distil it for longer, and
compare teacher and student (test accuracy, macro F1, FLOPs, parameters, file size, CPU latency)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from policysearch.data import DeviceData


@torch.inference_mode()
def latency_ms(model: nn.Module, input_shape: tuple[int, int, int], batch: int, repeats: int = 30) -> float:
    """Median CPU wall time of one forward pass at `batch` images, in milliseconds."""
    model = model.to("cpu").eval()
    x = torch.rand(batch, *input_shape)
    for _ in range(5):  # warm-up: allocator, kernel selection
        model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def state_dict_bytes(model: nn.Module) -> int:
    """Size of the model's weights as a torch.save file (what a deployment ships)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pt"
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
        return path.stat().st_size


def model_card(model: nn.Module, data: DeviceData) -> dict[str, Any]:
    """Test quality and deployment cost of one model."""
    from policysearch.distill import evaluate_model
    from policysearch.metrics import count_parameters, flops_per_image

    test = evaluate_model(model, data, "test")
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
           temperature: float = 4.0, alpha: float = 0.9) -> tuple[nn.Module, dict[str, Any]]:
    """Apply `plan` to `teacher`, distil the student for `epochs`, and compare the two.

    Returns:
        The student and ``{"teacher": card, "student": card, "finetune": {...}, "ratios": {...}}``
        where the ratios are student / teacher for FLOPs, parameters, file size and latency.
    """
    from policysearch.distill import distill

    teacher = teacher.to(data.device).eval()
    example = torch.zeros(1, *data.input_shape, device=data.device)
    student = plan.apply(teacher, example)
    steps = max(0, round(epochs * max(1, len(data.y_train) // 128)))
    stats = distill(student, teacher, data, steps=steps, lr=lr, temperature=temperature, alpha=alpha, seed=seed)
    cards = {"teacher": model_card(teacher, data), "student": model_card(student, data)}
    ratios = {key: cards["student"][key] / cards["teacher"][key]
              for key in ("flops", "params", "file_bytes", "latency_ms_batch1", "latency_ms_batch64")}
    report = {**cards, "ratios": ratios,
              "accuracy_drop_points": 100 * (cards["teacher"]["test_accuracy"] - cards["student"]["test_accuracy"]),
              "finetune": {"epochs": epochs, "steps": stats.steps, "seconds": stats.seconds, "loss": stats.loss,
                           "diverged": stats.diverged}}
    return student, report
