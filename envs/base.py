"""What every env whose episode is one segmented child training shares: argument checks, the
device-resident data, the child's training config, seeding each child, and `describe()`.

Subclasses call `_setup_child_training(...)` in their constructor, `_new_trainer()` in `reset`,
and read `self.data`, `self.config`, `self.episode_length`, `self.steps_per_segment`, ...
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym

from policysearch.envs.rewards import COST_METRICS, REWARD_METRICS
from policysearch.errors import ConfigError, UnknownNameError


class ChildTrainingEnv(gym.Env):
    """Base of the envs that train a real child model in segments (Augment-v0, Schedule-v0)."""

    metadata = {"render_modes": []}
    ENV_ID = ""
    mode = "schedule"  # the search driver reads it: "schedule" = one episode is one child training

    def _setup_child_training(
        self,
        *,
        dataset: str,
        model: str,
        train_size: int | None,
        val_size: float | int,
        data_dir: str | None,
        split_seed: int,
        device: str,
        episode_length: int,
        steps_per_segment: int | None,
        reward_metric: str,
        cost_weight: float,
        cost_metric: str,
        batch_size: int,
        divergence_penalty: float,
        child_seed: int | None,
        data: Any,
        lr: float | None = None,
        optimizer: str | None = None,
    ) -> None:
        """Validate the shared arguments (before any data is loaded) and prepare the data once."""
        from policysearch.data import prepare
        from policysearch.device import device_for_data, resolve_device
        from policysearch.trainer import TrainConfig

        if reward_metric not in REWARD_METRICS:
            raise UnknownNameError("reward metric", reward_metric, REWARD_METRICS)
        if cost_metric not in COST_METRICS:
            raise UnknownNameError("cost metric", cost_metric, COST_METRICS)
        if isinstance(episode_length, bool) or not isinstance(episode_length, int) or episode_length < 1:
            raise ConfigError(f"episode_length={episode_length!r}: expected an int of at least 1")
        if cost_weight < 0 or divergence_penalty < 0:
            raise ConfigError(f"cost_weight={cost_weight}, divergence_penalty={divergence_penalty}: expected >= 0")
        self.config = TrainConfig(model=model, batch_size=batch_size, lr=lr, optimizer=optimizer, device=str(device))
        if data is not None:
            device_for_data(device, data.device)  # `device` names the data's device ("auto" follows it), or raise
        self.data = data if data is not None else prepare(
            dataset, val_size=val_size, train_size=train_size, seed=split_seed, device=resolve_device(device),
            data_dir=data_dir,
        )
        if steps_per_segment is None:
            steps_per_segment = max(1, len(self.data.y_train) // batch_size)  # one epoch
        if steps_per_segment < 1:
            raise ConfigError(f"steps_per_segment={steps_per_segment}: expected at least 1")
        self.episode_length, self.steps_per_segment = episode_length, steps_per_segment
        self.reward_metric, self.cost_weight, self.cost_metric = reward_metric, cost_weight, cost_metric
        self.divergence_penalty, self.child_seed = divergence_penalty, child_seed
        self.spec_kwargs: dict[str, Any] = {
            "dataset": self.data.name, "model": model, "episode_length": episode_length,
            "steps_per_segment": steps_per_segment, "reward_metric": reward_metric, "cost_weight": cost_weight,
            "cost_metric": cost_metric, "batch_size": batch_size, "lr": self.config.lr,
            "optimizer": self.config.optimizer, "child_seed": child_seed,
        }
        self.trainer: Any = None
        self.last_seconds = 0.0  # wall time of the last step: kept out of `info` so rewards stay reproducible

    def _new_trainer(self, total_steps: int | None = None) -> Any:
        """A fresh child. Its seed is drawn from the env's stream even when `child_seed` fixes it,
        so the stream (and so every later episode) does not depend on that choice."""
        from policysearch.trainer import Trainer

        drawn = int(self.np_random.integers(0, 2**31 - 1))
        config = dataclasses.replace(self.config, seed=drawn if self.child_seed is None else self.child_seed)
        steps = total_steps if total_steps is not None else self.steps_per_segment * self.episode_length
        self.trainer = Trainer(self.data, config, total_steps=steps)
        return self.trainer

    def describe(self) -> dict[str, Any]:
        """The settings that define this env's rewards, for provenance."""
        space = getattr(self, "space", None)
        return {"env_id": self.ENV_ID, "mode": self.mode, **self.spec_kwargs,
                "space": dataclasses.asdict(space) if dataclasses.is_dataclass(space) else None,
                "dataset_fingerprint": self.data.fingerprint, "split": self.data.split}
