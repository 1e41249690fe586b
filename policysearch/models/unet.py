"""A small U-Net for dense prediction: segmentation (a score map per class) and restoration (an image).

Ronneberger, Fischer and Brox (2015), "U-Net: Convolutional Networks for Biomedical Image Segmentation",
scaled down to train in minutes on a CPU: base width 16 instead of 64, three down-samplings instead of
four, batch norm after every convolution (as most re-implementations do), padded convolutions so the
output has the input's size, and bilinear up-sampling instead of transposed convolutions.

    input (C, H, W)
    enc0: conv-BN-ReLU x2 ------------------------------------------- cat -> dec0 -> head -> (K, H, W)
      max-pool 2                                                   up
      enc1 ------------------------------------------------ cat -> dec1
        max-pool 2                                       up
        enc2 -------------------------------- cat -> dec2
          max-pool 2                       up
          bottleneck ----------------------'

Each ``up`` is a bilinear interpolation to the size of the skip it is concatenated with, so any image of
at least ``2**depth`` pixels a side works, divisible by ``2**depth`` or not (a 9x9 image pools to 4, 2,
1 and comes back to 2, 4, 9). No dropout: every source of randomness in training goes through the
trainer's seeded generators.

Pruning (`policysearch.channels`): each convolution but the 1x1 head is one channel group; an encoder
block's output channels feed both the next level and the decoder convolution that reads the skip
concatenation, and torch-pruning's dependency graph prunes that convolution's matching input channels.
The head's outputs (classes, or image channels) are never pruned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from policysearch.errors import ConfigError

__all__ = ["UNet"]


class DoubleConv(nn.Sequential):
    """Two 3x3 conv-BN-ReLU layers, the U-Net's building block."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """A U-Net returning ``(B, num_classes, H, W)`` for images ``(B, C, H, W)``.

    Args:
        input_shape: ``(C, H, W)`` of one image; H and W at least ``2**depth``.
        num_classes: output channels: classes for segmentation, image channels for restoration.
        width: channels of the first level; level i has ``width * 2**i`` (16, 32, 64, the bottleneck 128).
        depth: down-samplings (levels below the first).
        residual: add the input image to the output (restoration with ``num_classes == C``: the network
            then learns the correction, not the image).

    Raises:
        ConfigError: images smaller than ``2**depth`` a side, or a bad argument.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: int = 16, depth: int = 3,
                 residual: bool = False) -> None:
        super().__init__()
        c, h, w = input_shape
        if depth < 1 or width < 1:
            raise ConfigError(f"UNet width={width}, depth={depth}: expected both >= 1")
        if min(h, w) < 2**depth:
            raise ConfigError(f"model 'unet' (depth {depth}) down-samples {depth} times and needs images of at "
                              f"least {2**depth}x{2**depth}, got {h}x{w}")
        if residual and num_classes != c:
            raise ConfigError(f"UNet residual=True adds the input to the output: expected num_classes == the "
                              f"image's {c} channels, got {num_classes}")
        widths = [width * 2**i for i in range(depth + 1)]
        self.residual = residual
        self.down = nn.ModuleList(DoubleConv(c_in, c_out) for c_in, c_out in zip([c, *widths[:-2]], widths[:-1]))
        self.bottleneck = DoubleConv(widths[-2], widths[-1])
        # up[i] reads the level below (widths[i + 1]) up-sampled and concatenated with the skip (widths[i]).
        self.up = nn.ModuleList(DoubleConv(widths[i + 1] + widths[i], widths[i]) for i in range(depth))
        self.head = nn.Conv2d(widths[0], num_classes, 1)  # registered last: the layer pruning never touches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        out = x
        for block in self.down:
            out = block(out)
            skips.append(out)
            out = F.max_pool2d(out, 2)
        out = self.bottleneck(out)
        for i in reversed(range(len(self.up))):
            skip = skips[i]
            out = F.interpolate(out, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            out = self.up[i](torch.cat([skip, out], dim=1))
        out = self.head(out)
        return out + x if self.residual else out


def residual_unet(input_shape: tuple[int, int, int], num_classes: int) -> UNet:
    """`UNet` with ``residual=True``: it starts as the identity on its input and learns the correction, the
    usual form for denoising and super-resolution (the built-in ``unet-residual``, restoration's default)."""
    return UNet(input_shape, num_classes, residual=True)
