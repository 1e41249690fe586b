"""Architectures from torchvision, timm and segmentation-models-pytorch, untrained, fitted to the data:
the first layer takes the data's channels and the classifier (or the segmentation head) outputs its
classes. No weights are downloaded (``weights=None``, ``pretrained=False``, ``encoder_weights=None``);
pass ``--weights FILE`` to start from trained ones.

``smp:ARCH`` (extra ``segmentation``) is a dense model: ``(B, num_classes, H, W)`` per batch, for
segmentation (classes) and restoration (image channels). ``smp:ARCH:ENCODER`` picks its encoder
(default `SMP_ENCODER`).
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from policysearch.errors import ConfigError, MissingExtraError
from policysearch.models.spec import ModelSpec

__all__ = ["SMP_ENCODER", "hub_spec"]

SMP_ENCODER = "resnet18"
"""The encoder of ``smp:ARCH`` when none is named: the smallest ResNet smp offers (11M parameters of 14M in
``smp:Unet``); ``smp:ARCH:ENCODER`` names another (any of smp's encoders, or ``tu-NAME`` for a timm one)."""
_HUB_MODULES = {"torchvision": "torchvision", "timm": "timm", "smp": "segmentation_models_pytorch"}
_EXTRAS = {"torchvision": "torchvision", "timm": "timm", "smp": "segmentation"}


def hub_spec(hub: str, name: str) -> ModelSpec:
    """The spec of ``torchvision:NAME``, ``timm:NAME`` or ``smp:ARCH[:ENCODER]`` (the name checked against the
    library's list now).

    Raises:
        MissingExtraError: the library is not installed.
        ConfigError: no such architecture (or encoder) in it.
    """
    if hub == "smp":
        return _smp_spec(name)
    module = _require(hub)
    known = (module.models.list_models() if hub == "torchvision" else module.list_models())
    if name not in known:
        close = [k for k in known if name.lower() in k.lower()][:8]
        hint = f"; did you mean {', '.join(close)}" if close else ""
        raise ConfigError(f"model '{hub}:{name}': {hub} has no architecture {name!r}{hint}")
    factory = _Torchvision(name) if hub == "torchvision" else _Timm(name)
    return ModelSpec(f"{hub}:{name}", factory, f"{name} from {hub}, untrained, fitted to the data", source=hub)


def _require(hub: str) -> Any:
    module = _HUB_MODULES[hub]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module.replace("_", "-"), _EXTRAS[hub], f"model '{hub}:...'") from exc


def _smp_spec(name: str) -> ModelSpec:
    arch, _, encoder = name.partition(":")
    encoder = encoder or SMP_ENCODER
    smp = _require("smp")
    # The architectures are the nn.Module classes smp exports at the top (Unet, FPN, ...), in every version.
    archs = {key.lower(): key for key, value in vars(smp).items() if isinstance(value, type)
             and issubclass(value, nn.Module)}
    if arch.lower() not in archs:
        raise ConfigError(f"model 'smp:{name}': segmentation-models-pytorch has no architecture {arch!r}; "
                          f"expected one of {', '.join(sorted(archs.values()))}")
    encoders = smp.encoders.get_encoder_names()
    if encoder not in encoders and not encoder.startswith("tu-"):
        close = [e for e in encoders if encoder.lower() in e.lower()][:8]
        hint = f"; did you mean {', '.join(close)}" if close else f"; e.g. {', '.join(encoders[:4])}, or tu-NAME (timm)"
        raise ConfigError(f"model 'smp:{name}': segmentation-models-pytorch has no encoder {encoder!r}{hint}")
    arch = archs[arch.lower()]
    return ModelSpec(f"smp:{arch}:{encoder}" if encoder != SMP_ENCODER else f"smp:{arch}", _Smp(arch, encoder),
                     f"{arch} ({encoder} encoder) from segmentation-models-pytorch, untrained", "adamw", 1e-3,
                     source="smp", dense=True)


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


class _Smp:
    """``segmentation_models_pytorch.create_model(arch, encoder, encoder_weights=None, in_channels=C,
    classes=K)``: no download ever. Architectures whose encoder output must tile the image (all but Unet
    at smp 0.6) are refused for other sizes here, with the size to pad to."""

    def __init__(self, arch: str, encoder: str) -> None:
        self.arch, self.encoder = arch, encoder

    def __call__(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        smp = _require("smp")
        c, h, w = input_shape
        try:
            model = smp.create_model(self.arch, encoder_name=self.encoder, encoder_weights=None, in_channels=c,
                                     classes=num_classes)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise ConfigError(f"model 'smp:{self.arch}' ({self.encoder} encoder) cannot be built for {c} channels "
                              f"and {num_classes} outputs: {exc}") from None
        stride = int(getattr(model.encoder, "output_stride", 1))
        # Before smp 0.5 every architecture checked the size; since then those that need it say so.
        if getattr(model, "requires_divisible_input_shape", True) and (h % stride or w % stride):
            up = (-(-h // stride) * stride, -(-w // stride) * stride)
            raise ConfigError(f"model 'smp:{self.arch}' ({self.encoder} encoder) needs image height and width "
                              f"divisible by {stride}, got {h}x{w}; pad or resize the images to {up[0]}x{up[1]} "
                              "(smp's models mostly need multiples of 32), or use 'smp:Unet' or 'unet', which "
                              "take any size")
        return model


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
