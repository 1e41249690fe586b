"""`ModelSpec`: a network by name, its factory and the optimizer and learning rate it trains with by default."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from policysearch.checks import check_choice, check_lr
from policysearch.errors import ConfigError

__all__ = ["OPTIMIZERS", "Factory", "ModelSpec"]

Factory = Callable[[tuple[int, int, int], int], nn.Module]
OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class ModelSpec:
    """A network and how it trains by default.

    Attributes:
        name: how runs, files and worker processes name it (a registry key or an import path).
        factory: ``factory(input_shape, num_classes) -> nn.Module``.
        description: one line for ``policysearch models``.
        optimizer: the default optimizer ("sgd" or "adamw") when a run sets none.
        lr: the default base learning rate.
        source: "builtin", "registered", "import", "torchvision", "timm", "smp", "callable" or "template".
        dense: the network returns a map per output channel at the input's size, ``(B, num_classes, H, W)``
            (segmentation: class scores per pixel; restoration: the image), not one score per class.
            `policysearch.models.build_model` expects that shape from it by default.
    """

    name: str
    factory: Factory
    description: str = ""
    optimizer: str = "sgd"
    lr: float = 0.05
    source: str = "registered"
    dense: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"model name is {self.name!r}, expected a non-empty string")
        if not callable(self.factory):
            raise ConfigError(f"model {self.name!r}: factory is a {type(self.factory).__name__}, expected a "
                              "callable factory(input_shape, num_classes) -> nn.Module")
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_lr("lr", self.lr)
