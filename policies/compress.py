"""``CompressionPlan``: how many output channels each layer of a network keeps, as plain JSON.

A plan holds one keep ratio per *channel group*: the set of layers whose output channels must be
pruned together. In a plain network a group is one Conv2d / Linear layer; in a ResNet the layers
that add into the same residual sum (the stem, each block's second conv, its projection shortcut)
share their output channels and form one group. torch-pruning's ``DependencyGraph`` finds the groups
and keeps every coupled layer (batch norms, shortcuts, the consumers' input channels) consistent
when channels are removed. A group is named after its *leader*: the first of its layers in
``model.named_modules()`` order.

``plan.apply(model)`` prunes a copy of ``model`` structurally. Which channels go depends on the
weights (magnitude importance, ``criterion``), but how many go depends only on the plan, so the
same plan applied to any model of the same architecture gives the same parameter shapes; a pruned
checkpoint therefore loads into ``plan.apply(fresh_model)``.

Example::

    plan = CompressionPlan.load("runs/compress/plan.json")
    student = plan.apply(teacher)          # smaller model, same interface
    student.load_state_dict(torch.load("student.pt", weights_only=True))

Needs the ``prune`` extra (torch-pruning) to apply a plan or list a model's groups; reading and
writing plan files does not.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from policysearch.channels.budget import PlanBudget
from policysearch.channels.groups import (
    CRITERIA,
    ChannelGroup,
    channel_groups,
    classifier_head,
    device_of,
    kept_channels,
    prunable_layers,
    require_torch_pruning,
    trace_groups,
)
from policysearch.channels.space import PlanSpace
from policysearch.checks import check_choice, check_int, check_number, check_shape
from policysearch.errors import ConfigError, PolicyFormatError
from policysearch.models import build_model
from policysearch.policies.artifact import JsonArtefact, read_provenance, require, unwrap, wrap
from policysearch.tasks import TASKS, get_task

# The channel groups and the plan space live in `policysearch.channels`; re-exported here, where
# plan users have always found them.
__all__ = [
    "CRITERIA",
    "ChannelGroup",
    "CompressionPlan",
    "PlanSpace",
    "channel_groups",
    "classifier_head",
    "kept_channels",
    "prunable_layers",
]


@dataclass(frozen=True)
class CompressionPlan(JsonArtefact):
    """Per-layer keep ratios for structured channel pruning, with the figures they achieved.

    Attributes:
        ratios: keep ratio in (0, 1] per channel-group leader (see `prunable_layers`); a group
            left out keeps all its channels.
        channels: each listed group's channel count in the unpruned model (checked on apply).
        model: the model's name (a registered name such as "cnn", or a class name).
        input_shape: ``(C, H, W)`` of one input image.
        num_classes: the model's output channels: class scores, or for a dense model (``unet``) the
            score maps of a segmentation or the channels of a restored image (1 for grey images).
        task: what the model predicts (`policysearch.tasks`): "classification" (one score per class),
            "segmentation" (a score map per class) or "restoration" (an image); `build` asks it for the
            output shape. None: not recorded (files written before dense tasks, plans made without data):
            `build` then goes by the registered model (a dense one such as ``unet`` returns maps).
        criterion: which channels go: "l2" or "l1" group magnitude (torch-pruning's
            ``GroupMagnitudeImportance(p)``).
        flops_target: the FLOPs budget as a fraction of the unpruned model's, in (0, 1].
        teacher_flops, teacher_params: forward FLOPs per image and parameters of the unpruned model.
        flops, params: the same for the pruned model (0 when not measured).
        params_target: the parameter budget as a fraction of the unpruned model's, in (0, 1].
        latency_target: the CPU latency budget as a fraction of the unpruned model's, in (0, 1],
            at batch 1 and at every other batch size in `teacher_latency_ms`.
        latency_ms, teacher_latency_ms: measured median CPU milliseconds per forward pass, by batch
            size (``{"1": ..., "64": ...}``; empty when not measured); wall times, so not part of equality.
        provenance: where the plan came from; not part of equality.

    Raises:
        ConfigError: on construction, if a field is invalid; the message names it.
    """

    KIND: ClassVar[str] = "compression_plan"
    FORMAT_VERSION: ClassVar[int] = 1

    ratios: dict[str, float]
    channels: dict[str, int]
    model: str
    input_shape: tuple[int, int, int]
    num_classes: int
    criterion: str = "l2"
    flops_target: float = 1.0
    teacher_flops: int = 0
    teacher_params: int = 0
    flops: int = 0
    params: int = 0
    params_target: float = 1.0
    latency_target: float = 1.0
    latency_ms: dict[str, float] = field(default_factory=dict, compare=False)
    teacher_latency_ms: dict[str, float] = field(default_factory=dict, compare=False)
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)
    task: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.ratios, Mapping) or not self.ratios:
            raise ConfigError(f"ratios is {self.ratios!r}, expected a non-empty mapping of layer name to keep ratio")
        ratios: dict[str, float] = {}
        for name, r in self.ratios.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"ratios has the key {name!r}, expected a layer name")
            ratios[name] = check_number(f"ratios[{name!r}]", r, 0.0, 1.0, low_open=True)
        if not isinstance(self.channels, Mapping):
            raise ConfigError(f"channels is {self.channels!r}, expected a mapping of layer name to channel count")
        if set(self.channels) != set(ratios):
            raise ConfigError(
                f"channels names {sorted(self.channels)} differ from ratios names {sorted(ratios)}; "
                "expected the same layers"
            )
        channels: dict[str, int] = {}
        for name in ratios:
            channels[name] = check_int(f"channels[{name!r}]", self.channels[name], 1)
        # Frozen dataclass: normalise so that equality survives a JSON round trip.
        object.__setattr__(self, "ratios", ratios)
        object.__setattr__(self, "channels", channels)
        check_choice("pruning criterion", self.criterion, CRITERIA)
        object.__setattr__(self, "flops_target", check_number("flops_target", self.flops_target, 0.0, 1.0,
                                                              low_open=True))
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"model is {self.model!r}, expected a non-empty string")
        object.__setattr__(self, "input_shape", check_shape("input_shape", self.input_shape))
        check_int("num_classes", self.num_classes, 1)  # 1: a dense model restoring grey images
        if self.task is not None:
            check_choice("task", self.task, TASKS)
        for name in ("teacher_flops", "teacher_params", "flops", "params"):
            check_int(name, getattr(self, name), 0)
        for name in ("params_target", "latency_target"):
            object.__setattr__(self, name, check_number(name, getattr(self, name), 0.0, 1.0, low_open=True))
        for name in ("latency_ms", "teacher_latency_ms"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise ConfigError(f"{name} is {value!r}, expected a mapping of batch size to milliseconds")
            object.__setattr__(self, name, {str(k): check_number(f"{name}[{k!r}]", v, 0.0) for k, v in value.items()})
        if not isinstance(self.provenance, dict):
            raise ConfigError(f"provenance is {self.provenance!r}, expected a dict")

    # ------------------------------------------------------------------ figures
    @property
    def flops_fraction(self) -> float:
        """Achieved FLOPs as a fraction of the unpruned model's (NaN when not measured)."""
        return self.flops / self.teacher_flops if self.teacher_flops and self.flops else math.nan

    @property
    def params_fraction(self) -> float:
        """Achieved parameters as a fraction of the unpruned model's (NaN when not measured)."""
        return self.params / self.teacher_params if self.teacher_params and self.params else math.nan

    def kept(self) -> dict[str, int]:
        """Channels each listed group keeps."""
        return {name: kept_channels(self.channels[name], r) for name, r in self.ratios.items()}

    # ------------------------------------------------------------------ baselines as constructors
    @classmethod
    def uniform(cls, model: nn.Module, example_inputs: torch.Tensor, *, flops_target: float = 0.5,
                params_target: float = 1.0, latency_target: float = 1.0, latency_batch: int | None = None,
                min_keep: float = 0.1, max_keep: float = 1.0, criterion: str = "l2",
                model_name: str | None = None, task: str | None = None) -> CompressionPlan:
        """One keep ratio for every channel group: the largest that meets every target.

        FLOPs are met exactly (the FLOPs model the env clips with), parameters by counting the pruned
        model, latency by measuring it on the CPU at batch 1 and `latency_batch` against the
        unpruned model (the ratio steps down by 3 % until both hold). The plan records all three.

        Args:
            model: the trained network (not modified).
            example_inputs: a batch it accepts, e.g. ``torch.zeros(1, C, H, W)`` on its device.
            flops_target, params_target, latency_target: budgets as fractions of `model`'s, in (0, 1].
            latency_batch: the second batch size the latency target holds at (None: batch 1 only).
            min_keep, max_keep: bounds of every group's keep ratio.
            criterion: "l2" or "l1" magnitude: which channels go.
            model_name: the plan's `model` (default: the class name).
            task: what `model` predicts, recorded as the plan's `task` (e.g. ``data.task``; None: not recorded).

        Raises:
            ConfigError: a target is out of reach with `min_keep`, or an argument is invalid.
        """
        space = PlanSpace(model, example_inputs, flops_target, min_keep, max_keep)
        budget = PlanBudget(cls, model, example_inputs, space, flops_target, params_target, latency_target,
                         latency_batch, criterion, model_name, task)
        ratio = space.largest_uniform(budget.params_ok)
        for _ in range(200):
            plan = budget.measured(space.uniform_counts(ratio), {"baseline": "uniform", "keep": ratio})
            if plan is not None:
                return plan
            if ratio <= space.min_keep:
                break
            ratio = max(space.min_keep, ratio * 0.97)
        raise ConfigError(f"latency_target={latency_target} is out of reach with min_keep={min_keep}: even the "
                          "smallest uniform plan is too slow; raise latency_target or lower min_keep")

    @classmethod
    def random(cls, model: nn.Module, example_inputs: torch.Tensor, *, flops_target: float = 0.5,
               params_target: float = 1.0, latency_target: float = 1.0, latency_batch: int | None = None,
               min_keep: float = 0.1, max_keep: float = 1.0, criterion: str = "l2", model_name: str | None = None,
               seed: int = 0, tries: int = 100, task: str | None = None) -> CompressionPlan:
        """A random plan: uniform keep ratios in [min_keep, max_keep] per group, clipped group by group
        to the FLOPs target as the env clips (AMC's rule); redrawn (up to `tries` times) until the
        parameter and latency targets hold too. Same arguments as `uniform`, plus the `seed`.

        Raises:
            ConfigError: no draw met the targets.
        """
        import numpy as np

        check_int("tries", tries, 1)
        space = PlanSpace(model, example_inputs, flops_target, min_keep, max_keep)
        budget = PlanBudget(cls, model, example_inputs, space, flops_target, params_target, latency_target,
                         latency_batch, criterion, model_name, task)
        rng = np.random.default_rng(seed)
        for draw in range(tries):
            counts = space.random_counts(rng)
            if not budget.params_ok(counts):
                continue
            plan = budget.measured(counts, {"baseline": "random", "seed": seed, "draw": draw})
            if plan is not None:
                return plan
        raise ConfigError(f"none of {tries} random plans met params_target={params_target} and "
                          f"latency_target={latency_target}; raise them or use CompressionPlan.uniform")

    def neighbours(self, model: nn.Module, example_inputs: torch.Tensor, *, factor: float = 1.5,
                   min_keep: float = 0.1, max_keep: float = 1.0) -> list[CompressionPlan]:
        """The plans one coordinate step away: for each channel group, its kept channels times `factor`
        and divided by it, the other groups scaled together to the largest size that meets this plan's
        FLOPs target (`PlanSpace.moved_counts`). Only neighbours that meet every target of this plan
        (parameters and latency measured, at the batch sizes it was measured at) and differ from it are
        returned, each with its move in `provenance`.

        Args:
            model: the unpruned network this plan was made for.
            example_inputs: a batch it accepts.
            factor: the step, > 1.
            min_keep, max_keep: bounds of every group's keep ratio.
        """
        check_number("factor", factor, 1.0, None, low_open=True)
        space = PlanSpace(model, example_inputs, self.flops_target, min_keep, max_keep)
        others = sorted(int(b) for b in self.teacher_latency_ms if str(b) != "1")
        budget = PlanBudget(type(self), model, example_inputs, space, self.flops_target, self.params_target,
                         self.latency_target, others[-1] if others else None, self.criterion, self.model, self.task)
        kept = self.kept()
        missing = [g.name for g in space.groups if g.name not in kept]
        if missing:
            raise ConfigError(f"the plan lists no keep ratio for the channel groups {missing} of this model")
        counts = [kept[g.name] for g in space.groups]
        plans: list[CompressionPlan] = []
        for index, group in enumerate(space.groups):
            for move in (factor, 1 / factor):
                try:
                    moved = space.moved_counts(counts, index, move, budget.params_ok)
                except ConfigError:  # the moved group alone breaks a target
                    continue
                if moved == counts or moved[index] == counts[index]:
                    continue  # the group is at its bound
                plan = budget.measured(moved, {"neighbour_of": dict(kept), "group": group.name, "factor": move})
                if plan is not None:
                    plans.append(plan)
        return plans

    def meets_targets(self) -> bool:
        """Whether the measured figures are within every target (unmeasured figures count as met)."""
        if self.flops and self.teacher_flops and self.flops > self.flops_target * self.teacher_flops:
            return False
        if self.params and self.teacher_params and self.params > self.params_target * self.teacher_params:
            return False
        return all(self.latency_ms[b] <= self.latency_target * t
                   for b, t in self.teacher_latency_ms.items() if b in self.latency_ms)

    # ------------------------------------------------------------------ torch
    def apply(self, model: nn.Module, example_inputs: torch.Tensor | None = None) -> nn.Module:
        """A structurally pruned deep copy of `model` (the original is left unchanged).

        Each group keeps ``kept_channels(channels, ratio)`` channels, those with the highest group
        magnitude importance (ties broken by index, so the result is deterministic); torch-pruning
        removes the rest from every coupled layer.

        Args:
            model: the unpruned network this plan was made for.
            example_inputs: a batch it accepts, on its device (default: zeros of `input_shape`).

        Raises:
            MissingExtraError: torch-pruning is not installed.
            UnknownNameError: the plan names a layer that is not a group leader of `model`.
            ConfigError: a group's channel count differs from the plan's, or the model cannot be traced.
        """
        tp = require_torch_pruning("CompressionPlan.apply")
        student = copy.deepcopy(model)
        # torch-pruning replaces pruned parameters with new (trainable) ones; freezing is restored by name.
        frozen = {n for n, p in student.named_parameters() if not p.requires_grad}
        example = example_inputs if example_inputs is not None else torch.zeros(1, *self.input_shape,
                                                                                 device=device_of(student))
        dg, groups = trace_groups(student, example)
        leaders = {g.name: (g, m, fn) for g, m, fn in groups}
        for name in self.ratios:
            check_choice("prunable layer", name, leaders)
        importance = tp.importance.GroupMagnitudeImportance(p=CRITERIA[self.criterion])
        with torch.no_grad():
            for info, leader, prune_fn in groups:
                if info.name not in self.ratios:
                    continue
                if info.channels != self.channels[info.name]:
                    raise ConfigError(
                        f"layer {info.name!r} has {info.channels} channels, the plan was made for "
                        f"{self.channels[info.name]}; apply the plan to the model it was searched on"
                    )
                kept = kept_channels(info.channels, self.ratios[info.name])
                if kept == info.channels:
                    continue
                full = dg.get_pruning_group(leader, prune_fn, list(range(info.channels)))
                scores = importance(full)
                # Stable sort: equal scores (e.g. all-zero channels) always drop the same indices.
                order = torch.argsort(scores.detach().float().cpu(), stable=True)
                drop = sorted(order[: info.channels - kept].tolist())
                group = dg.get_pruning_group(leader, prune_fn, drop)
                if not dg.check_pruning_group(group):
                    raise ConfigError(
                        f"pruning {len(drop)} of {info.channels} channels of {info.name!r} would empty a layer"
                    )
                group.prune()
        for n, p in student.named_parameters():
            p.requires_grad_(n not in frozen)
        return student

    def build(self, state_dict: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
        """The pruned architecture of a registered model (`model` a name in `policysearch.models`),
        optionally loaded with a pruned state dict (shapes do not depend on the unpruned weights). The model
        is built for the plan's `task`, when recorded: it must return that task's output shape (class scores;
        a map per output channel at the input's size)."""

        output_shape = (None if self.task is None
                        else get_task(self.task).output_shape(self.input_shape, self.num_classes))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the weights are replaced or pruned; only shapes matter here
            student = self.apply(build_model(self.model, self.input_shape, self.num_classes, output_shape))
        if state_dict is not None:
            student.load_state_dict(state_dict)
        return student

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """The plan as a JSON-able dict in the common artefact envelope."""
        body = {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "criterion": self.criterion,
            "flops_target": self.flops_target,
            "ratios": dict(self.ratios),
            "channels": dict(self.channels),
            "kept_channels": self.kept(),  # derived; written for readers, ignored on load
            "teacher_flops": self.teacher_flops,
            "teacher_params": self.teacher_params,
            "flops": self.flops,
            "params": self.params,
            "flops_fraction": None if math.isnan(self.flops_fraction) else self.flops_fraction,
            "params_fraction": None if math.isnan(self.params_fraction) else self.params_fraction,
            "params_target": self.params_target,
            "latency_target": self.latency_target,
            "latency_ms": dict(self.latency_ms),
            "teacher_latency_ms": dict(self.teacher_latency_ms),
        }
        if self.task is not None:  # older readers ignore it; older files lack it
            body["task"] = self.task
        return wrap(self.KIND, self.FORMAT_VERSION, body, self.provenance)

    @classmethod
    def from_dict(cls, d: Any, source: str = "<dict>") -> CompressionPlan:
        """Inverse of :meth:`to_dict`.

        Raises:
            PolicyFormatError: if the envelope or any field is malformed; the message names the field.
        """
        data = unwrap(d, cls.KIND, cls.FORMAT_VERSION, source)
        ratios = require(data, "ratios", dict, source)
        channels = require(data, "channels", dict, source)
        for key, v in ratios.items():
            check_number(f"{source}: field 'ratios[{key!r}]'", v, error=PolicyFormatError)
        for key, v in channels.items():
            check_int(f"{source}: field 'channels[{key!r}]'", v, error=PolicyFormatError)
        shape = require(data, "input_shape", list, source)
        prov = read_provenance(data, source)
        try:
            plan = cls(
                ratios=dict(ratios),
                channels=dict(channels),
                criterion=require(data, "criterion", str, source),
                flops_target=require(data, "flops_target", (int, float), source),
                model=require(data, "model", str, source),
                input_shape=tuple(shape),  # type: ignore[arg-type]
                num_classes=require(data, "num_classes", int, source),
                teacher_flops=require(data, "teacher_flops", int, source),
                teacher_params=require(data, "teacher_params", int, source),
                flops=require(data, "flops", int, source),
                params=require(data, "params", int, source),
                # Fields added after version 1 files were first written: optional, with the old meaning.
                params_target=_optional(data, "params_target", (int, float), 1.0, source),
                latency_target=_optional(data, "latency_target", (int, float), 1.0, source),
                latency_ms=_optional(data, "latency_ms", dict, {}, source),
                teacher_latency_ms=_optional(data, "teacher_latency_ms", dict, {}, source),
                provenance=prov,
                task=_optional(data, "task", str, None, source),
            )
        except ConfigError as exc:
            # Validation messages already name the field; add where the bad value came from.
            raise PolicyFormatError(f"{source}: {exc}") from exc
        if data.get("kept_channels") is not None:  # derived from channels x ratios; a file that disagrees is refused
            written = require(data, "kept_channels", dict, source)
            for name, count in plan.kept().items():
                if written.get(name) != count:
                    raise PolicyFormatError(
                        f"{source}: field 'kept_channels[{name!r}]' is {written.get(name)!r}, but channels x ratios "
                        f"keep {count}; kept_channels is derived: change 'ratios' (or drop kept_channels)")
            extra = sorted(set(written) - set(plan.kept()))
            if extra:
                raise PolicyFormatError(f"{source}: field 'kept_channels' names {extra[0]!r}, which 'ratios' does not")
        return plan



def _optional(data: Mapping[str, Any], key: str, kind: Any, default: Any, source: str) -> Any:
    return require(data, key, kind, source) if key in data else default
