"""What the policysearch envs share, written once.

- `ChildConfig`: the proxy task and the child's training, i.e. the keyword arguments every env
  takes. An env accepts them flat (`gym.make(id, dataset="digits", model="cnn")`) or as one
  `child=ChildConfig(...)` object; flat ones override the object's fields.
- `ChildEnv`: a Gymnasium env implementing the search contract
  (`policysearch.search_env.SearchEnv`) around a child model: argument checks, the
  device-resident data, each episode's child seed, `describe()` and `export_files()`.
  Compress-v0 builds on it directly: its episode is one decision per layer, then one fine-tune.
- `ChildTrainingEnv`: adds segmented training (`episode_length` segments of `steps_per_segment`
  optimizer steps of one child) and `_new_trainer()`; Augment-v0 and Schedule-v0 build on it.

A subclass calls `_child_config(child, child_kwargs)` first in its constructor (checks, no data
loaded), then `_setup_child(config, data)` (or `_setup_child_training`), and sets `spec_kwargs`,
which `describe()` reports.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym

from policysearch.errors import ConfigError, UnknownNameError
from policysearch.metrics import COST_METRICS, REWARD_METRICS


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class ChildConfig:
    """The proxy task and the child's training, shared by every env (validated on construction).

    Attributes:
        dataset: "digits", "fashion-mnist", "cifar10"; None: "digits" (Compress-v0: the
            checkpoint's data set). Ignored when the env is given `data=`, a prepared DeviceData.
        model: A registered model name (not Compress-v0: its teacher is the model).
        train_size: Cap on the training split (proxy tasks); None: all of it.
        val_size: The validation split carved from the training data: a fraction or a count.
        data_dir: Folder with the data set's files.
        split_seed: Seed of the fixed train / val split.
        device: "cpu", "cuda", "auto".
        batch_size: The child's batch size.
        lr: The child's base learning rate; None: the model's (Augment-v0 only).
        optimizer: "sgd", "adamw"; None: the model's (not Compress-v0).
        weight_decay, label_smoothing, amp: As in `policysearch.trainer.TrainConfig` (not Compress-v0).
        episode_length: Segments per child training (not Compress-v0: one step per layer).
        steps_per_segment: Optimizer steps per segment; None: one epoch of the training split
            (not Compress-v0).
        reward_metric: "accuracy", "macro_f1", "neg_ece", "neg_nll", "fgsm_accuracy" (Compress-v0: accuracy).
        cost_weight: Reward -= cost_weight x the cost in `cost_metric` units (not Compress-v0).
        cost_metric: "seconds" or "tflops" (not Compress-v0).
        divergence_penalty: The reward of a diverged step is minus this.
        child_seed: None draws each child's seed from the env's seed; an int fixes it for every
            episode (common random numbers).

    Raises:
        ConfigError: For any invalid field; UnknownNameError (a ConfigError) for an unknown name.
    """

    dataset: str | None = None
    model: str = "cnn"
    train_size: int | None = None
    val_size: float | int = 0.1
    data_dir: str | None = None
    split_seed: int = 0
    device: str = "cpu"
    batch_size: int = 128
    lr: float | None = None
    optimizer: str | None = None
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    amp: bool = True
    episode_length: int = 4
    steps_per_segment: int | None = None
    reward_metric: str = "accuracy"
    cost_weight: float = 0.0
    cost_metric: str = "seconds"
    divergence_penalty: float = 1.0
    child_seed: int | None = None

    def __post_init__(self) -> None:
        if self.reward_metric not in REWARD_METRICS:
            raise UnknownNameError("reward metric", self.reward_metric, REWARD_METRICS)
        if self.cost_metric not in COST_METRICS:
            raise UnknownNameError("cost metric", self.cost_metric, COST_METRICS)
        for name in ("episode_length", "batch_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"{name}={value!r}: expected an int of at least 1")
        if self.steps_per_segment is not None and (not _is_int(self.steps_per_segment) or self.steps_per_segment < 1):
            raise ConfigError(f"steps_per_segment={self.steps_per_segment!r}: expected an int of at least 1 "
                              "(or None: one epoch)")
        for name in ("cost_weight", "divergence_penalty"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name}={getattr(self, name)!r}: expected >= 0")


class ChildEnv(gym.Env):
    """Base of every policysearch env: the `SearchEnv` contract around a child model.

    Subclasses set `ENV_ID`, list in `UNUSED_CHILD_FIELDS` the `ChildConfig` fields they do not
    read, set `spec_kwargs` (the settings `describe()` reports) and implement `reset`, `step`
    and `export`.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    ENV_ID = ""
    UNUSED_CHILD_FIELDS: ClassVar[tuple[str, ...]] = ()
    mode = "schedule"  # one episode is one child training (see policysearch.search_env.MODES)

    @classmethod
    def _child_config(cls, child: ChildConfig | None, kwargs: dict[str, Any]) -> ChildConfig:
        """`child` with the flat keyword arguments applied, checked before any data is loaded.

        Raises:
            TypeError: For a keyword this env does not take (as Python would for a plain signature).
            ConfigError: For a bad value, or a field this env does not use set away from its default.
        """
        accepted = {f.name for f in dataclasses.fields(ChildConfig)} - set(cls.UNUSED_CHILD_FIELDS)
        for key in kwargs:
            if key not in accepted:
                raise TypeError(f"{cls.__name__}.__init__() got an unexpected keyword argument {key!r}")
        if child is not None and not isinstance(child, ChildConfig):
            raise ConfigError(f"child is a {type(child).__name__}, expected a ChildConfig (or flat keyword arguments)")
        config = dataclasses.replace(child, **kwargs) if child is not None else ChildConfig(**kwargs)
        default = ChildConfig()
        for name in cls.UNUSED_CHILD_FIELDS:
            if getattr(config, name) != getattr(default, name):
                raise ConfigError(f"{cls.ENV_ID} does not use ChildConfig.{name} (given {getattr(config, name)!r}); "
                                  f"leave it at {getattr(default, name)!r}")
        return config

    def _setup_child(self, child: ChildConfig, data: Any) -> None:
        """Prepare the data once (unless `data` is given) and set the contract's fields from `child`."""
        from policysearch.data import prepare
        from policysearch.device import device_for_data, resolve_device

        self.child_config = child
        if data is not None:
            device_for_data(child.device, data.device)  # `device` names the data's device ("auto" follows it), or raise
        self.data = data if data is not None else prepare(
            child.dataset or "digits", val_size=child.val_size, train_size=child.train_size, seed=child.split_seed,
            device=resolve_device(child.device), data_dir=child.data_dir,
        )
        self.reward_metric = child.reward_metric
        self.cost_metric, self.cost_weight = child.cost_metric, child.cost_weight
        self.divergence_penalty, self.child_seed = child.divergence_penalty, child.child_seed
        self.spec_kwargs: dict[str, Any] = {}
        self.last_seconds = 0.0  # wall time of the last step: kept out of `info` so rewards stay reproducible

    def _draw_child_seed(self) -> int:
        """The seed of this episode's child. It is drawn from the env's stream even when
        `child_seed` fixes it, so the stream (and so every later episode) does not depend on that choice."""
        drawn = int(self.np_random.integers(0, 2**31 - 1))
        return drawn if self.child_seed is None else self.child_seed

    # ------------------------------------------------------------------ search contract
    def describe(self) -> dict[str, Any]:
        """The settings that define this env's rewards, for provenance."""
        return {"env_id": self.ENV_ID, "mode": self.mode, **self.spec_kwargs,
                "dataset_fingerprint": self.data.fingerprint, "split": self.data.split}

    def export_files(self, out_dir: Path, controller_path: Path | None, controller: str,
                     provenance: dict[str, Any]) -> dict[str, str]:
        """Files exported besides the artefact: none unless a subclass says otherwise."""
        return {}


class ChildTrainingEnv(ChildEnv):
    """Base of the envs whose episode trains one real child model in segments (Augment-v0, Schedule-v0).

    A subclass also sets `space`, the frozen dataclass that maps its actions (reported by `describe()`).
    """

    space: Any

    def _setup_child_training(self, child: ChildConfig, data: Any) -> None:
        """The child's training config (checked before any data is loaded), the data, and the segments."""
        from policysearch.trainer import TrainConfig

        self.config = TrainConfig(model=child.model, batch_size=child.batch_size, lr=child.lr,
                                  optimizer=child.optimizer, weight_decay=child.weight_decay,
                                  label_smoothing=child.label_smoothing, amp=child.amp, device=str(child.device))
        self._setup_child(child, data)
        steps_per_segment = child.steps_per_segment
        if steps_per_segment is None:
            steps_per_segment = max(1, len(self.data.y_train) // child.batch_size)  # one epoch
        self.episode_length, self.steps_per_segment = child.episode_length, steps_per_segment
        self.spec_kwargs = {
            "dataset": self.data.name, "model": child.model, "episode_length": child.episode_length,
            "steps_per_segment": steps_per_segment, "reward_metric": child.reward_metric,
            "cost_weight": child.cost_weight, "cost_metric": child.cost_metric, "batch_size": child.batch_size,
            "lr": self.config.lr, "optimizer": self.config.optimizer, "child_seed": child.child_seed,
        }
        self.trainer: Any = None

    def _new_trainer(self, total_steps: int | None = None) -> Any:
        """A fresh child, seeded by `_draw_child_seed()`, for `total_steps` (default: the whole episode)."""
        from policysearch.trainer import Trainer

        config = dataclasses.replace(self.config, seed=self._draw_child_seed())
        steps = total_steps if total_steps is not None else self.steps_per_segment * self.episode_length
        self.trainer = Trainer(self.data, config, total_steps=steps)
        return self.trainer

    def describe(self) -> dict[str, Any]:
        """The settings that define this env's rewards, its action mapping included, for provenance."""
        return {**super().describe(), "space": dataclasses.asdict(self.space)}
