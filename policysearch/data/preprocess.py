"""What a model sees: the one preprocessing function every path that feeds a model goes through, and the
normalisation it applies, a recorded property of the data (and so of every run and artefact).

The trainer, evaluation, adaptive BN, distillation, the attacks and the curvature estimate all call
`normalise`, so a model is always scored on exactly the inputs it was trained on. Pixels reach it as
floats in [0, 1] (the uint8 image / 255); the normalisation then is one of

- ``standardize`` (the default): per channel, minus the training split's mean, over its std;
- ``none``: the raw [0, 1] pixels (what many users' own loops feed a model);
- ``imagenet``: torchvision's ImageNet constants (a model trained with them);
- ``MEAN,STD`` (one value each, for every channel) or ``M1/M2/M3,S1/S2/S3`` (per channel): given values.

A plain loop reproduces it as ``(x.float() / 255 - mean[:, None, None]) / std[:, None, None]`` with
the ``mean`` and ``std`` the run recorded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from policysearch.errors import ConfigError

__all__ = ["NORMALIZATIONS", "Normalization", "normalise", "parse_normalization"]

#: The named normalisations (besides given values).
NORMALIZATIONS: tuple[str, ...] = ("standardize", "none", "imagenet")
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_MIN_STD = 1e-3


@dataclass(frozen=True)
class Normalization:
    """How [0, 1] pixels are normalised before a model sees them.

    Attributes:
        kind: "standardize", "none", "imagenet" or "given".
        mean: one value per channel.
        std: one value per channel (each at least 1e-3).
    """

    kind: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.kind not in (*NORMALIZATIONS, "given"):
            raise ConfigError(f"normalization kind is {self.kind!r}, expected one of {', '.join(NORMALIZATIONS)} "
                              "or 'given'")
        if len(self.mean) != len(self.std) or not self.mean:
            raise ConfigError(f"normalization has {len(self.mean)} means and {len(self.std)} stds; expected one "
                              "of each per channel")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                raise ConfigError(f"normalization {name} is {list(values)}, expected finite numbers")
        if min(self.std) < _MIN_STD:
            raise ConfigError(f"normalization std is {list(self.std)}; every std must be at least {_MIN_STD}")

    @property
    def channels(self) -> int:
        return len(self.mean)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, d: Any, source: str = "normalization") -> Normalization:
        if not isinstance(d, dict) or not {"kind", "mean", "std"} <= set(d):
            raise ConfigError(f"{source}: expected an object with kind, mean and std; got {d!r}")
        mean, std = d["mean"], d["std"]
        if not isinstance(mean, list) or not isinstance(std, list):
            raise ConfigError(f"{source}: mean and std must be lists of numbers")
        return cls(str(d["kind"]), tuple(float(v) for v in mean), tuple(float(v) for v in std))


def parse_normalization(spec: str) -> str | tuple[tuple[float, ...], tuple[float, ...]]:
    """A named normalisation, or given ``(mean, std)`` from ``"MEAN,STD"`` / ``"M1/M2/M3,S1/S2/S3"``.

    Raises:
        ConfigError: neither a name nor two comma-separated (lists of) finite numbers.
    """
    text = spec.strip().lower()
    if text in NORMALIZATIONS:
        return text
    parts = text.split(",")
    expected = (f"{', '.join(NORMALIZATIONS)}, 'MEAN,STD' (one value for every channel) or "
                "'M1/M2/M3,S1/S2/S3' (per channel)")
    if len(parts) != 2:
        raise ConfigError(f"normalization {spec!r}: expected {expected}")
    try:
        mean, std = (tuple(float(v) for v in p.split("/")) for p in parts)
    except ValueError:
        raise ConfigError(f"normalization {spec!r}: expected {expected}") from None
    if len(mean) != len(std):
        raise ConfigError(f"normalization {spec!r}: {len(mean)} means but {len(std)} stds")
    return mean, std


def normalization_for(spec: str | Normalization | tuple[Sequence[float], Sequence[float]],
                      x_train: torch.Tensor) -> Normalization:
    """The normalisation `spec` names, for uint8 training images `x_train` (N, C, H, W).

    Raises:
        ConfigError: an unknown name, or given values for another number of channels.
    """
    channels = int(x_train.shape[1])
    if isinstance(spec, Normalization):
        norm = spec
    elif isinstance(spec, tuple):
        mean, std = (tuple(float(v) for v in part) for part in spec)
        if len(mean) == 1 and channels > 1:
            mean, std = mean * channels, std * channels
        norm = Normalization("given", mean, std)
    else:
        parsed = parse_normalization(spec) if isinstance(spec, str) else None
        if parsed is None:
            raise ConfigError(f"normalize is a {type(spec).__name__}; expected {', '.join(NORMALIZATIONS)} or "
                              "(mean, std)")
        if isinstance(parsed, tuple):
            return normalization_for(parsed, x_train)
        if parsed == "standardize":
            mean_t, std_t = _channel_stats(x_train)
            norm = Normalization("standardize", tuple(mean_t.tolist()), tuple(std_t.tolist()))
        elif parsed == "none":
            norm = Normalization("none", (0.0,) * channels, (1.0,) * channels)
        else:
            if channels not in (1, 3):
                raise ConfigError(f"normalize 'imagenet' is for 1- or 3-channel images; these have {channels}")
            mean, std = _IMAGENET
            if channels == 1:  # grey images: the mean of the RGB constants
                mean, std = (sum(mean) / 3,), (sum(std) / 3,)
            norm = Normalization("imagenet", mean, std)
    if norm.channels != channels:
        raise ConfigError(f"the normalization has {norm.channels} channel(s) ({norm.to_dict()}), the images have "
                          f"{channels}")
    return norm


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images scaled to [0, 1], via 256-bin histograms.

    Histograms are exact for uint8 and avoid a float copy of the whole training set.
    """
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        hist = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = hist.sum()
        mean = (hist * levels).sum() / total
        var = (hist * (levels - mean) ** 2).sum() / total
        means.append(mean)
        stds.append(var.sqrt())
    return (
        torch.stack(means).to(torch.float32),
        torch.stack(stds).to(torch.float32).clamp_min(_MIN_STD),
    )


class Normalized(Protocol):
    """What `normalise` reads of a `DeviceData`: the per-channel mean and std on its device."""

    mean: torch.Tensor
    std: torch.Tensor


def normalise(x: torch.Tensor, data: Normalized) -> torch.Tensor:
    """Normalise a float batch in [0, 1] the way the data records (`DeviceData.normalization`), on its
    device (channels_last on CUDA)."""
    x = (x - data.mean[None, :, None, None]) / data.std[None, :, None, None]
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cuda" else x
