"""What the policysearch envs share, written once.

- `ChildConfig`: the proxy task and the child's training, i.e. the keyword arguments every env
  takes. An env accepts them flat (`gym.make(id, dataset="digits", model="cnn")`) or as one
  `child=ChildConfig(...)` object; flat ones override the object's fields.
- `ChildEnv`: a Gymnasium env implementing the search contract
  (`policysearch.envs.contract.SearchEnv`) around a child model: argument checks, the
  device-resident data, each episode's child seed, `describe()` and `export_files()`.
  Compress-v0 builds on it directly: its episode is one decision per layer, then one fine-tune.
- `ChildTrainingEnv`: adds segmented training (`episode_length` segments of `steps_per_segment`
  optimizer steps of one child) and `_new_trainer()`; Augment-v0 and Schedule-v0 build on it.

A subclass calls `_child_config(child, child_kwargs)` first in its constructor (checks, no data
loaded), then `_setup_child(config, data)` (or `_setup_child_training`), and sets `spec_kwargs`,
which `describe()` reports.

Child state (`get_state` / `set_state`): the header, the settings check, the env's `np_random`,
the episode's steps so far and the last observation are handled here once; `ChildTrainingEnv`
adds the trainer's state; each env adds its own episode fields through `_episode_state()` /
`_set_episode_state()` and says how its current observation is built (`_current_observation`).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from policysearch.checks import check_choice, check_int, check_number
from policysearch.data import prepare
from policysearch.device import device_for_data, resolve_device
from policysearch.errors import ConfigError
from policysearch.files import json_safe
from policysearch.metrics import COST_METRICS, REWARD_METRICS
from policysearch.models import resolve_model
from policysearch.models.weights import read_weights
from policysearch.tasks import get_task
from policysearch.train.checkpoint import CHILD_STATE_KIND, CHILD_STATE_VERSION, child_state_problem
from policysearch.train.trainer import TrainConfig, Trainer


@dataclasses.dataclass(frozen=True)
class ChildConfig:
    """The proxy task and the child's training, shared by every env (validated on construction).

    Attributes:
        dataset: "digits", "fashion-mnist", "cifar10"; None: "digits" (Compress-v0: the
            checkpoint's data set). Ignored when the env is given `data=`, a prepared DeviceData.
        model: Any form `policysearch.models.resolve_model` takes (a name, ``"module:function"``, a
            file, ``"torchvision:NAME"``, ``"timm:NAME"``, a factory or an ``nn.Module`` template);
            kept as the resolved name (not Compress-v0: its teacher is the model).
        weights: A weights file every child starts from (`policysearch.models.weights`; not Compress-v0).
        normalize: How the inputs are normalised when the env prepares the data itself
            (`policysearch.data.preprocess`); data given as `data=` carries its own.
        train_size: Cap on the training split (proxy tasks); None: all of it.
        val_size: The validation split carved from the training data: a fraction or a count.
        data_dir: Folder with the data set's files.
        split_seed: Seed of the fixed train / val split.
        device: "cpu", "cuda", "auto".
        batch_size: The child's batch size.
        lr: The child's base learning rate; None: the model's (Augment-v0 only).
        optimizer: "sgd", "adamw"; None: the model's (not Compress-v0).
        weight_decay, label_smoothing, amp: As in `policysearch.train.trainer.TrainConfig` (not Compress-v0).
        episode_length: Segments per child training (not Compress-v0: one step per layer).
        steps_per_segment: Optimizer steps per segment; None: one epoch of the training split
            (not Compress-v0).
        reward_metric: None: the data's task default (accuracy; miou; psnr). Classification: "accuracy",
            "macro_f1", "neg_ece", "neg_nll", "fgsm_accuracy"; segmentation: "miou", "pixel_accuracy",
            "neg_nll"; restoration: "psnr", "ssim", "neg_mse" (Compress-v0: the task default).
        cost_weight: Reward -= cost_weight x the cost in `cost_metric` units (not Compress-v0).
        cost_metric: "seconds" or "tflops" (not Compress-v0).
        divergence_penalty: The reward of a diverged step is minus this.
        child_seed: None draws each child's seed from the env's seed; an int fixes it for every
            episode (common random numbers).

    Raises:
        ConfigError: For any invalid field; UnknownNameError (a ConfigError) for an unknown name.
    """

    dataset: str | None = None
    model: Any = "cnn"
    weights: str | None = None
    normalize: str = "standardize"
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
    reward_metric: str | None = None
    cost_weight: float = 0.0
    cost_metric: str = "seconds"
    divergence_penalty: float = 1.0
    child_seed: int | None = None

    def __post_init__(self) -> None:
        # Values are checked, not normalised: describe() reports them as given; only a model given as
        # an object is kept by its name, which is what a run records and worker processes resolve.
        object.__setattr__(self, "model", resolve_model(self.model).name)
        if self.weights is not None:
            object.__setattr__(self, "weights", str(self.weights))
        if self.reward_metric is not None:
            check_choice("reward metric", self.reward_metric, REWARD_METRICS)
        check_choice("cost metric", self.cost_metric, COST_METRICS)
        check_int("episode_length", self.episode_length, 1)
        check_int("batch_size", self.batch_size, 1)
        if self.steps_per_segment is not None:
            check_int("steps_per_segment (None: one epoch)", self.steps_per_segment, 1)
        check_number("cost_weight", self.cost_weight, 0.0)
        check_number("divergence_penalty", self.divergence_penalty, 0.0)
        check_int("split_seed", self.split_seed, 0)
        if self.child_seed is not None:
            check_int("child_seed (None: drawn from the env's seed)", self.child_seed, 0)


class ChildEnv(gym.Env):
    """Base of every policysearch env: the `SearchEnv` contract around a child model.

    Subclasses set `ENV_ID`, list in `UNUSED_CHILD_FIELDS` the `ChildConfig` fields they do not
    read, set `spec_kwargs` (the settings `describe()` reports) and implement `reset`, `step`
    and `export`.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    ENV_ID = ""
    UNUSED_CHILD_FIELDS: ClassVar[tuple[str, ...]] = ()
    mode = "schedule"  # one episode is one child training (see policysearch.envs.contract.MODES)

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

        self.child_config = child
        if data is not None:
            device_for_data(child.device, data.device)  # `device` names the data's device ("auto" follows it), or raise
        self.data = data if data is not None else prepare(
            child.dataset or "digits", val_size=child.val_size, train_size=child.train_size, seed=child.split_seed,
            device=resolve_device(child.device), data_dir=child.data_dir, normalize=child.normalize,
        )
        self.reward_metric = get_task(self.data.task).reward_metric(child.reward_metric)
        self.cost_metric, self.cost_weight = child.cost_metric, child.cost_weight
        self.divergence_penalty, self.child_seed = child.divergence_penalty, child.child_seed
        self.spec_kwargs: dict[str, Any] = {}
        self.last_seconds = 0.0  # wall time of the last step: kept out of `info` so rewards stay reproducible
        self._episode_steps: list[dict[str, Any]] = []  # this episode's steps so far, as the driver logs them

    def _log_step(self, info: dict[str, Any], reward: float) -> None:
        """Keep a step of the current episode (its `info` and reward), for `get_state()`."""
        self._episode_steps.append(copy.deepcopy({**info, "reward": float(reward)}))

    def _advance_only(self, seed: int | None) -> tuple[np.ndarray, dict[str, Any]]:
        """`reset(options={"advance_only": True})`: move the env's random stream past one reset
        without building the child (no model, no validation pass) — what a resumed search does for
        an episode its log already holds. The observation is a placeholder (zeros); `info` holds
        the episode's child seed. Step only after a full `reset()` or a `set_state()`."""
        gym.Env.reset(self, seed=seed)
        child_seed = self._draw_child_seed()  # every reset draws exactly one child seed
        obs = np.zeros(self.observation_space.shape, dtype=self.observation_space.dtype)
        return obs, {"child_seed": child_seed, "advance_only": True}

    def _draw_child_seed(self) -> int:
        """The seed of this episode's child. It is drawn from the env's stream even when
        `child_seed` fixes it, so the stream (and so every later episode) does not depend on that choice."""
        drawn = int(self.np_random.integers(0, 2**31 - 1))
        return drawn if self.child_seed is None else self.child_seed

    # ------------------------------------------------------------------ search contract
    def describe(self) -> dict[str, Any]:
        """The settings that define this env's rewards, for provenance."""
        data = self.data.describe()
        return {"env_id": self.ENV_ID, "mode": self.mode, **self.spec_kwargs,
                "dataset_fingerprint": self.data.fingerprint, "split": self.data.split,
                **{k: data[k] for k in ("classes", "normalization", "label_map", "task") if k in data}}

    def export_files(self, out_dir: Path, controller_path: Path | None, controller: str,
                     provenance: dict[str, Any]) -> dict[str, str]:
        """Files exported besides the artefact: none unless a subclass says otherwise."""
        return {}

    # ------------------------------------------------------------------ child state
    # `describe()` keys a state need not share with the env it is set into (e.g. where a file was read from).
    STATE_FREE_SETTINGS: ClassVar[tuple[str, ...]] = ()
    # `describe()` keys added after states were first written: a state without one predates it.
    SETTINGS_ADDED_LATER: ClassVar[tuple[str, ...]] = ("weight_decay", "label_smoothing", "amp", "divergence_penalty")

    def get_state(self) -> dict[str, Any]:
        """The whole state of the child and its episode, as a copy: after `set_state` of it, an env
        built with the same arguments continues bit-identically on the CPU (same rewards,
        observations, infos and weights for the same actions).

        Holds only tensors and plain values (`policysearch.train.checkpoint.save_child_state` writes it,
        `load_child_state` reads it with ``torch.load(weights_only=True)``):

        - "kind", "format_version", "env_id": the header `set_state` checks;
        - "settings": `describe()`, which the env it is set into must share;
        - "np_random", "np_random_seed": the env's numpy generator (bit-generator state, plain ints);
        - "observation": the observation the env returned last (None before the first reset), so a
          controller can carry on from it; "steps": the episode's steps so far (each `info` plus
          "reward", what `export` takes); "last_seconds";
        - "trainer" (envs that train a child in segments): `Trainer.state_dict()`: weights,
          optimizer, step, batch order, the generator of batches / augmentation / mixup, cost;
        - "episode": the env's own fields (segment index, last action and metrics, ...).
        """

        rng, obs = self._np_random, self._current_observation()
        return {
            "kind": CHILD_STATE_KIND,
            "format_version": CHILD_STATE_VERSION,
            "env_id": self.ENV_ID,
            "settings": json_safe(self.describe()),
            "np_random": None if rng is None else copy.deepcopy(rng.bit_generator.state),
            "np_random_seed": self._np_random_seed,
            "observation": None if obs is None else [float(v) for v in np.asarray(obs).reshape(-1)],
            "steps": copy.deepcopy(self._episode_steps),
            "last_seconds": float(self.last_seconds),
            **self._child_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Make this env continue the child and episode `state` (from `get_state`) describes.

        Everything is checked before the env changes; the state is copied, so it can be set into
        several envs (a population copying a strong child into weak ones). Call it on
        `env.unwrapped`; with `gym.make`'s wrappers, `reset()` once first, as they refuse a step
        before any reset.

        Raises:
            ConfigError: The state is of another env, format version or settings (data set, model,
                segments, action space, ...), or lacks a field; the message names which.
        """

        problem = child_state_problem(state, self.ENV_ID)
        if problem:
            raise ConfigError(f"set_state: {problem}")
        steps, rng_state, rng_seed, last_seconds = state_fields(
            state, "", ("steps", "np_random", "np_random_seed", "last_seconds"))
        self._check_settings(state_fields(state, "", ("settings",))[0])
        rng = None if rng_state is None else _generator_from_state(rng_state)
        if not isinstance(steps, list):
            raise ConfigError(f"set_state: field 'steps' is a {type(steps).__name__}, expected a list")
        self._set_child_state(state)
        self._np_random, self._np_random_seed = rng, rng_seed
        self._episode_steps = copy.deepcopy(steps)
        self.last_seconds = float(last_seconds)

    def _check_settings(self, theirs: Any) -> None:
        if not isinstance(theirs, dict):
            raise ConfigError(f"set_state: field 'settings' is a {type(theirs).__name__}, expected a dict")
        ours = json_safe(self.describe())
        differ = [k for k in sorted(set(ours) | set(theirs))
                  if k not in self.STATE_FREE_SETTINGS and ours.get(k) != theirs.get(k)
                  and not (k in self.SETTINGS_ADDED_LATER and k not in theirs)]
        if differ:
            shown = "; ".join(f"{k} is {_short(theirs.get(k))} in the state, {_short(ours.get(k))} here"
                              for k in differ[:3])
            raise ConfigError(f"set_state: the state is of a {self.ENV_ID} with other settings ({shown}); "
                              "set it into an env built with the same arguments")

    def _child_state(self) -> dict[str, Any]:
        """The env's own part of `get_state()` (a subclass adds the trainer or its episode fields)."""
        return {"episode": self._episode_state()}

    def _set_child_state(self, state: dict[str, Any]) -> None:
        """Restore what `_child_state` returned; check everything before changing anything."""
        self._set_episode_state(state_fields(state, "", ("episode",))[0])

    def _episode_state(self) -> dict[str, Any]:
        """The env's episode fields as plain values (segment index, last action, metrics, ...)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _episode_state")

    def _set_episode_state(self, episode: dict[str, Any]) -> None:
        """Restore what `_episode_state` returned."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _set_episode_state")

    def _current_observation(self) -> np.ndarray | None:
        """The observation the env returned last, rebuilt from its fields; None before the first reset."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _current_observation")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def state_fields(state: Any, where: str, names: tuple[str, ...]) -> list[Any]:
    """The values of `names` in a state (or its part `where`), or a ConfigError naming the first missing one."""
    what = f"the state's {where!r} part" if where else "the state"
    if not isinstance(state, dict):
        raise ConfigError(f"set_state: {what} is a {type(state).__name__}, expected a dict")
    for name in names:
        if name not in state:
            raise ConfigError(f"set_state: {what} lacks field {name!r}")
    return [state[name] for name in names]


def _generator_from_state(state: Any) -> np.random.Generator:
    """A numpy Generator whose bit generator has `state` (``Generator.bit_generator.state``)."""
    name = state.get("bit_generator") if isinstance(state, dict) else None
    kind = getattr(np.random, name, None) if isinstance(name, str) else None
    if not (isinstance(kind, type) and issubclass(kind, np.random.BitGenerator)):
        raise ConfigError(f"set_state: field 'np_random' names bit generator {name!r}; expected a numpy one "
                          "such as 'PCG64'")
    bit_generator = kind()
    try:
        bit_generator.state = copy.deepcopy(state)
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"set_state: field 'np_random' is not a {name} state ({exc})") from None
    return np.random.Generator(bit_generator)


class ChildTrainingEnv(ChildEnv):
    """Base of the envs whose episode trains one real child model in segments (Augment-v0, Schedule-v0).

    A subclass also sets `space`, the frozen dataclass that maps its actions (reported by `describe()`).
    """

    space: Any

    def _setup_child_training(self, child: ChildConfig, data: Any) -> None:
        """The child's training config (checked before any data is loaded), the data, and the segments."""

        self.config = TrainConfig(model=child.model, weights=child.weights, batch_size=child.batch_size,
                                  lr=child.lr, optimizer=child.optimizer, weight_decay=child.weight_decay,
                                  label_smoothing=child.label_smoothing, amp=child.amp, device=str(child.device))
        self._setup_child(child, data)
        steps_per_segment = child.steps_per_segment
        if steps_per_segment is None:
            steps_per_segment = max(1, len(self.data.y_train) // child.batch_size)  # one epoch
        self.episode_length, self.steps_per_segment = child.episode_length, steps_per_segment
        self.spec_kwargs = {
            "dataset": self.data.name, "model": child.model, "episode_length": child.episode_length,
            "steps_per_segment": steps_per_segment, "reward_metric": self.reward_metric,
            "cost_weight": child.cost_weight, "cost_metric": child.cost_metric, "batch_size": child.batch_size,
            "lr": self.config.lr, "optimizer": self.config.optimizer, "child_seed": child.child_seed,
            # What the child trains with and how a diverged one is scored: part of a run's identity too.
            "weight_decay": child.weight_decay, "label_smoothing": child.label_smoothing, "amp": child.amp,
            "divergence_penalty": child.divergence_penalty,
        }
        if child.weights is not None:  # the file's content is part of what the children start from
            self.spec_kwargs["weights"] = read_weights(child.weights).record()
        self.trainer: Any = None

    def _new_trainer(self, total_steps: int | None = None) -> Any:
        """A fresh child, seeded by `_draw_child_seed()`, for `total_steps` (default: the whole episode)."""
        self.trainer = self._build_trainer(self._draw_child_seed(), total_steps)
        return self.trainer

    def _build_trainer(self, seed: int, total_steps: int | None = None) -> Any:
        config = dataclasses.replace(self.config, seed=seed)
        steps = total_steps if total_steps is not None else self.steps_per_segment * self.episode_length
        return Trainer(self.data, config, total_steps=steps)

    def _child_state(self) -> dict[str, Any]:
        return {"trainer": None if self.trainer is None else self.trainer.state_dict(),
                "episode": self._episode_state()}

    def _set_child_state(self, state: dict[str, Any]) -> None:
        saved, episode = state_fields(state, "", ("trainer", "episode"))
        trainer = None
        if saved is not None:
            config, total_steps = state_fields(saved, "trainer", ("config", "total_steps"))
            seed = config.get("seed") if isinstance(config, dict) else None
            check_int("set_state: the trainer state's seed", seed, 0)
            check_int("set_state: the trainer state's total_steps", total_steps, 1)
            # A new child, so nothing of this env's current one leaks in; built from the seed (no env RNG
            # drawn), then overwritten by the state. The trainer checks the rest before it changes.
            trainer = self._build_trainer(seed, total_steps)
            trainer.load_state_dict(saved)
        self._set_episode_state(episode)
        self.trainer = trainer

    def describe(self) -> dict[str, Any]:
        """The settings that define this env's rewards, its action mapping included, for provenance."""
        record = dataclasses.asdict(self.space)
        if record.get("mixup") is True:  # the augment spaces' switch, recorded only when off (masks): the
            del record["mixup"]          # records, and so the identity, of earlier runs stay as they were
        return {**super().describe(), "space": record}
