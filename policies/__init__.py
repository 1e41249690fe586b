"""Exportable artefacts: plain, versioned JSON files any PyTorch training loop can use.

Imported lazily: `from policysearch.policies import AugmentPolicy` loads only what it names.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "AugmentPolicy": "policysearch.policies.augment",
    "builtin_policy": "policysearch.policies.augment",
    "load_policy": "policysearch.policies.augment",
    "LearnedSchedule": "policysearch.policies.schedule",
    "load_schedule": "policysearch.policies.schedule",
    "named_schedule": "policysearch.policies.schedule",
    "AdaptiveSchedule": "policysearch.policies.adaptive",
    "AdaptiveLRCallback": "policysearch.policies.adaptive",
    "resolve_schedule": "policysearch.policies.adaptive",
    "CompressionPlan": "policysearch.policies.compress",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'policysearch.policies' has no attribute {name!r}")
