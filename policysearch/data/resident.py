"""Device-resident data: :func:`prepare` splits a data set once and moves it to the training
device as a :class:`DeviceData`. Later code indexes those tensors in batches; no per-sample Python
work happens after this point, and everything that trains on the data runs where it lives (see
:func:`policysearch.device.device_for_data`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from policysearch.checks import check_choice, is_int
from policysearch.data.lookup import load_dataset
from policysearch.data.preprocess import Normalization, normalization_for
from policysearch.data.raw import RawDataset
from policysearch.data.sources import DATASETS
from policysearch.data.splits import stratified_split, stratified_subset
from policysearch.device import resolve_device
from policysearch.errors import ConfigError
from policysearch.tasks import get_task

__all__ = ["DeviceData", "prepare"]

# Test subsampling (``prepare(test_size=...)``) uses a fixed seed, apart from the split seed:
# quick runs with different seeds must still be scored on the same test images.
_TEST_SUBSET_SEED = 0

_SPLITS = ("train", "val", "test")


@dataclass(eq=False, repr=False)
class DeviceData:
    """A data set split into train / val / test, resident on the training device.

    Images stay uint8 (a quarter of float32's memory); every path that feeds a model converts a
    batch to [0, 1] and normalises it with ``mean`` and ``std`` (`policysearch.data.preprocess.normalise`).

    Attributes:
        name: Data set name.
        fingerprint: The :class:`RawDataset` fingerprint (content version, not the split).
        x_train: uint8 (N, C, H, W) on ``device``; y_train int64 (N,).
        x_val: Validation images carved from the training data; y_val their labels.
        x_test: Test images (never used during search); y_test their labels.
        classes: Class names.
        mean: float32 (C,) what `normalise` subtracts from ``x / 255``, on ``device``
            (``normalization.mean``: by default the training split's per-channel mean).
        std: float32 (C,) what it divides by (by default the training split's std, at least 1e-3).
        split: ``{"seed", "train_size", "val_size", "test_size"}``: the seed and the sizes
            actually used.
        device: Where the tensors live.
        source: Where the data set's files were read from (the folder actually used).
        normalization: How pixels are normalised (`Normalization`: kind, mean, std); recorded in
            every run and artefact.
        label_map: The user's label value of each class index when labels were remapped (see
            `RawDataset.label_map`), else None.
        task: What the targets are (`policysearch.tasks`): "classification" (y int64 labels (N,)),
            "segmentation" (y uint8 masks (N, H, W)) or "restoration" (y uint8 clean images (N, C, H, W)).
    """

    name: str
    fingerprint: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    mean: torch.Tensor
    std: torch.Tensor
    split: dict[str, int]
    device: torch.device
    source: str = ""  # where the files were read from (a folder, "scikit-learn", "tensors", ...)
    normalization: Normalization | None = None
    label_map: dict[int, int] | None = None
    task: str = "classification"

    def __post_init__(self) -> None:
        if self.normalization is None:  # built by hand from mean / std: record them as given
            self.normalization = Normalization("given", tuple(self.mean.tolist()), tuple(self.std.tolist()))

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def output_size(self) -> int:
        """The model's output channels: class scores, or image channels for restoration."""
        return get_task(self.task).output_size(self.num_classes, self.input_shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Image shape ``(C, H, W)``."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    def split_arrays(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of one split.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.

        Returns:
            ``(x, y)`` on ``device``.

        Raises:
            UnknownNameError: Any other split name (a :class:`ConfigError`).
        """
        check_choice("split", split, _SPLITS)
        return getattr(self, f"x_{split}"), getattr(self, f"y_{split}")

    def to(self, device: str | torch.device) -> DeviceData:
        """The same splits on another device (a copy; `self` is unchanged)."""
        dev = resolve_device(device)
        if dev == self.device:
            return self
        tensors = {name: getattr(self, name).to(dev) for name in
                   ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "mean", "std")}
        return dataclasses.replace(self, **tensors, device=dev)

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for run configs and provenance."""
        record: dict[str, Any] = {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "split": dict(self.split),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "classes": list(self.classes),
            "source": self.source,
            "normalization": self.normalization.to_dict() if self.normalization else None,
        }
        if self.task != "classification":  # records of classification data stay as they were
            record["task"] = self.task
        if self.label_map is not None:
            record["label_map"] = {str(k): v for k, v in self.label_map.items()}
        return record

    def __repr__(self) -> str:
        s = self.split
        return (
            f"DeviceData(name={self.name!r}, train={s['train_size']}, val={s['val_size']}, "
            f"test={s['test_size']}, shape={'x'.join(map(str, self.input_shape))}, "
            f"classes={self.num_classes}, device={self.device}, "
            f"fingerprint={self.fingerprint[:12]}…)"
        )


def prepare(
    data: str | RawDataset,
    *,
    val_size: float | int = 0.1,
    train_size: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    data_dir: str | Path | None = None,
    download: bool = True,
    test_size: int | None = None,
    normalize: str | Normalization | tuple[Any, Any] = "standardize",
) -> DeviceData:
    """Split a data set and move it to the training device, once.

    Args:
        data: A name from :data:`~policysearch.data.DATASETS` (loaded with :func:`load_dataset`) or a
            :class:`RawDataset`.
        val_size: Validation part carved from the training data: a fraction in (0, 1) or a
            count (see :func:`stratified_split`).
        train_size: Cap on the training part (stratified), for quick proxy runs.
        seed: Seed of the train / val split.
        device: Where the tensors go: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"``
            (see :func:`policysearch.device.resolve_device`).
        data_dir: Passed to :func:`load_dataset` when ``data`` is a name.
        download: Passed to :func:`load_dataset` when ``data`` is a name.
        test_size: If given, a stratified subsample of the test split of this size, with a
            fixed seed (0) so every run is scored on the same images; None keeps all.
        normalize: How a model's inputs are normalised (`policysearch.data.preprocess`):
            "standardize" (the training split's per-channel mean and std), "none" (raw [0, 1]
            pixels), "imagenet", ``"MEAN,STD"``, or ``(mean, std)`` sequences.

    Returns:
        The device-resident splits, channel statistics of the training part, and the split
        record.

    Raises:
        ConfigError: Bad sizes, seed or device; see also :func:`load_dataset`.
    """
    dev = resolve_device(device)  # before any loading: a bad device fails at once
    if isinstance(data, str):
        raw = load_dataset(data, data_dir=data_dir, download=download)
    elif isinstance(data, RawDataset):
        raw = data
    else:
        raise ConfigError(
            f"data must be a data set name ({', '.join(DATASETS)}) or a RawDataset; got "
            f"{type(data).__name__}. Wrap tensors with from_tensors()."
        )
    task = get_task(raw.task)
    train_idx, val_idx = stratified_split(task.split_key(raw.y_train), val_size, train_size, seed)

    x_test, y_test = raw.x_test, raw.y_test
    if test_size is not None:
        if not is_int(test_size) or not 1 <= test_size <= len(y_test):
            raise ConfigError(
                f"test_size is {test_size!r}, expected an int between 1 and the {len(y_test)} test images "
                "(or None: all of them)."
            )
        if int(test_size) < len(y_test):
            keep = stratified_subset(task.split_key(y_test), int(test_size), _TEST_SUBSET_SEED)
            x_test, y_test = x_test[keep], y_test[keep]

    # Index on the CPU, then copy each part to the device once.
    x_train, y_train = raw.x_train[train_idx], raw.y_train[train_idx]
    norm = normalization_for(normalize, x_train)
    mean, std = torch.tensor(norm.mean, dtype=torch.float32), torch.tensor(norm.std, dtype=torch.float32)
    return DeviceData(
        name=raw.name,
        fingerprint=raw.fingerprint,
        x_train=x_train.to(dev),
        y_train=y_train.to(dev),
        x_val=raw.x_train[val_idx].to(dev),
        y_val=raw.y_train[val_idx].to(dev),
        x_test=x_test.to(dev),
        y_test=y_test.to(dev),
        classes=list(raw.classes),
        mean=mean.to(dev),
        std=std.to(dev),
        split={
            "seed": int(seed),
            "train_size": len(train_idx),
            "val_size": len(val_idx),
            "test_size": len(y_test),
        },
        device=dev,
        source=str(raw.source),
        normalization=norm,
        label_map=raw.label_map,
        task=task.name,
    )
