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
    student.load_state_dict(torch.load("student.pt"))

Needs the ``prune`` extra (torch-pruning) to apply a plan or list a model's groups; reading and
writing plan files does not.
"""

from __future__ import annotations

import copy
import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from policysearch.checks import check_choice, check_int, check_number, check_shape
from policysearch.errors import ConfigError, MissingExtraError, PolicyFormatError
from policysearch.policies.artifact import JsonArtefact, read_provenance, require, unwrap, wrap

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

CRITERIA: dict[str, int] = {"l2": 2, "l1": 1}
"""Pruning criteria by name: the norm degree p of torch-pruning's group magnitude importance."""

SUPPORTED = "mlp, cnn, resnet, and other Conv2d / Linear / BatchNorm networks (incl. residual sums)"


def require_torch_pruning(purpose: str) -> Any:
    """Import torch-pruning, or raise MissingExtraError naming the ``prune`` extra."""
    try:
        return importlib.import_module("torch_pruning")
    except ImportError as exc:
        raise MissingExtraError("torch_pruning", "prune", purpose) from exc


def kept_channels(channels: int, keep: float) -> int:
    """Channels a group of `channels` keeps at ratio `keep`: rounded, at least one, at most all.

    Never zero, so no layer is pruned away and the network always stays connected.
    """
    return min(channels, max(1, round(channels * keep)))


@dataclass(frozen=True)
class ChannelGroup:
    """Output channels that must be pruned together, and the layers they touch.

    Attributes:
        name: the leader: the group's first producer in ``named_modules()`` order.
        kind: "conv" or "linear" (the leader's type).
        channels: number of channels in the group.
        in_features: the leader's input channels (Conv2d) or features (Linear).
        kernel_size: the leader's kernel size (1 for a Linear).
        stride: the leader's stride (1 for a Linear).
        producers: Conv2d / Linear layers whose output channels are these channels.
        consumers: ``(layer, count)``: Conv2d / Linear layers that read these channels and how
            many of their input features are tied to the group (a Linear after a flatten reads
            each channel several times).
    """

    name: str
    kind: str
    channels: int
    in_features: int
    kernel_size: int
    stride: int
    producers: tuple[str, ...]
    consumers: tuple[tuple[str, int], ...]


