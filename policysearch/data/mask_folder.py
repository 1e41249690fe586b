"""A segmentation folder as a data set: ``images/`` and ``masks/`` holding files of the same names
(``images/street1.jpg`` pairs with ``masks/street1.png``; sub-folders pair by their relative path),
optionally split as ``images/{train,test}`` and ``masks/{train,test}``, and an optional ``classes.txt``
(one class name per line, line k names class k).

A mask holds one class index per pixel, 255 (`IGNORE_INDEX`) where no label applies: a grey (mode L) or
palette (mode P, read as its indices, like Pascal VOC's masks) PNG, or another lossless format Pillow
reads. RGB masks are refused (a colour is not a class index; a palette PNG keeps its colours and its
indices), and so are JPEG / WebP masks (lossy compression changes indices along every edge).

Classes: ``classes.txt``, else "0".."K-1" with K the largest mask value other than 255, plus one.
Without ``test/`` folders a test split is carved as the class-folder loader does (``test_fraction``,
``seed``, said in the log), but plainly random: a mask has no single label to stratify by.
Images are read as class folders read them (`policysearch.data.folder`: grey when all are grey, else
RGB; one size unless ``image_size``, then resized bilinear); masks are resized nearest-neighbour, as
interpolating class indices would invent classes along edges. Decoded once and cached by content
(every file's relative path and bytes, ``classes.txt`` and the size), in the same cache as class folders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from pathlib import Path

import numpy as np

from policysearch.data.folder import IMAGE_SUFFIXES, _decode, parse_image_size, read_cache, write_cache
from policysearch.data.lookup import cache_dir
from policysearch.data.raw import RawDataset
from policysearch.data.user import from_tensors
from policysearch.errors import ConfigError, MissingExtraError
from policysearch.tasks import IGNORE_INDEX

__all__ = ["from_mask_folder", "is_mask_folder"]

log = logging.getLogger(__name__)

_LOSSY = (".jpg", ".jpeg", ".webp")
_MASK_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L")
_CACHE_VERSION = 1
# (key, image, mask): key is the path relative to images/ (or masks/) without its suffix.
Pair = tuple[str, Path, Path]


def is_mask_folder(path: str | Path) -> bool:
    """Does the folder hold ``images/`` and ``masks/`` (a segmentation folder, by its layout)?"""
    root = Path(path).expanduser()
    return (root / "images").is_dir() and (root / "masks").is_dir()


def _files(folder: Path) -> dict[str, Path]:
    found = sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                             p.relative_to(folder).parts))
    files: dict[str, Path] = {}
    skipped = 0
    for p in found:
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            skipped += 1
            continue
        key = p.relative_to(folder).with_suffix("").as_posix()
        if key in files:
            raise ConfigError(f"{files[key]} and {p} have the same name; which one pairs with its image (or mask) "
                              "is ambiguous: keep one")
        files[key] = p
    if skipped:
        log.warning("%s: %d file(s) that are not images (by suffix) skipped", folder, skipped)
    return files


def _pairs(images: Path, masks: Path) -> list[Pair]:
    image_files, mask_files = _files(images), _files(masks)
    if not image_files:
        raise ConfigError(f"{images} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    for missing, present, other, what in ((sorted(set(image_files) - set(mask_files)), image_files, masks, "image"),
                                          (sorted(set(mask_files) - set(image_files)), mask_files, images, "mask")):
        if missing:
            more = f" ({len(missing) - 1} more like it)" if len(missing) > 1 else ""
            partner = "mask" if what == "image" else "image"
            raise ConfigError(f"{what} {present[missing[0]]} has no {partner} of the same name in {other}{more}; "
                              f"every image needs a mask named like it (e.g. {missing[0]}.png)")
    lossy = [mask_files[k] for k in sorted(mask_files) if mask_files[k].suffix.lower() in _LOSSY]
    if lossy:
        raise ConfigError(f"mask {lossy[0]} is a {lossy[0].suffix} file: lossy compression changes class indices "
                          "along every edge; save masks as PNG")
    return [(k, image_files[k], mask_files[k]) for k in sorted(image_files)]


def _layout(root: Path) -> tuple[list[Pair], list[Pair] | None]:
    """The train and (optional) test pairs."""
    images, masks = root / "images", root / "masks"
    if not (images / "train").is_dir():
        if (masks / "train").is_dir():
            raise ConfigError(f"{masks / 'train'} exists but {images / 'train'} does not; split both folders "
                              "(images/train, masks/train) or neither")
        return _pairs(images, masks), None
    parts: dict[str, list[Pair] | None] = {}
    for part in ("train", "test"):
        has_images, has_masks = (images / part).is_dir(), (masks / part).is_dir()
        if has_images != has_masks:
            have, lack = (images, masks) if has_images else (masks, images)
            raise ConfigError(f"{have / part} exists but {lack / part} does not; images/ and masks/ must be split "
                              "alike")
        parts[part] = _pairs(images / part, masks / part) if has_images else None
    assert parts["train"] is not None  # images/train is a folder: checked above
    return parts["train"], parts["test"]


def _read_classes(root: Path) -> list[str] | None:
    path = root / "classes.txt"
    if not path.is_file():
        return None
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read as UTF-8 text ({exc})") from None
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ConfigError(f"{path} is empty; write one class name per line (line 1 names class 0) or remove it")
    if "" in lines:
        raise ConfigError(f"{path}: line {lines.index('') + 1} is empty; line k names class k-1, so every line "
                          "up to the last must hold a name")
    if len(lines) > IGNORE_INDEX:
        raise ConfigError(f"{path} names {len(lines)} classes; masks hold at most {IGNORE_INDEX} "
                          f"(0..{IGNORE_INDEX - 1}; {IGNORE_INDEX} = ignored)")
    return lines


def _read_mask(path: Path, image: Path) -> np.ndarray:
    """A mask's class indices, uint8 (H, W), checked against its image's size."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            mode, mask = im.mode, np.asarray(im)
        with Image.open(image) as im:  # the header only: the size, no pixels decoded
            image_size = im.size
    except Exception as exc:  # Pillow raises many types for a corrupt or foreign file
        raise ConfigError(f"{path} or {image}: cannot be read as an image ({type(exc).__name__}: {exc})") from None
    if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "HSV", "LAB"):
        raise ConfigError(f"mask {path} is a colour ({mode}) image; a mask holds one class index per pixel: save it "
                          "as a grey (mode L) or palette (mode P) PNG whose values are the class indices")
    if mode not in _MASK_MODES:
        raise ConfigError(f"mask {path} has the image mode {mode}; expected a grey (L) or palette (P) PNG of class "
                          "indices")
    if mask.ndim != 2:
        raise ConfigError(f"mask {path} has shape {mask.shape}; expected one value per pixel")
    if (mask.shape[1], mask.shape[0]) != image_size:
        (w, h), (mh, mw) = image_size, mask.shape
        raise ConfigError(f"image {image} is {h}x{w} but its mask {path} is {mh}x{mw} (H x W); an image and its "
                          "mask must be the same size")
    if mask.dtype != np.uint8:  # mode 1 (bool) or 16 / 32-bit grey
        top = int(mask.max()) if mask.size else 0
        if mask.dtype != np.bool_ and (top > IGNORE_INDEX or int(mask.min()) < 0):
            raise ConfigError(f"mask {path} holds the value {top}; class indices are 0..{IGNORE_INDEX - 1}, "
                              f"{IGNORE_INDEX} = ignored")
        mask = mask.astype(np.uint8)
    return mask


