"""Plots for people who would rather look than read (matplotlib, the `plot` extra).

Every function returns the written path, or None with a warning when matplotlib is missing:
a plot never stops a search.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed: pip install 'policysearch[plot]' for plots", stacklevel=3)
        return None
    return plt


def _save(plt: Any, fig: Any, path: str | Path) -> Path:
    fig.tight_layout()
    from policysearch.files import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)  # figures are not garbage-collected while pyplot tracks them
    return path


def plot_search(episodes: Sequence[dict[str, Any]], path: str | Path, title: str = "search") -> Path | None:
    """Score of every episode (dots) and the best so far (line) against child trainings."""
    plt = _pyplot()
    if plt is None:
        return None
    xs = [e["episode"] + 1 for e in episodes]
    scores = [e["score"] if math.isfinite(e["score"]) else float("nan") for e in episodes]
    best, running = [], -math.inf
    for s in scores:
        running = max(running, s) if not math.isnan(s) else running
        best.append(running if math.isfinite(running) else float("nan"))
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(xs, scores, "o", ms=4, alpha=0.6, label="episode")
    ax.plot(xs, best, "-", lw=2, label="best so far")
    diverged = [x for x, e in zip(xs, episodes) if e.get("diverged")]
    if diverged:
        ax.plot(diverged, [min(s for s in scores if not math.isnan(s))] * len(diverged), "rx", label="diverged")
    ax.set_xlabel("child training")
    ax.set_ylabel("final validation metric (score)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(plt, fig, path)


def plot_comparison(rows: Sequence[dict[str, Any]], metric: str, path: str | Path, title: str = "") -> Path | None:
    """Bar chart of mean ± std of one test metric per policy (rows from `evaluate.compare`)."""
    plt = _pyplot()
    if plt is None:
        return None
    labels = [f"{r['augment']}\n{r['schedule']}" if r.get("schedule") not in (None, "cosine") else r["augment"]
              for r in rows]
    means = [r["test"][metric]["mean"] for r in rows]
    stds = [r["test"][metric]["std"] for r in rows]
    fig, ax = plt.subplots(figsize=(1.2 * len(rows) + 2, 3.8))
    ax.bar(range(len(rows)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(rows)), labels)
    low = min(m - s for m, s in zip(means, stds))
    high = max(m + s for m, s in zip(means, stds))
    pad = (high - low) * 0.3 + 1e-3
    ax.set_ylim(low - pad, high + pad)
    ax.set_ylabel(f"test {metric}")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return _save(plt, fig, path)


def plot_schedules(learned: Any, base_lr: float, path: str | Path, title: str = "learned schedule") -> Path | None:
    """The learned LR over training progress against cosine and onecycle at `base_lr` (log scale)."""
    plt = _pyplot()
    if plt is None:
        return None
    from policysearch.policies.schedule import named_schedule

    grid = [i / 400 for i in range(401)]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(grid, learned.lrs(grid), lw=2.5, label="learned")
    for name in ("cosine", "onecycle"):
        ax.plot(grid, named_schedule(name, base_lr).lrs(grid), "--", lw=1.5, label=f"{name} (peak {base_lr:g})")
    ax.set_yscale("log")
    ax.set_xlabel("training progress")
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower left")
    return _save(plt, fig, path)
