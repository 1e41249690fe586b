"""`policysearch/Schedule-v0`: learn a learning-rate schedule by training a real child model.

See `ScheduleEnv` for the model card. The observation / action contract lives in
`policysearch.policies.adaptive.ScheduleSpace`, so that a controller exported from this env
(`AdaptiveSchedule`) rebuilds the exact same observation outside it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from policysearch.envs.base import ChildConfig, ChildTrainingEnv, state_fields
from policysearch.errors import ConfigError
from policysearch.metrics import cost_units, reward_value
from policysearch.policies.adaptive import OBSERVATION_NAMES, ScheduleSpace
from policysearch.policies.augment import AugmentPolicy
from policysearch.policies.schedule import LearnedSchedule

__all__ = ["OBSERVATION_NAMES", "ScheduleEnv", "ScheduleSpace"]

log = logging.getLogger(__name__)


class ScheduleEnv(ChildTrainingEnv):
    """Learn a learning-rate schedule for a data set by training a real child model.

    ## Description
    An episode is one child training run split into `episode_length` segments of
    `steps_per_segment` optimizer steps. Before each segment the action sets the learning rate,
    which stays constant for the whole segment; after it the child is evaluated on the
    validation split. The augmentation policy (`augment`) is fixed for the run.

    ## Action Space
    `Box(-1, 1, (1,), float32)`: one number `a`, mapped log-linearly onto `[lr_min, lr_max]`:

        lr = lr_min * (lr_max / lr_min) ** ((a + 1) / 2)

    so `a = -1` trains at exactly `lr_min`, `a = 1` at exactly `lr_max`, `a = 0` at their
    geometric mean. Actions outside [-1, 1] are clipped.

    ## Observation Space
    `Box(-10, 10, (11,), float32)`, every entry clipped to [-10, 10]; NaN (a diverged child) is
    shown as the worst value, -10 for the metric and its trend, 10 for the rest. K is the number
    of classes; "trend" is the difference to the previous segment's value (0 after reset).

    | index | observation                                                                 |
    |-------|-----------------------------------------------------------------------------|
    | 0     | training progress in [0, 1]                                                 |
    | 1     | mean training loss of the last segment / log(K) (1.0 after reset)           |
    | 2     | validation loss / log(K)                                                    |
    | 3     | validation reward metric (accuracy, macro F1, -ECE or -NLL)                 |
    | 4     | trend of index 1                                                            |
    | 5     | trend of index 2                                                            |
    | 6     | trend of index 3                                                            |
    | 7     | last segment's LR on the log scale of [lr_min, lr_max] (0.5 after reset) (*)  |
    | 8     | log1p(mean total gradient norm over the last segment's steps) (0 after reset) |
    | 9     | log1p(sample std of those norms) (0 after reset)                            |
    | 10    | segments left / episode_length                                              |

    (*) `(log10(lr) - log10(lr_min)) / log10(lr_max / lr_min)`: 0 at `lr_min`, 1 at `lr_max`.

    `ScheduleSpace.observation(stats)` builds this vector from plain numbers; the env uses it
    and so does `AdaptiveSchedule` outside the env.

    ## Rewards
    The gain of the validation reward metric over the segment, so an episode's return is the
    final validation metric minus the one at the start (it telescopes), minus `cost_weight`
    times the segment's cost in `cost_metric` units (training seconds, or training TFLOPs; with
    "seconds" and a positive weight the rewards depend on wall time and are no longer
    reproducible, so prefer "tflops" when that matters). A diverging child run (NaN / inf loss,
    e.g. from too high an LR) ends the episode with reward `-divergence_penalty`, logged as a
    warning, with `info["diverged"]` saying where.

    ## Episode End
    Terminated after `episode_length` segments, or on divergence. Never truncated by the env.

    ## Arguments
    Those marked * are the fields of `ChildConfig` (`policysearch.envs.base`), shared by every env:
    pass them as keywords, or as one `child=ChildConfig(...)` (keywords then override its fields).
    Its `lr` is not used: every segment sets its own.
    - `dataset`*: "digits", "fashion-mnist", "cifar10" (or pass `data=`, a prepared DeviceData).
    - `model`*: a registered model name; `batch_size`*, `optimizer`* (None: the model's default;
      the LR bounds default to SGD's range, so for "adamw" pass e.g. `lr_min=1e-5, lr_max=1e-2`).
    - `train_size`*, `val_size`*, `data_dir`*, `split_seed`*: the proxy task and its fixed split.
    - `device`*: "cpu", "cuda", "auto".
    - `augment`: a built-in augmentation policy name or an `AugmentPolicy`, applied throughout.
    - `lr_min`, `lr_max`: the LR range (`1e-12 <= lr_min < lr_max <= 1e3`).
    - `episode_length`*, `steps_per_segment`* (default: one epoch of the training split).
    - `reward_metric`*: "accuracy", "macro_f1", "neg_ece", "neg_nll", "fgsm_accuracy" (FGSM at eps 8/255).
    - `cost_weight`*, `cost_metric`*: optional cost term ("seconds" or "tflops").
    - `divergence_penalty`*: reward of a diverged step.
    - `child_seed`*: None draws each child's seed (initial weights, batch order, augmentation
      draws) from the env's seed; an int fixes it for every episode (common random numbers:
      episodes then differ only by their LRs, which makes rewards far less noisy).

    ## Version History
    - v0: initial version.
    """

    ENV_ID = "policysearch/Schedule-v0"

    UNUSED_CHILD_FIELDS = ("lr",)  # every segment sets its own LR

    def __init__(
        self,
        child: ChildConfig | None = None,
        *,
        data: Any = None,
        augment: str | AugmentPolicy = "none",
        lr_min: float = 1e-4,
        lr_max: float = 1.0,
        **child_kwargs: Any,
    ) -> None:
        super().__init__()
        from policysearch.policies.augment import load_policy

        child = self._child_config(child, child_kwargs)
        self.augment = load_policy(augment)
        # The config's lr only seeds the optimizer; every segment sets its own LR before training.
        self._setup_child_training(child, data)
        self.space = ScheduleSpace(lr_min, lr_max, self.episode_length, loss_scale=math.log(self.data.num_classes))
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        bound = self.space.clip
        self.observation_space = spaces.Box(-bound, bound, shape=(self.space.dim,), dtype=np.float32)
        self.spec_kwargs.update(lr_min=float(lr_min), lr_max=float(lr_max),
                                augment=augment if isinstance(augment, str) else self.augment.to_dict())
        self._segment = 0
        self._stats: dict[str, Any] = {}

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        if options and options.get("advance_only"):
            return self._advance_only(seed)
        super().reset(seed=seed)
        self._new_trainer()
        self._segment, self._episode_steps = 0, []
        val = self.trainer.evaluate("val", self.reward_metric)
        # Only what is known before any training; ScheduleSpace fills the rest with its start values.
        self._stats = {"progress": 0.0, "val_loss": val["nll"], "val_metric": reward_value(val, self.reward_metric),
                       "segments_left": self.episode_length}
        info = {"val": dict(val), "child_seed": self.trainer.config.seed}
        return self.space.observation(self._stats), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.trainer is None:
            raise ConfigError("call reset() before step()")
        if self.trainer.diverged or self._segment >= self.episode_length:
            raise ConfigError("the episode has ended; call reset() before step()")
        action = np.clip(np.asarray(action, dtype=np.float32).reshape(-1), -1.0, 1.0)
        lr = self.space.lr(action)
        stats = self.trainer.train_segment(self.steps_per_segment, self.augment, lr=lr)
        self._segment += 1
        self.last_seconds = stats.seconds
        train_flops = stats.images * self.trainer.train_flops_per_image
        info: dict[str, Any] = {"segment": self._segment, "progress": self.trainer.progress,
                                "action": [round(float(a), 5) for a in action], "lr": lr,
                                "train_loss": stats.train_loss, "grad_norm_mean": stats.grad_norm_mean,
                                "grad_norm_std": stats.grad_norm_std, "images": stats.images,
                                "train_flops": train_flops, "diverged": None}
        prev = self._stats
        new = {"progress": self.trainer.progress, "train_loss": stats.train_loss, "lr": lr,
               "prev_train_loss": prev.get("train_loss", self.space.loss_scale),
               "prev_val_loss": prev["val_loss"], "prev_val_metric": prev["val_metric"],
               "grad_norm_mean": stats.grad_norm_mean, "grad_norm_std": stats.grad_norm_std,
               "segments_left": self.episode_length - self._segment}
        if stats.diverged:
            log.warning("child training diverged (%s); episode ends with penalty %s", self.trainer.diverged,
                        self.divergence_penalty)
            info["diverged"] = self.trainer.diverged
            info["val"] = {}
            # No evaluation of a NaN model: NaN losses show as the worst observation values.
            self._stats = {**new, "val_loss": math.nan, "val_metric": math.nan}
            self._log_step(info, -float(self.divergence_penalty))
            return self.space.observation(self._stats), -float(self.divergence_penalty), True, False, info
        val = self.trainer.evaluate("val", self.reward_metric)
        metric = reward_value(val, self.reward_metric)
        reward = metric - prev["val_metric"] - self.cost_weight * cost_units(self.cost_metric, stats.seconds,
                                                                               train_flops)
        self._stats = {**new, "val_loss": val["nll"], "val_metric": metric}
        info["val"] = dict(val)
        info["metric"] = metric
        terminated = self._segment >= self.episode_length
        self._log_step(info, reward)
        return self.space.observation(self._stats), float(reward), terminated, False, info

    # ------------------------------------------------------------------ child state (see ChildEnv.get_state)
    def _episode_state(self) -> dict[str, Any]:
        # The observation's inputs: last and previous losses, metric, LR, gradient norms.
        return {"segment": self._segment, "stats": dict(self._stats)}

    def _set_episode_state(self, episode: dict[str, Any]) -> None:
        segment, stats = state_fields(episode, "episode", ("segment", "stats"))
        if not isinstance(stats, dict):
            raise ConfigError(f"set_state: the state's 'stats' is a {type(stats).__name__}, expected a dict")
        self._segment, self._stats = int(segment), dict(stats)

    def _current_observation(self) -> np.ndarray | None:
        return None if self.trainer is None else self.space.observation(self._stats)

    # ------------------------------------------------------------------ baseline search space
    FAMILIES = ("cosine", "onecycle")

    def suggest_episode(self, trial: Any) -> list[np.ndarray]:
        """The actions of one episode from an Optuna trial over a hand-made family: the family
        (cosine or onecycle) and its peak LR in [lr_min, lr_max] (log scale); each segment gets the
        family's LR at the segment's middle. This is the `tpe` / `cmaes` baseline for this env."""
        from policysearch.policies.schedule import named_schedule

        family = trial.suggest_categorical("family", list(self.FAMILIES))
        peak = trial.suggest_float("peak_lr", self.space.lr_min, self.space.lr_max, log=True)
        schedule = named_schedule(family, peak)
        actions = []
        for i in range(self.episode_length):
            lr = min(max(schedule.lr_at((i + 0.5) / self.episode_length), self.space.lr_min), self.space.lr_max)
            actions.append(np.array([2.0 * self.space.lr_position(lr) - 1.0], dtype=np.float32))
        return actions

    # ------------------------------------------------------------------ export
    def export(self, steps: list[dict[str, Any]], provenance: dict[str, Any] | None = None) -> LearnedSchedule:
        """The LRs an episode used, as an open-loop `LearnedSchedule` over normalised progress:
        step interpolation with a knot at each segment's start (segment / episode_length), so a
        run of any length trains its i-th fraction at the episode's i-th LR."""
        if not steps:
            raise ConfigError("export: the episode has no steps")
        if len(steps) > self.episode_length:
            raise ConfigError(f"export: {len(steps)} steps for an episode of {self.episode_length} segments")
        lrs = [float(s["lr"]) for s in steps]
        # Knots at the segments actually trained; a short (diverged) episode holds its last LR to 1.0.
        knots = [i / self.episode_length for i in range(len(lrs))] + [1.0]
        return LearnedSchedule.from_lrs(lrs + lrs[-1:], progress=knots, interpolation="step", name="learned",
                                        provenance=provenance)

    def export_files(self, out_dir: Path, controller_path: Path | None, controller: str,
                     provenance: dict[str, Any]) -> dict[str, str]:
        """The closed-loop export: for an SB3 controller, `controller.json` (the observation / action
        contract it was trained with, an `AdaptiveSchedule` sidecar) next to its `controller.zip`."""
        from policysearch.policies.adaptive import ALGOS, AdaptiveSchedule

        if controller_path is None or controller not in ALGOS:
            return {}
        adaptive = AdaptiveSchedule.from_env(controller_path, self, algo=controller, provenance=provenance)
        return {"closed_loop": adaptive.save(controller_path.with_suffix(".json")).name}
