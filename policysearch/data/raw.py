"""`RawDataset` (a whole data set in memory), its content fingerprint, and the array checks that turn
whatever a user or a file reader hands over into uint8 (N, C, H, W) images and int64 labels."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from policysearch.errors import ConfigError
from policysearch.tasks import get_task

__all__ = ["ArrayLike", "RawDataset", "describe_array", "fingerprint", "images_to_nchw_uint8", "labels_to_int64",
           "make_raw", "to_numpy"]

#: Anything :func:`~policysearch.data.from_tensors` accepts as an image or label array.
ArrayLike = torch.Tensor | np.ndarray | Sequence[Any]


@dataclass(frozen=True, eq=False, repr=False)
class RawDataset:
    """A whole data set in memory: uint8 images and int64 labels on the CPU.

    Attributes:
        name: Data set name (one of :data:`~policysearch.data.DATASETS`, or the name given for user data).
        x_train: uint8 images, shape (N, C, H, W), CPU.
        y_train: the targets, as the task (`policysearch.tasks`) wants them: int64 labels in
            ``[0, len(classes))``, shape (N,) for classification; uint8 masks (N, H, W) for segmentation;
            uint8 clean images (N, C, H, W) for restoration.
        x_test: uint8 images, shape (M, C, H, W), same (C, H, W) as ``x_train``.
        y_test: int64 labels, shape (M,).
        classes: Class names; label ``k`` is ``classes[k]``.
        fingerprint: sha256 hex digest of the shapes and bytes of x_train, y_train, x_test and
            y_test (in that order). It is the data set's version: one changed pixel or label
            changes it.
        source: Where the data came from (a folder, ``"scikit-learn"``, ``"tensors"``, ...).
        label_map: The user's label value of each class index, when the labels were remapped to
            0..K-1 (labels 0, 1, 7, 9 became 0..3: ``{0: 0, 1: 1, 7: 2, 9: 3}``); None when the
            labels already were class indices. Written into every run record and artefact.
        task: "classification", "segmentation" or "restoration" (`policysearch.tasks.TASKS`).

    Raises:
        ConfigError: On construction, if dtypes, shapes, lengths or label range are wrong.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    fingerprint: str
    source: str
    label_map: dict[int, int] | None = None
    task: str = "classification"

    def __post_init__(self) -> None:
        # Cheap structural checks only; a RawDataset built by hand must fail here, not deep
        # inside a training step an hour later.
        task = get_task(self.task)
        for part in ("train", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
                raise ConfigError(
                    f"RawDataset {self.name!r}: x_{part} must be a uint8 tensor of shape "
                    f"(N, C, H, W); got {describe_array(x)}. Use from_tensors() to convert."
                )
            if isinstance(y, torch.Tensor) and len(x) != len(y):
                raise ConfigError(
                    f"RawDataset {self.name!r}: x_{part} has {len(x)} images but y_{part} has "
                    f"{len(y)} targets."
                )
            problem = task.check_targets(x, y, len(self.classes), f"y_{part}")
            if problem:
                raise ConfigError(f"RawDataset {self.name!r} ({task.name}): {problem}; got {describe_array(y)}.")
        if len(self.x_train) == 0:
            raise ConfigError(f"RawDataset {self.name!r}: the training part is empty.")
        if tuple(self.x_train.shape[1:]) != tuple(self.x_test.shape[1:]):
            raise ConfigError(
                f"RawDataset {self.name!r}: train images are {tuple(self.x_train.shape[1:])} "
                f"but test images are {tuple(self.x_test.shape[1:])} (C, H, W)."
            )

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    def __repr__(self) -> str:
        c, h, w = self.x_train.shape[1:]
        return (
            f"RawDataset(name={self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
            f"shape={c}x{h}x{w}, classes={len(self.classes)}, "
            f"fingerprint={self.fingerprint[:12]}…, source={self.source!r})"
        )


def fingerprint(*tensors: torch.Tensor, task: str = "classification") -> str:
    """sha256 over each tensor's shape and raw bytes, in order (and the task, unless classification)."""
    h = hashlib.sha256()
    if task != "classification":
        h.update(f"task={task};".encode())
    for t in tensors:
        h.update(repr(tuple(t.shape)).encode())
        arr = t.detach().cpu().contiguous().numpy()
        if arr.dtype.itemsize > 1:
            # Pin the byte order so the same data hashes the same on any machine.
            arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        h.update(arr.data.cast("B"))
    return h.hexdigest()


def make_raw(
    name: str,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    classes: Sequence[str],
    source: str,
    label_map: dict[int, int] | None = None,
    task: str = "classification",
) -> RawDataset:
    """A :class:`RawDataset` with its fingerprint computed from the four tensors (and, for a task other than
    classification, its name: the same arrays read as another task are another data set)."""
    return RawDataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        classes=list(classes),
        fingerprint=fingerprint(x_train, y_train, x_test, y_test, task=task),
        source=source,
        label_map=label_map,
        task=task,
    )


