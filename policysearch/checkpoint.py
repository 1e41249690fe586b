"""Model checkpoints that later commands can load: model name, shapes, state_dict, provenance.

Saved with torch.save but holding only tensors and plain values, so they load with
``torch.load(weights_only=True)``, i.e. without trusting the file to run code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from policysearch.errors import PolicyFormatError

CHECKPOINT_KIND = "policysearch_checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class Checkpoint:
    model_name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    state_dict: dict[str, torch.Tensor]
    info: dict[str, Any]  # dataset name / fingerprint, normalisation, training config, metrics

    def build(self) -> nn.Module:
        """A registered model with the saved weights; a compressed one (its plan in `info`) is
        rebuilt with the pruned architecture first."""
        if self.info.get("plan"):
            from policysearch.policies.compress import CompressionPlan

            return CompressionPlan.from_dict(self.info["plan"], source="checkpoint plan").build(self.state_dict)
        from policysearch.models import build_model

        model = build_model(self.model_name, self.input_shape, self.num_classes)
        model.load_state_dict(self.state_dict)
        return model


def save_checkpoint(
    path: str | Path, model: nn.Module, model_name: str, input_shape: tuple[int, int, int], num_classes: int,
    info: dict[str, Any] | None = None,
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(
        {
            "kind": CHECKPOINT_KIND,
            "format_version": CHECKPOINT_VERSION,
            "model": model_name,
            "input_shape": list(input_shape),
            "num_classes": int(num_classes),
            "state_dict": state,
            "info": info or {},
        },
        path,
    )
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise PolicyFormatError(f"{path}: no such checkpoint file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or corrupt files
        raise PolicyFormatError(f"{path}: not a policysearch checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(raw, dict) or raw.get("kind") != CHECKPOINT_KIND:
        raise PolicyFormatError(f"{path}: not a policysearch checkpoint (field 'kind' missing or wrong)")
    if raw.get("format_version", 0) > CHECKPOINT_VERSION:
        raise PolicyFormatError(f"{path}: checkpoint format {raw.get('format_version')} is newer than this policysearch")
    return Checkpoint(raw["model"], tuple(raw["input_shape"]), int(raw["num_classes"]), raw["state_dict"], raw["info"])
