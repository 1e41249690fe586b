"""A search's own figures: every child's score with the best so far (search.png), and the Pareto front.

Written by the driver into the run folder; like every figure, each returns the written path, or
None with a warning when matplotlib is missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from policysearch.figures import best_so_far, pyplot, rolling_mean, save_figure

__all__ = ["plot_pareto", "plot_search"]


def _scores(episodes: Sequence[dict[str, Any]]) -> tuple[list[int], list[float]]:
    xs = [e["episode"] + 1 for e in episodes]
    return xs, [e["score"] if math.isfinite(e["score"]) else float("nan") for e in episodes]


def plot_search(episodes: Sequence[dict[str, Any]], path: str | Path, title: str = "search",
                metric: str | None = None, val_size: int | None = None,
                random_episodes: Sequence[dict[str, Any]] | None = None) -> Path | None:
    """Score of every child training (dots), its rolling mean and the best so far.

    Args:
        episodes: records of `episodes.jsonl` (`policysearch.search.driver.read_episodes`).
        path: the image to write.
        title: the plot's title.
        metric: the reward metric's name, written on the axis (e.g. "accuracy").
        val_size: images in the validation split the score is measured on, written on the axis.
        random_episodes: the episodes of a random-search run at the same budget, drawn as the
            baseline curve (its best so far and rolling mean) the controller must beat.
    """
    plt = pyplot()
    if plt is None:
        return None
    xs, scores = _scores(episodes)
    window = max(3, len(episodes) // 8)
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    ax.plot(xs, scores, "o", ms=4, alpha=0.45, color="tab:blue", label="child training")
    ax.plot(xs, rolling_mean(scores, window), "-", lw=1.5, color="tab:blue", alpha=0.8,
            label=f"rolling mean ({window})")
    ax.plot(xs, best_so_far(scores), "-", lw=2.2, color="tab:orange", label="best so far")
    if random_episodes:
        rx, rscores = _scores(random_episodes)
        ax.plot(rx, best_so_far(rscores), "--", lw=1.8, color="0.35", label="random search: best so far")
        ax.plot(rx, rolling_mean(rscores, max(3, len(random_episodes) // 8)), ":", lw=1.5, color="0.35",
                label="random search: rolling mean")
    diverged = [x for x, e in zip(xs, episodes) if e.get("diverged")]
    finite = [s for s in scores if not math.isnan(s)]
    if diverged and finite:
        ax.plot(diverged, [min(finite)] * len(diverged), "rx", label="diverged")
    name = metric or "metric"
    penalised = any(e.get("score") != e.get("metric") for e in episodes if not e.get("diverged"))
    ylabel = f"final validation {name}" + (" − cost term" if penalised else "")
    if val_size:
        ylabel += f"\n(validation split: {val_size:,} images)"
    ax.set_xlabel("child training")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    # Below the axes: inside, the legend would hide the late episodes, which matter most.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize="small", frameon=False)
    return save_figure(plt, fig, path)


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
        objectives: `policysearch.search.pareto.Objective` s, for the axis labels.
        path: the PNG to write.
        title: the figure's title.
    """
    plt = pyplot()
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
    return save_figure(plt, fig, path)
