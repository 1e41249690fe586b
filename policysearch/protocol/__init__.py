"""The protocol that wins, as one call per job: search, re-rank the top candidates with the hand-made
baselines on fresh seeds, choose on validation only (the final choice on validation images the search
never scored), compare the choice with every baseline on the test split over paired seeds, export the
best of {searched, baselines} and say which.

    from policysearch.protocol import compress_model, find_augmentation, find_schedule
"""

from __future__ import annotations

from policysearch._lazy import lazy_names

_LAZY = {
    "find_augmentation": "policysearch.protocol.jobs",
    "find_schedule": "policysearch.protocol.jobs",
    "compress_model": "policysearch.protocol.compress",
    "ProtocolResult": "policysearch.protocol.core",
    "EFFORTS": "policysearch.protocol.effort",
    "plan_for": "policysearch.protocol.effort",
}
__all__ = list(_LAZY)
__getattr__, __dir__ = lazy_names(__name__, _LAZY)
