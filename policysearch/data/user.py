"""User data: wrap tensors, arrays or a torch ``Dataset`` as a :class:`~policysearch.data.RawDataset`.

Images are converted once, here, to uint8 (N, C, H, W) (see :func:`from_tensors` for what is
accepted); labels without class names are compacted to 0..K-1, the mapping kept in
``RawDataset.label_map`` (and said in the log); without a test set a stratified one is carved with
the caller's ``seed`` (and the log says so). Dense targets (``task=``) are converted here too:
segmentation masks to uint8 (N, H, W), restoration targets to images like the inputs; their test carve
is a plain seeded one (the task's split key), as there is no per-image label to stratify by.
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
from policysearch.tasks import IGNORE_INDEX, get_task

__all__ = ["from_tensors", "from_torch_dataset", "masks_to_uint8"]

log = logging.getLogger(__name__)


def masks_to_uint8(a: ArrayLike, what: str) -> np.ndarray:
    """Segmentation masks (N, H, W) (or (N, 1, H, W)) of integer class indices, `IGNORE_INDEX` (255) where no
    label applies, as uint8 (N, H, W)."""
    arr = to_numpy(a, what)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise ConfigError(f"{what} must be masks of shape (N, H, W) (one class index per pixel); "
                          f"got shape {arr.shape}.")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"{what} must hold integer class indices; got dtype {arr.dtype} "
                          "(a binary mask: cast it to uint8).")
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0 or hi > IGNORE_INDEX:
        raise ConfigError(f"{what} holds values in {lo}..{hi}; expected class indices 0..{IGNORE_INDEX - 1} and "
                          f"{IGNORE_INDEX} for pixels without a label (mark ignored pixels 255, not -1).")
    return np.ascontiguousarray(arr.astype(np.uint8))


def _targets(y: ArrayLike, task: str, what: str) -> np.ndarray:
    kind = get_task(task).target_kind
    if kind == "mask":
        return masks_to_uint8(y, what)
    if kind == "image":
        return images_to_nchw_uint8(y, what)
    return labels_to_int64(y, what)


def _dense_classes(ys: dict[str, np.ndarray], classes: Sequence[str] | None, task: str, name: str) -> list[str]:
    """The class names of dense targets: none for restoration; for masks the given ones, or "0".."K-1"
    with K the largest value other than 255, plus one (indices are kept as given: a mask's values mean
    something, compacting them would rename classes)."""
    if get_task(task).target_kind == "image":
        if classes is not None:
            raise ConfigError(f"{name}: class names were given, but restoration targets are images, not classes; "
                              "drop class_names (classes=).")
        return []
    counts = sum(np.bincount(y.ravel(), minlength=256) for y in ys.values())
    used = np.flatnonzero(counts[:IGNORE_INDEX])
    top = int(used[-1]) if len(used) else -1
    if classes is None:
        if top < 0:
            raise ConfigError(f"{name}: every mask pixel is {IGNORE_INDEX} (ignored); there is nothing to learn.")
        return [str(k) for k in range(top + 1)]
    names = [str(c) for c in classes]
    if top >= len(names):
        raise ConfigError(f"{name}: the masks hold the class index {top} but {len(names)} class names were given; "
                          f"indices must be 0..{len(names) - 1} (or {IGNORE_INDEX}: ignored).")
    return names


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
    task: str = "classification",
) -> RawDataset:
    task = get_task(task).name
    if (x_test is None) != (y_test is None):
        raise ConfigError("give both x_test and y_test, or neither (a test split is then carved).")
    if x_test is None:
        check_number("test_fraction", test_fraction, 0.0, 1.0, low_open=True, high_open=True)
    xs = {"train": images_to_nchw_uint8(x_train, "x_train")}
    ys = {"train": _targets(y_train, task, "y_train")}
    if x_test is not None and y_test is not None:
        xs["test"] = images_to_nchw_uint8(x_test, "x_test")
        ys["test"] = _targets(y_test, task, "y_test")
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
    if task != "classification":
        return _dense_raw(xs, ys, _dense_classes(ys, classes, task, name), name=name, task=task,
                          test_fraction=test_fraction, seed=seed, source=source)

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


def _dense_raw(xs: dict[str, np.ndarray], ys: dict[str, np.ndarray], classes: list[str], *, name: str, task: str,
               test_fraction: float, seed: int, source: str) -> RawDataset:
    x_tr, y_tr = torch.from_numpy(xs["train"]), torch.from_numpy(ys["train"])
    if "test" in xs:
        x_te, y_te = torch.from_numpy(xs["test"]), torch.from_numpy(ys["test"])
    else:
        keep, held = stratified_split(get_task(task).split_key(y_tr), test_fraction, None, seed)
        x_tr, y_tr, x_te, y_te = x_tr[keep], y_tr[keep], x_tr[held], y_tr[held]
        log.info("%s has no test split: %d images (%.0f %%, random, seed %d) carved from its training data "
                 "as the test split", name, len(held), 100 * test_fraction, seed)
    return make_raw(name, x_tr, y_tr, x_te, y_te, classes, source, task=task)


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
    task: str = "classification",
) -> RawDataset:
    """Wrap user tensors / arrays as a :class:`RawDataset`.

    Args:
        x_train: Images as uint8 (0..255), integer in 0..255, or float in [0, 1]; shape
            (N, C, H, W), (N, H, W, C) with C in (1, 3), or (N, H, W). Torch or numpy. A 4-D
            array is read as NHWC when its last dim is 1 or 3 and its second is not, else NCHW.
        y_train: The targets: integer class labels, shape (N,); for ``task="segmentation"`` integer masks
            (N, H, W) of class indices (255: ignored); for ``task="restoration"`` clean images of the inputs'
            shape, read by the same rules as ``x_train``.
        x_test: Test images (same rules); if None a stratified test split is carved from the
            training data with ``test_fraction`` and ``seed``.
        y_test: Test labels; given exactly when ``x_test`` is.
        name: Name recorded in the data set (and later in exported provenance).
        classes: Class names; labels must then be 0..len(classes)-1. Without names, the
            distinct label values (train and test together) are mapped in sorted order to
            0..K-1 and their original values become the names. Masks are never remapped: without
            names the classes are "0".."K-1", K the largest mask value other than 255, plus one.
            Restoration has no classes (None only).
        test_fraction: Fraction carved as the test split when no test set is given.
        seed: Seed of that carve (stratified by label; plain random for dense tasks).
        task: "classification", "segmentation" or "restoration" (`policysearch.tasks`).

    Returns:
        The data set; ``source`` is ``"tensors"``.

    Raises:
        ConfigError: Unsupported shape or dtype, out-of-range values, length mismatches.
    """
    return _from_arrays(
        x_train, y_train, x_test, y_test,
        name=name, classes=classes, test_fraction=test_fraction, seed=seed, source="tensors", task=task,
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
