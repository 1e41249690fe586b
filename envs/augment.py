"""`policysearch/Augment-v0`: learn an augmentation policy by training a real child model.

See `AugmentEnv` for the model card.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from policysearch.checks import check_choice, check_int, check_number
from policysearch.envs.base import ChildConfig, ChildTrainingEnv, state_fields
from policysearch.errors import ConfigError
from policysearch.metrics import cost_units, reward_value
from policysearch.policies.augment import MAGNITUDE_SCALES, OPS, TRIVIAL_OPS, AugmentPolicy
from policysearch.search_env import MODES

log = logging.getLogger(__name__)


def _unit(a: float) -> float:
    """Map an action coordinate in [-1, 1] to [0, 1]."""
    return float(np.clip((a + 1.0) / 2.0, 0.0, 1.0))


@dataclass(frozen=True)
class AugmentSpace:
    """The action space of Augment-v0 and its mapping to an `AugmentPolicy`.

    An action is a vector in [-1, 1]^(2K+4) for K ops; each coordinate a maps to u = (a+1)/2:

    | index      | knob                      | value                                        |
    |------------|---------------------------|----------------------------------------------|
    | 0 .. K-1   | probability of op k       | u^2                                          |
    | K .. 2K-1  | strength of op k          | u: fraction of the op's widest departure     |
    |            |                           | from identity (both signs if two-sided)      |
    | 2K         | crop (pad-and-crop shift) | u * max_crop of the image side               |
    | 2K+1       | horizontal flip           | probability u^2                              |
    | 2K+2       | mixup                     | probability u^2 * max_mix (alpha mixup_alpha)|
    | 2K+3       | cutmix                    | probability u^2 * max_mix (alpha cutmix_alpha)|

    Probabilities are squared so that the centre of the box (where an untrained agent starts)
    is a mild policy (probability 0.25) rather than a coin flip for every op, and that "off"
    stays reachable with precision.

    The policy draws, per sample, `ops_per_sample` ops uniformly from the K ops and applies each
    with its probability at its strength, as kornia-format sub-policies (every ordered tuple of ops
    is one sub-policy), so the exported file loads in kornia's AutoAugment.
    """

    ops: tuple[str, ...] = TRIVIAL_OPS
    ops_per_sample: int = 1
    magnitude_scale: str = "standard"
    max_crop: float = 0.25
    max_mix: float = 0.5
    mixup_alpha: float = 1.0
    cutmix_alpha: float = 1.0

    def __post_init__(self) -> None:
        if not self.ops or len(set(self.ops)) != len(self.ops):
            raise ConfigError(f"ops is {self.ops!r}, expected at least one augmentation op, each at most once")
        for op in self.ops:
            check_choice("augmentation op", op, OPS)
        check_int("ops_per_sample", self.ops_per_sample, 1, 3)
        check_choice("magnitude scale", self.magnitude_scale, MAGNITUDE_SCALES)
        check_number("max_crop", self.max_crop, 0.0, 0.5)
        check_number("max_mix", self.max_mix, 0.0, 0.5)
        for name in ("mixup_alpha", "cutmix_alpha"):  # checked here too: a bad one would fail only at the first step
            check_number(name, getattr(self, name), 0.0, low_open=True)

    @property
    def dim(self) -> int:
        return 2 * len(self.ops) + 4

    def box(self) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, shape=(self.dim,), dtype=np.float32)

    def decode(self, action: Any) -> dict[str, Any]:
        """The knobs an action sets, as plain JSON-able values (logged for every decision)."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (self.dim,) or not np.all(np.isfinite(a)):
            shown = f"{a[:4].tolist()}{'...' if a.size > 4 else ''}"
            raise ConfigError(f"action is {shown} (shape {a.shape}), expected {self.dim} finite numbers")
        k = len(self.ops)
        return {
            "op_probability": {op: round(_unit(a[i]) ** 2, 4) for i, op in enumerate(self.ops)},
            "op_strength": {op: round(_unit(a[k + i]), 4) for i, op in enumerate(self.ops)},
            "crop": round(_unit(a[2 * k]) * self.max_crop, 4),
            "flip": round(_unit(a[2 * k + 1]) ** 2, 4),
            "mixup": round(_unit(a[2 * k + 2]) ** 2 * self.max_mix, 4),
            "cutmix": round(_unit(a[2 * k + 3]) ** 2 * self.max_mix, 4),
        }

    def policy(self, knobs: dict[str, Any], name: str = "learned") -> AugmentPolicy:
        """The AugmentPolicy that `knobs` (from `decode`) describe."""
        choices = []
        for op in self.ops:
            p, s = knobs["op_probability"][op], knobs["op_strength"][op]
            spec = OPS[op]
            bins: list[int | None] = (
                [None] if spec.standard is None else list(spec.strength_bins(s, self.magnitude_scale)))
            # Two entries per op keep the op draw uniform when only some ops are two-sided.
            choices += [[(op, p, bins[i % len(bins)])] for i in range(2)]
        subs = [list(itertools.chain.from_iterable(combo))
                for combo in itertools.product(choices, repeat=self.ops_per_sample)]
        return AugmentPolicy(
            subs,
            crop=knobs["crop"],
            flip=knobs["flip"],
            mixup=(knobs["mixup"], self.mixup_alpha),
            cutmix=(knobs["cutmix"], self.cutmix_alpha),
            magnitude_scale=self.magnitude_scale,
            name=name,
        )


