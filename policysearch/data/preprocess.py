"""What a model sees: the one preprocessing function every path that feeds a model goes through.

The trainer, evaluation, adaptive BN, distillation, the attacks and the curvature estimate all call
`normalise`, so a model is always scored on exactly the inputs it was trained on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from policysearch.data.resident import DeviceData

__all__ = ["normalise"]


def normalise(x: torch.Tensor, data: DeviceData) -> torch.Tensor:
    """Standardise a float batch in [0, 1] with the training split's per-channel mean and std
    (channels_last on CUDA)."""
    x = (x - data.mean[None, :, None, None]) / data.std[None, :, None, None]
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cuda" else x
