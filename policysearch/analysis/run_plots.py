"""Plots across runs and objectives: `policysearch compare`'s overlay and a search's Pareto front.

Kept apart from `policysearch.analysis.plots` (one search's own figures), whose matplotlib set-up they share;
like those, each returns the written path, or None with a warning when matplotlib is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from policysearch.figures import pyplot, save_figure


def plot_runs(series: Sequence[dict[str, Any]], path: str | Path, window: int = 5,
              title: str = "search runs") -> Path | None:
    """Best score so far (solid) and the rolling mean of the score (dashed) of several runs, against
    child trainings (left) and against cumulative training TFLOPs (right).

    Args:
        series: per run, from `policysearch.analysis.runs.run_series`: "label", "child", "tflops", "best", "rolling".
        path: the PNG to write.
        window: the rolling mean's window, for the legend.
        title: the figure's title.
    """
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.2), sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, s in enumerate(series):
        colour = colours[k % len(colours)]
        for ax, x in zip(axes, (s["child"], s["tflops"])):
            ax.plot(x, s["best"], "-", lw=2, color=colour, label=f"{s['label']} best so far")
            ax.plot(x, s["rolling"], "--", lw=1.2, color=colour, alpha=0.7, label=f"{s['label']} mean of {window}")
    axes[0].set_xlabel("child trainings")
    axes[1].set_xlabel("training TFLOPs (cumulative)")
    axes[0].set_ylabel("score (final validation metric)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(loc="lower right", fontsize=7)
    fig.suptitle(title)
    return save_figure(plt, fig, path)
