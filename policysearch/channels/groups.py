"""The channel groups of a network: which output channels must be pruned together.

In a plain network a group is one Conv2d / Linear layer; in a ResNet the layers that add into the
same residual sum (the stem, each block's second conv, its projection shortcut) share their output
channels and form one group. A concatenation (a U-Net's skip connections) couples nothing: each
concatenated producer stays its own group, and the layer reading the concatenation is a consumer of
each, with as many input channels as that producer contributes. torch-pruning's ``DependencyGraph``
finds the groups (the ``prune`` extra). A group is named after its *leader*: the first of its layers in
``model.named_modules()`` order. `policysearch.policies.compress.CompressionPlan` gives each group a keep ratio.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from policysearch.errors import ConfigError, MissingExtraError

__all__ = ["CRITERIA", "SUPPORTED", "ChannelGroup", "channel_groups", "classifier_head", "device_of", "kept_channels",
           "prunable_layers", "require_torch_pruning", "trace_groups"]

CRITERIA: dict[str, int] = {"l2": 2, "l1": 1}
"""Pruning criteria by name: the norm degree p of torch-pruning's group magnitude importance."""

SUPPORTED = ("mlp, cnn, resnet, unet, and other Conv2d / Linear / BatchNorm networks (incl. residual sums and "
             "concatenated skips)")


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
    """The classifier head: the last Conv2d / Linear in ``named_modules()`` order (never pruned); in a dense
    model such as ``unet``, the output convolution (its channels are the classes or the image's channels)."""
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


def device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def trace_groups(model: nn.Module,
                 example_inputs: torch.Tensor) -> tuple[Any, list[tuple[ChannelGroup, nn.Module, Any]]]:
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
    _, groups = trace_groups(model, example_inputs)
    return [g for g, _, _ in groups]


def prunable_layers(model: nn.Module, example_inputs: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of each channel group's leader: the layers a plan gives a keep ratio.

    Conv2d and Linear layers except the classifier head; layers coupled to an earlier one (a
    ResNet block's second conv and shortcut) are not listed separately, they follow their leader.
    See `channel_groups` for the members of each group.
    """
    modules = dict(model.named_modules())
    return [(g.name, modules[g.name]) for g in channel_groups(model, example_inputs)]
