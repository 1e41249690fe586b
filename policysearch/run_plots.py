"""Plots across runs and objectives: `policysearch compare`'s overlay and a search's Pareto front.

Kept apart from `policysearch.plots` (one search's own figures), whose matplotlib set-up they share;
like those, each returns the written path, or None with a warning when matplotlib is missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from policysearch.plots import _pyplot, _save


def plot_runs(series: Sequence[dict[str, Any]], path: str | Path, window: int = 5,
              title: str = "search runs") -> Path | None:
    """Best score so far (solid) and the rolling mean of the score (dashed) of several runs, against
    child trainings (left) and against cumulative training TFLOPs (right).

    Args:
        series: per run, from `policysearch.runs.run_series`: "label", "child", "tflops", "best", "rolling".
        path: the PNG to write.
        window: the rolling mean's window, for the legend.
        title: the figure's title.
    """
    plt = _pyplot()
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
    return _save(plt, fig, path)


def _label(objective: Any) -> str:
    return f"{objective.name} ({'higher' if objective.direction == 'maximize' else 'lower'} is better)"


def plot_pareto(values: Sequence[Sequence[float]], front: Sequence[int], episodes: Sequence[int],
                objectives: Sequence[Any], path: str | Path, title: str = "") -> Path | None:
    """Every finished child training (grey) and the Pareto front (red, numbered by episode), for each
    pair of the first three objectives (one objective: its value per child training).

    Args:
        values: per episode, its objective values (NaN: diverged, not drawn).
        front: the episode numbers on the front.
        episodes: the episode number of each row of `values`.
        objectives: `policysearch.pareto.Objective` s, for the axis labels.
        path: the PNG to write.
        title: the figure's title.
    """
    plt = _pyplot()
    if plt is None:
        return None
    on_front = set(front)
    finite = [(e, v) for e, v in zip(episodes, values) if not any(math.isnan(x) for x in v)]
    k = min(len(objectives), 3)
    pairs = [(0, None)] if k == 1 else [(i, j) for i in range(k) for j in range(i + 1, k)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.6 * len(pairs), 4.2), squeeze=False)
    for ax, (i, j) in zip(axes[0], pairs):
        def xy(ev: tuple[int, Sequence[float]], i: int = i, j: int | None = j) -> tuple[float, float]:
            e, v = ev
            return (e + 1, v[i]) if j is None else (v[i], v[j])

        rest = [xy(p) for p in finite if p[0] not in on_front]
        best = sorted((xy(p), p[0]) for p in finite if p[0] in on_front)
        if rest:
            ax.plot(*zip(*rest), "o", ms=4, color="0.6", alpha=0.7, label="child training")
        if best:
            # Two objectives: the front's staircase, the edge of the region it dominates (vertical first
            # when x is maximised). Projections of three or more objectives get points only.
            staircase = len(objectives) == 2
            step = "steps-pre" if objectives[0].direction == "maximize" else "steps-post"
            ax.plot([p[0] for p, _ in best], [p[1] for p, _ in best], "o-" if staircase else "o", ms=6, lw=1.2,
                    color="tab:red", drawstyle=step if staircase else "default", label="Pareto front")
            for (x, y), e in best:
                ax.annotate(str(e), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel("child training" if j is None else _label(objectives[i]))
        ax.set_ylabel(_label(objectives[i if j is None else j]))
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    if len(objectives) > 3:
        title = f"{title} (first three of {len(objectives)} objectives)".strip()
    fig.suptitle(title or "Pareto front")
    return _save(plt, fig, path)
