"""Multi-objective search: objectives, the Pareto front of the child trainings a search logged, its files.

A search can trade accuracy against cost, calibration or robustness. Two ways, one set of objectives
(``--objectives accuracy,tflops``):

- `tpe` (Optuna) searches a multi-objective study (multi-objective TPE) whose trial values are these
  objectives (`study_options`, `trial_values`): it proposes along the front. CMA-ES is single-objective.
- every controller: a post-hoc front over the logged episodes (`pareto_front` on `objective_values`),
  written by `write_pareto` as ``pareto.json``, ``pareto.png`` and the front's policies under ``pareto/``.
  An RL or random controller still optimises its scalar reward; the front shows what it met on the way.

An objective is a figure of a finished child training and a direction:

| name | direction | read from |
|---|---|---|
| ``accuracy``, ``macro_f1``, ``macro_precision``, ``macro_recall`` | max | the last step's validation figures |
| ``ece``, ``nll`` | min | the same |
| ``neg_ece``, ``neg_nll`` | max | minus ECE / NLL (the reward metrics' names) |
| ``tflops`` | min | the episode's training FLOPs / 1e12 |
| ``seconds`` | min | the episode's child-training seconds (not reproducible: wall time) |
| ``flops_fraction`` | min | Compress-v0: the student's FLOPs over the teacher's |

Any other figure of the last step's validation figures or info can be named with its direction,
``name:max`` or ``name:min`` (e.g. a robustness figure an env reports).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policysearch.errors import ConfigError, UnknownNameError
from policysearch.files import write_json
from policysearch.search.plots import plot_pareto

__all__ = [
    "OBJECTIVES",
    "Objective",
    "as_objectives",
    "batch_trial_values",
    "objective_values",
    "pareto_front",
    "pareto_summary",
    "parse_objectives",
    "study_options",
    "trial_values",
    "write_pareto",
]

MAX, MIN = "maximize", "minimize"  # Optuna's words, so a direction passes to a study unchanged
OBJECTIVES: dict[str, str] = {
    "accuracy": MAX, "macro_f1": MAX, "macro_precision": MAX, "macro_recall": MAX,
    "ece": MIN, "nll": MIN, "neg_ece": MAX, "neg_nll": MAX,
    "tflops": MIN, "seconds": MIN, "flops_fraction": MIN,
}
_SHORT = {"max": MAX, "min": MIN}


@dataclass(frozen=True)
class Objective:
    """One objective: a name and whether larger ("maximize") or smaller ("minimize") is better."""

    name: str
    direction: str

    def __post_init__(self) -> None:
        if self.direction not in (MAX, MIN):
            raise ConfigError(f"objective {self.name!r}: direction {self.direction!r}, expected {MAX!r} or {MIN!r}")

    def value(self, record: dict[str, Any]) -> float:
        """This objective of an episode record (an episodes.jsonl line); NaN when diverged or absent."""
        if record.get("diverged"):
            return math.nan
        if self.name == "tflops":
            return float(record.get("train_flops", math.nan)) / 1e12
        if self.name == "seconds":
            return float(record.get("seconds", math.nan))
        steps = record.get("steps") or [{}]
        last = steps[-1]
        val = last.get("val") or {}
        name = self.name[4:] if self.name.startswith("neg_") and self.name[4:] in val else self.name
        raw = val.get(name, last.get(name))
        if not isinstance(raw, (int, float)) or isinstance(raw, bool):
            return math.nan
        return -float(raw) if name != self.name else float(raw)

    def better(self, a: float, b: float) -> bool:
        """Whether `a` is strictly better than `b`."""
        return a > b if self.direction == MAX else a < b


def parse_objectives(spec: str | Sequence[str]) -> tuple[Objective, ...]:
    """Objectives from ``"accuracy,tflops"`` (or a list of names); ``name:max`` / ``name:min`` for others.

    Raises:
        UnknownNameError: a name neither in `OBJECTIVES` nor given with a direction.
        ConfigError: no name, a name twice, or a bad direction.
    """
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not names:
        raise ConfigError(f"objectives {spec!r}: expected one or more names, e.g. accuracy,tflops")
    objectives = []
    for item in names:
        name, _, direction = item.partition(":")
        if direction:
            if direction not in _SHORT:
                raise ConfigError(f"objective {item!r}: expected NAME:max or NAME:min")
            objectives.append(Objective(name, _SHORT[direction]))
        elif name in OBJECTIVES:
            objectives.append(Objective(name, OBJECTIVES[name]))
        else:
            raise UnknownNameError("objective (or give NAME:max / NAME:min)", name, OBJECTIVES)
    if len({o.name for o in objectives}) != len(objectives):
        raise ConfigError(f"objectives {spec!r}: a name appears twice")
    return tuple(objectives)


def as_objectives(spec: str | Sequence[str | Objective] | None) -> tuple[Objective, ...]:
    """`parse_objectives` for names, Objectives passed through; None or empty: none."""
    if not spec:
        return ()
    if isinstance(spec, str):
        return parse_objectives(spec)
    objectives = tuple(o if isinstance(o, Objective) else parse_objectives([o])[0] for o in spec)
    if len({o.name for o in objectives}) != len(objectives):
        raise ConfigError(f"objectives {[o.name for o in objectives]}: a name appears twice")
    return objectives


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """The indices of the non-dominated points, in input order.

    Point p dominates q when p is at least as good as q in every objective and strictly better in
    one. Equal points do not dominate each other, so ties are all kept. A point with a NaN (a
    diverged child, a missing figure) is never on the front.

    Args:
        points: one sequence of objective values per point.
        directions: per objective, "maximize" / "max" or "minimize" / "min".
    """
    signs = []
    for d in directions:
        d = _SHORT.get(d, d)
        if d not in (MAX, MIN):
            raise ConfigError(f"direction {d!r}: expected 'maximize' or 'minimize'")
        signs.append(1.0 if d == MAX else -1.0)
    # As "larger is better" in every coordinate.
    scaled: list[tuple[float, ...] | None] = []
    for p in points:
        if len(p) != len(signs):
            raise ConfigError(f"point {list(p)} has {len(p)} values, expected {len(signs)} (one per direction)")
        values = tuple(float(v) * s if v is not None else math.nan for v, s in zip(p, signs))
        scaled.append(None if any(math.isnan(v) for v in values) else values)

    def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [i for i, p in enumerate(scaled)
            if p is not None and not any(q is not None and dominates(q, p) for q in scaled)]


def objective_values(episodes: Sequence[dict[str, Any]], objectives: Sequence[Objective]) -> list[list[float]]:
    """Per episode, its value for each objective (NaN where diverged or absent)."""
    return [[o.value(e) for o in objectives] for e in episodes]


def pareto_summary(episodes: Sequence[dict[str, Any]], objectives: Sequence[Objective]) -> dict[str, Any]:
    """The front of `episodes`: ``{"objectives": [{"name", "direction"}], "episodes": n, "front": [{"episode",
    "values": {name: value}}]}``, the front sorted by its first objective, best first.

    An objective that no finished episode reports (a misspelt ``name:max``, or ``flops_fraction``
    outside Compress-v0) leaves the front empty and is warned about, not raised: the search is done.
    """
    values = objective_values(episodes, objectives)
    finished = [v for v, e in zip(values, episodes) if not e.get("diverged")]
    missing = [o.name for j, o in enumerate(objectives) if finished and all(math.isnan(v[j]) for v in finished)]
    if missing:
        warnings.warn(f"objective(s) {', '.join(missing)}: no episode of this search reports them; "
                      "the Pareto front is empty", stacklevel=2)
    constant = [o.name for j, o in enumerate(objectives) if o.name not in missing
                and len({v[j] for v in finished if not math.isnan(v[j])}) == 1 and len(finished) > 1]
    if constant:  # e.g. tflops in Augment-v0: every child trains the same steps of the same model
        warnings.warn(f"objective(s) {', '.join(constant)}: the same for every episode of this search, "
                      "so they trade nothing", stacklevel=2)
    front = pareto_front(values, [o.direction for o in objectives])
    first = objectives[0]
    front.sort(key=lambda i: values[i][0], reverse=first.direction == MAX)
    return {
        "objectives": [{"name": o.name, "direction": o.direction} for o in objectives],
        "episodes": len(episodes),
        "front": [{"episode": episodes[i]["episode"], "values": dict(zip((o.name for o in objectives), values[i]))}
                  for i in front],
    }


def write_pareto(out: Path | None, episodes: Sequence[dict[str, Any]], objectives: Sequence[Objective],
                 export: Callable[[dict[str, Any]], Any] | None = None, artefact_name: str = "policy.json",
                 title: str = "") -> dict[str, Any]:
    """Write ``pareto.json``, ``pareto.png`` and, with `export`, each front episode's artefact as
    ``pareto/<artefact stem>-episode<k>.json``; returns the summary's "pareto" entry (`pareto_summary`
    plus the files).

    Args:
        out: the run folder (None: nothing is written, the front is only returned).
        episodes: the search's episode records.
        objectives: what the front trades.
        export: episode record -> artefact (with ``save(path)``), e.g. the env's `export` of its steps.
        artefact_name: the run's artefact file name, whose stem names the front's files.
        title: the plot's title.
    """

    result = pareto_summary(episodes, objectives)
    if out is None:
        return result
    if export is not None:
        by_episode = {e["episode"]: e for e in episodes}
        stem = Path(artefact_name).stem
        for stale in (out / "pareto").glob(f"{stem}-episode*.json"):  # an earlier front in this folder
            stale.unlink()
        for point in result["front"]:
            name = f"pareto/{stem}-episode{point['episode']}.json"
            export(by_episode[point["episode"]]).save(out / name)
            point["file"] = name
    write_json(out / "pareto.json", result)
    png = plot_pareto(objective_values(episodes, objectives), [p["episode"] for p in result["front"]],
                      [e["episode"] for e in episodes], objectives, out / "pareto.png", title=title)
    return {**result, "files": {"pareto": "pareto.json", "pareto_plot": png.name if png else None}}


# ---------------------------------------------------------------------- Optuna (multi-objective study)
def study_options(objectives: Sequence[Objective], controller: str) -> dict[str, Any]:
    """`optuna.create_study` keywords for `objectives`: ``{"direction": "maximize"}`` (the reward)
    when there are none, else ``{"directions": [...]}``.

    Raises:
        ConfigError: several objectives for a single-objective sampler (CMA-ES).
    """
    if not objectives:
        return {"direction": MAX}
    if len(objectives) > 1 and controller == "cmaes":
        raise ConfigError(f"--objectives {','.join(o.name for o in objectives)}: CMA-ES optimises one objective; "
                          "use --controller tpe (multi-objective TPE), or any other controller for a post-hoc "
                          "Pareto front of what it finds")
    return {"directions": [o.direction for o in objectives]}


def trial_values(record: dict[str, Any], objectives: Sequence[Objective]) -> list[float] | None:
    """An Optuna trial's values: the objectives of the episode it ran; None when any is NaN (the
    child diverged), for the caller to prune the trial."""
    values = [o.value(record) for o in objectives]
    return None if any(math.isnan(v) for v in values) else values


def batch_trial_values(records: Sequence[dict[str, Any]], n: int,
                       objectives: Sequence[Objective]) -> list[list[float] | None]:
    """The values of a batch of `n` trials, trial i run by worker i: the objectives of the first
    episode worker i finished among `records` (those the batch added); None for a worker that
    finished none (the budget cut it) or whose child diverged."""
    first: dict[int, dict[str, Any]] = {}
    for record in records:
        first.setdefault(int(record.get("worker", 0)), record)
    return [trial_values(first[i], objectives) if i in first else None for i in range(n)]
