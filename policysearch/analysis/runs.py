"""Run folders side by side: what `policysearch compare RUN...` reads, tabulates and plots.

A run folder is what a search writes (`policysearch.search.driver.run_search`): ``summary.json`` and
``episodes.jsonl``. The episodes are the ground truth here, so a run killed before it wrote its
summary still compares (marked "partial"); a torn last line is skipped with a warning
(`policysearch.search.driver.read_episodes`). Scores are only comparable between runs that rank by the
same validation metric with the same cost weight; `compare_runs` says when they do not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policysearch.errors import ConfigError
from policysearch.figures import best_so_far, rolling_mean
from policysearch.files import read_json
from policysearch.search.driver import read_episodes

__all__ = ["Run", "best_so_far", "compare_runs", "load_run", "rolling_mean", "run_row", "run_series"]


@dataclass
class Run:
    """One run folder: its summary (None when the search did not finish) and its episodes."""

    path: Path
    episodes: list[dict[str, Any]]
    summary: dict[str, Any] | None = None
    label: str = field(default="")

    @property
    def env(self) -> dict[str, Any]:
        return (self.summary or {}).get("env") or {}


def load_run(path: str | Path) -> Run:
    """Read a run folder.

    Raises:
        ConfigError: `path` is not a folder with an episodes.jsonl.
        PolicyFormatError: summary.json or episodes.jsonl is damaged (a torn last line is not damage).
    """

    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"run {str(path)!r}: no such folder")
    if not (folder / "episodes.jsonl").is_file():
        raise ConfigError(f"run {str(path)!r}: not a search's run folder (no episodes.jsonl)")
    summary = None
    if (folder / "summary.json").is_file():
        summary = read_json(folder / "summary.json")
    return Run(folder, read_episodes(folder / "episodes.jsonl"), summary, label=folder.name or str(folder))


def _finite(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


def run_row(run: Run) -> dict[str, Any]:
    """One table row: run, controller, task, metric, budget, episodes, best score and val metric, cost."""
    s, eps = run.summary or {}, run.episodes
    scores = [_finite(e.get("score")) for e in eps]
    best_i = max((i for i in range(len(eps)) if math.isfinite(scores[i])), key=lambda i: scores[i], default=None)
    env = run.env
    controller = s.get("controller") or next((e.get("controller") for e in eps if e.get("controller")), "")
    wall = s.get("wall_seconds", eps[-1].get("elapsed") if eps else 0.0)
    return {
        "run": str(run.path),
        "controller": controller,
        "task": " ".join(str(x) for x in (env.get("env_id", "").replace("policysearch/", ""), env.get("dataset"),
                                           env.get("model")) if x),
        "metric": env.get("reward_metric", ""),
        "budget": (s.get("budget") or {}).get("child_trainings"),
        "episodes": len(eps),
        "best score": scores[best_i] if best_i is not None else math.nan,
        "best val metric": _finite(eps[best_i].get("metric")) if best_i is not None else math.nan,
        "best episode": eps[best_i].get("episode") if best_i is not None else None,
        "child trainings": s.get("child_trainings", len(eps)),
        "child s": round(sum(_finite(e.get("seconds")) for e in eps if math.isfinite(_finite(e.get("seconds")))), 2),
        "wall s": wall,
        "TFLOPs": sum(float(e.get("train_flops") or 0.0) for e in eps) / 1e12,
        "status": "finished" if run.summary is not None else "partial",
    }


def run_series(run: Run, window: int = 5) -> dict[str, Any]:
    """A run's curves for `policysearch.analysis.run_plots.plot_runs`: per child training, the cumulative
    training TFLOPs, the best score so far and the rolling mean of the score."""
    scores = [_finite(e.get("score")) for e in run.episodes]
    tflops, total = [], 0.0
    for e in run.episodes:
        total += float(e.get("train_flops") or 0.0) / 1e12
        tflops.append(total)
    controller = (run.summary or {}).get("controller") or (run.episodes[0].get("controller") if run.episodes else "")
    return {"label": f"{run.label} ({controller})" if controller and controller not in run.label else run.label,
            "child": list(range(1, len(scores) + 1)), "tflops": tflops, "score": scores,
            "best": best_so_far(scores), "rolling": rolling_mean(scores, window)}


def compare_runs(paths: Sequence[str | Path], window: int = 5) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                                        list[str]]:
    """Load each run folder; return (table rows, plot series, notes on what is not comparable)."""
    runs = [load_run(p) for p in paths]
    notes = []
    for key, what in (("reward_metric", "rank by different validation metrics"),
                      ("cost_weight", "weigh cost differently"), ("dataset", "search different data sets")):
        seen = {str(r.env.get(key)) for r in runs if r.env.get(key) is not None}
        if len(seen) > 1:
            notes.append(f"these runs {what} ({', '.join(sorted(seen))}): their scores are not comparable")
    return [run_row(r) for r in runs], [run_series(r, window) for r in runs], notes
