"""Tracking: callbacks from the search driver and the trainer, and the writers built on them.

`Tracker` is a narrow plug-in base in the manner of SB3's and Optuna's callbacks: every method is
a no-op, a writer overrides what it needs. Call order:

- a search (`policysearch.search.driver.run_search`): `on_search_start(params)`; for every env step
  `on_segment_end(step, env_step)`; after every child training `on_episode_end(record, totals)`;
  then `on_search_end(summary)`;
- a training (`policysearch.train.recipe.train_run`; `evaluate` runs one per policy, schedule and seed):
  `on_train_start(name, params)`, `on_epoch_end(name, epoch, record)` after every epoch,
  `on_train_end(name, result)`. `name` is "" for a lone training, else the training's label;
- `close(failed)` once, after the command wrote its last file (an MLflow run uploads its artefacts then).

`Trackers` fans each call out to several. The built-in writers, `TensorBoardTracker` (the
`tensorboard` extra) and `MLflowTracker` (`policysearch.tracking_mlflow`, the `mlflow` extra),
write the same scalars, named once here:

| tag | x axis | value |
|---|---|---|
| ``child/reward`` | env step | the step's reward |
| ``child/val_metric`` | env step | the validation `reward_metric` after the segment |
| ``child/val/<metric>`` | env step | every validation figure (accuracy, macro_f1, ece, nll, ...) |
| ``child/train_loss``, ``child/lr``, ``child/grad_norm_mean`` | env step | as the env reports them |
| ``child/knobs/<knob>`` | env step | the knobs the action set (Augment-v0: per-op probability, strength,
  crop, flip, mixup, cutmix; Compress-v0: ``child/keep``) |
| ``search/return``, ``search/score``, ``search/val_metric`` | child training | the episode |
| ``search/best_score`` | child training | best score so far |
| ``search/cost_tflops``, ``search/cost_seconds`` | child training | training TFLOPs / child seconds spent so far |
| ``train/loss``, ``train/lr`` | optimizer step | per epoch (`train_run`'s history) |
| ``val/<metric>``, ``test/<metric>``, ``cost/seconds``, ``cost/tflops`` | last step | after a training |
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from policysearch.errors import MissingExtraError

__all__ = [
    "OPTUNA_DB",
    "OPTUNA_STUDY",
    "TensorBoardTracker",
    "Tracker",
    "Trackers",
    "create_study",
    "episode_scalars",
    "flatten",
    "optuna_storage",
    "replay_training",
    "require_extra",
    "search_tracking",
    "segment_scalars",
    "train_end_scalars",
]

# Top-level numbers of a step's info worth a curve (knobs and val figures are handled apart).
_STEP_FIELDS = ("train_loss", "lr", "grad_norm_mean", "keep", "flops_fraction")


class Tracker:
    """Receives the events of searches and trainings; every method is a no-op (see the module docstring)."""

    def on_search_start(self, params: dict[str, Any]) -> None:
        """A search starts; `params`: controller, seed, budget, the env's `describe()`."""

    def on_segment_end(self, step: dict[str, Any], env_step: int) -> None:
        """An env step ended; `step` is its logged record (the env's info plus "reward", "seconds")."""

    def on_episode_end(self, record: dict[str, Any], totals: dict[str, Any]) -> None:
        """A child training ended; `record` is its episodes.jsonl line, `totals` the search so far
        ("child_trainings", "env_steps", "train_flops", "train_seconds", "best_score")."""

    def on_search_end(self, summary: dict[str, Any]) -> None:
        """The search ended; `summary` is what summary.json holds."""

    def on_train_start(self, name: str, params: dict[str, Any]) -> None:
        """A training starts (`train_run`)."""

    def on_epoch_end(self, name: str, epoch: int, record: dict[str, Any]) -> None:
        """An epoch ended; `record` is the training history's entry ("step", "train_loss", "lr")."""

    def on_train_end(self, name: str, result: dict[str, Any]) -> None:
        """A training ended; `result` holds "val", "test", "cost", "diverged"."""

    def close(self, failed: bool = False) -> None:
        """Flush and release; `failed` says the command stopped on an error."""


