"""Helpers shared by the search tests (not a test module)."""

from __future__ import annotations

from typing import Any

VOLATILE = {"seconds", "elapsed", "run_id"}  # wall-clock figures and the run's own id


def stable(value: Any) -> Any:
    """`value` without the fields that differ between two runs of the same search."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value
