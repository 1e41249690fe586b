"""Trained weights into a built model (``--weights FILE``): a state dict, read with
``torch.load(weights_only=True)`` so nothing in the file runs.

The file is a plain state dict (``torch.save(model.state_dict(), path)``) or a policysearch checkpoint
(``policysearch train --save``), whose recorded normalisation then comes with it. Every tensor is
checked before it is loaded: floating point, finite, and the shape of the parameter it replaces.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from policysearch.checks import check_tensors
from policysearch.errors import ConfigError, PolicyFormatError
from policysearch.imports import first_line

__all__ = ["WeightsFile", "load_weights", "read_weights", "recorded_normalization"]


class WeightsFile:
    """A weights file read: its tensors, the normalisation it records (None for a plain state dict),
    and its content hash (what a run records)."""

    def __init__(self, path: Path, state_dict: dict[str, torch.Tensor], normalization: dict[str, Any] | None,
                 sha256: str) -> None:
        self.path, self.state_dict, self.normalization, self.sha256 = path, state_dict, normalization, sha256

    def record(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256, "tensors": len(self.state_dict)}


def read_weights(path: str | Path) -> WeightsFile:
    """Read a state dict or a policysearch checkpoint without executing anything from it.

    Raises:
        PolicyFormatError: a missing file, a pickled object (not a state dict), an entry that is not a
            tensor, or a non-finite value.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise PolicyFormatError(f"--weights {str(path)!r}: no such file")
    data = path.read_bytes()
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign, pickled or corrupt files
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise PolicyFormatError(f"{path}: holds pickled Python objects, not a state dict; save "
                                    "model.state_dict() instead of the model") from None
        raise PolicyFormatError(f"{path}: not a weights file ({type(exc).__name__}: {first_line(exc)})") from None
    normalization = None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # a policysearch checkpoint
        info = obj.get("info") if isinstance(obj.get("info"), dict) else {}
        normalization = recorded_normalization(info)
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise PolicyFormatError(f"{path}: holds a {type(obj).__name__}, expected a state dict (parameter name -> "
                                "tensor), e.g. torch.save(model.state_dict(), path)")
    check_tensors(f"--weights {path}", obj)  # a mapping of names to tensors, every float finite
    state = dict(obj)
    return WeightsFile(path, state, normalization, hashlib.sha256(data).hexdigest())


def recorded_normalization(info: dict[str, Any]) -> dict[str, Any] | None:
    """The normalisation a checkpoint's info records (its data's, or the older mean / std fields), else None."""
    dataset = info.get("dataset") if isinstance(info.get("dataset"), dict) else {}
    if isinstance(dataset.get("normalization"), dict):
        return dataset["normalization"]
    if isinstance(info.get("mean"), list) and isinstance(info.get("std"), list):  # checkpoints before it was named
        return {"kind": "standardize", "mean": info["mean"], "std": info["std"]}
    return None


def load_weights(model: nn.Module, weights: str | Path | WeightsFile) -> WeightsFile:
    """Load `weights` into `model` (in place), every name, shape and dtype checked first.

    Raises:
        ConfigError: a name missing from or unknown to the model, or a tensor of another shape or dtype.
    """
    found = weights if isinstance(weights, WeightsFile) else read_weights(weights)
    check_tensors(f"--weights {found.path} does not fit {type(model).__name__} (build the model the weights were "
                  "trained as: --model, and the data's channels and classes)", found.state_dict, model.state_dict(),
                  error=ConfigError)
    with torch.no_grad():
        model.load_state_dict(found.state_dict)
    return found
