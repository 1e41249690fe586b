"""Forward FLOPs of a network per layer, and of its pruned versions as a function of each group's kept fraction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from policysearch.channels.groups import ChannelGroup
from policysearch.errors import ConfigError

__all__ = ["FlopsModel", "layer_flops"]


def layer_flops(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
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


class FlopsModel:
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