class AugmentEnv(ChildTrainingEnv):
    """Learn an augmentation policy for a data set by training a real child model.

    ## Description
    `mode="schedule"` (default, PBA-like): an episode is one child training run split into
    `episode_length` segments of `steps_per_segment` optimizer steps. Each action sets the
    augmentation policy for the next segment; the learning rate follows `lr_schedule` over the
    whole run. `mode="static"` (AutoAugment-like): one action is one whole policy, one step is one
    child training of `episode_length * steps_per_segment` steps, and the episode ends after it.

    ## Action Space
    `Box(-1, 1, (2K+4,), float32)` for K ops; the mapping to the policy is `AugmentSpace`'s table:
    per-op probability and strength, crop, flip, mixup and cutmix probabilities.

    ## Observation Space
    `Box(-10, 10, (8 + 2K+4,), float32)`:

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
    - `ops`: subset of the op table; `ops_per_sample`, `magnitude_scale`: see `AugmentSpace`.
    - `mode`, `episode_length`*, `steps_per_segment`* (default: one epoch of the training split).
    - `reward_metric`*: "accuracy", "macro_f1", "neg_ece", "neg_nll", "fgsm_accuracy" (FGSM at eps 8/255).
    - `cost_weight`*, `cost_metric`*: optional cost term ("seconds" or "tflops").
    - `divergence_penalty`*: reward of a diverged step.
    - `child_seed`*: None draws each child's seed (initial weights, batch order, augmentation draws)
      from the env's seed; an int fixes it for every episode (common random numbers: episodes then
      differ only by their actions, which makes rewards far less noisy on small proxies).

    ## Version History
    - v0: initial version.
    """

    ENV_ID = "policysearch/Augment-v0"

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
        **child_kwargs: Any,
    ) -> None:
        super().__init__()
        from policysearch.policies.schedule import load_schedule

        child = self._child_config(child, child_kwargs)
        check_choice("mode", mode, MODES)
        self.space = AugmentSpace(tuple(ops or TRIVIAL_OPS), ops_per_sample, magnitude_scale)
        self._setup_child_training(child, data)
        self.mode = mode
        self.lr_schedule = load_schedule(lr_schedule, base_lr=self.config.lr or 0.1)
        self.action_space = self.space.box()
        self.observation_space = spaces.Box(-10.0, 10.0, shape=(8 + self.space.dim,), dtype=np.float32)
        self.spec_kwargs.update(lr_schedule=lr_schedule)
        self._segment = 0
        self._last_action = np.zeros(self.space.dim, dtype=np.float32)
        self._last_reward = 0.0
        self._metric = 0.0
        self._val: dict[str, float] = {}
        self._train_loss = math.log(self.data.num_classes)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
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
        self._train_loss = math.log(self.data.num_classes)

    def _observation(self) -> np.ndarray:
        scale = math.log(self.data.num_classes)
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
