"""Searchers that drive a policysearch env: one interface for RL agents and baselines.

A controller is given a `SearchVecEnv` (N children at once, every step logged, the budget
enforced; a stable-baselines3 `VecEnv`) and drives it until `recorder.exhausted`. Call order:
`run(recorder, seed)`, then optionally `save(path)`. With N workers: SB3 agents get ``n_envs = N``
with rollouts of the same total size, `random` samples N actions at a time, Optuna asks N trials
and tells their N results (ask / tell batches).

- `ppo` (default), `sac`, `a2c`, `td3`, `ddpg` (AMC's family): stable-baselines3 agents with settings sized
  for expensive envs (tiny rollouts and batches, so learning starts within a few episodes).
  PPO and A2C sample an unsquashed Gaussian that the env clips to the action box: once the mean
  drifts past a bound, every sample acts the same and the gradient stops pulling it back (seen on
  Schedule-v1: means of +1.2 and +2.0, constant x2 controllers); SAC's tanh-squashed Gaussian
  cannot leave the box, which is why the README's LR controllers now use it.
- `random`: uniform over the same action space; the baseline every claim must beat.
- `es`: CMA-ES over a linear feedback policy's weights, every candidate of a generation run on the
  same episodes (`policysearch.es`); needs the `optuna` extra (its `cmaes` package).
- `tpe`, `cmaes`: Optuna's samplers, one trial per child training: over the action vector of a
  static-mode (one-step) env, or over an env's own low-dimensional episode family
  (`SuggestsEpisodes`: Augment's final policy and its ramp, Schedule-v0's family and peak LR);
  needs the `optuna` extra.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policysearch.checks import check_choice
from policysearch.errors import ConfigError, MissingExtraError, UnknownNameError
from policysearch.pareto import Objective, batch_trial_values, study_options
from policysearch.search_env import SuggestsEpisodes
from policysearch.tracking import create_study, optuna_storage

if TYPE_CHECKING:
    from policysearch.search import SearchVecEnv

CONTROLLERS = ("ppo", "sac", "a2c", "td3", "ddpg", "random", "tpe", "cmaes", "pbt", "es", "probe")
RL_CONTROLLERS = ("ppo", "sac", "a2c", "td3", "ddpg")


class Controller(abc.ABC):
    """Base class: `run` drives the recorder until its budget is spent; `save` writes the controller."""

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


class RandomController(Controller):
    """Uniform random actions from the env's action space."""

    name = "random"

    def run(self, recorder: SearchVecEnv, seed: int) -> None:
        recorder.action_space.seed(seed)
        recorder.seed(seed)
        recorder.reset()
        while not recorder.exhausted:
            recorder.step(np.stack([recorder.action_space.sample() for _ in range(recorder.num_envs)]))


