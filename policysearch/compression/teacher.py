"""The teacher a compression starts from, checked against the data before any search: a module with
finite float32 weights on a real device that maps the data's images to what its task predicts (class
scores; a score map per class; a restored image)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from policysearch.errors import ConfigError
from policysearch.models.registry import check_outputs
from policysearch.tasks import get_task

__all__ = ["check_teacher"]


def check_teacher(teacher: Any, data: Any, what: str = "the teacher") -> None:
    """Refuse a teacher that would make every later figure wrong or crash deep inside a search.

    Args:
        teacher: the trained network (left as it is: its mode is restored, nothing is moved).
        data: a `DeviceData` (its image shape, task and class count or image channels).
        what: how messages name the teacher (e.g. its file).

    Raises:
        ConfigError: not an nn.Module; weights on the meta device, not floating point, not float32, or
            not finite; images it cannot take; outputs that are not what the data's task predicts
            (`policysearch.tasks.Task.output_shape`: one score per class, or a map of the input's size).
    """
    if not isinstance(teacher, nn.Module):
        raise ConfigError(f"{what} is a {type(teacher).__name__}, expected a torch.nn.Module")
    tensors = [*teacher.named_parameters(), *teacher.named_buffers()]
    for name, t in tensors:
        if t.device.type == "meta":
            raise ConfigError(f"{what} has no weights ({name!r} is on the meta device); load its weights first")
    for name, p in teacher.named_parameters():
        if not p.is_floating_point():
            raise ConfigError(f"{what}: parameter {name!r} is {p.dtype}; a trained network has floating-point "
                              "weights")
        if p.dtype != torch.float32:
            raise ConfigError(f"{what}: parameter {name!r} is {p.dtype}; training and distillation run in float32: "
                              "convert it with teacher.float()")
    for name, t in tensors:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ConfigError(f"{what}: {name!r} holds NaN or infinite values; a teacher must be a trained, "
                              "finite network")
    shape, outputs = tuple(data.input_shape), data.output_size
    check_outputs(teacher, what, shape, outputs, get_task(data.task).output_shape(shape, outputs))
