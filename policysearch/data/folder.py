"""An image folder as a data set: one sub-folder per class (``root/<class>/*.png``), optionally with
``train/`` and ``test/`` above the class folders; PNG, JPEG and the other formats Pillow reads.

Decoded once into uint8 (N, C, H, W) and cached by content: the cache key is a sha256 over every
file's relative path and bytes (and the requested size), so a second run over the same folder reads
one ``.npz`` instead of decoding every image, and any changed, added or removed file is a new key.
Images are grey (1 channel) when every image is grey, else RGB (3); sizes must agree unless an
``image_size`` is given, which resizes every image (bilinear, antialiased).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policysearch.data.lookup import cache_dir
from policysearch.data.raw import RawDataset
from policysearch.data.user import from_tensors
from policysearch.errors import ConfigError, MissingExtraError
from policysearch.files import atomic_write

__all__ = ["IMAGE_SUFFIXES", "from_image_folder", "parse_image_size", "read_cache", "write_cache"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
_CACHE_VERSION = 1


def parse_image_size(text: str) -> tuple[int, int]:
    """``"H"`` (square) or ``"HxW"`` as (H, W).

    Raises:
        ConfigError: not one or two positive ints.
    """
    parts = text.lower().replace("×", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"image size {text!r}: expected H or HxW, e.g. 64 or 64x48") from None
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise ConfigError(f"image size {text!r}: expected H or HxW with positive sizes")
    return (sizes[0], sizes[-1])


def _class_files(folder: Path, what: str) -> dict[str, list[Path]]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ConfigError(f"{what} {str(folder)!r} holds no class folders: expected one sub-folder per class "
                          "(e.g. cat/, dog/), each with the class's images")
    files: dict[str, list[Path]] = {}
    skipped = 0
    for c in classes:
        found = sorted(p for p in c.rglob("*") if p.is_file() and not p.name.startswith("."))
        images = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
        skipped += len(found) - len(images)
        if not images:
            raise ConfigError(f"class folder {str(c)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files[c.name] = images
    if skipped:
        log.warning("%s: %d file(s) that are not images (by suffix) skipped", folder, skipped)
    return files


def _layout(root: Path) -> tuple[dict[str, list[Path]], dict[str, list[Path]] | None]:
    """The train and (optional) test files by class."""
    train, test = root / "train", root / "test"
    if train.is_dir():
        test_files = _class_files(test, "test folder") if test.is_dir() else None
        train_files = _class_files(train, "train folder")
        if test_files is not None:
            extra = sorted(set(test_files) - set(train_files))
            if extra:
                raise ConfigError(f"{test}: classes {extra} have no folder in {train}; the test classes must be "
                                  "among the training classes")
        return train_files, test_files
    return _class_files(root, "image folder"), None


def _fingerprint(root: Path, parts: Sequence[dict[str, list[Path]] | None], size: tuple[int, int] | None) -> str:
    h = hashlib.sha256(f"v{_CACHE_VERSION} size={size}".encode())
    for files in parts:
        for _class, paths in sorted((files or {}).items()):
            for p in paths:
                h.update(str(p.relative_to(root)).encode() + b"\0")
                h.update(p.read_bytes())
    return h.hexdigest()


def _decode(paths: list[Path], size: tuple[int, int] | None) -> tuple[np.ndarray, str]:
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingExtraError("PIL", "all", "reading an image folder (Pillow, a dependency)") from exc
    images: list[Any] = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
                images.append(im.copy())
        except Exception as exc:  # Pillow raises many types for a corrupt or foreign file
            raise ConfigError(f"{p}: cannot be read as an image ({type(exc).__name__}: {exc})") from None
    grey = all(im.mode in _GREY_MODES for im in images)
    sizes = {im.size for im in images}
    if size is None and len(sizes) > 1:
        (w0, h0), (w1, h1) = sorted(sizes)[:2]
        first = next(p for p, im in zip(paths, images) if im.size == (w0, h0))
        other = next(p for p, im in zip(paths, images) if im.size == (w1, h1))
        raise ConfigError(f"the images differ in size ({h0}x{w0} in {first}, {h1}x{w1} in {other}, "
                          f"{len(sizes)} sizes in all); pass --image-size H[xW] (image_size=) to resize them")
    arrays = []
    for im in images:
        im = _to_8bit(im, "L" if grey else "RGB")
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(im, dtype=np.uint8))
    stacked = np.stack(arrays)
    stacked = stacked[:, None] if grey else stacked.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(stacked), "grey" if grey else "RGB"


def _to_8bit(im: Any, mode: str) -> Any:
    """`im` in mode "L" or "RGB"; 16-bit and float grey images scaled to 8 bits, not clipped."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        from PIL import Image

        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I") else max(1.0, float(arr.max()))
        im = Image.fromarray(np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8), mode="L")
    return im.convert(mode) if im.mode != mode else im


