"""`policysearch/Schedule-v1` (and the earlier `Schedule-v0`): learn a learning-rate schedule by
training a real child model.

See `ScheduleEnv` for the model card. v1's action scales a budget-aware base schedule (onecycle or
linear decay to zero) and can draw a new task (data set, model, epochs, ...) every episode
(`tasks`), to learn one controller for many tasks; v0 (`ScheduleEnvV0`) sets absolute LRs on one
task. The observation / action contract lives in `policysearch.policies.adaptive.ScheduleSpace`, so
that a controller exported from this env (`AdaptiveSchedule`) rebuilds the exact same observation
outside it.

Size (~530 lines): one env class, most of it the model card and v1's residual / task / export
logic that must agree step for step with `AdaptiveSchedule`; v0 is a thin subclass.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from policysearch.checks import MAX_LR, check_choice
from policysearch.data import prepare
from policysearch.device import resolve_device
from policysearch.envs.base import ChildConfig, ChildTrainingEnv, state_fields
from policysearch.envs.schedule_tasks import Task, TaskSampler
from policysearch.errors import ConfigError
from policysearch.metrics import cost_units, reward_value
from policysearch.models import resolve_model
from policysearch.policies.adaptive import CONTROLLER_ALGOS, OBSERVATION_NAMES, AdaptiveSchedule, ScheduleSpace
from policysearch.policies.augment import AugmentPolicy, load_policy
from policysearch.policies.schedule import LOG10_LR_MIN, LearnedSchedule, named_schedule
from policysearch.tasks import get_task
from policysearch.train.lr_range import DEFAULT_STEPS, lr_range_test

__all__ = ["OBSERVATION_NAMES", "ScheduleEnv", "ScheduleEnvV0", "ScheduleSpace", "Task", "TaskSampler"]

# Open-loop export of a residual episode: knots per segment (log-linear between them) that follow
# the base schedule's curve times the segment's factor.
_KNOTS_PER_SEGMENT = 16
REWARDS: tuple[str, ...] = ("gain", "vs-base")

log = logging.getLogger(__name__)


class ScheduleEnv(ChildTrainingEnv):
    """Learn a learning-rate schedule for a data set by training a real child model.

    ## Description
    An episode is one child training run split into `episode_length` segments of
    `steps_per_segment` optimizer steps. Before each segment the action sets the learning rate,
    which stays constant for the whole segment; after it the child is evaluated on the
    validation split. The augmentation policy (`augment`) is fixed for the run.

    ## Action Space
    `Box(-1, 1, (1,), float32)`: one number `a`. v1 (residual, `base` = "onecycle" or "linear"):
    the segment trains at the base schedule times a factor,

        lr(progress) = base(progress) * scale ** a

    where `base` is the named schedule peaking at the model's default LR,
    over the whole run; so `a = 0` at every segment reproduces the base schedule exactly, and
    the search can only move away from it where that pays. `a = +-1` multiply / divide it by
    `scale` (4 by default). `base=None` (and Schedule-v0): `a` is mapped log-linearly onto
    `[lr_min, lr_max]` and held for the segment:

        lr = lr_min * (lr_max / lr_min) ** ((a + 1) / 2)

    so `a = -1` trains at exactly `lr_min`, `a = 1` at exactly `lr_max`, `a = 0` at their
    geometric mean. Actions outside [-1, 1] are clipped.

    ## Observation Space
    v1 (residual): `Box(-10, 10, (13,), float32)`: the table below with index 7 the last action
    (0 after reset) instead of the LR, then 11 the remaining budget (1 - progress) and 12 the
    run's length, `log10(total optimizer steps) / 4`. v0: `Box(-10, 10, (11,), float32)`.
    Every entry is clipped to [-10, 10]; NaN (a diverged child) is
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

    ## Tasks
    With `tasks` (a `TaskSampler` or its spec, e.g. "cheap"; v1 only), every reset first draws a
    task from the env's random stream: data set and training-set size, model (with its default
    optimizer and peak LR), epochs, batch size and weight decay; the episode then trains that
    task for its epochs, spread over `episode_length` segments. The data of each task is
    prepared once and kept. One controller so learns to react to training statistics rather
    than to one task (`info["task"]` says which).

    With `reward="vs-base"` (v1 only) the env also trains a shadow child with the base schedule
    itself (centre actions), from the same seed — same initial weights and batch order — and
    the reward is the controller child's gain minus the shadow's, so an episode's return is the
    final validation metric minus the base schedule's on the same task and seed: paired, it
    removes the task-to-task and seed-to-seed spread from the reward. Each episode then costs
    two child trainings (both counted in `train_flops`). The controller never sees the shadow.

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

    - `base`, `scale`: v1's base schedule ("onecycle", "linear"; None: absolute LRs as in v0) and
      its largest factor.
    - `reward`: "gain" (the validation gain) or "vs-base" (the gain over a shadow child trained
      with the base schedule from the same seed; v1 only).
    - `tasks`: a `TaskSampler` or spec (`policysearch.envs.schedule_tasks`); then `dataset`,
      `model`, `train_size`, `batch_size`, `weight_decay` come from each task (leave them unset).
    - `peak`, `range_steps`: where the base's peak LR comes from (v1): "default" (the model's LR) or
      "range-test": every reset runs an LR range test of `range_steps` steps from the episode's child's
      initial weights (`policysearch.train.lr_range`) and the base peaks at its suggestion (`info["peak_lr"]`;
      the test's FLOPs are charged to the first step). The exported controller carries it, and
      `train_run` then runs the test and gives up its steps, so a run's images stay the same.

    ## Version History
    - v1: residual actions around a budget-aware base schedule (default onecycle); the
      observation has the remaining budget and the run's length; optional task distribution;
      optional base peak from an LR range test (`peak`, added later; default-peak runs unchanged).
    - v0: initial version (`ScheduleEnvV0`): absolute LRs in `[lr_min, lr_max]`, one task.
    """

    ENV_ID = "policysearch/Schedule-v1"
    VERSION: ClassVar[int] = 1

    UNUSED_CHILD_FIELDS = ("lr",)  # every segment sets its own LR

    def __init__(
        self,
        child: ChildConfig | None = None,
        *,
        data: Any = None,
        augment: str | AugmentPolicy = "none",
        lr_min: float = 1e-4,
        lr_max: float = 1.0,
        base: str | None = "onecycle",
        scale: float = 4.0,
        tasks: TaskSampler | str | None = None,
        reward: str = "gain",
        peak: str = "default",
        range_steps: int = DEFAULT_STEPS,
        **child_kwargs: Any,
    ) -> None:
        super().__init__()

        child = self._child_config(child, child_kwargs)
        self.reward_kind = check_choice("schedule reward", reward, REWARDS)
        if reward == "vs-base" and base is None:
            raise ConfigError("reward='vs-base' needs a base schedule (base='onecycle' or 'linear')")
        self._shadow: Any = None  # the base-schedule child of reward="vs-base"
        self.augment = load_policy(augment)
        self.tasks = TaskSampler.parse(tasks) if isinstance(tasks, str) else tasks
        if self.tasks is not None and not isinstance(self.tasks, TaskSampler):
            raise ConfigError(f"tasks is a {type(tasks).__name__}, expected a TaskSampler or its spec string")
        self.task: Task | None = None
        self._task_cache: dict[tuple[str, int | None], Any] = {}
        if self.tasks is not None:
            if data is not None or child.dataset is not None or child.train_size is not None:
                raise ConfigError("tasks draws the data set of every episode: do not also give data, dataset "
                                  "or train_size")
            if base is None:
                raise ConfigError("tasks needs a residual space (base='onecycle' or 'linear'): an absolute LR "
                                  "range cannot suit every model")
            first = self.tasks.tasks(1, seed=0)[0]
            child = dataclasses.replace(child, dataset=first.dataset, model=first.model,
                                        batch_size=first.batch_size, weight_decay=first.weight_decay)
            data = self._task_data(first, child)
        # The config's lr only seeds the optimizer; every segment sets its own LR before training.
        self._setup_child_training(child, data)
        self._base_config = self.config
        self._first_data = self.data
        self.space = ScheduleSpace(lr_min, lr_max, self.episode_length,
                                   loss_scale=get_task(self.data.task).loss_scale(self.data.num_classes),
                                   base=base, scale=scale, peak=peak, range_steps=range_steps)
        self._peak: float | None = None  # the episode's base peak LR (None: the config's LR)
        self._range_flops = 0.0  # the episode's range-test FLOPs, charged to its first step
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        bound = self.space.clip
        self.observation_space = spaces.Box(-bound, bound, shape=(self.space.dim,), dtype=np.float32)
        self.spec_kwargs.update(lr_min=float(lr_min), lr_max=float(lr_max),
                                augment=augment if isinstance(augment, str) else self.augment.to_dict())
        if self.VERSION >= 1:
            self.spec_kwargs.update(base=base, scale=float(scale), reward=reward,
                                    tasks=None if self.tasks is None else self.tasks.to_dict())
            if peak != "default":  # the settings of default-peak runs stay as they were (resume checks them)
                self.spec_kwargs.update(peak=peak, range_steps=range_steps)
        self._segment = 0
        self._stats: dict[str, Any] = {}

    # ------------------------------------------------------------------ tasks
    def _task_data(self, task: Task, child: ChildConfig | None = None) -> Any:
        """The prepared data of a task's data set and size (prepared once, then kept)."""

        child = child or self.child_config
        key = (task.dataset, task.train_size)
        if key not in self._task_cache:
            assert self.tasks is not None
            val = min(self.tasks.val_size, 300) if task.dataset == "digits" else self.tasks.val_size
            self._task_cache[key] = prepare(task.dataset, val_size=val, train_size=task.train_size,
                                            seed=child.split_seed, device=resolve_device(child.device),
                                            data_dir=child.data_dir)
        return self._task_cache[key]

    def _switch_task(self, task: Task) -> None:
        """Train `task` from the next child on: its data, model (default optimizer and LR), batch
        size, weight decay, and its epochs spread over the episode's segments."""

        self.data = self._task_data(task)
        spec = resolve_model(task.model)
        self.config = dataclasses.replace(self._base_config, model=task.model, batch_size=task.batch_size,
                                          weight_decay=task.weight_decay, lr=spec.lr, optimizer=spec.optimizer)
        per_epoch = max(1, len(self.data.y_train) // task.batch_size)
        self.steps_per_segment = max(1, round(task.epochs * per_epoch / self.episode_length))
        self.task = task

    def _draw_task(self) -> None:
        if self.tasks is not None:
            self._switch_task(self.tasks.sample(self.np_random))

    def _advance_only(self, seed: int | None) -> tuple[np.ndarray, dict[str, Any]]:
        if self.tasks is None:
            return super()._advance_only(seed)
        import gymnasium as gym

        gym.Env.reset(self, seed=seed)
        self._draw_task()  # the same draws as a full reset: the task, then the child seed
        obs = np.zeros(self.observation_space.shape, dtype=self.observation_space.dtype)
        return obs, {"child_seed": self._draw_child_seed(), "advance_only": True, "task": self.task.to_dict()}

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        if self.tasks is not None:  # the settings of the env, not of the task in flight
            info.update(dataset="tasks", model="tasks", dataset_fingerprint=self._first_data.fingerprint,
                        split=self._first_data.split, steps_per_segment=None)
        return info

    def _base_lr_schedule(self) -> Any:
        return self.space.base_schedule(self._peak if self._peak is not None else float(self.config.lr))

    def _range_test_peak(self) -> None:
        """peak="range-test": run the LR range test from this episode's child's initial weights (same
        seed) and take its suggestion as the base's peak; its FLOPs are charged to the first step."""
        self._peak, self._range_flops = None, 0.0
        if self.space.peak == "range-test":
            test = lr_range_test(self.data, self.trainer.config, steps=self.space.range_steps)
            self._peak = test.suggestion()
            self._range_flops = test.images * self.trainer.train_flops_per_image

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        if options and options.get("advance_only"):
            return self._advance_only(seed)
        super().reset(seed=seed)
        self._draw_task()
        self._new_trainer()
        self._range_test_peak()
        if self.reward_kind == "vs-base":  # same seed: same initial weights and batch order as the child
            self._shadow = self._build_trainer(self.trainer.config.seed)
        self._segment, self._episode_steps = 0, []
        val = self.trainer.evaluate("val", self.reward_metric)
        # Only what is known before any training; ScheduleSpace fills the rest with its start values.
        self._stats = {"progress": 0.0, "val_loss": val[get_task(self.data.task).loss_metric],
                       "val_metric": reward_value(val, self.reward_metric),
                       "segments_left": self.episode_length, "total_steps": self.trainer.total_steps, "action": 0.0}
        if self._shadow is not None:
            self._stats["base_val_metric"] = self._stats["val_metric"]  # identical children before training
        info = {"val": dict(val), "child_seed": self.trainer.config.seed}
        if self._peak is not None:
            info["peak_lr"] = self._peak
        if self.task is not None:
            info["task"] = self.task.to_dict()
        return self.space.observation(self._stats), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.trainer is None:
            raise ConfigError("call reset() before step()")
        if self.trainer.diverged or self._segment >= self.episode_length:
            raise ConfigError("the episode has ended; call reset() before step()")
        action = np.clip(np.asarray(action, dtype=np.float32).reshape(-1), -1.0, 1.0)
        lr_spec: Any
        if self.space.residual:
            base, factor = self._base_lr_schedule(), self.space.factor(action)
            lr = base.lr_at(self.trainer.progress) * factor  # the segment's first LR, as reported

            def lr_spec(progress: float) -> float:
                return base.lr_at(progress) * factor
        else:
            lr = lr_spec = self.space.lr(action)
        stats = self.trainer.train_segment(self.steps_per_segment, self.augment, lr=lr_spec)
        self._segment += 1
        self.last_seconds = stats.seconds
        train_flops = stats.images * self.trainer.train_flops_per_image + self._range_flops
        self._range_flops = 0.0
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
               "segments_left": self.episode_length - self._segment, "total_steps": self.trainer.total_steps,
               "action": float(action[0])}
        if self.space.residual:
            info["factor"] = self.space.factor(action)
        if self._peak is not None:
            info["peak_lr"] = self._peak  # the episode's range-test peak, in every step's record
        if self.task is not None:
            info["task"] = self.task.label()
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
        self._stats = {**new, "val_loss": val[get_task(self.data.task).loss_metric], "val_metric": metric}
        if self._shadow is not None:
            reward -= self._shadow_gain(prev, info)
        info["val"] = dict(val)
        info["metric"] = metric
        terminated = self._segment >= self.episode_length
        self._log_step(info, reward)
        return self.space.observation(self._stats), float(reward), terminated, False, info

    def _shadow_gain(self, prev: dict[str, Any], info: dict[str, Any]) -> float:
        """Train the shadow child one segment with the base schedule; its validation gain (a
        diverged shadow counts as metric 0). Adds its FLOPs to the step's and its metric to `info`."""
        shadow, base = self._shadow, self._base_lr_schedule()
        stats = shadow.train_segment(self.steps_per_segment, self.augment, lr=base.lr_at)
        info["train_flops"] += stats.images * shadow.train_flops_per_image
        metric = 0.0 if stats.diverged else reward_value(shadow.evaluate("val", self.reward_metric),
                                                         self.reward_metric)
        info["base_metric"] = metric
        self._stats["base_val_metric"] = metric
        return metric - prev["base_val_metric"]

    # ------------------------------------------------------------------ child state (see ChildEnv.get_state)
    def _episode_state(self) -> dict[str, Any]:
        # The observation's inputs: last and previous losses, metric, LR, gradient norms (and the task).
        state = {"segment": self._segment, "stats": dict(self._stats)}
        if self.task is not None:
            state["task"] = self.task.to_dict()
        if self._peak is not None:
            state["peak_lr"] = self._peak
        return state

    def _child_state(self) -> dict[str, Any]:
        state = super()._child_state()
        if self.reward_kind == "vs-base":
            state["shadow"] = None if self._shadow is None else self._shadow.state_dict()
        return state

    def _set_child_state(self, state: dict[str, Any]) -> None:
        self._set_task_and_child_state(state)  # the task first: the shadow trains on its data too
        self._shadow = None
        saved = state.get("shadow") if self.reward_kind == "vs-base" and isinstance(state, dict) else None
        if saved is not None:
            config = saved.get("config") if isinstance(saved, dict) else None
            seed = config.get("seed") if isinstance(config, dict) else None
            if not isinstance(seed, int):
                raise ConfigError("set_state: the shadow child's state has no seed")
            self._shadow = self._build_trainer(seed, saved.get("total_steps"))
            self._shadow.load_state_dict(saved)

    def _set_task_and_child_state(self, state: dict[str, Any]) -> None:
        episode = state.get("episode") if isinstance(state, dict) else None
        task = episode.get("task") if isinstance(episode, dict) else None
        if self.tasks is not None and isinstance(task, dict):
            try:
                self._switch_task(Task(**task))  # before the child is rebuilt on the task's data
            except TypeError as exc:
                raise ConfigError(f"set_state: the episode's task {task!r} is malformed") from exc
        super()._set_child_state(state)

    def _set_episode_state(self, episode: dict[str, Any]) -> None:
        segment, stats = state_fields(episode, "episode", ("segment", "stats"))
        if not isinstance(stats, dict):
            raise ConfigError(f"set_state: the state's 'stats' is a {type(stats).__name__}, expected a dict")
        self._segment, self._stats = int(segment), dict(stats)
        peak = episode.get("peak_lr")
        if self.space.peak != "default" and not isinstance(peak, (int, float)):
            raise ConfigError("set_state: the episode has no range-test peak LR ('peak_lr')")
        self._peak = float(peak) if self.space.peak != "default" else None
        self._range_flops = 0.0

    def _current_observation(self) -> np.ndarray | None:
        return None if self.trainer is None else self.space.observation(self._stats)

    # ------------------------------------------------------------------ baseline search space
    FAMILIES = ("cosine", "onecycle")

    def suggest_episode(self, trial: Any) -> list[np.ndarray]:
        """The actions of one episode from an Optuna trial: the hand-made schedule with its peak LR
        tuned, the `tpe` / `cmaes` baseline for this env. v1: one factor held for every segment, i.e.
        the base schedule (onecycle, linear) scaled as a whole, its peak tuned within the factor's
        bounds; v0: a hand-made family (cosine or onecycle) and its peak LR in [lr_min, lr_max] (log
        scale), each segment getting the family's LR at the segment's middle."""

        if self.space.residual:  # v1: the base schedule times one factor: its peak LR, tuned
            factor = np.array([trial.suggest_float("peak_factor", -1.0, 1.0)], dtype=np.float32)
            return [factor] * self.episode_length
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
        if self.space.residual:
            return self._export_residual(steps, provenance)
        lrs = [float(s["lr"]) for s in steps]
        # Knots at the segments actually trained; a short (diverged) episode holds its last LR to 1.0.
        knots = [i / self.episode_length for i in range(len(lrs))] + [1.0]
        return LearnedSchedule.from_lrs(lrs + lrs[-1:], progress=knots, interpolation="step", name="learned",
                                        provenance=provenance)

    def _export_residual(self, steps: list[dict[str, Any]], provenance: dict[str, Any] | None) -> LearnedSchedule:
        """A residual episode as an open-loop schedule: the base schedule (peaking at the child's LR)
        times each segment's factor, sampled at `_KNOTS_PER_SEGMENT` knots per segment and joined
        log-linearly; a short (diverged) episode keeps its last factor to the end."""
        base = self._base_lr_schedule()
        factors = [float(s.get("factor", self.space.factor([s["action"][0]]))) for s in steps]
        n, knots, lrs = self.episode_length, [], []
        for i in range(n):
            factor = factors[min(i, len(factors) - 1)]
            for j in range(_KNOTS_PER_SEGMENT):
                p = (i + j / _KNOTS_PER_SEGMENT) / n
                knots.append(p)
                lrs.append(base.lr_at(p) * factor)
        knots.append(1.0)
        lrs.append(base.lr_at(1.0) * factors[min(n, len(factors)) - 1])
        # A schedule file holds LRs in [1e-12, MAX_LR]: linear decay times a factor < 1 ends below it.
        lrs = [min(max(lr, 10.0 ** LOG10_LR_MIN), MAX_LR) for lr in lrs]
        prov = {**(provenance or {}), "base": self.space.base, "base_lr": float(self.config.lr),
                "factors": factors}
        return LearnedSchedule.from_lrs(lrs, progress=knots, interpolation="log-linear", name="learned",
                                        provenance=prov)

    def export_files(self, out_dir: Path, controller_path: Path | None, controller: str,
                     provenance: dict[str, Any]) -> dict[str, str]:
        """The closed-loop export: for an SB3 or `es` controller, `controller.json` (the observation /
        action contract it was trained with, an `AdaptiveSchedule` sidecar) next to its `controller.zip`
        (`es`: `controller.weights.json`)."""

        algo = CONTROLLER_ALGOS.get(controller)
        if controller_path is None or algo is None:
            return {}
        adaptive = AdaptiveSchedule.from_env(controller_path, self, algo=algo, provenance=provenance)
        return {"closed_loop": adaptive.save(out_dir / "controller.json").name}


class ScheduleEnvV0(ScheduleEnv):
    """`policysearch/Schedule-v0`: `ScheduleEnv` with absolute LRs in `[lr_min, lr_max]` held per
    segment and its 11-entry observation, on one task. Kept unchanged so that v0 runs, their
    controllers, child states and resumes stay reproducible; new searches use Schedule-v1."""

    ENV_ID = "policysearch/Schedule-v0"
    VERSION: ClassVar[int] = 0

    def __init__(self, child: ChildConfig | None = None, *, data: Any = None, augment: str | AugmentPolicy = "none",
                 lr_min: float = 1e-4, lr_max: float = 1.0, **child_kwargs: Any) -> None:
        super().__init__(child, data=data, augment=augment, lr_min=lr_min, lr_max=lr_max, base=None,
                         **child_kwargs)
