"""Compression around a plan: cheap scores of pruned students (adaptive BN, re-ranking), knowledge
distillation, and the compass search that refines a plan by distillation.

The plan itself is the artefact `policysearch.policies.CompressionPlan`; a network's channel groups
and the plan space are `policysearch.channels`.
"""

from __future__ import annotations

from policysearch._lazy import lazy_names

_LAZY = {
    "adaptive_bn": "policysearch.compression.pruning",
    "val_accuracy": "policysearch.compression.pruning",
    "val_score": "policysearch.compression.pruning",
    "rerank": "policysearch.compression.pruning",
    "distill": "policysearch.compression.distill",
    "refine_plan": "policysearch.compression.refine",
}
__all__ = list(_LAZY)
__getattr__, __dir__ = lazy_names(__name__, _LAZY)
