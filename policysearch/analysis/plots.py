"""Plots for people who would rather look than read (matplotlib, the `plot` extra).

Every function returns the written path, or None with a warning when matplotlib is missing:
a plot never stops a search.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from policysearch.errors import UnknownNameError
from policysearch.figures import pyplot, save_figure
from policysearch.policies.schedule import named_schedule

#: The panels of `plot_comparison`: the test metrics every comparison reports.
COMPARISON_METRICS: tuple[str, ...] = ("accuracy", "macro_f1", "ece", "nll")
#: The panels for segmentation and restoration entries (`policysearch.tasks`), as far as they hold them.
DENSE_COMPARISON_METRICS: tuple[str, ...] = ("miou", "pixel_accuracy", "psnr", "ssim")
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def _half_width(values: Sequence[float], interval: str) -> float:
    """Whisker half-width: the sample std (ddof=1), or the t-based 95 % CI of the mean."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    if interval == "std":
        return std
    return (_T975[n - 2] if n - 2 < len(_T975) else 1.96) * std / math.sqrt(n)


def comparison_figure(entries: Sequence[dict[str, Any]], title: str = "", metrics: Sequence[str] | None = None,
                      interval: str = "std", note: str = "") -> Any:
    """The figure `plot_comparison` writes: one panel per metric, every seed a dot, the mean with whiskers.

    Args:
        entries: `policysearch.analysis.compare.compare` entries (their per-seed "runs" are plotted).
        title: the figure's title.
        metrics: test metrics, one panel each (None: `COMPARISON_METRICS`, or for segmentation and restoration
            entries those of `DENSE_COMPARISON_METRICS` they hold).
        interval: "std" (± one sample standard deviation) or "ci95" (t-based 95 % confidence interval
            of the mean); the caption says which.
        note: appended to the caption (e.g. the data set and its test size).

    Returns:
        A matplotlib Figure (None when matplotlib is missing).
    """

    if interval not in ("std", "ci95"):
        raise UnknownNameError("interval", interval, ("std", "ci95"))
    if metrics is None:
        held = entries[0]["runs"][0]["test"] if entries and entries[0].get("runs") else {}
        dense = [m for m in DENSE_COMPARISON_METRICS if m in held]
        metrics = COMPARISON_METRICS if "accuracy" in held or not dense else dense
    plt = pyplot()
    if plt is None:
        return None
    schedules = sorted({str(e.get("schedule")) for e in entries})
    labels = [f"{e['augment']}\n{e['schedule']}" if len(schedules) > 1 else str(e["augment"]) for e in entries]
    cols = 2 if len(metrics) == 4 else len(metrics)  # 2 x 2 reads better than four narrow panels in a row
    rows = math.ceil(len(metrics) / cols)
    width = max(2.8, 0.75 * len(entries) + 1.4)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, 3.3 * rows + 0.6), squeeze=False)
    ns = set()
    for ax, metric in zip(axes.flat, metrics):
        for i, e in enumerate(entries):
            values = [float(r["test"][metric]) for r in e["runs"] if not r.get("diverged")
                      and r["test"].get(metric) is not None and math.isfinite(float(r["test"][metric]))]
            ns.add(len(values))
            if not values:
                continue
            offsets = [(j - (len(values) - 1) / 2) * 0.08 for j in range(len(values))]
            ax.plot([i + 0.18 + o for o in offsets], values, "o", ms=4, color="tab:blue", alpha=0.6)
            mean = sum(values) / len(values)
            ax.errorbar([i - 0.12], [mean], yerr=[_half_width(values, interval)], fmt="_", ms=14, mew=2,
                        color="black", capsize=4, lw=1.5)
        direction = {"ece": "lower is better", "nll": "lower is better"}.get(metric, "higher is better")
        ax.set_title(f"test {metric}", fontsize="medium")
        ax.set_ylabel(f"{metric} ({direction})", fontsize="small")
        ax.set_xticks(range(len(entries)), labels, rotation=30 if len(entries) > 3 else 0, ha="right"
                      if len(entries) > 3 else "center", fontsize="small")
        ax.set_xlim(-0.6, len(entries) - 0.4)
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
    n_text = "/".join(str(n) for n in sorted(ns)) or "0"
    whisker = "± 1 sample std (ddof=1)" if interval == "std" else "95 % CI of the mean (t)"
    epochs = sorted({e.get("epochs") for e in entries if e.get("epochs") is not None})
    parts = [f"dots: one seed each (n={n_text} seeds); black tick: mean, whiskers {whisker}",
             f"schedule {', '.join(schedules)}"]
    if epochs:
        parts.append(f"{', '.join(f'{x:g}' for x in epochs)} epochs")
    if note:
        parts.append(note)
    fig.text(0.5, 0.01, "; ".join(parts), ha="center", va="bottom", fontsize="small", wrap=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05 if rows > 1 else 0.07, 1, 1))
    return fig