def from_image_folder(path: str | Path, image_size: tuple[int, int] | str | None = None, *,
                      test_fraction: float = 0.2, seed: int = 0, cache: bool = True) -> RawDataset:
    """Read an image folder (see the module docstring) as a `RawDataset`.

    Args:
        path: the folder: ``<class>/...`` or ``train/<class>/...`` (and optionally ``test/<class>/...``).
        image_size: (H, W), or "H" / "HxW": resize every image; None: the images' own (common) size.
        test_fraction, seed: the stratified test carve when the folder has no ``test/``.
        cache: read / write the decoded arrays in the user cache (``policysearch/folders``).

    Raises:
        ConfigError: no class folders, a class without images, an unreadable image, sizes that differ
            without `image_size`, test classes unknown to the training part.
    """
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"data {str(path)!r}: no such folder")
    size = parse_image_size(image_size) if isinstance(image_size, str) else image_size
    train_files, test_files = _layout(root)
    classes = sorted(train_files)
    started = time.perf_counter()
    key = _fingerprint(root, (train_files, test_files), size)
    cached = cache_dir("folders") / f"{key}.npz"
    arrays = read_cache(cached) if cache else {}
    if not arrays:
        for part, files in (("train", train_files), ("test", test_files)):
            if files is None:
                continue
            paths = [p for c in classes for p in files.get(c, [])]
            labels = [classes.index(c) for c in classes for _ in files.get(c, [])]
            arrays[f"x_{part}"], _ = _decode(paths, size)
            arrays[f"y_{part}"] = np.asarray(labels, dtype=np.int64)
        if "x_test" in arrays and arrays["x_test"].shape[1:] != arrays["x_train"].shape[1:]:
            # One part all grey, the other with colour: make both RGB.
            for part in ("train", "test"):
                x = arrays[f"x_{part}"]
                if x.shape[1] == 1:
                    arrays[f"x_{part}"] = np.repeat(x, 3, axis=1)
            if arrays["x_test"].shape[1:] != arrays["x_train"].shape[1:]:
                raise ConfigError(f"{root}: train images are {arrays['x_train'].shape[2:]} and test images "
                                  f"{arrays['x_test'].shape[2:]} (H, W); pass --image-size H[xW] to resize both")
        log.info("%s: decoded %d images in %.1f s", root, sum(len(a) for k, a in arrays.items() if k[0] == "y"),
                 time.perf_counter() - started)
        if cache:
            write_cache(cached, arrays)
    raw = from_tensors(arrays["x_train"], arrays["y_train"], arrays.get("x_test"), arrays.get("y_test"),
                       name=root.name, classes=classes, test_fraction=test_fraction, seed=seed)
    return dataclasses.replace(raw, source=str(root))


def read_cache(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a folder's cache file; empty when there is none or it cannot be read."""
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as exc:  # a damaged cache file is rebuilt, never trusted
        log.warning("%s: unreadable cache file (%s); decoding the images again", path, exc)
        return {}


def write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Save a folder's decoded arrays (atomically); a failure only costs the next run the decoding."""
    try:
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except OSError as exc:  # a cache that cannot be written costs time next run, nothing else
        log.warning("%s: the decoded images could not be cached (%s)", path, exc)