class Trackers(Tracker):
    """Several trackers as one: each event goes to each, in order."""

    def __init__(self, trackers: Iterable[Tracker | None] = ()) -> None:
        self.trackers = [t for t in trackers if t is not None]

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def on_search_start(self, params: dict[str, Any]) -> None:
        for t in self.trackers:
            t.on_search_start(params)

    def on_segment_end(self, step: dict[str, Any], env_step: int) -> None:
        for t in self.trackers:
            t.on_segment_end(step, env_step)

    def on_episode_end(self, record: dict[str, Any], totals: dict[str, Any]) -> None:
        for t in self.trackers:
            t.on_episode_end(record, totals)

    def on_search_end(self, summary: dict[str, Any]) -> None:
        for t in self.trackers:
            t.on_search_end(summary)

    def on_train_start(self, name: str, params: dict[str, Any]) -> None:
        for t in self.trackers:
            t.on_train_start(name, params)

    def on_epoch_end(self, name: str, epoch: int, record: dict[str, Any]) -> None:
        for t in self.trackers:
            t.on_epoch_end(name, epoch, record)

    def on_train_end(self, name: str, result: dict[str, Any]) -> None:
        for t in self.trackers:
            t.on_train_end(name, result)

    def close(self, failed: bool = False) -> None:
        for t in self.trackers:
            t.close(failed)


