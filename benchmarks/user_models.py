"""A user's own model module, as `--model benchmarks/user_models.py:small_cnn` takes it (the product
regime R3 of benchmarks/preregistered/product_defaults.md)."""

from __future__ import annotations

from torch import nn


def small_cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Three conv-BN-ReLU blocks (32, 64, 128 channels), global average pooling, a linear head."""
    channels = input_shape[0]
    layers: list[nn.Module] = []
    for width in (32, 64, 128):
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                   nn.MaxPool2d(2)]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))