def _check_values(masks: list[np.ndarray], paths: list[Path], names: list[str] | None, root: Path) -> list[str]:
    """The class names; a mask value beyond them names its file."""
    tops = [int(np.where(m == IGNORE_INDEX, 0, m).max()) if (m != IGNORE_INDEX).any() else -1 for m in masks]
    if names is not None:
        for top, path in zip(tops, paths):
            if top >= len(names):
                raise ConfigError(f"mask {path} holds the value {top}, but {root / 'classes.txt'} names "
                                  f"{len(names)} classes (0..{len(names) - 1}; {IGNORE_INDEX} = ignored)")
        return names
    k = max(tops) + 1
    if k == 0:
        raise ConfigError(f"{root}: every mask pixel is {IGNORE_INDEX} (ignored); there is nothing to learn")
    return [str(i) for i in range(k)]


def _resize_mask(mask: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or mask.shape == size:
        return mask
    from PIL import Image

    return np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.Resampling.NEAREST), dtype=np.uint8)


def _cache_key(root: Path, parts: list[list[Pair]], size: tuple[int, int] | None) -> str:
    h = hashlib.sha256(f"masks v{_CACHE_VERSION} size={size}".encode())
    classes = root / "classes.txt"
    h.update(classes.read_bytes() if classes.is_file() else b"-")
    for pairs in parts:
        h.update(b"\1")  # part boundary: moving a pair from train to test is another data set
        for _key, image, mask in pairs:
            for p in (image, mask):
                h.update(str(p.relative_to(root)).encode() + b"\0")
                h.update(p.read_bytes())
    return h.hexdigest()


