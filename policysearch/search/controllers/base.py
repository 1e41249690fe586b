"""What every searcher implements: a `Controller` drives a `SearchVecEnv`; a `PlanSearcher` turns a
compression plan into a better one on the teacher directly (no env). Built by name through
`policysearch.search.controllers.registry`, from one `ControllerSettings`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from policysearch.search.pareto import Objective
    from policysearch.search.vecenv import SearchVecEnv

__all__ = ["Controller", "ControllerSettings", "PlanSearcher"]


@dataclass(frozen=True)
class ControllerSettings:
    """Everything a registry factory may read; each reads only what applies to it.

    Attributes:
        episode_length: env steps per episode (sizes SB3 rollouts and warm-up).
        tensorboard_log: a folder for an SB3 agent's own TensorBoard curves.
        verbose: an SB3 agent's verbosity.
        out_dir: the run folder (an SB3 checkpoint, Optuna's optuna.db); None: nothing written.
        objectives: several objectives: a multi-objective study (`tpe`).
        population: members (`pbt`) or candidates per generation (`es`); None: the controller's default.
        es_tasks: shared episodes per generation (`es`).
        options: a plan searcher's own settings (the compass search's steps, seeds, ...).
    """

    episode_length: int = 1
    tensorboard_log: str | None = None
    verbose: int = 0
    out_dir: Path | None = None
    objectives: Sequence[Objective] = ()
    population: int | None = None
    es_tasks: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


class Controller(abc.ABC):
    """Base class: `run` drives the recorder until its budget is spent; `save` writes the controller.

    Call order: `run(recorder, seed)`, then optionally `save(path)` and `summary()`. An env a
    controller cannot drive is refused before a run opens anything (`ControllerInfo.env_check`).
    """

    name: str = "controller"

    @abc.abstractmethod
    def run(self, recorder: SearchVecEnv, seed: int) -> None:
        """Drive `recorder` until `recorder.exhausted`; `recorder.base` is the env's `SearchEnv` side."""

    def save(self, path: str | Path) -> Path | None:
        """Write the learned controller; None when there is nothing to save."""
        return None

    def summary(self) -> dict[str, Any]:
        """What the controller adds to the run's summary.json (e.g. `es`'s generations); {} by default."""
        return {}


class PlanSearcher(abc.ABC):
    """A compression searcher that works on the teacher itself, from a starting plan (no env)."""

    name: str = "plan searcher"

    @abc.abstractmethod
    def search(self, start: Any, teacher: Any, data: Any) -> tuple[Any, dict[str, Any]]:
        """The plan it ends at (a `CompressionPlan` meeting `start`'s targets) and what it adds to the summary."""
