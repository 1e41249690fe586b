"""A user's own data from one string (``--data SOURCE``, ``load_data(source)``): an image folder, an
``.npz`` file, or ``module:function`` / ``file.py:function`` for everything else.

- **folder**: one sub-folder per class, optionally ``train/`` and ``test/`` above them
  (`policysearch.data.folder`); or, for segmentation, ``images/`` and ``masks/`` holding files of the same
  names (`policysearch.data.mask_folder`): such a folder is segmentation data by its layout;
- **.npz**: arrays ``x_train``, ``y_train`` and optionally ``x_test``, ``y_test``, ``class_names``;
  images uint8 or floats in [0, 1], NCHW, NHWC or NHW (read with ``allow_pickle=False``); ``y`` as the
  ``task`` wants it: class labels (N,), masks (N, H, W) of class indices, or clean images (same rules as x);
- **function**: called with no arguments, it returns a `RawDataset`, ``(x, y)``,
  ``(x_train, y_train, x_test, y_test)``, a dict with those keys (and optionally ``class_names``), a
  torch ``Dataset`` of ``(image, label)`` pairs, or ``(train_dataset, test_dataset)``.

A source without a test split gets one carved (stratified, seeded) and the log says so; class names
and any label mapping are kept (`RawDataset.classes`, `RawDataset.label_map`) and written into every
run and artefact.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from policysearch.data.folder import from_image_folder
from policysearch.data.mask_folder import from_mask_folder, is_mask_folder
from policysearch.data.raw import RawDataset
from policysearch.data.user import from_tensors, from_torch_dataset
from policysearch.errors import ConfigError
from policysearch.imports import first_line, import_path
from policysearch.tasks import get_task

__all__ = ["from_function", "from_npz", "load_data"]

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test", "class_names")


def load_data(source: str | Path, image_size: tuple[int, int] | str | None = None, *, task: str | None = None,
              test_fraction: float = 0.2, seed: int = 0) -> RawDataset:
    """The data set `source` names (see the module docstring).

    Args:
        source: a folder, an ``.npz`` file, or ``module:function`` / ``file.py:function``.
        image_size: resize an image folder's images to (H, W) ("H" / "HxW" accepted); folders only.
        task: "classification", "segmentation" or "restoration"; None: what the source's layout says (a folder
            with ``images/`` and ``masks/`` is segmentation), else classification. A task the layout
            contradicts is an error, not a reinterpretation.
        test_fraction, seed: the test carve when the source has no test split (stratified for classification).

    Raises:
        ConfigError: the source is none of these, or its contents break a rule (the message says which).
    """
    text = str(source)
    path = Path(text).expanduser()
    if task is not None:
        task = get_task(task).name  # an unknown task fails before any file is read
    if path.is_dir():
        layout = "segmentation" if is_mask_folder(path) else "classification"
        if task is not None and task != layout:
            expected = {"segmentation": "images/ and masks/ (files of the same names)",
                        "classification": "one sub-folder per class"}.get(task, "nothing: use an .npz or a function")
            raise ConfigError(f"data {text!r} is a {layout} folder by its layout, but task {task!r} was asked for; a "
                              f"{task} folder holds {expected}")
        if layout == "segmentation":
            return from_mask_folder(path, image_size, test_fraction=test_fraction, seed=seed)
        if (path / "masks").is_dir() and not (path / "images").is_dir():
            raise ConfigError(f"data {text!r} holds masks/ but no images/; a segmentation folder holds both")
        return from_image_folder(path, image_size, test_fraction=test_fraction, seed=seed)
    if image_size is not None:
        raise ConfigError(f"--image-size applies to an image folder; data {text!r} is not one")
    if path.suffix.lower() == ".npz":
        return from_npz(path, task=task or "classification", test_fraction=test_fraction, seed=seed)
    where, sep, attr = text.rpartition(":")
    if sep and where and attr and not path.exists():
        return from_function(text, task=task, test_fraction=test_fraction, seed=seed)
    raise ConfigError(f"data {text!r}: expected an image folder, an .npz file or 'module:function'"
                      + ("" if path.exists() else " (no such file or folder)"))


def from_npz(path: str | Path, *, task: str = "classification", test_fraction: float = 0.2,
             seed: int = 0) -> RawDataset:
    """Arrays from an ``.npz`` file (no pickled objects are loaded); ``y_train`` / ``y_test`` read as the
    `task` wants them (`from_tensors`: labels, masks of class indices, or clean images).

    Raises:
        ConfigError: the file is missing, not an .npz, holds pickled objects, or lacks x_train / y_train.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"data {str(path)!r}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as exc:  # allow_pickle=False refuses object arrays
        raise ConfigError(f"{path}: holds pickled objects ({first_line(exc)}); save plain arrays "
                          "(class_names as an array of str)") from None
    except Exception as exc:
        raise ConfigError(f"{path}: not a readable .npz file ({type(exc).__name__}: {first_line(exc)})") from None
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if missing:
        raise ConfigError(f"{path}: no {' or '.join(missing)} array; it holds {sorted(arrays) or 'nothing'} "
                          f"(expected {', '.join(_NPZ_KEYS)})")
    unknown = sorted(set(arrays) - set(_NPZ_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unexpected arrays {unknown}; expected {', '.join(_NPZ_KEYS)}")
    names = arrays.get("class_names")
    classes = None if names is None else [str(n) for n in np.asarray(names).reshape(-1)]
    raw = from_tensors(arrays["x_train"], arrays["y_train"], arrays.get("x_test"), arrays.get("y_test"),
                       name=path.stem, classes=classes, test_fraction=test_fraction, seed=seed, task=task)
    return dataclasses.replace(raw, source=str(path.resolve()))


def from_function(spec: str, *, task: str | None = None, test_fraction: float = 0.2,
                  seed: int = 0) -> RawDataset:
    """Call ``module:function`` (or ``file.py:function``) and read what it returns (see the module docstring);
    arrays are read as `task` wants them (None: classification); a returned `RawDataset` keeps its own task,
    which must be `task` when one is given.

    Raises:
        ConfigError: it does not import, raises, or returns something else.
    """
    where, _, attr = spec.rpartition(":")
    fn = import_path(where, attr, f"data {spec!r}").load()
    try:
        out = fn()
    except Exception as exc:
        raise ConfigError(f"data {spec!r}: calling it failed: {type(exc).__name__}: {first_line(exc)}") from None
    name = attr.rsplit(".", 1)[-1]
    common = {"name": name, "test_fraction": test_fraction, "seed": seed}
    if isinstance(out, RawDataset):
        if task is not None and out.task != get_task(task).name:
            raise ConfigError(f"data {spec!r} returned {out.task} data, but task {task!r} was asked for")
        return dataclasses.replace(out, source=spec)
    task = get_task(task).name
    if isinstance(out, dict):
        if not {"x_train", "y_train"} <= set(out):
            raise ConfigError(f"data {spec!r} returned a dict with {sorted(out)}; expected x_train, y_train "
                              "and optionally x_test, y_test, class_names")
        names = out.get("class_names")
        raw = from_tensors(out["x_train"], out["y_train"], out.get("x_test"), out.get("y_test"),
                           classes=None if names is None else [str(n) for n in names], task=task, **common)
    elif isinstance(out, tuple) and len(out) in (2, 4) and not _is_dataset(out[0]):
        raw = from_tensors(*out, task=task, **common)
    elif task != "classification" and (_is_dataset(out) or (isinstance(out, tuple) and len(out) == 2)):
        raise ConfigError(f"data {spec!r} returned a torch Dataset: for {task} return arrays (x, y), "
                          "(x_train, y_train, x_test, y_test), a dict of those, or a RawDataset")
    elif isinstance(out, tuple) and len(out) == 2 and _is_dataset(out[0]):
        raw = from_torch_dataset(out[0], out[1], **common)
    elif _is_dataset(out):
        raw = from_torch_dataset(out, **common)
    else:
        raise ConfigError(f"data {spec!r} returned a {type(out).__name__}; expected a RawDataset, (x, y), "
                          "(x_train, y_train, x_test, y_test), a dict of those, or a torch Dataset")
    return dataclasses.replace(raw, source=spec)


def _is_dataset(obj: Any) -> bool:
    """A torch-style dataset of (image, label) pairs, not an array."""
    return not hasattr(obj, "shape") and ((hasattr(obj, "__getitem__") and hasattr(obj, "__len__"))
                                          or hasattr(obj, "__iter__")) and not isinstance(obj, (list, str, bytes))
