"""`policysearch/Compress-v0`: learn per-layer pruning ratios (AMC, He et al. 2018) under a FLOPs budget.

See `CompressEnv` for the model card. The artefact is a `CompressionPlan`
(`policysearch.policies.compress`); pruning itself is torch-pruning's (the `prune` extra). The exact
FLOPs model behind AMC's clip and the `PlanSpace` it clips in live there too, shared with the
`CompressionPlan.uniform` / `.random` constructors (the engine never imports the envs).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from torch import nn

from policysearch.channels.groups import CRITERIA, require_torch_pruning
from policysearch.channels.space import PlanSpace
from policysearch.checks import check_choice, check_int, check_lr, check_number, check_tensors
from policysearch.compression.distill import _check_kd, distill
from policysearch.compression.pruning import adaptive_bn, val_score
from policysearch.compression.teacher import check_teacher
from policysearch.envs.base import ChildConfig, ChildEnv, state_fields
from policysearch.errors import ConfigError
from policysearch.metrics import count_parameters, difference_unit, flops_per_image, measure_latency
from policysearch.policies.compress import CompressionPlan
from policysearch.tasks import get_task
from policysearch.train.checkpoint import load_checkpoint
from policysearch.train.evaluate import evaluate

__all__ = ["OBSERVATION_NAMES", "PROXIES", "REWARDS", "CompressEnv", "PlanSpace"]

log = logging.getLogger(__name__)

REWARDS = ("acc", "error_log_flops")
PROXIES = ("adaptive-bn", "distill")

OBSERVATION_NAMES: tuple[str, ...] = (
    "layer_index",
    "is_conv",
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "flops_share",
    "flops_removed",
    "flops_to_remove",
    "previous_keep",
)


#: How far below every student within its targets one over a target scores (`CompressEnv`): the range of the
#: score's unit, by `difference_unit`: a fraction (accuracy, mIoU) spans 1; PSNR of images in [0, 1] spans
#: 0..100 dB (the task floors the MSE at 1e-10).
SCORE_SPAN: dict[str, float] = {"points": 1.0, "dB": 100.0}


def kept_ratio(kept: int, channels: int) -> float:
    """The keep ratio a plan records for `kept` of `channels` (``kept_channels`` inverts it exactly)."""
    return kept / channels


class CompressEnv(ChildEnv):
    """Learn how many channels each layer of a trained network keeps, under a FLOPs budget (AMC).

    ## Description
    An episode compresses the teacher once, one channel group per step (AMC, He et al. 2018). A
    group is a prunable layer, or, in a ResNet, the layers whose outputs add into the same residual
    sum (see `policysearch.policies.compress`); `episode_length` is the number of groups, in module
    order, the classifier head (a dense model's output conv) excluded. The teacher may be a
    classifier or a dense model (a ``unet`` on segmentation or restoration data): students are scored
    by the data's task metric (`policysearch.tasks.Task.default_metric`: accuracy, mIoU or PSNR). At
    each step the action sets the group's keep ratio, clipped so that the FLOPs target stays
    reachable. After the last group the teacher is pruned structurally with torch-pruning (magnitude
    `criterion`; coupled channels stay consistent) and the student is scored by the `proxy`:
    "adaptive-bn" (default; EagleEye, Li et al. 2020) recomputes its BatchNorm statistics on
    `bn_batches` training batches (no gradient, weights untouched) and validates; "distill"
    fine-tunes it for `finetune_steps` by knowledge distillation (the task's distillation loss,
    `policysearch.compression.distill.kd_loss_for`), then validates.
    With `uniform_first` (default) the env's first episode is the uniform plan whatever the actions
    (candidate 0: `CompressionPlan.uniform` under every target), so a search never ends below it.

    ## Action Space
    `Box(-1, 1, (1,), float32)`: `a` maps linearly to a keep ratio
    `r = min_keep + (a + 1) / 2 * (max_keep - min_keep)`, i.e. `round(r * C)` of the group's C
    channels (at least `ceil(min_keep * C)` and one, at most `floor(max_keep * C)`). AMC's rule
    then clips it: with the groups decided so far at their choices and every later group at its
    minimum, the FLOPs must stay within `flops_target`; the group keeps the largest count that
    allows. `info` records the wanted and the clipped ratio. Actions outside [-1, 1] are clipped.

    ## Observation Space
    `Box(0, 1, (10,), float32)`; "width" is the largest channel / feature count among the
    groups' leaders, FLOPs are forward FLOPs per image of the whole model.

    | index | observation                                                                    |
    |-------|--------------------------------------------------------------------------------|
    | 0     | layer index / number of groups (1.0 once the episode is over)                  |
    | 1     | 1 for a Conv2d leader, 0 for a Linear                                          |
    | 2     | leader's input channels (features) / width                                     |
    | 3     | group's output channels / width                                                |
    | 4     | leader's kernel size / largest kernel size (1 for a Linear)                    |
    | 5     | leader's stride / largest stride (1 for a Linear)                              |
    | 6     | FLOPs of the layers this group's channels feed or come from / teacher FLOPs     |
    | 7     | FLOPs removed by the decisions so far (later groups unpruned) / teacher FLOPs  |
    | 8     | FLOPs still to remove to meet the target, same basis / teacher FLOPs           |
    | 9     | the previous group's keep ratio after clipping (1.0 at the first group)        |

    Indices 1-6 are 0 in the terminal observation.

    ## Rewards
    0 before the last step. At the last step, after pruning and scoring: `reward="acc"` gives
    the student's validation score, the data's task metric (`reward_metric`: accuracy for a classifier,
    mIoU for a segmentation, PSNR in dB for a restoration; `info["val"]` holds it under that name). The
    FLOPs budget holds by construction; a student over the `params_target` or `latency_target`,
    measured, scores its score minus the metric's range (accuracy - 1, mIoU - 1, PSNR - 100 dB;
    `SCORE_SPAN`), below every student within them, and `info["meets_targets"]` is False.
    `reward="error_log_flops"` gives AMC's `-(1 - accuracy) * ln(FLOPs per image)` (a metric that is a
    fraction: accuracy or mIoU, not PSNR).
    `info["metric"]` is the validation score either way (the search driver ranks by it). A
    diverging fine-tune (NaN / inf loss) ends the episode with `-divergence_penalty`, logged as
    a warning, with `info["diverged"]` saying where.

    ## Episode End
    Terminated after the last group. Never truncated by the env.

    ## Arguments
    Those marked * are fields of `ChildConfig` (`policysearch.envs.base`), shared by every env:
    pass them as keywords, or as one `child=ChildConfig(...)` (keywords then override its fields).
    Its model, lr, optimizer, episode, reward-metric and cost fields are not used here.
    - `teacher`: a trained `nn.Module`, or `checkpoint`: a file from `policysearch train --save`
      (one of the two); `model_name` labels a plain module in the plan (default: its class name).
    - `dataset`* (default: the checkpoint's, else "digits") or `data=`, a prepared DeviceData;
      `train_size`*, `val_size`*, `data_dir`*, `split_seed`*: the split; use the teacher's training
      split, or the validation images may have been seen by the teacher.
    - `device`*: "cpu", "cuda", "auto".
    - `flops_target`: FLOPs budget as a fraction of the teacher's, in (0, 1].
    - `min_keep`, `max_keep`: the keep-ratio range of every group (`0 < min_keep <= max_keep <= 1`).
    - `criterion`: "l2" (default) or "l1" group magnitude: which channels go.
    - `params_target`, `latency_target`: parameter and CPU-latency budgets as fractions of the
      teacher's, in (0, 1]; latency is measured at batch 1 and `latency_batch`.
    - `proxy`: "adaptive-bn" or "distill"; `bn_batches`: adaptive-BN batches (of `batch_size`);
      `val_images`: score on the first N validation images (None: all; a segmentation's mIoU is then
      that of those images' pixels).
    - `uniform_first`: the first episode is the uniform plan (candidate 0).
    - `finetune_steps` (default: one epoch of the training split), `finetune_lr`,
      `temperature`, `alpha`, `batch_size`*: the distillation fine-tune of `proxy="distill"`
      (see `policysearch.compression.distill`).
    - `reward`: "acc" or "error_log_flops".
    - `divergence_penalty`*: reward of a diverged fine-tune.
    - `seed`: seeds the episode stream at construction, so that `reset()` without a seed is
      reproducible too (`reset(seed=)` reseeds as usual).
    - `child_seed`*: None draws each fine-tune's seed (batch order) from the env's seed; an int
      fixes it for every episode (common random numbers).

    ## Version History
    - v0: initial version; the adaptive-BN proxy, candidate 0 and the parameter / latency targets
      were added later (`proxy="distill", uniform_first=False` gives the first rewards back); dense
      teachers on segmentation and restoration data later still, scored by their task's metric (a
      classifier's rewards unchanged).
    """

    ENV_ID = "policysearch/Compress-v0"
    # The teacher is the model; an episode is one decision per layer, then one distillation fine-tune.
    UNUSED_CHILD_FIELDS = ("model", "weights", "lr", "optimizer", "episode_length", "steps_per_segment",
                           "reward_metric", "cost_weight", "cost_metric", "weight_decay", "label_smoothing", "amp")

    def __init__(
        self,
        teacher: nn.Module | None = None,
        child: ChildConfig | None = None,
        *,
        checkpoint: str | Path | None = None,
        model_name: str | None = None,
        data: Any = None,
        flops_target: float = 0.5,
        min_keep: float = 0.2,
        max_keep: float = 1.0,
        criterion: str = "l2",
        finetune_steps: int | None = None,
        finetune_lr: float = 0.01,
        temperature: float = 4.0,
        alpha: float = 0.9,
        reward: str = "acc",
        proxy: str = "adaptive-bn",
        bn_batches: int = 20,
        val_images: int | None = None,
        params_target: float = 1.0,
        latency_target: float = 1.0,
        latency_batch: int | None = None,
        uniform_first: bool = True,
        seed: int | None = None,
        **child_kwargs: Any,
    ) -> None:
        super().__init__()

        # Everything checkable without data or tracing is checked first.
        child = self._child_config(child, child_kwargs)
        if (teacher is None) == (checkpoint is None):
            raise ConfigError(
                "give exactly one of teacher= (an nn.Module) and checkpoint= (a file from `train --save`)"
            )
        if teacher is not None and not isinstance(teacher, nn.Module):
            raise ConfigError(f"teacher is a {type(teacher).__name__}, expected a torch.nn.Module")
        check_choice("pruning criterion", criterion, CRITERIA)
        check_choice("reward", reward, REWARDS)
        check_choice("proxy", proxy, PROXIES)
        check_int("bn_batches", bn_batches, 0)
        if val_images is not None:
            check_int("val_images (None: the whole validation split)", val_images, 1)
        check_number("params_target (a fraction of the teacher's parameters)", params_target, 0.0, 1.0,
                     low_open=True)
        check_number("latency_target (a fraction of the teacher's CPU latency)", latency_target, 0.0, 1.0,
                     low_open=True)
        if latency_batch is not None:
            check_int("latency_batch", latency_batch, 1)
        check_number("flops_target (a fraction of the teacher's FLOPs)", flops_target, 0.0, 1.0, low_open=True)
        check_number("min_keep", min_keep, 0.0, 1.0, low_open=True)
        check_number("max_keep", max_keep, 0.0, 1.0, low_open=True)
        if min_keep > max_keep:
            raise ConfigError(f"min_keep is {min_keep!r}, expected at most max_keep ({max_keep!r})")
        if finetune_steps is not None:
            check_int("finetune_steps (None: one epoch)", finetune_steps, 0)
        check_lr("finetune_lr", finetune_lr)
        _check_kd(temperature, alpha)
        require_torch_pruning(f"{self.ENV_ID}")  # before any data is loaded

        ckpt = None
        if checkpoint is not None:
            ckpt = load_checkpoint(checkpoint)
            teacher = ckpt.build()
            model_name = ckpt.model_name
            if child.dataset is None:
                child = dataclasses.replace(child, dataset=(ckpt.info.get("dataset") or {}).get("name"))
        assert teacher is not None
        check_tensors("teacher", teacher.state_dict(), error=ConfigError)  # NaN weights score as a perfect student
        self._setup_child(child, data)
        # Fixed by this env's design: the search ranks students by the data's task metric (accuracy, mIoU,
        # PSNR); the FLOPs budget is a constraint.
        self.reward_metric = get_task(self.data.task).default_metric
        self.cost_metric, self.cost_weight = "tflops", 0.0
        self.score_span = SCORE_SPAN[difference_unit(self.reward_metric)[1]]
        if reward == "error_log_flops" and difference_unit(self.reward_metric)[1] != "points":
            raise ConfigError(f"reward='error_log_flops' is -(1 - score) x ln FLOPs, for a score that is a fraction; "
                              f"students of {self.data.task} data are scored by {self.reward_metric}: use reward='acc'")
        data, batch_size = self.data, child.batch_size
        if ckpt is not None and (tuple(ckpt.input_shape) != data.input_shape or ckpt.num_classes != data.output_size):
            raise ConfigError(
                f"checkpoint {checkpoint} is for {ckpt.num_classes} classes of {tuple(ckpt.input_shape)} images, "
                f"the data ({data.name}) has {data.output_size} of {data.input_shape}; "
                "pass the dataset it was trained on"
            )
        if len(data.y_train) < batch_size:
            raise ConfigError(f"batch_size={batch_size} exceeds the {len(data.y_train)} training images; lower it")
        check_teacher(teacher, data, f"checkpoint {checkpoint}" if checkpoint is not None else "the teacher")
        # The env owns its teacher: the caller's module is neither moved nor pruned.
        self.teacher = copy.deepcopy(teacher).to(data.device).eval()
        self.model_name = model_name or type(teacher).__name__
        self.example = torch.zeros(1, *data.input_shape, device=data.device)

        # Groups, per-layer FLOPs and the FLOPs model; the measured total must match it exactly,
        # or the budget guarantee would rest on a wrong count.
        self.space = PlanSpace(self.teacher, self.example, flops_target, min_keep, max_keep)
        self.groups, self.flops_model = self.space.groups, self.space.flops_model
        self.teacher_flops = int(flops_per_image(self.teacher, data.input_shape, device=data.device)["forward"])
        if abs(self.flops_model.total - self.teacher_flops) > 1e-6 * self.teacher_flops:
            raise ConfigError(
                f"{self.model_name}: {self.teacher_flops} FLOPs per image measured, {self.flops_model.total:.0f} in "
                "its Conv2d / Linear layers; FLOPs outside them (e.g. attention) cannot be budgeted. "
                "Supported: Conv2d / Linear / BatchNorm networks such as mlp, cnn, resnet"
            )
        self.teacher_params = count_parameters(self.teacher)
        self.min_count, self.max_count = self.space.min_count, self.space.max_count
        # The budget is a fraction of the measured FLOPs (the model's total, checked above).
        self.target_flops = self.space.target_flops = flops_target * self.teacher_flops
        smallest = self.flops_model([lo / g.channels for g, lo in zip(self.groups, self.min_count)])
        if smallest > self.target_flops:
            raise ConfigError(
                f"flops_target={flops_target} is out of reach: with min_keep={min_keep} the smallest "
                f"{self.model_name} keeps {smallest / self.teacher_flops:.3f} of its FLOPs; raise flops_target "
                "or lower min_keep"
            )
        self.teacher_val = evaluate(self.teacher, data, "val")
        self.proxy, self.bn_batches, self.val_images = proxy, int(bn_batches), val_images
        self.params_target, self.latency_target = float(params_target), float(latency_target)
        self.latency_batches = sorted({1, latency_batch or 1})
        self.uniform_first = bool(uniform_first)
        # Candidate 0: the uniform plan under every target (measured), so no search ends below it.
        self.uniform_plan = CompressionPlan.uniform(
            self.teacher, self.example, flops_target=flops_target, params_target=params_target,
            latency_target=latency_target, latency_batch=latency_batch, min_keep=min_keep, max_keep=max_keep,
            criterion=criterion, model_name=self.model_name, task=data.task)
        self._uniform_counts = [self.uniform_plan.kept()[g.name] for g in self.groups]
        self.teacher_latency_ms = dict(self.uniform_plan.teacher_latency_ms)
        self._episodes_started = 0
        self._forced = False

        self.episode_length = len(self.groups)  # one episode is one child (one student): mode "schedule"
        self.flops_target, self.min_keep, self.max_keep = float(flops_target), float(min_keep), float(max_keep)
        self.criterion, self.reward = criterion, reward
        self.finetune_steps = finetune_steps if finetune_steps is not None else max(1, len(data.y_train) // batch_size)
        self.finetune_lr, self.temperature, self.alpha = float(finetune_lr), float(temperature), float(alpha)
        self.batch_size, self.divergence_penalty = batch_size, float(child.divergence_penalty)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(len(OBSERVATION_NAMES),), dtype=np.float32)
        self._width = max(max(g.channels, g.in_features) for g in self.groups)
        self._kernel = max(g.kernel_size for g in self.groups)
        self._stride = max(g.stride for g in self.groups)
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seed)
        self.spec_kwargs = {
            "dataset": data.name, "model": self.model_name, "episode_length": self.episode_length,
            "flops_target": self.flops_target, "min_keep": self.min_keep, "max_keep": self.max_keep,
            "criterion": criterion, "reward": reward, "reward_metric": self.reward_metric,
            "proxy": proxy, "bn_batches": self.bn_batches, "val_images": val_images,
            "params_target": self.params_target, "latency_target": self.latency_target,
            "latency_batches": self.latency_batches, "uniform_first": self.uniform_first,
            "finetune_steps": self.finetune_steps, "finetune_lr": self.finetune_lr, "temperature": self.temperature,
            "alpha": self.alpha, "batch_size": batch_size, "child_seed": self.child_seed,
            "cost_metric": self.cost_metric, "cost_weight": self.cost_weight,
            "checkpoint": str(checkpoint) if checkpoint is not None else None,
            "layers": [g.name for g in self.groups], "teacher_flops": self.teacher_flops,
            "teacher_params": self.teacher_params, "teacher_val": dict(self.teacher_val),
        }
        self.student: nn.Module | None = None  # the last episode's pruned, distilled model
        self._layer = 0
        self._counts: list[int] = []
        self._seed_now: int | None = None
        self._episode_open = False

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        if options and options.get("advance_only"):
            return self._advance_only(seed)
        super().reset(seed=seed)
        self._seed_now = self._draw_child_seed()
        self._forced = self.uniform_first and self._episodes_started == 0
        self._episodes_started += 1
        self._layer, self._counts, self._episode_open = 0, [], True
        self.last_seconds, self._episode_steps = 0.0, []
        info = {"val": dict(self.teacher_val), "child_seed": self._seed_now, "teacher_flops": self.teacher_flops,
                "teacher_params": self.teacher_params}
        return self._observation(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self._episode_open:
            raise ConfigError("call reset() before step(); an episode ends after its last layer")
        a = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)[0])
        i, g = self._layer, self.groups[self._layer]
        wanted_ratio = self.min_keep + (a + 1.0) / 2.0 * (self.max_keep - self.min_keep)
        wanted = min(self.max_count[i], max(self.min_count[i], round(g.channels * wanted_ratio)))
        allowed = self.space.max_allowed(self._counts)
        kept = max(self.min_count[i], min(wanted, allowed))
        if self._forced:  # candidate 0 is the uniform plan, whatever the action (it meets every clip)
            wanted = kept = self._uniform_counts[i]
        self._counts.append(kept)
        self._layer += 1
        self.last_seconds = 0.0
        info: dict[str, Any] = {"layer": g.name, "layer_index": i, "action": [round(a, 5)],
                                "wanted_keep": kept_ratio(wanted, g.channels), "keep": kept_ratio(kept, g.channels),
                                "kept_channels": kept, "channels": g.channels, "clipped": kept < wanted,
                                "uniform": self._forced,
                                "train_flops": 0.0, "diverged": None}
        if self._layer < self.episode_length:
            self._log_step(info, 0.0)
            return self._observation(), 0.0, False, False, info
        self._episode_open = False
        reward = self._finish(info)
        self._log_step(info, reward)
        return self._observation(), reward, True, False, info

    # ------------------------------------------------------------------ internals
    def _fractions(self) -> list[float]:
        """Kept fractions: decided groups at their choice, the rest unpruned."""
        done = [c / g.channels for c, g in zip(self._counts, self.groups)]
        return done + [1.0] * (len(self.groups) - len(done))

    def _plan(self) -> CompressionPlan:
        return CompressionPlan(
            ratios={g.name: kept_ratio(c, g.channels) for g, c in zip(self.groups, self._counts)},
            channels={g.name: g.channels for g in self.groups},
            criterion=self.criterion, flops_target=self.flops_target, model=self.model_name,
            input_shape=self.data.input_shape, num_classes=self.data.output_size,
            teacher_flops=self.teacher_flops, teacher_params=self.teacher_params, task=self.data.task,
        )

    def _finish(self, info: dict[str, Any]) -> float:
        """Prune, score by the proxy (adaptive BN, or a short distillation); fills `info`, returns the reward."""
        import time


        plan = self._plan()
        start = time.perf_counter()
        student = plan.apply(self.teacher, self.example)
        flops = int(flops_per_image(student, self.data.input_shape, device=self.data.device)["forward"])
        params = count_parameters(student)
        latency = (measure_latency(student, self.data.input_shape, self.latency_batches)
                   if self.latency_target < 1.0 else {})
        plan = dataclasses.replace(plan, flops=flops, params=params, latency_ms=latency)
        assert self._seed_now is not None
        info.update({"flops": flops, "flops_fraction": flops / self.teacher_flops,
                     "predicted_flops_fraction": self.flops_model(self._fractions()) / self.teacher_flops,
                     "params": params, "params_fraction": params / self.teacher_params,
                     "latency_ms": latency, "meets_targets": plan.meets_targets(), "plan": plan.to_dict()})
        if self.proxy == "adaptive-bn":
            images = adaptive_bn(student, self.data, self.bn_batches, self.batch_size, seed=self._seed_now)
            info.update({"train_flops": float(images * flops), "bn_images": images})
        else:
            stats = distill(student, self.teacher, self.data, self.finetune_steps, self.finetune_lr,
                            temperature=self.temperature, alpha=self.alpha, batch_size=self.batch_size,
                            seed=self._seed_now)
            info.update({"train_flops": stats.train_flops, "finetune_steps": stats.steps,
                         "finetune_loss": stats.loss})
            if stats.diverged:
                self.last_seconds = time.perf_counter() - start
                log.warning("distillation diverged (%s); episode ends with penalty %s", stats.diverged,
                            self.divergence_penalty)
                info["diverged"], info["val"] = stats.diverged, {}
                return -self.divergence_penalty
        score = val_score(student, self.data, self.val_images)
        # Wall time stays out of `info` (and so out of determinism checks); the search driver reads it here.
        self.last_seconds = time.perf_counter() - start
        self.student = student
        # A student over a parameter or latency target scores below every student within them.
        metric = score if info["meets_targets"] else score - self.score_span
        info["val"], info["metric"] = {self.reward_metric: score}, metric
        if self.reward == "acc":
            return metric
        return -(1.0 - metric) * math.log(flops)

    def _observation(self) -> np.ndarray:
        total = float(self.teacher_flops)
        now = self.flops_model(self._fractions())
        head = [
            self._layer / self.episode_length,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            (total - now) / total,
            max(0.0, now - self.target_flops) / total,
            self._counts[-1] / self.groups[len(self._counts) - 1].channels if self._counts else 1.0,
        ]
        if self._layer < self.episode_length:
            g = self.groups[self._layer]
            head[1:7] = [float(g.kind == "conv"), g.in_features / self._width, g.channels / self._width,
                         g.kernel_size / self._kernel, g.stride / self._stride,
                         self.flops_model.touch[self._layer] / total]
        return np.clip(np.asarray(head, dtype=np.float64), 0.0, 1.0).astype(np.float32)

    # ------------------------------------------------------------------ child state (see ChildEnv.get_state)
    # Nothing trains before the last layer: the state is the decisions so far, the layer index, the fine-tune
    # seed and the env's RNG. A finished episode's student is not in it (its plan is); `set_state` clears it.
    STATE_FREE_SETTINGS = ("checkpoint",)  # the teacher file may be read from another folder

    def _episode_state(self) -> dict[str, Any]:
        return {"layer": self._layer, "counts": list(self._counts), "seed_now": self._seed_now,
                "episode_open": self._episode_open, "episodes_started": self._episodes_started,
                "forced": self._forced}

    def _advance_only(self, seed: int | None) -> tuple[np.ndarray, dict[str, Any]]:
        self._episodes_started += 1  # a replayed episode counts: candidate 0 stays the first one
        return super()._advance_only(seed)

    def _set_episode_state(self, episode: dict[str, Any]) -> None:
        layer, counts, seed_now, episode_open = state_fields(
            episode, "episode", ("layer", "counts", "seed_now", "episode_open"))
        ok = (isinstance(counts, list) and layer == len(counts) <= self.episode_length
              and all(isinstance(c, int) and lo <= c <= g.channels
                      for c, lo, g in zip(counts, self.min_count, self.groups)))
        if not ok:
            raise ConfigError(f"set_state: the state's decisions (layer {layer!r}, kept channels {counts!r}) do not "
                              f"fit this teacher's {self.episode_length} channel groups")
        self._layer, self._counts, self._seed_now = layer, list(counts), seed_now
        self._episodes_started = int(episode.get("episodes_started", 1))
        self._forced = bool(episode.get("forced", False))
        self._episode_open, self.student = bool(episode_open), None

    def _current_observation(self) -> np.ndarray | None:
        return None if self._seed_now is None else self._observation()

    # ------------------------------------------------------------------ baseline search space
    def suggest_episode(self, trial: Any) -> list[np.ndarray]:
        """One action per group from an Optuna trial (the `tpe` / `cmaes` baseline for this env)."""
        return [np.array([trial.suggest_float(f"keep/{g.name}", -1.0, 1.0)], dtype=np.float32) for g in self.groups]

    # ------------------------------------------------------------------ export
    def export(self, steps: list[dict[str, Any]], provenance: dict[str, Any] | None = None) -> CompressionPlan:
        """The plan an episode built (its last step's `info["plan"]`), with `provenance`."""
        if not steps or "plan" not in steps[-1]:
            raise ConfigError(f"export: the episode has {len(steps)} of {self.episode_length} steps and no plan; "
                              "export a finished episode")
        plan = CompressionPlan.from_dict(steps[-1]["plan"], source="episode")
        return dataclasses.replace(plan, provenance=dict(provenance or {}))