def classifier_head(model: nn.Module) -> tuple[str, nn.Module]:
    """The classifier head: the last Conv2d / Linear in ``named_modules()`` order (never pruned)."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no Conv2d or Linear layer to prune; supported: {SUPPORTED}")
    return layers[-1]


def _check_supported(model: nn.Module) -> None:
    """Reject what the channel / FLOPs accounting does not cover, before torch-pruning sees it."""
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            raise ConfigError(
                f"{type(model).__name__} has attention ({name!r}); pruning transformer widths (e.g. the 'vit' "
                f"model) is not supported. Supported: {SUPPORTED}"
            )
        if isinstance(m, nn.Conv2d) and m.groups != 1:
            raise ConfigError(
                f"layer {name!r} is a grouped / depthwise convolution (groups={m.groups}); only groups=1 is "
                f"supported. Supported: {SUPPORTED}"
            )


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _trace(model: nn.Module, example_inputs: torch.Tensor) -> tuple[Any, list[tuple[ChannelGroup, nn.Module, Any]]]:
    """Build torch-pruning's dependency graph of `model` and its channel groups in module order.

    Returns:
        The graph and, per group, ``(ChannelGroup, leader module, the leader's out-channel pruning fn)``.
    """
    tp = require_torch_pruning("compression (channel pruning)")
    _check_supported(model)
    head_name, head = classifier_head(model)
    was_training = model.training
    frozen = [p for p in model.parameters() if not p.requires_grad]
    try:
        # Tracing runs a forward pass: eval mode keeps batch-norm running statistics untouched,
        # and autograd must be on, frozen parameters included (the graph is read from grad_fn's).
        model.eval()
        for p in frozen:
            p.requires_grad_(True)
        with torch.enable_grad():
            dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs, verbose=False)
        raw_groups = list(dg.get_all_groups(ignored_layers=[head], root_module_types=[nn.Conv2d, nn.Linear]))
    except Exception as exc:  # torch-pruning raises many types on graphs it cannot follow
        raise ConfigError(
            f"torch-pruning could not trace {type(model).__name__} ({type(exc).__name__}: {exc}); "
            f"supported: {SUPPORTED}"
        ) from exc
    finally:
        model.train(was_training)
        for p in frozen:
            p.requires_grad_(False)
    order = {m: i for i, (_, m) in enumerate(model.named_modules())}
    names = {m: n for n, m in model.named_modules()}
    layer_types = (nn.Conv2d, nn.Linear)
    out: list[tuple[ChannelGroup, nn.Module, Any]] = []
    for group in raw_groups:
        producers: dict[nn.Module, int] = {}
        consumers: dict[nn.Module, int] = {}
        for dep, idxs in group:
            module = dep.target.module
            if not isinstance(module, layer_types):
                continue
            if dg.is_out_channel_pruning_fn(dep.handler):
                producers[module] = len(idxs)
            elif dg.is_in_channel_pruning_fn(dep.handler):
                consumers[module] = consumers.get(module, 0) + len(idxs)
        if not producers:
            continue
        leader = min(producers, key=order.__getitem__)
        if leader is head:
            continue
        is_conv = isinstance(leader, nn.Conv2d)
        info = ChannelGroup(
            name=names[leader],
            kind="conv" if is_conv else "linear",
            channels=int(producers[leader]),
            in_features=int(leader.in_channels if is_conv else leader.in_features),
            kernel_size=int(leader.kernel_size[0]) if is_conv else 1,
            stride=int(leader.stride[0]) if is_conv else 1,
            producers=tuple(names[m] for m in sorted(producers, key=order.__getitem__)),
            consumers=tuple((names[m], n) for m, n in sorted(consumers.items(), key=lambda kv: order[kv[0]])),
        )
        pruner = dg.get_pruner_of_module(leader)
        out.append((info, leader, pruner.prune_out_channels))
    if not out:
        raise ConfigError(
            f"{type(model).__name__} has no prunable channels besides its classifier head {head_name!r}; "
            f"supported: {SUPPORTED}"
        )
    out.sort(key=lambda item: order[item[1]])
    return dg, out


def channel_groups(model: nn.Module, example_inputs: torch.Tensor) -> list[ChannelGroup]:
    """The channel groups of `model` that a plan can prune, in module order.

    Args:
        model: the network (not modified; traced in eval mode).
        example_inputs: a batch it accepts, e.g. ``torch.zeros(1, C, H, W)`` on its device.

    Raises:
        MissingExtraError: torch-pruning is not installed.
        ConfigError: the model has attention or grouped convolutions, or cannot be traced.
    """
    _, groups = _trace(model, example_inputs)
    return [g for g, _, _ in groups]


def prunable_layers(model: nn.Module, example_inputs: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of each channel group's leader: the layers a plan gives a keep ratio.

    Conv2d and Linear layers except the classifier head; layers coupled to an earlier one (a
    ResNet block's second conv and shortcut) are not listed separately, they follow their leader.
    See `channel_groups` for the members of each group.
    """
    modules = dict(model.named_modules())
    return [(g.name, modules[g.name]) for g in channel_groups(model, example_inputs)]


def _layer_flops(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Forward FLOPs of one image in each Conv2d / Linear layer, counted as torch's FlopCounterMode
    counts them (2 per multiply-add, no bias), from the output shapes of one forward pass."""
    flops: dict[str, int] = {}

    def hook(name: str) -> Any:
        def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            per_image = output.numel() // output.shape[0]
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                macs = per_image * (module.in_channels // module.groups) * kh * kw
            else:
                macs = per_image * module.in_features  # type: ignore[operator]
            flops[name] = flops.get(name, 0) + 2 * int(macs)

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return flops


class _FlopsModel:
    """Forward FLOPs of the pruned model as a function of each group's kept fraction.

    A Conv2d / Linear layer's FLOPs scale with the fraction of its input features kept times the
    fraction of its output features kept, so with f_g the fraction group g keeps:

        FLOPs(f) = sum_layers F_l * (1 - sum_g a_lg + sum_g a_lg f_g) * (1 - sum_g b_lg + sum_g b_lg f_g)

    where a_lg (b_lg) is the share of layer l's input (output) features tied to group g. This is
    exact for integer channel counts, and affine in any one f_g (no layer reads and writes the
    same group), which is what makes AMC's action clipping a closed-form bound.
    """

    def __init__(self, model: nn.Module, layer_flops: dict[str, int], groups: Sequence[ChannelGroup]) -> None:
        modules = dict(model.named_modules())
        self.terms: list[tuple[float, list[tuple[int, float]], list[tuple[int, float]]]] = []
        ins: dict[str, list[tuple[int, float]]] = {}
        outs: dict[str, list[tuple[int, float]]] = {}
        for gi, g in enumerate(groups):
            for name in g.producers:
                m = modules[name]
                width = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
                outs.setdefault(name, []).append((gi, g.channels / width))
            for name, count in g.consumers:
                m = modules[name]
                width = m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
                ins.setdefault(name, []).append((gi, count / width))
        self.touch = [0.0] * len(groups)  # FLOPs of the layers each group's channels feed or come from
        for name, flops in layer_flops.items():
            a, b = ins.get(name, []), outs.get(name, [])
            if {g for g, _ in a} & {g for g, _ in b}:
                raise ConfigError(f"layer {name!r} reads and writes the same channel group; not supported")
            self.terms.append((float(flops), a, b))
            for g in {g for g, _ in a} | {g for g, _ in b}:
                self.touch[g] += flops
        self.total = self(np.ones(len(groups)))

    def __call__(self, fractions: Sequence[float] | np.ndarray) -> float:
        total = 0.0
        for flops, a, b in self.terms:
            fin = 1.0 - sum(s for _, s in a) + sum(s * fractions[g] for g, s in a)
            fout = 1.0 - sum(s for _, s in b) + sum(s * fractions[g] for g, s in b)
            total += flops * fin * fout
        return total


class PlanSpace:
    """What a plan of `model` may choose: its channel groups, each group's kept-count bounds, and the
    exact FLOPs model behind AMC's clip. Shared by the env and the `CompressionPlan.uniform` /
    `CompressionPlan.random` constructors, so that all three clip the same way."""

    def __init__(self, model: nn.Module, example: torch.Tensor, flops_target: float, min_keep: float,
                 max_keep: float = 1.0) -> None:
        check_number("flops_target (a fraction of the teacher's FLOPs)", flops_target, 0.0, 1.0, low_open=True)
        check_number("min_keep", min_keep, 0.0, 1.0, low_open=True)
        check_number("max_keep", max_keep, 0.0, 1.0, low_open=True)
        if min_keep > max_keep:
            raise ConfigError(f"min_keep is {min_keep!r}, expected at most max_keep ({max_keep!r})")
        self.groups = channel_groups(model, example)
        self.flops_model = _FlopsModel(model, _layer_flops(model, example), self.groups)
        self.min_keep, self.max_keep = float(min_keep), float(max_keep)
        self.min_count = [max(1, math.ceil(g.channels * min_keep - 1e-9)) for g in self.groups]
        self.max_count = [max(lo, math.floor(g.channels * max_keep + 1e-9))
                          for g, lo in zip(self.groups, self.min_count)]
        self.target_flops = flops_target * self.flops_model.total

    def fractions(self, counts: Sequence[int]) -> list[float]:
        """Kept fractions of `counts` (decided groups) with every later group at its minimum."""
        done = [c / g.channels for c, g in zip(counts, self.groups)]
        return done + [lo / g.channels for g, lo in zip(self.groups[len(done):], self.min_count[len(done):])]

    def flops_ok(self, counts: Sequence[int]) -> bool:
        return self.flops_model([c / g.channels for c, g in zip(counts, self.groups)]) <= self.target_flops

    def max_allowed(self, counts: Sequence[int]) -> int:
        """The most channels the next group may keep, later groups at their minimum (AMC's clip)."""
        i = len(counts)
        g = self.groups[i]
        fractions = self.fractions(counts)
        fractions[i] = 0.0
        base = self.flops_model(fractions)
        fractions[i] = 1.0
        slope = self.flops_model(fractions) - base
        if slope <= 0:
            return g.channels
        allowed = min(g.channels, math.floor((self.target_flops - base) / slope * g.channels + 1e-9))
        while allowed > self.min_count[i]:
            fractions[i] = allowed / g.channels
            if self.flops_model(fractions) <= self.target_flops:
                break
            allowed -= 1
        return max(allowed, self.min_count[i])

    def clip(self, wanted: Sequence[int]) -> list[int]:
        """AMC's clip of a whole vector of wanted counts, group by group."""
        counts: list[int] = []
        for i, w in enumerate(wanted):
            w = min(self.max_count[i], max(self.min_count[i], int(w)))
            counts.append(max(self.min_count[i], min(w, self.max_allowed(counts))))
        return counts

    def uniform_counts(self, ratio: float, fixed: Mapping[int, int] | None = None,
                       base: Sequence[int] | None = None) -> list[int]:
        """Every group at one keep ratio (rounded, within its bounds), not clipped; the groups in
        `fixed` (index -> kept count) keep that count instead. With `base` (kept counts), `ratio`
        multiplies those counts instead of the full widths: the plan's shape scaled."""
        widths = [g.channels for g in self.groups] if base is None else list(base)
        counts = [min(hi, max(lo, round(w * ratio)))
                  for w, lo, hi in zip(widths, self.min_count, self.max_count)]
        for index, count in (fixed or {}).items():
            if not self.min_count[index] <= count <= self.max_count[index]:
                raise ConfigError(f"group {self.groups[index].name} cannot keep {count} channels: its bounds are "
                                  f"{self.min_count[index]}..{self.max_count[index]}")
            counts[index] = count
        return counts

    def largest_uniform(self, ok: Any = None, cap: float = 1.0, fixed: Mapping[int, int] | None = None,
                        base: Sequence[int] | None = None) -> float:
        """The largest common keep ratio <= `cap` whose counts meet the FLOPs target (and `ok(counts)`);
        with `fixed`, the ratio of the other groups; with `base`, the largest multiplier of those
        counts (`cap` ignored) (see `uniform_counts`)."""
        def feasible(r: float) -> bool:
            counts = self.uniform_counts(r, fixed, base)
            return self.flops_ok(counts) and (ok is None or ok(counts))

        lo, hi = self.min_keep, min(cap, self.max_keep)
        if base is not None:  # from every group at its minimum to every group at its maximum
            lo = min(m / max(1, b) for m, b in zip(self.min_count, base))
            hi = max(m / max(1, b) for m, b in zip(self.max_count, base))
        if feasible(hi):
            return hi
        if not feasible(lo):
            raise ConfigError(f"no uniform keep ratio >= min_keep={self.min_keep} meets the targets; "
                              "raise the targets or lower min_keep")
        for _ in range(30):  # bisection: FLOPs and parameters grow with the ratio
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if feasible(mid) else (lo, mid)
        return lo

    def shifted_counts(self, counts: Sequence[int], index: int, factor: float) -> list[int]:
        """`counts` with group `index`'s count times `factor` (rounded, within its bounds) and every other
        group at the largest common keep ratio that meets the FLOPs target: a plan at the same budget
        that moves FLOPs into (factor > 1) or out of one group. Used to test whether a plan is a local
        optimum of the accuracy after fine-tuning."""
        return self._moved(counts, index, factor, None, base=None)

    def moved_counts(self, counts: Sequence[int], index: int, factor: float, ok: Any = None) -> list[int]:
        """`counts` with group `index`'s count times `factor` (rounded, within its bounds) and every other
        group's count times the largest common multiplier that meets the FLOPs target (and `ok`): one
        step of a coordinate search from any plan, which keeps the other groups' proportions (from a
        uniform plan, `shifted_counts` up to rounding)."""
        return self._moved(counts, index, factor, ok, base=counts)

    def _moved(self, counts: Sequence[int], index: int, factor: float, ok: Any,
               base: Sequence[int] | None) -> list[int]:
        """Group `index` at its count times `factor`; the others at the largest common ratio of `base`
        (None: the full widths) that meets the targets."""
        check_number("factor", factor, 0.0, None, low_open=True)
        fixed = {index: min(self.max_count[index], max(self.min_count[index], round(counts[index] * factor)))}
        return self.uniform_counts(self.largest_uniform(ok, fixed=fixed, base=base), fixed, base=base)

    def random_counts(self, rng: np.random.Generator) -> list[int]:
        """Uniform random keep ratios in [min_keep, max_keep] per group, clipped group by group as the env does."""
        wanted = [round(g.channels * (self.min_keep + rng.uniform() * (self.max_keep - self.min_keep)))
                  for g in self.groups]
        return self.clip(wanted)


@dataclass(frozen=True)
class CompressionPlan(JsonArtefact):
    """Per-layer keep ratios for structured channel pruning, with the figures they achieved.

    Attributes:
        ratios: keep ratio in (0, 1] per channel-group leader (see `prunable_layers`); a group
            left out keeps all its channels.
        channels: each listed group's channel count in the unpruned model (checked on apply).
        model: the model's name (a registered name such as "cnn", or a class name).
        input_shape: ``(C, H, W)`` of one input image.
        num_classes: the classifier's outputs.
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
        check_int("num_classes", self.num_classes, 2)
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
                model_name: str | None = None) -> CompressionPlan:
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

        Raises:
            ConfigError: a target is out of reach with `min_keep`, or an argument is invalid.
        """
        space = PlanSpace(model, example_inputs, flops_target, min_keep, max_keep)
        budget = _Budget(cls, model, example_inputs, space, flops_target, params_target, latency_target,
                         latency_batch, criterion, model_name)
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
               seed: int = 0, tries: int = 100) -> CompressionPlan:
        """A random plan: uniform keep ratios in [min_keep, max_keep] per group, clipped group by group
        to the FLOPs target as the env clips (AMC's rule); redrawn (up to `tries` times) until the
        parameter and latency targets hold too. Same arguments as `uniform`, plus the `seed`.

        Raises:
            ConfigError: no draw met the targets.
        """
        import numpy as np

        check_int("tries", tries, 1)
        space = PlanSpace(model, example_inputs, flops_target, min_keep, max_keep)
        budget = _Budget(cls, model, example_inputs, space, flops_target, params_target, latency_target,
                         latency_batch, criterion, model_name)
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
        budget = _Budget(type(self), model, example_inputs, space, self.flops_target, self.params_target,
                         self.latency_target, others[-1] if others else None, self.criterion, self.model)
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
                                                                                 device=_device_of(student))
        dg, groups = _trace(student, example)
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
        optionally loaded with a pruned state dict (shapes do not depend on the unpruned weights)."""
        from policysearch.models import build_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the weights are replaced or pruned; only shapes matter here
            student = self.apply(build_model(self.model, self.input_shape, self.num_classes))
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
            return cls(
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
            )
        except ConfigError as exc:
            # Validation messages already name the field; add where the bad value came from.
            raise PolicyFormatError(f"{source}: {exc}") from exc



def _optional(data: Mapping[str, Any], key: str, kind: Any, default: Any, source: str) -> Any:
    return require(data, key, kind, source) if key in data else default


class _Budget:
    """Checks a vector of kept counts against the parameter and latency targets, by measurement."""

    def __init__(self, cls: type[CompressionPlan], model: nn.Module, example: torch.Tensor, space: Any,
                 flops_target: float, params_target: float, latency_target: float, latency_batch: int | None,
                 criterion: str, model_name: str | None) -> None:
        from policysearch.metrics import count_parameters

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
        with torch.no_grad():
            was_training = model.training
            model.eval()
            self.num_classes = int(model(example).shape[-1])
            model.train(was_training)
        self.teacher_params = count_parameters(model)
        self.teacher_flops = round(space.flops_model.total)
        self.flops_target = float(flops_target)
        self.teacher_latency: dict[str, float] = {}
        if self.latency_target < 1.0:
            from policysearch.pruning import measure_latency

            self.teacher_latency = measure_latency(model, tuple(example.shape[1:]), self.batches)
        self._params_cache: dict[tuple[int, ...], int] = {}

    def plan(self, counts: list[int], provenance: dict[str, Any], **figures: Any) -> CompressionPlan:
        groups = self.space.groups
        return self.cls(ratios={g.name: c / g.channels for g, c in zip(groups, counts)},
                        channels={g.name: g.channels for g in groups}, model=self.model_name,
                        input_shape=tuple(self.example.shape[1:]),  # type: ignore[arg-type]
                        num_classes=self.num_classes, criterion=self.criterion, flops_target=self.flops_target,
                        teacher_flops=self.teacher_flops, teacher_params=self.teacher_params,
                        params_target=self.params_target, latency_target=self.latency_target,
                        teacher_latency_ms=dict(self.teacher_latency), provenance=provenance, **figures)

    def params_of(self, counts: list[int]) -> int:
        from policysearch.metrics import count_parameters

        key = tuple(counts)
        if key not in self._params_cache:
            self._params_cache[key] = count_parameters(self.plan(counts, {}).apply(self.model, self.example))
        return self._params_cache[key]

    def params_ok(self, counts: list[int]) -> bool:
        return self.params_target >= 1.0 or self.params_of(counts) <= self.params_target * self.teacher_params

    def measured(self, counts: list[int], provenance: dict[str, Any]) -> CompressionPlan | None:
        """The plan of `counts` with its FLOPs, parameters (and latency) measured; None if a target fails."""
        from policysearch.metrics import count_parameters, flops_per_image

        student = self.plan(counts, {}).apply(self.model, self.example)
        flops = int(flops_per_image(student, tuple(self.example.shape[1:]), device=self.example.device)["forward"])
        params = count_parameters(student)
        latency: dict[str, float] = {}
        if self.teacher_latency:
            from policysearch.pruning import measure_latency

            latency = measure_latency(student, tuple(self.example.shape[1:]), self.batches)
        plan = self.plan(counts, provenance, flops=flops, params=params, latency_ms=latency)
        return plan if plan.meets_targets() else None