def require_extra(module: str, extra: str, purpose: str) -> None:
    """Import `module` or raise MissingExtraError naming `extra` (checked before any work)."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module, extra, purpose) from exc


def search_tracking(tracker: Tracker | None, tensorboard: bool | str | Path,
                    out: Path | None) -> tuple[Tracker, str | None, Tracker]:
    """What one search reports to: the caller's `tracker` plus, when `tensorboard` asks and there is
    a folder (``out/tensorboard`` for True, else the path given), a `TensorBoardTracker` writing
    into ``<folder>/search``; SB3's own curves go to the folder beside it.

    Returns:
        (every tracker as one, SB3's ``tensorboard_log`` or None, the tracker the search itself
        opened and must close: a no-op one when none was opened).
    """
    folder = None
    if tensorboard is True and out is not None:
        folder = out / "tensorboard"
    elif tensorboard and tensorboard is not True:
        folder = Path(tensorboard)
    own = TensorBoardTracker(folder / "search") if folder is not None else Tracker()
    return Trackers([tracker, own]), str(folder) if folder is not None else None, own


OPTUNA_DB, OPTUNA_STUDY = "optuna.db", "policysearch"


def optuna_storage(out: Path) -> str:
    """The SQLite URL of a run folder's Optuna study, ``out/optuna.db``
    (``optuna-dashboard sqlite:///out/optuna.db`` opens it; ``optuna.load_study(study_name=OPTUNA_STUDY,
    storage=...)`` loads it)."""
    return f"sqlite:///{(Path(out) / OPTUNA_DB).resolve()}"


def create_study(optuna: Any, storage: str | None, **options: Any) -> Any:
    """`optuna.create_study` named `OPTUNA_STUDY` in `storage`, replacing a study of that name: a search
    (or a resumed one, which replays its controller from the seed) builds its study from the first trial."""
    if storage is not None:
        with contextlib.suppress(KeyError):  # KeyError: no such study yet
            optuna.delete_study(study_name=OPTUNA_STUDY, storage=storage)
    return optuna.create_study(storage=storage, study_name=OPTUNA_STUDY, **options)


def replay_training(tracker: Tracker, name: str, history: list[dict[str, Any]], result: dict[str, Any],
                    params: dict[str, Any]) -> None:
    """Tell `tracker` of a training that has finished elsewhere (a worker process of `evaluate`):
    its start, each entry of its history as an epoch, its end (`result`: "val", "test", "cost", "diverged")."""
    tracker.on_train_start(name, params)
    for epoch, record in enumerate(history, start=1):
        tracker.on_epoch_end(name, epoch, record)
    tracker.on_train_end(name, result)


# ---------------------------------------------------------------------- the scalars, named once
def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def flatten(tree: Mapping[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """A nested mapping as one level: ``{"a": {"b": 1}}`` -> ``{"a/b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name, sep))
        else:
            flat[name] = value
    return flat


def _numbers(tree: Mapping[str, Any], prefix: str) -> dict[str, float]:
    return {k: v for k, v in ((k, _number(v)) for k, v in flatten(tree, prefix).items()) if v is not None}


def segment_scalars(step: dict[str, Any]) -> dict[str, float]:
    """The ``child/...`` scalars of one env step's record."""
    scalars = _numbers({"reward": step.get("reward"), "val_metric": step.get("metric")}, "child")
    scalars.update(_numbers({k: step[k] for k in _STEP_FIELDS if k in step}, "child"))
    scalars.update(_numbers(step.get("val") or {}, "child/val"))
    scalars.update(_numbers(step.get("knobs") or {}, "child/knobs"))
    return scalars


def episode_scalars(record: dict[str, Any], totals: dict[str, Any]) -> dict[str, float]:
    """The ``search/...`` scalars after one child training."""
    return _numbers({
        "return": record.get("return"), "score": record.get("score"), "val_metric": record.get("metric"),
        "best_score": totals.get("best_score"), "diverged": 1.0 if record.get("diverged") else 0.0,
        "cost_tflops": float(totals.get("train_flops", 0.0)) / 1e12,
        "cost_seconds": totals.get("train_seconds"),
    }, "search")


def train_end_scalars(result: dict[str, Any]) -> dict[str, float]:
    """The ``val/``, ``test/`` and ``cost/`` scalars after a training."""
    cost = result.get("cost") or {}
    scalars = _numbers(result.get("val") or {}, "val")
    scalars.update(_numbers(result.get("test") or {}, "test"))
    scalars.update(_numbers({"seconds": cost.get("seconds"),
                             "tflops": float(cost.get("train_flops", 0.0)) / 1e12}, "cost"))
    return scalars


# ---------------------------------------------------------------------- TensorBoard
class TensorBoardTracker(Tracker):
    """TensorBoard scalars (see the module docstring) through torch's ``SummaryWriter``.

    Args:
        log_dir: a search writes here; a named training (one of `evaluate`'s) into ``log_dir/<name>``,
            so that TensorBoard overlays them as runs. Folders are created at the first event.

    Raises:
        MissingExtraError: tensorboard is not installed.
    """

    def __init__(self, log_dir: str | Path) -> None:
        require_extra("tensorboard", "tensorboard", "--tensorboard")
        self.log_dir = Path(log_dir)
        self._writers: dict[str, Any] = {}
        self._last_step: dict[str, int] = {}

    def _writer(self, name: str = "") -> Any:
        if name not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            self._writers[name] = SummaryWriter(log_dir=str(self.log_dir / name if name else self.log_dir))
        return self._writers[name]

    def _write(self, scalars: dict[str, float], step: int, name: str = "") -> None:
        writer = self._writer(name)
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, global_step=step)

    def on_search_start(self, params: dict[str, Any]) -> None:
        self._writer().add_text("search/params", _markdown_table(flatten(params, sep=".")), 0)

    def on_segment_end(self, step: dict[str, Any], env_step: int) -> None:
        self._write(segment_scalars(step), env_step)

    def on_episode_end(self, record: dict[str, Any], totals: dict[str, Any]) -> None:
        self._write(episode_scalars(record, totals), int(totals["child_trainings"]))
        self._writer().flush()  # a child training is long: show it now

    def on_train_start(self, name: str, params: dict[str, Any]) -> None:
        self._writer(name).add_text("train/params", _markdown_table(flatten(params, sep=".")), 0)

    def on_epoch_end(self, name: str, epoch: int, record: dict[str, Any]) -> None:
        step = int(record.get("step", epoch))
        self._last_step[name] = step
        self._write(_numbers({"loss": record.get("train_loss"), "lr": record.get("lr"), "epoch": epoch}, "train"),
                    step, name)

    def on_train_end(self, name: str, result: dict[str, Any]) -> None:
        self._write(train_end_scalars(result), self._last_step.get(name, 0), name)
        self._writer(name).flush()

    def close(self, failed: bool = False) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def _markdown_table(params: dict[str, Any]) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in params.items())
    return f"| parameter | value |\n|---|---|\n{rows}"
