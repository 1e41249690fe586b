"""The budget solver of a compression plan: parameter and latency targets checked by measuring the pruned model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from policysearch.channels.groups import CRITERIA
from policysearch.checks import check_choice, check_int, check_number
from policysearch.metrics import count_parameters, flops_per_image, measure_latency

__all__ = ["PlanBudget"]


class PlanBudget:
    """Checks a vector of kept counts against the parameter and latency targets, by measurement.

    `cls` builds a plan from its fields (`policysearch.policies.compress.CompressionPlan`); its `apply`
    prunes a copy of the model, which is what is counted and timed.
    """

    def __init__(self, cls: Any, model: nn.Module, example: torch.Tensor, space: Any,
                 flops_target: float, params_target: float, latency_target: float, latency_batch: int | None,
                 criterion: str, model_name: str | None, task: str | None = None) -> None:
        check_number("params_target (a fraction of the model's parameters)", params_target, 0.0, 1.0, low_open=True)
        check_number("latency_target (a fraction of the model's CPU latency)", latency_target, 0.0, 1.0,
                     low_open=True)
        if latency_batch is not None:
            check_int("latency_batch", latency_batch, 1)
        check_choice("pruning criterion", criterion, CRITERIA)
        self.cls, self.model, self.example, self.space = cls, model, example, space
        self.params_target, self.latency_target = float(params_target), float(latency_target)
        self.batches = sorted({1, latency_batch or 1})
        self.criterion = criterion
        self.model_name = model_name or type(model).__name__
        self.task = task  # what the model predicts, recorded in every plan
        with torch.no_grad():
            was_training = model.training
            model.eval()
            # Dim 1: class scores (N, K), or a dense model's (N, K, H, W) maps.
            self.num_classes = int(model(example).shape[1])
            model.train(was_training)
        self.teacher_params = count_parameters(model)
        self.teacher_flops = round(space.flops_model.total)
        self.flops_target = float(flops_target)
        self.teacher_latency: dict[str, float] = {}
        if self.latency_target < 1.0:
            self.teacher_latency = measure_latency(model, tuple(example.shape[1:]), self.batches)
        self._params_cache: dict[tuple[int, ...], int] = {}

    def plan(self, counts: list[int], provenance: dict[str, Any], **figures: Any) -> Any:
        groups = self.space.groups
        return self.cls(ratios={g.name: c / g.channels for g, c in zip(groups, counts)},
                        channels={g.name: g.channels for g in groups}, model=self.model_name,
                        input_shape=tuple(self.example.shape[1:]),  # type: ignore[arg-type]
                        num_classes=self.num_classes, criterion=self.criterion, flops_target=self.flops_target,
                        teacher_flops=self.teacher_flops, teacher_params=self.teacher_params,
                        params_target=self.params_target, latency_target=self.latency_target,
                        teacher_latency_ms=dict(self.teacher_latency), provenance=provenance, task=self.task,
                        **figures)

    def params_of(self, counts: list[int]) -> int:
        key = tuple(counts)
        if key not in self._params_cache:
            self._params_cache[key] = count_parameters(self.plan(counts, {}).apply(self.model, self.example))
        return self._params_cache[key]

    def params_ok(self, counts: list[int]) -> bool:
        return self.params_target >= 1.0 or self.params_of(counts) <= self.params_target * self.teacher_params

    def measured(self, counts: list[int], provenance: dict[str, Any]) -> Any | None:
        """The plan of `counts` with its FLOPs, parameters (and latency) measured; None if a target fails."""
        student = self.plan(counts, {}).apply(self.model, self.example)
        flops = int(flops_per_image(student, tuple(self.example.shape[1:]), device=self.example.device)["forward"])
        params = count_parameters(student)
        latency: dict[str, float] = {}
        if self.teacher_latency:
            latency = measure_latency(student, tuple(self.example.shape[1:]), self.batches)
        plan = self.plan(counts, provenance, flops=flops, params=params, latency_ms=latency)
        return plan if plan.meets_targets() else None
