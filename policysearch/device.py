"""The one place a device is decided.

:func:`resolve_device` turns what a user wrote (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
``"mps"`` or a :class:`torch.device`) into a device that exists on this machine, or raises a
:class:`~policysearch.errors.ConfigError` that says what was given and what is expected (the CLI
prints it as one line and exits 2). ``"auto"`` is CUDA when torch sees it, else the CPU.

Data is placed once, by :func:`policysearch.data.prepare`; whatever trains on that data runs where
it lives. :func:`device_for_data` is the check every such consumer makes (the Trainer, the envs,
distillation): ``"auto"`` or None follows the data, and any other device must name the one the
data is on, so a requested device is never silently ignored and the data is never silently copied.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from policysearch.errors import ConfigError

__all__ = ["DEVICE_TYPES", "autocast", "device_for_data", "resolve_device", "same_device", "to_device"]

#: Device types a run may use (``"cuda"`` also as ``"cuda:N"``).
DEVICE_TYPES = ("cpu", "cuda", "mps")
_EXPECTED = "expected auto, cpu, cuda, cuda:N or mps"


def _shown(device: object) -> str:
    return repr(str(device)) if isinstance(device, torch.device) else repr(device)


def _is_auto(device: object) -> bool:
    return isinstance(device, str) and device.strip().lower() == "auto"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The device ``device`` names, checked to exist here.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
            ``"mps"`` (case and surrounding spaces ignored), or a :class:`torch.device` of those types.

    Returns:
        The device; ``"cuda"`` stays without an index (torch's current CUDA device).

    Raises:
        ConfigError: An unknown device (``"gpu"``, ``"tpu"``, ``"xpu"``, ...) or one this machine
            does not have (``"cuda"`` without CUDA, ``"cuda:5"`` with fewer GPUs, ``"mps"`` off
            Apple silicon); the message says what to pass instead.
    """
    if _is_auto(device):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        try:
            dev = torch.device(device.strip().lower())
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"device is {_shown(device)}, {_EXPECTED}") from exc
    else:
        raise ConfigError(f"device is {_shown(device)} (a {type(device).__name__}), {_EXPECTED}")
    if dev.type not in DEVICE_TYPES:
        raise ConfigError(f"device is {_shown(device)}, {_EXPECTED}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device is {_shown(device)} but CUDA is not available on this machine; "
                "use --device cpu (device='cpu') or auto"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            visible = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            raise ConfigError(
                f"device is {_shown(device)} but this machine's CUDA devices are {visible}; use one of them or auto"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"device is {_shown(device)} but MPS is not available on this machine; "
            "use --device cpu (device='cpu') or auto"
        )
    return dev


def _index(dev: torch.device) -> int:
    # torch.device("cuda") != torch.device("cuda:0") although tensors on either share memory;
    # compare with the index torch would actually use.
    if dev.index is not None:
        return dev.index
    return torch.cuda.current_device() if dev.type == "cuda" else 0


def same_device(a: str | torch.device, b: str | torch.device) -> bool:
    """Whether two devices are the same one (``"cuda"`` equals ``"cuda:N"`` for the current N)."""
    da, db = resolve_device(a), resolve_device(b)
    return da.type == db.type and _index(da) == _index(db)


def device_for_data(
    requested: str | torch.device | None, data_device: torch.device, what: str = "device"
) -> torch.device:
    """The device to run on with data that lives on ``data_device``: always that one.

    Args:
        requested: What the caller asked for; None or ``"auto"`` follows the data.
        data_device: Where the data's tensors are (``DeviceData.device``).
        what: The argument's name, for the error message (``"TrainConfig.device"``, ...).

    Returns:
        ``data_device``.

    Raises:
        ConfigError: ``requested`` is not a valid device (see :func:`resolve_device`) or names
            another device than the data's.
    """
    if requested is None or _is_auto(requested):
        return data_device
    dev = resolve_device(requested)
    if not same_device(dev, data_device):
        raise ConfigError(
            f"{what} is {_shown(requested)} but the data lives on {data_device}; pass {what}="
            f"{str(data_device)!r} or 'auto' (which follows the data), or prepare the data on {dev} "
            f"(prepare(..., device={str(dev)!r}))"
        )
    return data_device


def to_device(model: nn.Module, device: torch.device) -> nn.Module:
    """Move `model` to `device` in place; on CUDA also to channels_last, the layout it trains and runs in."""
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def autocast(device: torch.device, amp: bool = True) -> Any:
    """bf16 autocast on CUDA when `amp`; a no-op context elsewhere."""
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()