def _decode_pairs(root: Path, train: list[Pair], test: list[Pair] | None, size: tuple[int, int] | None,
                  names: list[str] | None) -> dict[str, np.ndarray]:
    pairs = train + (test or [])
    masks = [_read_mask(mask, image) for _key, image, mask in pairs]
    classes = _check_values(masks, [mask for *_, mask in pairs], names, root)
    # All images at once: one grey / RGB decision and one size check over both parts.
    x, _ = _decode([image for _key, image, _mask in pairs], size)
    y = np.stack([_resize_mask(m, x.shape[2:]) for m in masks])
    n = len(train)
    arrays = {"x_train": x[:n], "y_train": y[:n], "classes": np.asarray(classes, dtype=str)}
    if test is not None:
        arrays.update(x_test=x[n:], y_test=y[n:])
    return arrays


def from_mask_folder(path: str | Path, image_size: tuple[int, int] | str | None = None, *,
                     test_fraction: float = 0.2, seed: int = 0, cache: bool = True) -> RawDataset:
    """Read a segmentation folder (see the module docstring) as a `RawDataset` with task "segmentation".

    Args:
        path: the folder holding ``images/`` and ``masks/`` (each flat, or split into ``train/`` and ``test/``).
        image_size: (H, W), or "H" / "HxW": resize every image (bilinear) and mask (nearest); None: their own
            (common) size.
        test_fraction, seed: the random test carve when there are no ``test/`` folders.
        cache: read / write the decoded arrays in the user cache (``policysearch/folders``).

    Raises:
        ConfigError: an image without a mask or a mask without an image (named), an image and its mask of
            different sizes, an RGB or JPEG mask, a mask value beyond the classes of ``classes.txt``, images
            of different sizes without `image_size`, an unreadable file.
    """
    root = Path(path).expanduser().resolve()
    if not is_mask_folder(root):
        raise ConfigError(f"data {str(path)!r}: a segmentation folder holds images/ and masks/ (files of the same "
                          "names); this folder does not")
    try:
        import PIL  # noqa: F401  (Pillow reads every image and mask below)
    except ImportError as exc:
        raise MissingExtraError("PIL", "all", "reading a segmentation folder (Pillow, a dependency)") from exc
    size = parse_image_size(image_size) if isinstance(image_size, str) else image_size
    train, test = _layout(root)
    names = _read_classes(root)
    started = time.perf_counter()
    cached = cache_dir("folders") / f"{_cache_key(root, [train, test or []], size)}.npz"
    arrays = read_cache(cached) if cache else {}
    if not arrays:
        arrays = _decode_pairs(root, train, test, size, names)
        log.info("%s: decoded %d images and masks in %.1f s", root, len(train) + len(test or []),
                 time.perf_counter() - started)
        if cache:
            write_cache(cached, arrays)
    raw = from_tensors(arrays["x_train"], arrays["y_train"], arrays.get("x_test"), arrays.get("y_test"),
                       name=root.name, classes=[str(c) for c in arrays["classes"]], test_fraction=test_fraction,
                       seed=seed, task="segmentation")
    return dataclasses.replace(raw, source=str(root))
