"""`policysearch/Augment-v1` (and the earlier `Augment-v0`): learn an augmentation policy by
training a real child model.

See `AugmentEnv` for the model card; the action spaces (`policysearch.envs.augment_space`, importable
from here) are `FullSpace` and `SmallSpace` (v1) and `AugmentSpace` (v0, kept as it was so that v0
runs stay reproducible).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from policysearch.checks import check_choice
from policysearch.envs.augment_space import SPACES, AugmentSpace, FullSpace, SmallSpace
from policysearch.envs.base import ChildConfig, ChildTrainingEnv, state_fields
from policysearch.envs.contract import MODES
from policysearch.errors import ConfigError
from policysearch.metrics import cost_units, reward_value
from policysearch.policies.augment import TRIVIAL_OPS, AugmentPolicy
from policysearch.policies.schedule import load_schedule
from policysearch.tasks import get_task

__all__ = ["AugmentEnv", "AugmentEnvV0", "AugmentSpace", "FullSpace", "SmallSpace"]

log = logging.getLogger(__name__)



class AugmentEnv(ChildTrainingEnv):
    """Learn an augmentation policy for a data set by training a real child model.

    ## Description
    `mode="schedule"` (default, PBA-like): an episode is one child training run split into
    `episode_length` segments of `steps_per_segment` optimizer steps. Each action sets the
    augmentation policy for the next segment; the learning rate follows `lr_schedule` over the
    whole run. `mode="static"` (AutoAugment-like): one action is one whole policy, one step is one
    child training of `episode_length * steps_per_segment` steps, and the episode ends after it.

    ## Action Space
    The centre of the box (all zeros) is **no augmentation**: every probability is ``max(0, a)^2``,
    so an untrained agent starts from the identity policy. `space` picks the box:

    | space   | box                          | knobs (the tables are `FullSpace`'s and `SmallSpace`'s)  |
    |---------|------------------------------|----------------------------------------------------------|
    | "full"  | `Box(-1, 1, (2K+6,))`, K ops | per-op probability and strength, crop, flip, mixup,       |
    |         |                              | cutmix, erasing probability and erased area               |
    | "small" | `Box(-1, 1, (5,))`           | ops per sample N, one magnitude M, probability of         |
    |         |                              | applying, erasing probability, mix probability            |

    Augment-v0's box is `AugmentSpace`'s `(2K+4,)`, whose centre turns everything on (see Version
    History).

    ## Observation Space
    `Box(-10, 10, (8 + D,), float32)`, D the action's size:

    | index | observation                                                     |
    |-------|-----------------------------------------------------------------|
    | 0     | training progress in [0, 1]                                     |
    | 1     | mean training loss of the last segment / log(num_classes)       |
    | 2     | validation loss / log(num_classes)                              |
    | 3     | validation reward metric (accuracy, macro F1, -ECE or -NLL)     |
    | 4     | generalisation gap: (val loss - train loss) / log(num_classes)  |
    | 5     | validation accuracy                                             |
    | 6     | last reward x 10                                                |
    | 7     | segments left / episode_length                                  |
    | 8 ..  | the last action (zeros after reset)                             |

    ## Rewards
    Schedule mode: the gain of the validation reward metric over the segment, so an episode's
    return is the final validation metric minus the one at the start (it telescopes). Static mode:
    the final validation metric. Both minus `cost_weight` times the segment's cost in
    `cost_metric` units (training seconds, or training TFLOPs; with "seconds" the rewards depend on
    wall time and are no longer reproducible, so prefer "tflops" when that matters). A diverging child run (NaN / inf
    loss) ends the episode with reward `-divergence_penalty`, logged as a warning.

    ## Episode End
    Terminated after `episode_length` segments (schedule) or one step (static), or on divergence.
    Never truncated by the env itself.

    ## Arguments
    Those marked * are the fields of `ChildConfig` (`policysearch.envs.base`), shared by every env:
    pass them as keywords, or as one `child=ChildConfig(...)` (keywords then override its fields).
    - `dataset`*: "digits", "fashion-mnist", "cifar10" (or pass `data=`, a prepared DeviceData).
    - `model`*: a registered model name; `batch_size`*, `lr`*, `optimizer`*, `lr_schedule`: the
      child's training.
    - `train_size`*, `val_size`*, `data_dir`*, `split_seed`*: the proxy task and its fixed split.
    - `device`*: "cpu", "cuda", "auto".
    - `space`: "full" (default) or "small" (`SmallSpace`: for tiny budgets; it searches the ops per
      sample itself, so `ops_per_sample` stays 1). Augment-v0 has only its own full space.
    - `ops`: subset of the op table; `ops_per_sample`, `magnitude_scale`: see `FullSpace`.
    - `mode`, `episode_length`*, `steps_per_segment`* (default: one epoch of the training split).
    - `reward_metric`*: "accuracy", "macro_f1", "neg_ece", "neg_nll", "fgsm_accuracy" (FGSM at eps 8/255).
    - `cost_weight`*, `cost_metric`*: optional cost term ("seconds" or "tflops").
    - `divergence_penalty`*: reward of a diverged step.
    - `child_seed`*: None draws each child's seed (initial weights, batch order, augmentation draws)
      from the env's seed; an int fixes it for every episode (common random numbers: episodes then
      differ only by their actions, which makes rewards far less noisy on small proxies).

    ## Version History
    - v1: the centre of the action box is no augmentation (probabilities ``max(0, a)^2`` instead of
      ``((a+1)/2)^2``; crop ``max(0, a) * max_crop``); random erasing (probability and area) joins
      the full space, so the box is ``(2K+6,)``; `space="small"`.
    - v0: initial version (`AugmentEnvV0`): `AugmentSpace`, whose centre turns every op, crop, flip,
      mixup and cutmix on with probability 0.25; still registered, unchanged.
    """

    ENV_ID = "policysearch/Augment-v1"
    NAMED_SPACES: ClassVar[bool] = True

    def __init__(
        self,
        child: ChildConfig | None = None,
        *,
        data: Any = None,
        ops: tuple[str, ...] | list[str] | None = None,
        ops_per_sample: int = 1,
        magnitude_scale: str = "standard",
        mode: str = "schedule",
        lr_schedule: str = "cosine",
        space: str = "full",
        **child_kwargs: Any,
    ) -> None:
        super().__init__()

        child = self._child_config(child, child_kwargs)
        check_choice("mode", mode, MODES)
        self.space = self._make_space(space, tuple(ops or TRIVIAL_OPS), ops_per_sample, magnitude_scale)
        self._setup_child_training(child, data)
        self.target_kind = get_task(self.data.task).target_kind
        if self.target_kind == "mask" and hasattr(self.space, "mixup"):  # a class index has no blend: no mixup
            self.space = dataclasses.replace(self.space, mixup=False)
        self.mode = mode
        self.lr_schedule = load_schedule(lr_schedule, base_lr=self.config.lr or 0.1)
        self.action_space = self.space.box()
        self.observation_space = spaces.Box(-10.0, 10.0, shape=(8 + self.space.dim,), dtype=np.float32)
        self.spec_kwargs.update(lr_schedule=lr_schedule)
        if self.NAMED_SPACES:  # describe()'s "space" holds the space's fields; this names which one
            self.spec_kwargs.update(action_space=space)
        self._segment = 0
        self._last_action = np.zeros(self.space.dim, dtype=np.float32)
        self._last_reward = 0.0
        self._metric = 0.0
        self._val: dict[str, float] = {}
        self._train_loss = get_task(self.data.task).loss_scale(self.data.num_classes)

    @staticmethod
    def _make_space(space: str, ops: tuple[str, ...], ops_per_sample: int, magnitude_scale: str) -> Any:
        check_choice("space", space, SPACES)
        if space == "full":
            return FullSpace(ops, ops_per_sample, magnitude_scale)
        if ops_per_sample != 1:
            raise ConfigError(f"ops_per_sample is {ops_per_sample!r}; space='small' searches the ops per sample "
                              "itself (1..2), so leave ops_per_sample at 1")
        return SmallSpace(ops, magnitude_scale=magnitude_scale)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        if options and options.get("advance_only"):
            return self._advance_only(seed)
        super().reset(seed=seed)
        self._new_child()
        info = {"val": dict(self._val), "child_seed": self.trainer.config.seed}
        return self._observation(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.trainer is None:
            raise ConfigError("call reset() before step()")
        if self.mode == "static" and self._segment > 0:
            self._new_child()  # SB3 may step a static env again only after reset; be forgiving
        action = np.clip(np.asarray(action, dtype=np.float32).reshape(-1), -1.0, 1.0)
        knobs = self.space.decode(action)
        policy = self.space.policy(knobs)
        steps = self.steps_per_segment * (self.episode_length if self.mode == "static" else 1)
        stats = self.trainer.train_segment(steps, policy, lr=self.lr_schedule.lr_at)
        self._segment += 1
        self.last_seconds = stats.seconds
        self._last_action = action.astype(np.float32)
        train_flops = stats.images * self.trainer.train_flops_per_image
        info: dict[str, Any] = {"segment": self._segment, "progress": self.trainer.progress, "knobs": knobs,
                                "action": [round(float(a), 5) for a in action], "train_loss": stats.train_loss,
                                "lr": stats.lr, "images": stats.images,
                                "train_flops": train_flops,
                                "diverged": None}
        if stats.diverged:
            log.warning("child training diverged (%s); episode ends with penalty %s", self.trainer.diverged,
                        self.divergence_penalty)
            reward = -self.divergence_penalty
            info["diverged"] = self.trainer.diverged
            info["val"] = {}
            self._last_reward = reward
            self._log_step(info, reward)
            return self._observation(), reward, True, False, info
        self._train_loss = stats.train_loss
        self._val = self.trainer.evaluate("val", self.reward_metric)
        metric = reward_value(self._val, self.reward_metric)
        gain = metric if self.mode == "static" else metric - self._metric
        reward = gain - self.cost_weight * cost_units(self.cost_metric, stats.seconds, train_flops)
        self._metric = metric
        self._last_reward = reward
        info["val"] = dict(self._val)
        info["metric"] = metric
        terminated = self.mode == "static" or self._segment >= self.episode_length
        self._log_step(info, reward)
        return self._observation(), float(reward), terminated, False, info

    # ------------------------------------------------------------------ internals
    def _new_child(self) -> None:
        self._new_trainer()
        self._segment = 0
        self._episode_steps = []
        self._last_action = np.zeros(self.space.dim, dtype=np.float32)
        self._last_reward = 0.0
        self._val = self.trainer.evaluate("val", self.reward_metric)
        self._metric = reward_value(self._val, self.reward_metric)
        self._train_loss = get_task(self.data.task).loss_scale(self.data.num_classes)

    def _observation(self) -> np.ndarray:
        scale = get_task(self.data.task).loss_scale(self.data.num_classes)
        val_loss = self._val.get("nll", scale)
        head = [
            self.trainer.progress,
            self._train_loss / scale,
            val_loss / scale,
            self._metric,
            (val_loss - self._train_loss) / scale,
            self._val.get("accuracy", 0.0),
            self._last_reward * 10.0,
            (self.episode_length - self._segment) / self.episode_length,
        ]
        obs = np.concatenate([np.nan_to_num(np.asarray(head, dtype=np.float64), nan=10.0), self._last_action])
        return np.clip(obs, -10.0, 10.0).astype(np.float32)

    # ------------------------------------------------------------------ child state (see ChildEnv.get_state)
    def _episode_state(self) -> dict[str, Any]:
        return {"segment": self._segment, "last_action": [float(a) for a in self._last_action],
                "last_reward": float(self._last_reward), "metric": float(self._metric), "val": dict(self._val),
                "train_loss": float(self._train_loss)}

    def _set_episode_state(self, episode: dict[str, Any]) -> None:
        segment, last_action, last_reward, metric, val, train_loss = state_fields(
            episode, "episode", ("segment", "last_action", "last_reward", "metric", "val", "train_loss"))
        action = np.asarray(last_action, dtype=np.float32)
        if action.shape != (self.space.dim,) or not isinstance(val, dict):
            raise ConfigError(f"set_state: the state's last action has shape {action.shape} (expected "
                              f"({self.space.dim},)) or its 'val' is not a dict")
        self._segment, self._last_action = int(segment), action
        self._last_reward, self._metric, self._train_loss = float(last_reward), float(metric), float(train_loss)
        self._val = dict(val)

    def _current_observation(self) -> np.ndarray | None:
        return None if self.trainer is None else self._observation()

    # ------------------------------------------------------------------ Optuna baseline space
    RAMPS = ("constant", "linear")
    OFF: ClassVar[float] = 0.0  # the action value that turns a knob off (v1: the centre of the box)

    def suggest_episode(self, trial: Any) -> list[np.ndarray]:
        """The actions of one episode from an Optuna trial: the `tpe` / `cmaes` baseline for this env.

        Static mode: the action vector itself (parameters ``a0..``). Schedule mode: a final policy
        (the same parameters) held for the whole training ("constant") or ramped linearly from no
        augmentation at the start to the final policy at the last segment ("linear": PBA's found
        schedules grow stronger over training), so TPE searches dim + 1 numbers, not dim x segments.
        """
        final = np.array([trial.suggest_float(f"a{i}", -1.0, 1.0) for i in range(self.space.dim)], dtype=np.float32)
        if self.mode == "static":
            return [final]
        ramp = trial.suggest_categorical("ramp", list(self.RAMPS))
        if ramp == "constant":
            return [final.copy() for _ in range(self.episode_length)]
        return [(self.OFF + (i + 1) / self.episode_length * (final - self.OFF)).astype(np.float32)
                for i in range(self.episode_length)]

    # ------------------------------------------------------------------ export
    def export(self, steps: list[dict[str, Any]], provenance: dict[str, Any] | None = None) -> AugmentPolicy:
        """The policy an episode used, as a file-ready AugmentPolicy: one policy in static mode, a
        schedule with one piece per segment (starting at segment / episode_length) in schedule mode."""
        if not steps:
            raise ConfigError("export: the episode has no steps")
        if self.mode == "static":
            policy = self.space.policy(steps[0]["knobs"], name="learned")
            policy.provenance = dict(provenance or {})
            return policy
        pieces = [(i / self.episode_length, self.space.policy(s["knobs"], name=f"segment-{i}"))
                  for i, s in enumerate(steps)]
        return AugmentPolicy(schedule=pieces, magnitude_scale=self.space.magnitude_scale, name="learned",
                             provenance=provenance)


class AugmentEnvV0(AugmentEnv):
    """`policysearch/Augment-v0`: `AugmentEnv` with its first action space, `AugmentSpace` (the centre
    of the box turns everything on; no erasing knobs). Kept unchanged so that v0 runs, their child
    states and their resumes stay reproducible; new searches use Augment-v1."""

    ENV_ID = "policysearch/Augment-v0"
    OFF: ClassVar[float] = -1.0  # v0's probabilities are ((a + 1) / 2)^2: off at the low end
    NAMED_SPACES: ClassVar[bool] = False  # v0's settings, and so its child states, stay as they were

    @staticmethod
    def _make_space(space: str, ops: tuple[str, ...], ops_per_sample: int, magnitude_scale: str) -> Any:
        if space != "full":
            raise ConfigError(f"space is {space!r}; policysearch/Augment-v0 has only its full space: "
                              "use policysearch/Augment-v1 for space='small'")
        return AugmentSpace(ops, ops_per_sample, magnitude_scale)
