"""stable-baselines3 agents as controllers, sized for envs where every step costs a child training.

PPO and A2C sample an unsquashed Gaussian that the env clips to the action box: once the mean drifts
past a bound, every sample acts the same and the gradient stops pulling it back (seen on
Schedule-v1: means of +1.2 and +2.0, constant x2 controllers); SAC's tanh-squashed Gaussian cannot
leave the box. TD3 and DDPG are AMC's family (a random warm-up, then a deterministic actor with
Gaussian exploration noise).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policysearch.checks import check_choice
from policysearch.errors import MissingExtraError
from policysearch.files import atomic_path
from policysearch.search.controllers.base import Controller, ControllerSettings

if TYPE_CHECKING:
    from policysearch.search.vecenv import SearchVecEnv

__all__ = ["RL_CONTROLLERS", "SB3Controller", "make_sb3"]

RL_CONTROLLERS = ("ppo", "sac", "a2c", "td3", "ddpg")


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
        path = Path(path)
        with atomic_path(path) as tmp:
            self.model.save(tmp)
        return path


def make_sb3(name: str, settings: ControllerSettings) -> SB3Controller:
    return SB3Controller(name, settings.episode_length, tensorboard_log=settings.tensorboard_log,
                         verbose=settings.verbose,
                         checkpoint=settings.out_dir / "controller.zip" if settings.out_dir else None)
