"""One whole training run: a fresh model trained for some epochs under an augmentation policy and an
LR schedule of any kind (`policysearch.policies.schedule_kinds`), then scored on validation and test.

What `policysearch train`, `evaluate` and every comparison run; the segment-by-segment loop itself is
`policysearch.train.trainer.Trainer`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

from torch import nn

from policysearch.checks import MAX_LR, check_choice
from policysearch.data import DeviceData
from policysearch.errors import ConfigError
from policysearch.metrics import reward_value
from policysearch.policies.augment import AugmentPolicy
from policysearch.policies.schedule import SCHEDULES, LearnedSchedule, named_schedule
from policysearch.policies.schedule_kinds import CLOSED_LOOP, ONLINE, OPEN_LOOP, PEAK_RULE, schedule_kind
from policysearch.policies.schedule_space import PEAKS
from policysearch.tasks import get_task
from policysearch.tracking import Tracker
from policysearch.train.lr_range import DEFAULT_STEPS, lr_range_test
from policysearch.train.trainer import TrainConfig, Trainer, training_steps

__all__ = ["RunResult", "train_run"]


@dataclass
class RunResult:
    """The outcome of `train_run`: figures for reports and the trained model."""

    val: dict[str, float]
    test: dict[str, float]
    cost: dict[str, Any]
    config: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    diverged: str | None = None
    model: nn.Module | None = None
    range_test: dict[str, Any] | None = None  # peak="range-test": the test's suggestion, steps and images
    selection: dict[str, Any] | None = None  # a peak rule's decision: factor, features, the estimate's images


def train_run(
    data: DeviceData,
    config: TrainConfig,
    epochs: float,
    augment: AugmentPolicy | None = None,
    schedule: Any = None,
    progress: bool = True,
    description: str = "train",
    tracker: Tracker | None = None,
    run_name: str = "",
    peak: str = "default",
    test: bool = True,
) -> RunResult:
    """Train a fresh model for `epochs` with a policy and an LR schedule, then report val and test.

    Args:
        data: device-resident splits.
        config: training settings; its lr is the base LR of named schedules.
        epochs: passes over the training split (fractions allowed); 0 scores the model as built (from
            ``config.weights``: a trained model) without training it.
        augment: augmentation policy (None: none).
        schedule: any schedule of `policysearch.policies.schedule_kinds`: open loop (``lr_at(progress)``:
            a LearnedSchedule), closed loop (an AdaptiveSchedule), online (Hypergradient) or a peak rule
            (PeakRule); None keeps the base LR.
        progress: show a progress bar on stderr.
        description: the progress bar's label.
        tracker: told of the start, every epoch and the end (`policysearch.tracking`).
        run_name: the training's name for `tracker` ("" for a lone training).
        peak: "default" trains at ``config.lr``; "range-test" first runs an LR range test from the
            run's initial weights (`policysearch.train.lr_range`) and uses the LR it suggests as the base
            LR, the run giving up as many steps as the test took (same images in all). A closed-loop
            controller trained with a range-test peak implies it.
        test: evaluate the test split (False: its metrics are NaN, for searches that must not see it).
    """
    from tqdm.auto import tqdm

    tracker = tracker or Tracker()
    if not epochs >= 0:
        raise ConfigError(f"epochs is {epochs!r}, expected a number >= 0 (0: score the model without training)")
    total = training_steps(data, config.batch_size, epochs)
    if epochs == 0:
        schedule, peak = None, "default"  # nothing trains: no schedule to follow, no peak to find
    kind = schedule_kind(schedule)
    if kind == PEAK_RULE and peak != "default":
        raise ConfigError(f"a peak rule picks the peak itself; drop peak={peak!r}")
    range_test = _range_test(data, config, schedule, kind, total, peak)
    if range_test is not None:  # the run peaks where the test says, and gives up the test's steps
        tested = range_test.suggestion()
        schedule = _at_peak(schedule, tested, config.lr)
        config = replace(config, lr=tested)
        total -= range_test.steps
    trainer = Trainer(data, config, total_steps=total)
    if range_test is not None:  # the test's images are this run's cost
        trainer.cost.add(range_test.seconds, range_test.images, trainer.train_flops_per_image)
    selection = None
    if kind == PEAK_RULE:  # measures the start (a copy of the model), picks an open-loop schedule
        schedule, selection = schedule.select(trainer.model, data, config, total)
        kind = schedule_kind(schedule)
        trainer.cost.add(selection["seconds"], selection["images"], trainer.train_flops_per_image)
    history: list[dict[str, float]] = []
    tracker.on_train_start(run_name, {"config": asdict(config), "epochs": epochs, "steps": total,  # tracking hook
                                      "augment": getattr(augment, "name", None), "schedule": _schedule_name(schedule),
                                      "dataset": data.name, "dataset_fingerprint": data.fingerprint})
    with tqdm(total=total, desc=description, disable=not progress, leave=False, unit="step") as bar:
        if epochs == 0:
            pass  # scored as built
        elif kind == CLOSED_LOOP:  # an AdaptiveSchedule sets the LR from live statistics
            _train_closed_loop(trainer, total, augment, schedule, bar, history)
        else:
            if kind == ONLINE:  # a Hypergradient: its optimizer hooks set the LR
                schedule.attach(trainer.optimizer)
            lr_fn = schedule.lr_at if kind == OPEN_LOOP else None
            done = 0
            while done < total and not trainer.diverged:
                steps = min(trainer.steps_per_epoch, total - done)
                stats = trainer.train_segment(steps, augment, lr_fn, on_step=lambda *_: bar.update(1))
                done += stats.steps
                history.append({"step": trainer.step, "train_loss": stats.train_loss, "lr": stats.lr})
                tracker.on_epoch_end(run_name, len(history), history[-1])  # tracking hook
                bar.set_postfix(loss=f"{stats.train_loss:.4f}", lr=f"{stats.lr:.3g}")
    nan = {k: float("nan") for k in get_task(data.task).metric_names}
    val = nan if trainer.diverged else trainer.evaluate("val")
    test_metrics = nan if trainer.diverged or not test else trainer.evaluate("test")
    cost = trainer.cost.to_dict()
    if kind == CLOSED_LOOP:  # tracking hook: the closed loop's history is known at its end
        for epoch, record in enumerate(history, start=1):
            tracker.on_epoch_end(run_name, epoch, record)
    tracker.on_train_end(run_name, {"val": val, "test": test_metrics, "cost": cost, "diverged": trainer.diverged})
    return RunResult(val, test_metrics, cost, asdict(config), history, trainer.diverged, trainer.model,
                     None if range_test is None else range_test.summary(), selection)


def _range_test(data: DeviceData, config: TrainConfig, schedule: Any, kind: str | None, total: int,
                peak: str) -> Any:
    """The LR range test a run asks for (`peak`, or the controller's own setting), or None."""
    space = getattr(schedule, "space", None)
    if getattr(space, "peak", "default") != "default":
        peak = space.peak
    check_choice("peak", peak, PEAKS)
    if peak == "default":
        return None
    steps = getattr(space, "range_steps", DEFAULT_STEPS)
    if 2 * steps > total:
        raise ConfigError(f"a {steps}-step LR range test is over half of this {total}-step run; train longer")
    if kind == ONLINE:
        raise ConfigError("peak='range-test' does not apply to an online rule (hypergradient): it sets its own LR")
    return lr_range_test(data, config, steps=steps)


def _at_peak(schedule: Any, peak: float, base_lr: float) -> Any:
    """`schedule` moved to peak at `peak` instead of `base_lr`: a named schedule is rebuilt there, a
    learned one (absolute LRs) scaled by peak / base_lr; a closed-loop controller reads the peak from
    the optimizer, and None (a constant LR) is the config's LR: both are left as they are."""
    if schedule_kind(schedule) != OPEN_LOOP:
        return schedule
    if isinstance(schedule, LearnedSchedule) and schedule.name in SCHEDULES:
        return named_schedule(schedule.name, peak)
    return _Scaled(schedule, peak / base_lr)


@dataclass(frozen=True)
class _Scaled:
    """A schedule's LRs times a factor (a learned schedule moved to another peak)."""

    SCHEDULE_KIND: ClassVar[str] = OPEN_LOOP
    schedule: Any
    factor: float

    @property
    def name(self) -> str:
        return f"{_schedule_name(self.schedule)} x{self.factor:.3g}"

    def lr_at(self, progress: float) -> float:
        return min(self.schedule.lr_at(progress) * self.factor, MAX_LR)


def _schedule_name(schedule: Any) -> str | None:
    if schedule is None:
        return None
    return getattr(schedule, "name", None) or type(schedule).__name__


def _train_closed_loop(trainer: Trainer, total: int, augment: AugmentPolicy | None, adaptive: Any, bar: Any,
                       history: list[dict[str, float]]) -> None:
    """Let a trained controller set the LR from live statistics, exactly as in its env: it decides
    at the start and after each of its equal segments, reading the validation split."""

    def val_nll_and_reward() -> tuple[float, float]:
        val = trainer.evaluate("val", adaptive.reward_metric)
        return val[get_task(trainer.data.task).loss_metric], reward_value(val, adaptive.reward_metric)

    callback = adaptive.callback(trainer.optimizer, max(total, adaptive.segments), val_nll_and_reward)
    for _ in range(total):
        stats = trainer.train_segment(1, augment, lr=None)
        if stats.diverged:
            break
        callback.on_step(stats.train_loss, stats.grad_norm_mean)
        bar.update(1)
    # A residual controller's decisions as factors of its base schedule, besides the LRs they set.
    history.extend({"step": h["step"], "lr": h["lr"], **({"factor": h["factor"]} if "factor" in h else {})}
                   for h in callback.history)
