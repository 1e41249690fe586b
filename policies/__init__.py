"""Exportable artefacts: plain, versioned JSON files any PyTorch training loop can use.

Imported lazily: `from policysearch.policies import AugmentPolicy` loads only what it names.
"""

from __future__ import annotations

from policysearch._lazy import lazy_names

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
__getattr__, __dir__ = lazy_names(__name__, _LAZY)