def plot_comparison(entries: Sequence[dict[str, Any]], path: str | Path, title: str = "",
                    metrics: Sequence[str] | None = None, interval: str = "std", note: str = "") -> Path | None:
    """Write `comparison_figure` (every seed a dot, mean ± std or 95 % CI, one panel per metric) to `path`."""
    fig = comparison_figure(entries, title, metrics, interval, note)
    if fig is None:
        return None
    return save_figure(pyplot(), fig, path, layout=False)


def plot_schedules(learned: Any, base_lr: float, path: str | Path, title: str = "learned schedule") -> Path | None:
    """The learned LR over training progress against cosine and onecycle at `base_lr` (log scale)."""
    plt = pyplot()
    if plt is None:
        return None

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
    return save_figure(plt, fig, path)


def paired_differences_figure(rows: Sequence[dict[str, Any]], title: str = "", baseline: str = "uniform",
                              note: str = "") -> Any:
    """The figure `plot_paired_differences` writes: one row per arm, its difference from the baseline in
    points per paired seed (dots), the mean (tick), the bootstrap 95 % CI over seeds (thick bar) and, where
    given, over seeds and scored images (thin line); zero is the dashed line.

    Args:
        rows: one per arm: ``{"label", "differences": per-seed differences (fractions), "ci": (low,
            high), "ci_images": (low, high) or None}`` (fractions; `policysearch.analysis.stats` intervals).
        title: the figure's title.
        baseline: what the differences are taken from, for the axis label.
        note: appended to the caption (e.g. the split and its size).

    Returns:
        A matplotlib Figure (None when matplotlib is missing).
    """
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7.2, 1.0 + 0.62 * max(len(rows), 1) + 0.5))
    ns = set()
    for i, row in enumerate(reversed(rows)):
        diffs = [100 * float(d) for d in row["differences"] if math.isfinite(float(d))]
        ns.add(len(diffs))
        if row.get("ci_images") is not None:
            low, high = (100 * float(v) for v in row["ci_images"])
            ax.plot([low, high], [i, i], "-", lw=1, color="grey")
        low, high = (100 * float(v) for v in row["ci"])
        ax.plot([low, high], [i, i], "-", lw=5, color="tab:blue", alpha=0.7, solid_capstyle="butt")
        if diffs:
            jitter = [(j - (len(diffs) - 1) / 2) * 0.03 for j in range(len(diffs))]
            ax.plot(diffs, [i + 0.22 + o for o in jitter], "o", ms=3.5, color="black", alpha=0.55)
            ax.plot([sum(diffs) / len(diffs)], [i], "|", ms=16, mew=2.5, color="black")
    ax.axvline(0.0, ls="--", color="tab:red", lw=1)
    ax.set_yticks(range(len(rows)), [str(r["label"]) for r in reversed(rows)], fontsize="small")
    ax.set_ylim(-0.6, len(rows) - 0.3)
    ax.set_xlabel(f"− {baseline} (points of accuracy; right is better)")
    ax.grid(axis="x", alpha=0.3)
    n_text = "/".join(str(n) for n in sorted(ns)) or "0"
    parts = [f"dots: one paired seed each (n={n_text}); tick: mean; blue: bootstrap 95 % CI over seeds",
             "grey: over seeds and images"]
    if note:
        parts.append(note)
    fig.text(0.5, 0.01, "; ".join(parts), ha="center", va="bottom", fontsize="x-small", wrap=True)
    if title:
        ax.set_title(title, fontsize="medium")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def plot_paired_differences(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "",
                            baseline: str = "uniform", note: str = "") -> Path | None:
    """Write `paired_differences_figure` (per-seed differences from a baseline with their CIs) to `path`."""
    fig = paired_differences_figure(rows, title, baseline, note)
    if fig is None:
        return None
    return save_figure(pyplot(), fig, path, layout=False)
