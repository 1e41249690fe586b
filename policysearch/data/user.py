"""User data: wrap tensors, arrays or a torch ``Dataset`` as a :class:`~policysearch.data.RawDataset`.

Images are converted once, here, to uint8 (N, C, H, W) (see :func:`from_tensors` for what is
accepted); labels without class names are compacted to 0..K-1, the mapping kept in
``RawDataset.label_map`` (and said in the log); without a test set a stratified one is carved with
the caller's ``seed`` (and the log says so).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from policysearch.checks import check_number
from policysearch.data.raw import ArrayLike, RawDataset, images_to_nchw_uint8, labels_to_int64, make_raw, to_numpy
from policysearch.data.splits import stratified_split
from policysearch.errors import ConfigError

__all__ = ["from_tensors", "from_torch_dataset"]

log = logging.getLogger(__name__)


def _from_arrays(
    x_train: ArrayLike,
    y_train: ArrayLike,
    x_test: ArrayLike | None,
    y_test: ArrayLike | None,
    *,
    name: str,
    classes: Sequence[str] | None,
    test_fraction: float,
    seed: int,
    source: str,
) -> RawDataset:
    if (x_test is None) != (y_test is None):
        raise ConfigError("give both x_test and y_test, or neither (a test split is then carved).")
    if x_test is None:
        check_number("test_fraction", test_fraction, 0.0, 1.0, low_open=True, high_open=True)
    xs = {"train": images_to_nchw_uint8(x_train, "x_train")}
    ys = {"train": labels_to_int64(y_train, "y_train")}
    if x_test is not None and y_test is not None:
        xs["test"] = images_to_nchw_uint8(x_test, "x_test")
        ys["test"] = labels_to_int64(y_test, "y_test")
        if xs["test"].shape[1:] != xs["train"].shape[1:]:
            raise ConfigError(
                f"x_test images are {xs['test'].shape[1:]} (C, H, W) but x_train images are "
                f"{xs['train'].shape[1:]}."
            )
    for part in xs:
        if len(xs[part]) != len(ys[part]):
            raise ConfigError(
                f"x_{part} has {len(xs[part])} images but y_{part} has {len(ys[part])} labels."
            )
    if len(xs["train"]) == 0:
        raise ConfigError("x_train is empty.")

    all_labels = np.concatenate(list(ys.values()))
    label_map: dict[int, int] | None = None
    if classes is not None:
        class_names = [str(c) for c in classes]
        if all_labels.min() < 0 or all_labels.max() >= len(class_names):
            raise ConfigError(
                f"labels span {all_labels.min()}..{all_labels.max()} but {len(class_names)} "
                f"class names were given; labels must be 0..{len(class_names) - 1}."
            )
    else:
        # Compact the label set to 0..K-1 (identity for labels that already are): an empty
        # class would skew macro metrics. The names keep the original values.
        values = np.unique(all_labels)
        class_names = [str(int(v)) for v in values]
        if not np.array_equal(values, np.arange(len(values))):
            ys = {part: np.searchsorted(values, y) for part, y in ys.items()}
            label_map = {int(v): i for i, v in enumerate(values)}
            log.info("%s: labels %s mapped to class indices 0..%d (kept as the data's label_map)", name,
                     ", ".join(str(int(v)) for v in values[:12]) + (" ..." if len(values) > 12 else ""),
                     len(values) - 1)

    x_tr, y_tr = torch.from_numpy(xs["train"]), torch.from_numpy(ys["train"])
    if "test" in xs:
        x_te, y_te = torch.from_numpy(xs["test"]), torch.from_numpy(ys["test"])
    else:
        keep, held = stratified_split(y_tr, test_fraction, None, seed)
        x_tr, y_tr, x_te, y_te = x_tr[keep], y_tr[keep], x_tr[held], y_tr[held]
        log.info("%s has no test split: %d images (%.0f %%, stratified, seed %d) carved from its training data "
                 "as the test split", name, len(held), 100 * test_fraction, seed)
    return make_raw(name, x_tr, y_tr, x_te, y_te, class_names, source, label_map)


def from_tensors(
    x_train: ArrayLike,
    y_train: ArrayLike,
    x_test: ArrayLike | None = None,
    y_test: ArrayLike | None = None,
    *,
    name: str = "custom",
    classes: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> RawDataset:
    """Wrap user tensors / arrays as a :class:`RawDataset`.

    Args:
        x_train: Images as uint8 (0..255), integer in 0..255, or float in [0, 1]; shape
            (N, C, H, W), (N, H, W, C) with C in (1, 3), or (N, H, W). Torch or numpy. A 4-D
            array is read as NHWC when its last dim is 1 or 3 and its second is not, else NCHW.
        y_train: Integer class labels, shape (N,).
        x_test: Test images (same rules); if None a stratified test split is carved from the
            training data with ``test_fraction`` and ``seed``.
        y_test: Test labels; given exactly when ``x_test`` is.
        name: Name recorded in the data set (and later in exported provenance).
        classes: Class names; labels must then be 0..len(classes)-1. Without names, the
            distinct label values (train and test together) are mapped in sorted order to
            0..K-1 and their original values become the names.
        test_fraction: Fraction carved as the test split when no test set is given.
        seed: Seed of that carve.

    Returns:
        The data set; ``source`` is ``"tensors"``.

    Raises:
        ConfigError: Unsupported shape or dtype, out-of-range values, length mismatches.
    """
    return _from_arrays(
        x_train, y_train, x_test, y_test,
        name=name, classes=classes, test_fraction=test_fraction, seed=seed, source="tensors",
    )


def _stack_dataset(ds: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Collect ``(image, label)`` items of a map-style or iterable dataset into two arrays."""
    if hasattr(ds, "__len__") and hasattr(ds, "__getitem__"):
        items: Any = (ds[i] for i in range(len(ds)))
    else:
        items = iter(ds)
    images: list[np.ndarray] = []
    labels: list[int] = []
    for i, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ConfigError(
                f"{what}[{i}] must be an (image, label) pair; got {type(item).__name__}."
            )
        image, label = item[0], item[1]
        if isinstance(image, torch.Tensor):
            arr = to_numpy(image, f"{what}[{i}] image")
        else:
            # numpy arrays and PIL images (via __array_interface__) both convert here.
            arr = np.asarray(image)
        if images and arr.shape != images[0].shape:
            raise ConfigError(
                f"{what}[{i}] image has shape {arr.shape} but {what}[0] has {images[0].shape}; "
                "all images must have one size (resize them in the dataset's transform)."
            )
        try:
            labels.append(int(label.__index__()))
        except (AttributeError, TypeError, ValueError, RuntimeError) as exc:
            raise ConfigError(
                f"{what}[{i}] label must be an integer class index; got {label!r}."
            ) from exc
        images.append(arr)
    if not images:
        raise ConfigError(f"{what} is empty.")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def from_torch_dataset(
    train: Any,
    test: Any = None,
    *,
    name: str = "custom",
    classes: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> RawDataset:
    """Materialise a torch ``Dataset`` of ``(image, label)`` pairs as a :class:`RawDataset`.

    Each item's image may be a tensor, a numpy array or a PIL image; it is read once here
    (load time), so any transform in the dataset is applied once, not per epoch.

    Args:
        train: Map-style (``__len__`` + ``__getitem__``) or iterable dataset.
        test: Optional test dataset; if None a stratified test split is carved.
        name: Name recorded in the data set.
        classes: Class names; defaults to ``train.classes`` when that is a list of strings
            (torchvision datasets have it).
        test_fraction: Fraction carved as the test split when ``test`` is None.
        seed: Seed of that carve.

    Returns:
        The data set; ``source`` names the dataset's class.

    Raises:
        ConfigError: Items are not (image, label) pairs, images differ in size, or any rule of
            :func:`from_tensors` is broken.
    """
    if classes is None:
        candidate = getattr(train, "classes", None)
        if isinstance(candidate, (list, tuple)) and all(isinstance(c, str) for c in candidate):
            classes = list(candidate)
    x_tr, y_tr = _stack_dataset(train, "train")
    x_te: np.ndarray | None = None
    y_te: np.ndarray | None = None
    if test is not None:
        x_te, y_te = _stack_dataset(test, "test")
    return _from_arrays(
        x_tr, y_tr, x_te, y_te,
        name=name, classes=classes, test_fraction=test_fraction, seed=seed,
        source=f"torch dataset {type(train).__name__}",
    )
