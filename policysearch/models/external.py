"""Architectures from torchvision and timm, untrained, fitted to the data: the first layer takes the
data's channels and the classifier outputs its classes. No weights are downloaded (``weights=None``,
``pretrained=False``); pass ``--weights FILE`` to start from trained ones.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from policysearch.errors import ConfigError, MissingExtraError
from policysearch.models.spec import ModelSpec

__all__ = ["hub_spec"]


def hub_spec(hub: str, name: str) -> ModelSpec:
    """The spec of ``torchvision:NAME`` or ``timm:NAME`` (the name checked against the library's list now).

    Raises:
        MissingExtraError: the library is not installed.
        ConfigError: no such architecture in it.
    """
    module = _require(hub)
    known = (module.models.list_models() if hub == "torchvision" else module.list_models())
    if name not in known:
        close = [k for k in known if name.lower() in k.lower()][:8]
        hint = f"; did you mean {', '.join(close)}" if close else ""
        raise ConfigError(f"model '{hub}:{name}': {hub} has no architecture {name!r}{hint}")
    factory = _Torchvision(name) if hub == "torchvision" else _Timm(name)
    return ModelSpec(f"{hub}:{name}", factory, f"{name} from {hub}, untrained, fitted to the data", source=hub)


def _require(hub: str) -> Any:
    try:
        return importlib.import_module(hub)
    except ImportError as exc:
        raise MissingExtraError(hub, hub, f"model '{hub}:...'") from exc


class _Torchvision:
    """``torchvision.models.get_model(name, weights=None, num_classes=K)``, its first convolution
    rebuilt for C input channels when C is not 3."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        tv = _require("torchvision")
        try:
            model = tv.models.get_model(self.name, weights=None, num_classes=num_classes)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model 'torchvision:{self.name}' cannot be built with {num_classes} classes: "
                              f"{exc}") from None
        fit_first_conv(model, input_shape[0])
        return model


class _Timm:
    """``timm.create_model(name, pretrained=False, num_classes=K, in_chans=C)``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        timm = _require("timm")
        kwargs: dict[str, Any] = {"pretrained": False, "num_classes": num_classes, "in_chans": input_shape[0]}
        try:
            return timm.create_model(self.name, img_size=input_shape[1:], **kwargs)
        except TypeError:  # an architecture without an image-size argument (convolutional nets)
            return timm.create_model(self.name, **kwargs)


def fit_first_conv(model: nn.Module, channels: int) -> None:
    """Replace the first Conv2d (in module order) by one with `channels` inputs, same settings, if it differs."""
    name, conv = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
    if conv is None or name is None or conv.in_channels == channels:
        return
    if conv.groups != 1:
        raise ConfigError(f"the first convolution of {type(model).__name__} is grouped; it cannot be refitted to "
                          f"{channels} input channels")
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                    conv.dilation, 1, conv.bias is not None, conv.padding_mode))
