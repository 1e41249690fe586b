"""Searchers that drive a policysearch env: one interface for RL agents and baselines.

A controller is given a `SearchRecorder` (the env wrapped so that every step is logged and the
budget is enforced) and drives it until `recorder.exhausted`. Call order: `run(recorder, seed)`,
then optionally `save(path)`.

- `ppo` (default), `sac`, `a2c`: stable-baselines3 agents with settings sized for expensive envs
  (tiny rollouts and batches, so learning starts within a few episodes).
- `random`: uniform over the same action space; the baseline every claim must beat.
- `tpe`, `cmaes`: Optuna's samplers over the action vector, for static-mode (one-step) envs;
  needs the `optuna` extra.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policysearch.errors import ConfigError, MissingExtraError, UnknownNameError
from policysearch.pareto import Objective, study_options, trial_values
from policysearch.search_env import SuggestsEpisodes
from policysearch.tracking import create_study, optuna_storage

if TYPE_CHECKING:
    from policysearch.search import SearchRecorder

CONTROLLERS = ("ppo", "sac", "a2c", "random", "tpe", "cmaes")
RL_CONTROLLERS = ("ppo", "sac", "a2c")


class Controller(abc.ABC):
    """Base class: `run` drives the recorder until its budget is spent; `save` writes the controller."""

    name: str = "controller"

    @abc.abstractmethod
    def run(self, recorder: SearchRecorder, seed: int) -> None:
        """Drive `recorder` until `recorder.exhausted`; `recorder.base` is the env's `SearchEnv` side."""

    def save(self, path: str | Path) -> Path | None:
        """Write the learned controller; None when there is nothing to save."""
        return None


class RandomController(Controller):
    """Uniform random actions from the env's action space."""

    name = "random"

    def run(self, recorder: SearchRecorder, seed: int) -> None:
        recorder.action_space.seed(seed)
        recorder.reset(seed=seed)
        while not recorder.exhausted:
            _, _, terminated, truncated, _ = recorder.step(recorder.action_space.sample())
            if (terminated or truncated) and not recorder.exhausted:
                recorder.reset()


class SB3Controller(Controller):
    """A stable-baselines3 agent whose rollouts are sized to a handful of episodes.

    Args:
        algo: "ppo", "sac" or "a2c".
        episode_length: env steps per episode, to size rollouts and warm-up.
        tensorboard_log: a folder for SB3's TensorBoard logger (needs the `tensorboard` extra).
        verbose: SB3's verbosity.
    """

    def __init__(self, algo: str, episode_length: int, tensorboard_log: str | None = None, verbose: int = 0) -> None:
        if algo not in RL_CONTROLLERS:
            raise UnknownNameError("RL controller", algo, RL_CONTROLLERS)
        self.name, self.episode_length = algo, max(1, episode_length)
        self.tensorboard_log, self.verbose = tensorboard_log, verbose
        self.model: Any = None

    def _build(self, env: Any, seed: int) -> Any:
        import stable_baselines3 as sb3

        common: dict[str, Any] = {"seed": seed, "device": "cpu", "verbose": self.verbose,
                                  "tensorboard_log": self.tensorboard_log, "policy_kwargs": {"net_arch": [64, 64]}}
        # Every env step costs a child training: start with less exploration noise than SB3's
        # default (std 0.6 instead of 1.0 in a [-1, 1] box, where std 1 is mostly clipping).
        on_policy_kwargs: dict[str, Any] = {"net_arch": [64, 64], "log_std_init": -0.5}
        ep = self.episode_length
        if self.name == "ppo":
            # Two episodes (at least 8 steps) per update: learning starts after the second episode.
            n_steps = max(8, 2 * ep)
            return sb3.PPO("MlpPolicy", env, n_steps=n_steps, batch_size=n_steps, n_epochs=10, learning_rate=1e-3,
                           gamma=1.0, gae_lambda=0.95, ent_coef=0.0, **{**common, "policy_kwargs": on_policy_kwargs})
        if self.name == "a2c":
            return sb3.A2C("MlpPolicy", env, n_steps=ep, learning_rate=7e-4, gamma=1.0, ent_coef=0.0,
                           **{**common, "policy_kwargs": on_policy_kwargs})
        return sb3.SAC("MlpPolicy", env, learning_starts=2 * ep, batch_size=16, buffer_size=10_000, train_freq=1,
                       gradient_steps=2, gamma=1.0, learning_rate=1e-3, **common)

    def run(self, recorder: SearchRecorder, seed: int) -> None:
        from stable_baselines3.common.callbacks import BaseCallback

        if self.tensorboard_log:
            try:
                import tensorboard  # noqa: F401
            except ImportError as exc:
                raise MissingExtraError("tensorboard", "tensorboard", "--tensorboard") from exc

        class StopWhenSpent(BaseCallback):
            def _on_step(self) -> bool:
                return not recorder.exhausted

        recorder.reset(seed=seed)  # seed the env's stream; SB3 resets again without a seed
        self.model = self._build(recorder, seed)
        self.model.learn(total_timesteps=recorder.step_limit(), callback=StopWhenSpent(), progress_bar=False)

    def save(self, path: str | Path) -> Path | None:
        if self.model is None:
            return None
        path = Path(path)
        self.model.save(path)
        return path