class SB3Controller(Controller):
    """A stable-baselines3 agent whose rollouts are sized to a handful of episodes.

    Args:
        algo: "ppo", "sac", "a2c", "td3" or "ddpg".
        episode_length: env steps per episode, to size rollouts and warm-up.
        tensorboard_log: a folder for SB3's TensorBoard logger (needs the `tensorboard` extra).
        verbose: SB3's verbosity.
        checkpoint: where to save the agent after every rollout (the run folder's controller.zip).
    """

    def __init__(self, algo: str, episode_length: int, tensorboard_log: str | None = None, verbose: int = 0,
                 checkpoint: Path | None = None) -> None:
        check_choice("RL controller", algo, RL_CONTROLLERS)
        self.name, self.episode_length = algo, max(1, episode_length)
        self.tensorboard_log, self.verbose = tensorboard_log, verbose
        self.model: Any = None
        self.checkpoint = checkpoint  # saved after every rollout when set

    def _build(self, env: Any, seed: int) -> Any:
        import stable_baselines3 as sb3

        n_envs = env.num_envs

        common: dict[str, Any] = {"seed": seed, "device": "cpu", "verbose": self.verbose,
                                  "tensorboard_log": self.tensorboard_log, "policy_kwargs": {"net_arch": [64, 64]}}
        # Every env step costs a child training: start with less exploration noise than SB3's
        # default (std 0.6 instead of 1.0 in a [-1, 1] box, where std 1 is mostly clipping).
        on_policy_kwargs: dict[str, Any] = {"net_arch": [64, 64], "log_std_init": -0.5}
        ep = self.episode_length
        if self.name == "ppo":
            # Two episodes (at least 8 steps) per update: learning starts after the second episode;
            # with N workers each rollout holds the same number of steps in total, N per env step.
            n_steps = -(-max(8, 2 * ep) // n_envs)
            return sb3.PPO("MlpPolicy", env, n_steps=n_steps, batch_size=n_steps * n_envs, n_epochs=10,
                           learning_rate=1e-3,
                           gamma=1.0, gae_lambda=0.95, ent_coef=0.0, **{**common, "policy_kwargs": on_policy_kwargs})
        if self.name == "a2c":
            return sb3.A2C("MlpPolicy", env, n_steps=-(-ep // n_envs), learning_rate=7e-4, gamma=1.0, ent_coef=0.0,
                           **{**common, "policy_kwargs": on_policy_kwargs})
        if self.name in ("td3", "ddpg"):
            # AMC's setting: a random warm-up (here two episodes), then a deterministic actor with
            # Gaussian exploration noise (std 0.5 in the [-1, 1] box, AMC's truncated normal analogue).
            from stable_baselines3.common.noise import NormalActionNoise

            dim = int(np.prod(env.action_space.shape))
            noise = NormalActionNoise(np.zeros(dim), 0.5 * np.ones(dim))
            algo = sb3.TD3 if self.name == "td3" else sb3.DDPG
            return algo("MlpPolicy", env, learning_starts=2 * ep, batch_size=16, buffer_size=10_000, train_freq=1,
                        gradient_steps=2, gamma=1.0, learning_rate=1e-3, action_noise=noise, **common)
        return sb3.SAC("MlpPolicy", env, learning_starts=2 * ep, batch_size=16, buffer_size=10_000, train_freq=1,
                       gradient_steps=2, gamma=1.0, learning_rate=1e-3, **common)

    def run(self, recorder: SearchVecEnv, seed: int) -> None:
        from stable_baselines3.common.callbacks import BaseCallback

        if self.tensorboard_log:
            try:
                import tensorboard  # noqa: F401
            except ImportError as exc:
                raise MissingExtraError("tensorboard", "tensorboard", "--tensorboard") from exc

        controller = self

        class StopWhenSpent(BaseCallback):
            def _on_step(self) -> bool:
                return not recorder.exhausted

            def _on_rollout_end(self) -> None:
                # A checkpoint at SB3's natural boundary, for inspection (`PPO.load`) while the
                # search runs; resume does not need it: it replays the log from the seed.
                if controller.checkpoint is not None and not recorder.replaying:
                    controller.save(controller.checkpoint)

        self.model = self._build(recorder, seed)  # SB3 seeds the envs (seed + i) and resets them
        self.model.learn(total_timesteps=recorder.step_limit(), callback=StopWhenSpent(), progress_bar=False)

    def save(self, path: str | Path) -> Path | None:
        if self.model is None:
            return None
        from policysearch.files import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            self.model.save(tmp)
        return path


class OptunaController(Controller):
    """Optuna's TPE or CMA-ES. One trial is one child training: over the action vector in a
    static-mode env, or, for an env that `SuggestsEpisodes` (Schedule-v0: a cosine / onecycle
    family and its peak LR; Augment: a final policy held or ramped up from none), over that env's
    own low-dimensional baseline space.

    Args:
        sampler: "tpe" or "cmaes".
        storage: an Optuna storage URL for the study (the driver passes the run folder's optuna.db);
            None: in memory.
        objectives: `policysearch.pareto.Objective` s: a multi-objective study over them (TPE only
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
            if self.objectives:  # each trial's objectives, from its worker's episode (policysearch.pareto)
                values = batch_trial_values(recorder.episodes[start:], n, self.objectives)
            for trial, value in zip(trials, values):
                if value is None:  # diverged, or cut by the budget: no objective values to tell
                    self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                else:
                    self.study.tell(trial, value if self.objectives else float(value))


def check_controller_env(name: str, base: Any) -> None:
    """Refuse an env that controller `name` cannot drive, before a run opens anything (most take any env).

    Raises:
        ConfigError: For `probe` on anything but Schedule-v1 with a base schedule.
    """
    if name == "probe":
        from policysearch.probe import check_env

        check_env(base)


def make_controller(name: str, episode_length: int, tensorboard_log: str | None = None,
                    verbose: int = 0, out_dir: Path | None = None, objectives: Sequence[Objective] = (),
                    population: int | None = None, es_tasks: int | None = None) -> Controller:
    """A controller by name (see CONTROLLERS); an Optuna study is stored in `out_dir`/optuna.db when given;
    `population` and `es_tasks` size the `es` controller's generations (None: its defaults)."""
    if name in RL_CONTROLLERS:
        return SB3Controller(name, episode_length, tensorboard_log=tensorboard_log, verbose=verbose,
                             checkpoint=out_dir / "controller.zip" if out_dir else None)
    if name == "random":
        return RandomController()
    if name in ("tpe", "cmaes"):
        return OptunaController(name, storage=optuna_storage(out_dir) if out_dir else None, objectives=objectives)
    if name == "pbt":
        from policysearch.population import PBTController

        return PBTController()
    if name == "es":
        from policysearch.es import DEFAULT_TASKS_PER_GENERATION, LinearESController

        return LinearESController(population, es_tasks or DEFAULT_TASKS_PER_GENERATION)
    if name == "probe":
        from policysearch.probe import ProbeController

        return ProbeController()
    raise UnknownNameError("controller", name, CONTROLLERS)