# --------------------------------------------------------------------------------------------
# Array checks
# --------------------------------------------------------------------------------------------


def describe_array(a: object) -> str:
    """``"ndarray of shape (3, 4) and dtype uint8"``, or the type name of a non-array."""
    shape = getattr(a, "shape", None)
    dtype = getattr(a, "dtype", None)
    if shape is None:
        return type(a).__name__
    return f"{type(a).__name__} of shape {tuple(shape)} and dtype {dtype}"


def to_numpy(a: ArrayLike, what: str) -> np.ndarray:
    """A tensor, array or (nested) sequence as a numeric numpy array; ``what`` names it in errors."""
    if isinstance(a, torch.Tensor):
        t = a.detach().cpu()
        if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
            t = t.float()  # bfloat16 / float16 have no numpy view
        return t.numpy()
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be a tensor or array; got {type(a).__name__}: {exc}") from exc
    if arr.dtype == object:
        raise ConfigError(
            f"{what} must be a numeric tensor or array; got {type(a).__name__} that numpy "
            "reads as objects (ragged or mixed contents)."
        )
    return arr


def images_to_nchw_uint8(a: ArrayLike, what: str) -> np.ndarray:
    """Images in NCHW, NHWC (C in 1, 3) or NHW, uint8 / integer 0..255 / float [0, 1], as uint8 NCHW."""
    arr = to_numpy(a, what)
    if arr.ndim == 3:
        arr = arr[:, None, :, :]  # NHW: one channel
    elif arr.ndim == 4:
        # NHWC when the last dim looks like channels and the second does not; otherwise NCHW.
        if arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
            arr = arr.transpose(0, 3, 1, 2)
    else:
        raise ConfigError(
            f"{what} must have shape (N, C, H, W), (N, H, W, C) with C in (1, 3), or (N, H, W); "
            f"got shape {arr.shape}."
        )
    if min(arr.shape[1:]) < 1:
        raise ConfigError(f"{what} has an empty image dimension: shape {arr.shape}.")
    if arr.dtype == np.uint8:
        # Own the pixels: the fingerprint must not go stale if the caller edits their array.
        return np.array(arr, dtype=np.uint8, order="C", copy=True)
    if arr.dtype == np.bool_:
        raise ConfigError(f"{what} is boolean; give uint8 (0..255) or float (0..1) images.")
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and not np.isfinite(arr).all():
            raise ConfigError(f"{what} holds NaN or infinite values.")
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ConfigError(
                f"float {what} must be in [0, 1]; got values in [{lo:g}, {hi:g}]. "
                "Divide 0..255 images by 255, or undo any normalisation first."
            )
        return np.ascontiguousarray(np.rint(np.clip(arr, 0, 1) * 255.0).astype(np.uint8))
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0 or hi > 255:
            raise ConfigError(
                f"integer {what} must be in 0..255; got values in {lo}..{hi}. "
                "Scale them to 8 bits first."
            )
        return np.ascontiguousarray(arr.astype(np.uint8))
    raise ConfigError(f"{what} has unsupported dtype {arr.dtype}; give uint8 or float images.")


def labels_to_int64(a: ArrayLike, what: str) -> np.ndarray:
    """1-D integer class labels (an (N, 1) column is accepted) as int64."""
    arr = to_numpy(a, what)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ConfigError(
            f"{what} must be 1-D class indices; got shape {arr.shape} "
            "(one-hot labels: take argmax first)."
        )
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"{what} must hold integer class labels; got dtype {arr.dtype}.")
    if arr.size and int(arr.min()) < 0:
        raise ConfigError(f"{what} holds the label {int(arr.min())}; class labels must be integers >= 0 "
                          "(an 'ignore' label such as -1 has no place in classification data).")
    return arr.astype(np.int64)
