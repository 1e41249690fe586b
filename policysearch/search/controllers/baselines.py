"""The baselines every claim must beat: uniform random actions, and Optuna's TPE / CMA-ES samplers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from policysearch.checks import check_choice
from policysearch.envs.contract import SuggestsEpisodes
from policysearch.errors import ConfigError, MissingExtraError
from policysearch.search.controllers.base import Controller, ControllerSettings
from policysearch.search.pareto import Objective, batch_trial_values, study_options
from policysearch.tracking import create_study, optuna_storage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from policysearch.search.vecenv import SearchVecEnv

__all__ = ["OptunaController", "RandomController", "make_optuna", "make_random"]


class RandomController(Controller):
    """Uniform random actions from the env's action space."""

    name = "random"

    def run(self, recorder: SearchVecEnv, seed: int) -> None:
        recorder.action_space.seed(seed)
        recorder.seed(seed)
        recorder.reset()
        while not recorder.exhausted:
            recorder.step(np.stack([recorder.action_space.sample() for _ in range(recorder.num_envs)]))


class OptunaController(Controller):
    """Optuna's TPE or CMA-ES. One trial is one child training: over the action vector in a
    static-mode env, or, for an env that `SuggestsEpisodes` (Schedule-v0: a cosine / onecycle
    family and its peak LR; Augment: a final policy held or ramped up from none), over that env's
    own low-dimensional baseline space.

    Args:
        sampler: "tpe" or "cmaes".
        storage: an Optuna storage URL for the study (the driver passes the run folder's optuna.db);
            None: in memory.
        objectives: `policysearch.search.pareto.Objective` s: a multi-objective study over them (TPE only
            for two or more) instead of maximising the reward.
    """

    def __init__(self, sampler: str, storage: str | None = None, objectives: Sequence[Objective] = ()) -> None:
        check_choice("Optuna sampler", sampler, ("tpe", "cmaes"))
        self.name = sampler
        self.storage, self.objectives = storage, tuple(objectives)
        self.study_options = study_options(self.objectives, sampler)  # refuses CMA-ES with several objectives
        self.study: Any = None

    def run(self, recorder: SearchVecEnv, seed: int) -> None:
        try:
            import optuna
        except ImportError as exc:
            raise MissingExtraError("optuna", "optuna", f"controller {self.name!r}") from exc
        base = recorder.base
        suggester = base if isinstance(base, SuggestsEpisodes) else None
        if suggester is None and base.mode != "static":
            raise ConfigError(f"controller {self.name!r} needs a one-step env: use mode='static'")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if self.name == "tpe":
            sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(seed=seed)
        else:
            try:
                import cmaes  # noqa: F401  (Optuna's CMA-ES sampler needs it)
            except ImportError as exc:
                raise MissingExtraError("cmaes", "optuna", "controller 'cmaes'") from exc
            sampler = optuna.samplers.CmaEsSampler(seed=seed)
        self.study = create_study(optuna, self.storage, sampler=sampler, **self.study_options)
        shape = recorder.action_space.shape
        if shape is None:
            raise ConfigError(f"controller {self.name!r} needs a Box action space, got {recorder.action_space}")
        dim, n = int(np.prod(shape)), recorder.num_envs
        recorder.seed(seed)
        recorder.reset()
        while not recorder.exhausted:
            # A batch of N trials, one per worker, trained at once; their results told together.
            trials = [self.study.ask() for _ in range(n)]
            start = len(recorder.episodes)
            if suggester is not None:
                plans = [list(suggester.suggest_episode(trial)) for trial in trials]
                totals, open_ = np.zeros(n), np.ones(n, dtype=bool)
                for t in range(max(len(p) for p in plans)):
                    actions = np.stack([p[min(t, len(p) - 1)] for p in plans])
                    _, rewards, dones, _ = recorder.step(actions)
                    totals += np.where(open_, rewards, 0.0)
                    open_ &= ~dones
                    if not open_.any() or recorder.exhausted:
                        break
                values = totals
            else:
                actions = np.stack([np.array([trial.suggest_float(f"a{i}", -1.0, 1.0) for i in range(dim)],
                                             dtype=np.float32) for trial in trials])
                _, values, _, _ = recorder.step(actions)
            if self.objectives:  # each trial's objectives, from its worker's episode (policysearch.search.pareto)
                values = batch_trial_values(recorder.episodes[start:], n, self.objectives)
            for trial, value in zip(trials, values):
                if value is None:  # diverged, or cut by the budget: no objective values to tell
                    self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                else:
                    self.study.tell(trial, value if self.objectives else float(value))


def make_random(name: str, settings: ControllerSettings) -> RandomController:
    return RandomController()


def make_optuna(name: str, settings: ControllerSettings) -> OptunaController:
    storage = optuna_storage(settings.out_dir) if settings.out_dir else None
    return OptunaController(name, storage=storage, objectives=settings.objectives)
