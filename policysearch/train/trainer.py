"""The inner training loop: trains in segments so that an environment can change the augmentation
policy and the learning rate between them, and evaluates any split.

Everything stays on the training device: batches are index slices of the uint8 tensors in
`DeviceData`, drawn from a seeded torch.Generator; augmentation runs batched on the same device;
on CUDA the model is channels_last and runs under bf16 autocast. Evaluation is
`policysearch.train.evaluate`, which also owns the input normalisation both share. On the CPU a run is
deterministic for a seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from policysearch.checks import MAX_LR as MAX_LR  # re-exported: the bound used to live here
from policysearch.checks import check_choice, check_int, check_lr, check_number
from policysearch.data import DeviceData
from policysearch.data.preprocess import normalise
from policysearch.device import autocast, device_for_data, resolve_device, to_device
from policysearch.errors import ConfigError, DivergenceError
from policysearch.metrics import Cost, count_parameters, flops_per_image, peak_memory_mb
from policysearch.models import build_for_data, resolve_model
from policysearch.models.weights import load_weights
from policysearch.policies.augment import AugmentPolicy
from policysearch.tasks import get_task
from policysearch.tasks.classification import soft_cross_entropy as soft_cross_entropy  # re-exported
from policysearch.train.evaluate import EVAL_BATCH_SIZE, evaluate, predict

OPTIMIZERS = ("sgd", "adamw")
LRSpec = float | Callable[[float], float] | None


def training_steps(data: DeviceData, batch_size: int, epochs: float) -> int:
    """Optimizer steps in `epochs` passes over the training split (at least one; a partial last batch is
    dropped, as the trainer's epochs do)."""
    return max(1, round(epochs * max(1, len(data.y_train) // batch_size)))


@dataclass
class TrainConfig:
    """How a child model is trained (everything but the policy being searched).

    Attributes:
        model: a built-in or registered name, ``"module:function"``, ``"file.py:function"``,
            ``"torchvision:NAME"``, ``"timm:NAME"``, a factory or an ``nn.Module`` template
            (`policysearch.models.resolve_model`); stored as the resolved name.
        weights: a weights file (`policysearch.models.weights`) loaded into every model built from
            this config, after its seeded initialisation: training starts from it.
        batch_size: images per optimizer step.
        optimizer: "sgd" (Nesterov momentum) or "adamw"; None takes the model's default.
        lr: base learning rate; None takes the model's default.
        momentum: SGD momentum.
        weight_decay: decoupled for AdamW, L2 for SGD.
        label_smoothing: added on top of (possibly mixed) soft targets.
        seed: seeds the initial weights, batch order and augmentation draws.
        device: where to train. The data decides (it is placed once, by `policysearch.data.prepare`):
            "auto" trains wherever the data lives; "cpu", "cuda", "cuda:N" or "mps" must name that
            device, else `Trainer` raises a ConfigError instead of ignoring it. Checked to exist here
            on construction (see `policysearch.device.resolve_device`).
        amp: bf16 autocast on CUDA (ignored on CPU).
        eval_batch_size: images per evaluation batch.
    """

    model: str = "cnn"
    weights: str | None = None
    batch_size: int = 128
    optimizer: str | None = None
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    eval_batch_size: int = EVAL_BATCH_SIZE

    def __post_init__(self) -> None:
        spec = resolve_model(self.model)
        self.model = spec.name  # the config stays JSON-able: a factory or template is known by its name
        if self.weights is not None:
            self.weights = str(self.weights)
        if self.optimizer is None:
            self.optimizer = spec.optimizer
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.lr is None:
            self.lr = spec.lr
        check_lr("lr", self.lr)
        check_int("batch_size", self.batch_size, 1)
        check_int("eval_batch_size", self.eval_batch_size, 1)
        check_number("momentum", self.momentum, 0.0)
        check_number("weight_decay", self.weight_decay, 0.0)
        check_number("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        check_int("seed", self.seed, 0)
        if isinstance(self.device, torch.device):
            self.device = str(self.device)  # the config stays JSON-able (it is written to results)
        resolve_device(self.device)  # an unknown or absent device fails here, before any data is loaded


@dataclass
class SegmentStats:
    """What one call of `Trainer.train_segment` did."""

    steps: int
    images: int
    seconds: float
    train_loss: float
    lr: float
    grad_norm_mean: float
    grad_norm_std: float
    diverged: bool = False
    augment_seconds: float = 0.0  # only measured with Trainer(profile=True)


class Trainer:
    """Trains one child model on `data`, segment by segment.

    Args:
        data: device-resident splits (see `policysearch.data.prepare`).
        config: the training settings.
        total_steps: the planned length of the run; progress = steps done / total_steps drives
            scheduled policies and LR schedules.
        model: an existing module to train instead of building `config.model`.
        profile: measure the augmentation's share of step time (adds device syncs).
        loss_fn: ``loss_fn(outputs, x, targets)`` replacing the task's loss (`policysearch.tasks`), where x
            is the normalised input batch (e.g. knowledge distillation feeds it to a teacher) and targets
            are soft targets (B, K) for classification, an int64 mask (B, H, W) for segmentation, the clean
            image in [0, 1] (B, C, H, W) for restoration.
    """

    def __init__(
        self,
        data: DeviceData,
        config: TrainConfig,
        total_steps: int,
        model: nn.Module | None = None,
        profile: bool = False,
        loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        check_int("total_steps", total_steps, 1)
        if len(data.y_train) < config.batch_size:
            raise ConfigError(
                f"batch_size={config.batch_size} exceeds the {len(data.y_train)} training images; lower --batch-size"
            )
        self.data, self.config, self.total_steps, self.profile = data, config, total_steps, profile
        self.task = get_task(data.task)
        self.loss_fn = loss_fn or (lambda out, x, target: self.task.loss(out, target, data, config.label_smoothing))
        # One device, decided once: the data's. A config naming another one is an error, not ignored.
        self.device = device_for_data(config.device, data.device, "TrainConfig.device")
        if model is None:
            # Initial weights come from the seed alone, without touching the global RNG state.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                model = build_for_data(config.model, data)
            if config.weights is not None:
                load_weights(model, config.weights)
        self.model = to_device(model, self.device)
        self.cuda = self.device.type == "cuda"
        self.optimizer = self._make_optimizer()
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        flops = flops_per_image(self.model, data.input_shape, device=self.device)
        self.cost = Cost(flops_per_image=flops["forward"], params=count_parameters(self.model))
        self.train_flops_per_image = flops["train"]
        self.step = 0
        self.diverged: str | None = None
        self._order = torch.empty(0, dtype=torch.long, device=self.device)
        self._cursor = 0

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        decay = [p for p in self.model.parameters() if p.ndim > 1]
        no_decay = [p for p in self.model.parameters() if p.ndim <= 1]  # no weight decay on norms and biases
        groups = [{"params": decay, "weight_decay": c.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if c.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum, nesterov=c.momentum > 0)
        return torch.optim.AdamW(groups, lr=c.lr)

    @property
    def progress(self) -> float:
        return min(1.0, self.step / self.total_steps)

    @property
    def steps_per_epoch(self) -> int:
        return training_steps(self.data, self.config.batch_size, 1)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def set_lr(self, lr: float) -> None:
        check_lr("lr", lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _next_batch(self) -> torch.Tensor:
        """Indices of the next batch: epoch-wise random permutations, dropping the ragged tail."""
        bs = self.config.batch_size
        if self._cursor + bs > len(self._order):
            n = len(self.data.y_train)
            self._order = torch.randperm(n, device=self.device, generator=self.generator)
            self._cursor = 0
        idx = self._order[self._cursor : self._cursor + bs]
        self._cursor += bs
        return idx

    def train_segment(
        self,
        steps: int,
        augment: AugmentPolicy | None = None,
        lr: LRSpec = None,
        on_step: Callable[[int, float], None] | None = None,
    ) -> SegmentStats:
        """Train for `steps` optimizer steps.

        Args:
            steps: optimizer steps in this segment.
            augment: the policy for this segment (None: no augmentation).
            lr: None keeps the current LR, a float sets it for the segment, a callable maps
                progress in [0, 1] to the LR of every step.
            on_step: called after every step with (steps done in this segment, lr), e.g. a progress bar.

        Returns:
            The segment's statistics. When the loss turns NaN / inf the segment stops early with
            ``diverged=True`` and `self.diverged` says where; training further raises DivergenceError.
        """
        if self.diverged:
            raise DivergenceError(f"this run already diverged ({self.diverged}); start a new Trainer")
        check_int("steps", steps, 0)
        if isinstance(lr, (int, float)):
            self.set_lr(float(lr))
        if augment is not None:
            augment = augment.to(self.device)
            if augment.is_identity:
                augment = None
        self.model.train()
        data, nc = self.data, self.data.num_classes
        params = list(self.model.parameters())
        loss_sum = torch.zeros((), device=self.device)
        norms = torch.zeros(max(steps, 1), device=self.device)
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        check_every = 25 if self.cuda else 1  # a sync per step is free on the CPU, not on a GPU
        start, aug_seconds, done = time.perf_counter(), 0.0, 0
        for i in range(steps):
            if callable(lr):
                self.set_lr(float(lr(self.progress)))
            idx = self._next_batch()
            x = data.x_train[idx].float().div_(255.0)
            y = self.task.batch_target(data.y_train[idx])
            t0 = time.perf_counter() if self.profile else 0.0
            if augment is not None:
                x, target = augment(x, y, nc, progress=self.progress, generator=self.generator,
                                    target_kind=self.task.target_kind)
            else:
                target = self.task.plain_target(y, nc)
            if self.profile:
                if self.cuda:
                    torch.cuda.synchronize(self.device)
                aug_seconds += time.perf_counter() - t0
            x = normalise(x, data)
            with autocast(self.device, self.config.amp):
                loss = self.loss_fn(self.model(x), x, target)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norms[i] = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            self.optimizer.step()
            loss_sum += loss.detach()
            finite &= torch.isfinite(loss.detach())
            self.step += 1
            done += 1
            if on_step is not None:
                on_step(done, self.lr)
            if (i + 1) % check_every == 0 and not bool(finite):
                break
        if self.cuda:
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        images = done * self.config.batch_size
        self.cost.add(seconds, images, self.train_flops_per_image)
        self.cost.peak_memory_mb = max(self.cost.peak_memory_mb, peak_memory_mb(self.device))
        diverged = not bool(finite)
        if diverged:
            self.diverged = f"loss became {float(loss.detach()):g} at step {self.step} (lr {self.lr:g})"
        used = norms[:done] if done else norms[:1]
        return SegmentStats(
            steps=done,
            images=images,
            seconds=seconds,
            train_loss=float(loss_sum / max(done, 1)),
            lr=self.lr,
            grad_norm_mean=float(used.mean()),
            grad_norm_std=float(used.std()) if done > 1 else 0.0,
            diverged=diverged,
            augment_seconds=aug_seconds,
        )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything the next `train_segment` reads, as a copy: weights (and buffers), optimizer
        state (LR and momentum included), step counter, the generator that draws batches,
        augmentation and mixup, the epoch's batch order, the cost so far and the divergence flag.

        Only tensors (on the CPU) and plain values, so ``torch.save`` then
        ``torch.load(weights_only=True)`` round-trips it; `load_state_dict` on a trainer of the same
        config continues bit-identically on the CPU.
        """
        return {
            "config": asdict(self.config),
            "total_steps": self.total_steps,
            "device_type": self.device.type,
            "step": self.step,
            "diverged": self.diverged,
            "model": _cpu_copy(self.model.state_dict()),
            "optimizer": _cpu_copy(self.optimizer.state_dict()),
            "generator": self.generator.get_state().clone(),
            "order": _cpu_copy(self._order),
            "cursor": self._cursor,
            "cost": self.cost.to_dict(),
            "train_flops_per_image": float(self.train_flops_per_image),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the child training `state` (from `state_dict`) describes, exactly.

        Everything is checked before anything changes, so a refused state leaves this trainer as it was.
        The config's seed becomes the state's (it names the child); the tensors are copied, so one
        state can be loaded into several trainers.

        Raises:
            ConfigError: The state is not a trainer state, or is for another config (model, optimizer,
                batch size, ...), run length, device type, or model shapes; the message names which.
        """
        if not isinstance(state, dict):
            raise ConfigError(f"trainer state is a {type(state).__name__}, expected a dict from Trainer.state_dict()")
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise ConfigError(f"trainer state lacks {', '.join(missing)}; expected a dict from Trainer.state_dict()")
        config = state["config"] if isinstance(state["config"], dict) else {}
        for name in _STATE_CONFIG_FIELDS:
            if config.get(name) != getattr(self.config, name):
                raise ConfigError(f"trainer state is for {name}={config.get(name)!r}, this trainer has "
                                  f"{name}={getattr(self.config, name)!r}")
        if state["total_steps"] != self.total_steps:
            raise ConfigError(f"trainer state is for a run of total_steps={state['total_steps']!r}, this trainer's "
                              f"is {self.total_steps} (progress, and so schedules, would differ)")
        if state["device_type"] != self.device.type:
            raise ConfigError(f"trainer state comes from a {state['device_type']!r} device, this trainer is on "
                              f"{self.device.type!r}: its random generator state does not carry over")
        for name, kind in (("optimizer", dict), ("generator", torch.Tensor), ("order", torch.Tensor), ("cost", dict),
                           ("step", int), ("cursor", int)):
            if not isinstance(state[name], kind) or isinstance(state[name], bool):
                raise ConfigError(f"trainer state field {name!r} is a {type(state[name]).__name__}, "
                                  f"expected a {kind.__name__}")
        _check_tensors("model", state["model"], self.model.state_dict())
        groups = state["optimizer"].get("param_groups")
        ours = [len(g["params"]) for g in self.optimizer.param_groups]
        theirs = ([len(g["params"]) for g in groups] if isinstance(groups, list)
                  and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups) else groups)
        if theirs != ours:
            raise ConfigError(f"trainer state's optimizer has parameter groups of sizes {theirs}, "
                              f"this trainer's {ours}")
        try:
            cost = Cost(**state["cost"])
        except TypeError as exc:
            raise ConfigError(f"trainer state field 'cost' does not fit Cost: {exc}") from None
        generator = torch.Generator(device=self.device)
        try:
            generator.set_state(state["generator"].clone())
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(f"trainer state field 'generator' is not a {self.device.type} generator state "
                              f"({exc})") from None

        self.model.load_state_dict(state["model"])  # copies into the existing parameters
        # The optimizer keeps tensors it is given when device and dtype already match: copy them, so the
        # state (and any other trainer loaded from it) is not updated in place by this one's steps.
        self.optimizer.load_state_dict(_cpu_copy(state["optimizer"]))
        self.generator = generator
        self._order = state["order"].to(self.device, copy=True)
        self._cursor, self.step = int(state["cursor"]), int(state["step"])
        self.diverged = state["diverged"]
        self.cost = cost
        self.train_flops_per_image = float(state["train_flops_per_image"])
        self.config = replace(self.config, seed=config.get("seed", self.config.seed))

    def predict(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (float32) and labels of a whole split (`policysearch.train.evaluate.predict`)."""
        return predict(self.model, self.data, split, batch_size=self.config.eval_batch_size, amp=self.config.amp)

    def evaluate(self, split: str = "val", reward_metric: str | None = None) -> dict[str, float]:
        """The task's metrics on "train", "val" or "test" (`policysearch.train.evaluate`): accuracy, macro P / R /
        F1, ECE and NLL for classification (plus the `reward_metric` when it is measured under attack, e.g.
        "fgsm_accuracy"); mIoU, pixel accuracy and per-class IoU; PSNR and SSIM."""
        return evaluate(self.model, self.data, split, batch_size=self.config.eval_batch_size, amp=self.config.amp,
                        reward_metric=reward_metric)


# What `Trainer.load_state_dict` needs; the config fields a state must share with the trainer it
# is loaded into (the seed is the child's own, the LR lives in the optimizer state, and the
# device only has to be of the same type).
_STATE_KEYS = ("config", "total_steps", "device_type", "step", "diverged", "model", "optimizer", "generator",
               "order", "cursor", "cost", "train_flops_per_image")
_STATE_CONFIG_FIELDS = ("model", "batch_size", "optimizer", "momentum", "weight_decay", "label_smoothing", "amp")


def _cpu_copy(obj: Any) -> Any:
    """`obj` with every tensor replaced by a detached CPU copy (dicts, lists and tuples walked)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def _check_tensors(what: str, given: Any, expected: dict[str, torch.Tensor]) -> None:
    """Refuse `given` unless it has exactly `expected`'s keys, shapes and dtypes."""
    if not isinstance(given, dict):
        raise ConfigError(f"trainer state field {what!r} is a {type(given).__name__}, expected a dict of tensors")
    missing, extra = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    if missing or extra:
        raise ConfigError(f"trainer state's {what} does not fit this model: missing {missing[:5]}, "
                          f"unexpected {extra[:5]}")
    for key, ref in expected.items():
        t = given[key]
        if not isinstance(t, torch.Tensor) or t.shape != ref.shape or t.dtype != ref.dtype:
            got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ConfigError(f"trainer state's {what} tensor {key!r} is {got}, this model's is "
                              f"{tuple(ref.shape)} {ref.dtype}")