class OptunaController(Controller):
    """Optuna's TPE or CMA-ES. One trial is one child training: over the action vector in a
    static-mode env, or, for an env that `SuggestsEpisodes` (Schedule-v0: a cosine / onecycle
    family and its peak LR), over that env's own low-dimensional baseline space.

    Args:
        sampler: "tpe" or "cmaes".
        storage: an Optuna storage URL for the study (the driver passes the run folder's optuna.db);
            None: in memory.
        objectives: `policysearch.pareto.Objective` s: a multi-objective study over them (TPE only
            for two or more) instead of maximising the reward.
    """

    def __init__(self, sampler: str, storage: str | None = None, objectives: Sequence[Objective] = ()) -> None:
        if sampler not in ("tpe", "cmaes"):
            raise UnknownNameError("Optuna sampler", sampler, ("tpe", "cmaes"))
        self.name = sampler
        self.storage, self.objectives = storage, tuple(objectives)
        self.study_options = study_options(self.objectives, sampler)  # refuses CMA-ES with several objectives
        self.study: Any = None

    def run(self, recorder: SearchRecorder, seed: int) -> None:
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
        dim = int(np.prod(shape))
        recorder.reset(seed=seed)
        first = True

        def reward_objective(trial: Any) -> float:
            nonlocal first
            if not first:
                recorder.reset()
            first = False
            if suggester is not None:
                total = 0.0
                for action in suggester.suggest_episode(trial):
                    _, reward, terminated, truncated, _ = recorder.step(action)
                    total += float(reward)
                    if terminated or truncated:
                        break
                return total
            action = np.array([trial.suggest_float(f"a{i}", -1.0, 1.0) for i in range(dim)], dtype=np.float32)
            _, reward, _, _, _ = recorder.step(action)
            return float(reward)

        def objective(trial: Any) -> float | list[float]:
            reward = reward_objective(trial)
            if not self.objectives:
                return reward
            values = trial_values(recorder.episodes[-1], self.objectives)  # multi-objective (policysearch.pareto)
            if values is None:
                raise optuna.TrialPruned("the child diverged")
            return values

        while not recorder.exhausted:
            self.study.optimize(objective, n_trials=1)


def make_controller(name: str, episode_length: int, tensorboard_log: str | None = None,
                    verbose: int = 0, out_dir: Path | None = None, objectives: Sequence[Objective] = ()) -> Controller:
    """A controller by name (see CONTROLLERS); an Optuna study is stored in `out_dir`/optuna.db when given."""
    if name in RL_CONTROLLERS:
        return SB3Controller(name, episode_length, tensorboard_log=tensorboard_log, verbose=verbose)
    if name == "random":
        return RandomController()
    if name in ("tpe", "cmaes"):
        return OptunaController(name, storage=optuna_storage(out_dir) if out_dir else None, objectives=objectives)
    raise UnknownNameError("controller", name, CONTROLLERS)
