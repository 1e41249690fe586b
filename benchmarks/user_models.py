"""A user's own model module, as `--model benchmarks/user_models.py:small_cnn` takes it (the product
regime R3 of benchmarks/preregistered/product_defaults.md; `lenet`, `mlp_dropout`: tasks Z15, Z16 of
zero_shot_layer_kinds.md)."""

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


def lenet(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """LeNet-5's shape without any normalisation: two conv-ReLU-max-pool blocks (6, 16 channels, 5x5), then
    120 and 84 hidden units (task Z15 of benchmarks/preregistered/zero_shot_layer_kinds.md)."""
    channels, height, width = input_shape
    features = nn.Sequential(nn.Conv2d(channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
    flat = 16 * (height // 4) * (width // 4)
    return nn.Sequential(features, nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, num_classes))


def mlp_dropout(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """A user's MLP: 512 and 256 hidden units with ReLU and dropout 0.2 (task Z16 of zero_shot_layer_kinds.md)."""
    inputs = input_shape[0] * input_shape[1] * input_shape[2]
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, 512), nn.ReLU(), nn.Dropout(0.2), nn.Linear(512, 256),
                         nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, num_classes))
