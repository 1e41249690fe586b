"""A distribution of training tasks for learning one LR controller that serves many (Schedule-v1's `tasks`).

A `Task` is one child training setting: data set (and training-set size), model, epochs, batch
size, weight decay. A `TaskSampler` draws tasks from a seeded generator: the same generator state
gives the same task, so a search over tasks is as reproducible as one on a single task.

Spec strings (``policysearch schedule --tasks SPEC``): a preset name from `TASK_PRESETS`, or
``key=value`` fields joined by ``;``::

    pairs=digits:mlp,digits:cnn,fashion-mnist:mlp;train-sizes=1000,2000,4000;epochs=3-12;batch=32,64,128;wd=0,5e-4

``pairs`` lists the (data set, model) pairs (``datasets`` and ``models`` instead give every
combination); ``train-sizes`` applies to data sets larger than it (digits always uses all of its
1,438 training images); ``epochs`` is an inclusive integer range; ``batch`` and ``wd`` are lists.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from policysearch.checks import check_choice, check_int, check_number
from policysearch.data import DATASETS
from policysearch.errors import ConfigError
from policysearch.models import resolve_model

__all__ = ["TASK_PRESETS", "Task", "TaskSampler"]

# Data sets small enough that a sampled training-set size does not apply (all their images are used).
_SMALL = {"digits"}


@dataclass(frozen=True)
class Task:
    """One child training setting drawn by a `TaskSampler`."""

    dataset: str
    model: str
    train_size: int | None  # None: every training image (digits)
    epochs: int
    batch_size: int
    weight_decay: float

    def label(self) -> str:
        """A short human-readable name, e.g. ``fashion-mnist/2000 mlp 6ep bs64 wd0.0005``."""
        size = "" if self.train_size is None else f"/{self.train_size}"
        return f"{self.dataset}{size} {self.model} {self.epochs}ep bs{self.batch_size} wd{self.weight_decay:g}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TaskSampler:
    """Draws `Task`s uniformly from the product of its fields' choices.

    Attributes:
        pairs: (data set, model) pairs to draw from.
        train_sizes: Training-set sizes for the larger data sets (ignored for digits).
        epochs: Inclusive range ``(low, high)`` of epochs.
        batch_sizes: Batch sizes.
        weight_decays: Weight decays.
        val_size: Validation images per task (digits: at most 300), the controller's reward signal.
    """

    pairs: tuple[tuple[str, str], ...] = tuple(itertools.product(("digits", "fashion-mnist"),
                                                                 ("mlp", "cnn", "resnet", "vit")))
    train_sizes: tuple[int, ...] = (1000, 2000, 5000, 10000, 20000)
    epochs: tuple[int, int] = (3, 30)
    batch_sizes: tuple[int, ...] = (32, 64, 128)
    weight_decays: tuple[float, ...] = (0.0, 5e-4, 5e-3)
    val_size: int = 1000

    def __post_init__(self) -> None:
        pairs = tuple((str(d), str(m)) for d, m in self.pairs)
        if not pairs:
            raise ConfigError("tasks: no (data set, model) pair to draw from")
        for dataset, model in pairs:
            check_choice("data set", dataset, DATASETS)
            resolve_model(model)  # any form a run takes; an unknown one fails here
        object.__setattr__(self, "pairs", pairs)
        sizes = tuple(check_int("tasks: train size", s, 100) for s in self.train_sizes)
        low, high = (check_int("tasks: epochs", e, 1) for e in self.epochs)
        if low > high:
            raise ConfigError(f"tasks: epochs range {low}-{high} is empty")
        batches = tuple(check_int("tasks: batch size", b, 1) for b in self.batch_sizes)
        decays = tuple(check_number("tasks: weight decay", w, 0.0) for w in self.weight_decays)
        if not sizes or not batches or not decays:
            raise ConfigError("tasks: train-sizes, batch and wd need one value at least")
        check_int("tasks: val size", self.val_size, 10)
        object.__setattr__(self, "train_sizes", sizes)
        object.__setattr__(self, "epochs", (low, high))
        object.__setattr__(self, "batch_sizes", batches)
        object.__setattr__(self, "weight_decays", decays)

    def sample(self, rng: np.random.Generator) -> Task:
        """One task, drawn from ``rng`` (always the same number of draws, whatever the task)."""
        dataset, model = self.pairs[int(rng.integers(len(self.pairs)))]
        size = self.train_sizes[int(rng.integers(len(self.train_sizes)))]
        epochs = int(rng.integers(self.epochs[0], self.epochs[1] + 1))
        batch = self.batch_sizes[int(rng.integers(len(self.batch_sizes)))]
        decay = self.weight_decays[int(rng.integers(len(self.weight_decays)))]
        return Task(dataset, model, None if dataset in _SMALL else size, epochs, batch, decay)

    def tasks(self, n: int, seed: int = 0) -> list[Task]:
        """The first ``n`` tasks of the stream seeded by ``seed``."""
        rng = np.random.default_rng(seed)
        return [self.sample(rng) for _ in range(check_int("n", n, 0))]

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": [list(p) for p in self.pairs], "train_sizes": list(self.train_sizes),
                "epochs": list(self.epochs), "batch_sizes": list(self.batch_sizes),
                "weight_decays": list(self.weight_decays), "val_size": self.val_size}

    @classmethod
    def parse(cls, spec: str) -> TaskSampler:
        """A sampler from a preset name or a ``key=value;...`` spec (see the module docstring).

        Raises:
            ConfigError: For an unknown key or preset, or a malformed value (the message names it).
        """
        spec = spec.strip()
        if "=" not in spec:
            check_choice("task preset", spec, TASK_PRESETS)
            return TASK_PRESETS[spec]
        fields: dict[str, Any] = {}
        datasets: list[str] | None = None
        models: list[str] | None = None
        keys = ("pairs", "datasets", "models", "train-sizes", "epochs", "batch", "wd", "val-size")
        for part in (p for p in spec.split(";") if p.strip()):
            key, _, value = (t.strip() for t in part.partition("="))
            check_choice("tasks field", key, keys)
            items = [v.strip() for v in value.split(",") if v.strip()]
            try:
                if key == "pairs":
                    fields["pairs"] = tuple(tuple(item.split(":", 1)) for item in items)
                    if any(len(p) != 2 for p in fields["pairs"]):
                        raise ValueError("expected DATASET:MODEL items")
                elif key == "datasets":
                    datasets = items
                elif key == "models":
                    models = items
                elif key == "train-sizes":
                    fields["train_sizes"] = tuple(int(v) for v in items)
                elif key == "epochs":
                    low, _, high = value.partition("-")
                    fields["epochs"] = (int(low), int(high or low))
                elif key == "batch":
                    fields["batch_sizes"] = tuple(int(v) for v in items)
                elif key == "wd":
                    fields["weight_decays"] = tuple(float(v) for v in items)
                else:
                    fields["val_size"] = int(value)
            except ValueError as exc:
                raise ConfigError(f"tasks: {key}={value!r} is malformed ({exc})") from exc
        if datasets is not None or models is not None:
            if "pairs" in fields:
                raise ConfigError("tasks: give pairs, or datasets and models, not both")
            default = cls()
            fields["pairs"] = tuple(itertools.product(datasets or sorted({d for d, _ in default.pairs}),
                                                      models or sorted({m for _, m in default.pairs})))
        return cls(**fields)


# "default": the full distribution; "cheap": what fits a CPU budget of about twenty minutes
# (the shipped zoo:adaptive controller was trained on it).
TASK_PRESETS: dict[str, TaskSampler] = {
    "default": TaskSampler(),
    "cheap": TaskSampler(pairs=(("digits", "mlp"), ("digits", "cnn"), ("digits", "vit"), ("fashion-mnist", "mlp")),
                         train_sizes=(1000, 2000, 4000), epochs=(3, 12), batch_sizes=(32, 64, 128),
                         weight_decays=(0.0, 5e-4, 5e-3), val_size=500),
}
