"""Networks: the built-in ones (classifiers, and the dense ``unet``), your own (an import path, a file, a
factory or an instance), and torchvision's, timm's or segmentation-models-pytorch's, all resolved to one
`ModelSpec` by `resolve_model` and built by `build_model`.

    from policysearch.models import build_model, register_model
"""

from __future__ import annotations

from policysearch.models.builtin import MLP, SmallCNN, SmallResNet, TinyViT
from policysearch.models.registry import (
    MODELS,
    ModelSpec,
    build_for_data,
    build_model,
    model_table,
    register_model,
    resolve_model,
    restore_models,
    shipped_models,
)
from policysearch.models.unet import UNet

__all__ = ["MLP", "MODELS", "ModelSpec", "SmallCNN", "SmallResNet", "TinyViT", "UNet", "build_for_data", "build_model",
           "model_table", "register_model", "resolve_model", "restore_models", "shipped_models"]
