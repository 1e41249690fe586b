"""Figures for people who would rather look than read: matplotlib set-up and atomic saving (the `plot` extra).

Every plotting function in policysearch returns the written path, or None with a warning when
matplotlib is missing: a plot never stops a search.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from policysearch.errors import ConfigError
from policysearch.files import atomic_path

__all__ = ["best_so_far", "pyplot", "rolling_mean", "save_figure"]


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only), or None with a warning naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed: pip install 'policysearch[plot]' for plots", stacklevel=3)
        return None
    return plt


def save_figure(plt: Any, fig: Any, path: str | Path, layout: bool = True) -> Path:
    """Write `fig` through a temporary file (format from the suffix), close it, return the path."""
    if layout:
        fig.tight_layout()

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)  # figures are not garbage-collected while pyplot tracks them
    return path


def best_so_far(scores: Sequence[float]) -> list[float]:
    """The running maximum of `scores`, ignoring NaN / inf (NaN until the first finite score)."""
    out, best = [], -math.inf
    for s in scores:
        if math.isfinite(s):
            best = max(best, s)
        out.append(best if math.isfinite(best) else math.nan)
    return out


def rolling_mean(scores: Sequence[float], window: int) -> list[float]:
    """The mean of the finite scores among the last `window` ones (NaN when there are none)."""
    if window < 1:
        raise ConfigError(f"window={window}: expected >= 1")
    out = []
    for i in range(len(scores)):
        recent = [s for s in scores[max(0, i - window + 1): i + 1] if math.isfinite(s)]
        out.append(sum(recent) / len(recent) if recent else math.nan)
    return out
