"""Data sets, fixed splits, fingerprints and device-resident tensors.

Everything the inner training loop reads comes from here:

* :func:`load_dataset` / :func:`from_tensors` / :func:`from_torch_dataset` give a
  :class:`RawDataset`: uint8 images (N, C, H, W) and int64 labels on the CPU, an official (or
  carved, fixed) test split, and a sha256 ``fingerprint`` that versions the content.
* :func:`prepare` carves a stratified validation split out of the training part with
  :func:`stratified_split`, optionally shrinks the train / test parts for proxy runs, and moves
  everything to the training device once, as a :class:`DeviceData`. Later code indexes those
  tensors in batches; no per-sample Python work happens after this point.

Data sets by name (see :data:`DATASETS`):

=================  ===========  ==============  ===========================================
name               images       shape           where it comes from
=================  ===========  ==============  ===========================================
``digits``         1438 + 359   1 x 8 x 8       scikit-learn's bundled ``load_digits``; it has
                                                no official test split, so a fixed stratified
                                                20 % test split (seed 0) is carved, independent
                                                of the user's seed
``fashion-mnist``  60000+10000  1 x 28 x 28     the four IDX files (``.gz`` or not)
``cifar10``        50000+10000  3 x 32 x 32     the python folder ``cifar-10-batches-py``
=================  ===========  ==============  ===========================================

File lookup, in order (first folder holding a complete set wins): the ``data_dir`` argument,
``$POLICYSEARCH_DATA``, the user cache (``$XDG_CACHE_HOME`` or ``~/.cache``, then
``policysearch/<name>``), and ``/usr/share/datasets/<name>`` (Debian's ``dataset-fashion-mnist``
package installs Fashion-MNIST there). Each of these folders is tried as is and with the usual
sub-folder names (``fashion-mnist``, ``cifar10``, ``cifar-10-batches-py`` ...). When nothing is
found and ``download=True``, the files are fetched from the official mirror into the user cache
and their md5 checked; without network this fails within seconds with a
:class:`~policysearch.errors.DatasetNotFoundError` that says how to get the files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import numbers
import os
import pickle
import shutil
import socket
import struct
import tarfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from policysearch.errors import ConfigError, DatasetNotFoundError, UnknownNameError

__all__ = [
    "DATASETS",
    "DeviceData",
    "RawDataset",
    "dataset_status",
    "from_tensors",
    "from_torch_dataset",
    "load_dataset",
    "prepare",
    "stratified_split",
]

log = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("digits", "fashion-mnist", "cifar10")

#: Anything :func:`from_tensors` accepts as an image or label array.
ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[Any]]

# The digits test split is part of the data set's definition, not of an experiment, so it uses
# its own fixed seed: changing the user's seed must never move images in or out of the test set.
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_TEST_SEED = 0

# Test subsampling (``prepare(test_size=...)``) uses a fixed seed for the same reason: quick runs
# with different seeds must still be scored on the same test images.
_TEST_SUBSET_SEED = 0

_FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
_CIFAR_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]

_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FASHION_FILES: dict[str, tuple[str, str]] = {
    # role: (file name, md5 of the .gz file as published)
    "train_images": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
}
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST_BATCH = "test_batch"

# Sub-folders tried under every search root, besides the root itself. "FashionMNIST/raw" is where
# torchvision leaves the same IDX files, so an existing torchvision download is picked up too.
_SUBDIRS: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("fashion-mnist", "FashionMNIST/raw"),
    "cifar10": ("cifar10", _CIFAR_FOLDER, f"cifar10/{_CIFAR_FOLDER}"),
}
# System-wide install locations; a module constant so tests can point it elsewhere.
_SYSTEM_ROOT = Path("/usr/share/datasets")

# Socket timeout for downloads (connect and each read), in seconds. Name resolution is not
# covered by socket timeouts, so it is bounded separately in `_resolve_host`.
_NET_TIMEOUT = 10.0


# --------------------------------------------------------------------------------------------
# Raw data sets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class RawDataset:
    """A whole data set in memory: uint8 images and int64 labels on the CPU.

    Attributes:
        name: Data set name (one of :data:`DATASETS`, or the name given for user data).
        x_train: uint8 images, shape (N, C, H, W), CPU.
        y_train: int64 labels in ``[0, len(classes))``, shape (N,).
        x_test: uint8 images, shape (M, C, H, W), same (C, H, W) as ``x_train``.
        y_test: int64 labels, shape (M,).
        classes: Class names; label ``k`` is ``classes[k]``.
        fingerprint: sha256 hex digest of the shapes and bytes of x_train, y_train, x_test and
            y_test (in that order). It is the data set's version: one changed pixel or label
            changes it.
        source: Where the data came from (a folder, ``"scikit-learn"``, ``"tensors"``, ...).

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

    def __post_init__(self) -> None:
        # Cheap structural checks only; a RawDataset built by hand must fail here, not deep
        # inside a training step an hour later.
        for part in ("train", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
                raise ConfigError(
                    f"RawDataset {self.name!r}: x_{part} must be a uint8 tensor of shape "
                    f"(N, C, H, W); got {_describe_array(x)}. Use from_tensors() to convert."
                )
            if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.dim() != 1:
                raise ConfigError(
                    f"RawDataset {self.name!r}: y_{part} must be an int64 tensor of shape (N,); "
                    f"got {_describe_array(y)}. Use from_tensors() to convert."
                )
            if len(x) != len(y):
                raise ConfigError(
                    f"RawDataset {self.name!r}: x_{part} has {len(x)} images but y_{part} has "
                    f"{len(y)} labels."
                )
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                raise ConfigError(
                    f"RawDataset {self.name!r}: y_{part} holds labels {int(y.min())}.."
                    f"{int(y.max())}, expected 0..{len(self.classes) - 1} "
                    f"({len(self.classes)} classes)."
                )
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


def _fingerprint(*tensors: torch.Tensor) -> str:
    """sha256 over each tensor's shape and raw bytes, in order."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(repr(tuple(t.shape)).encode())
        arr = t.detach().cpu().contiguous().numpy()
        if arr.dtype.itemsize > 1:
            # Pin the byte order so the same data hashes the same on any machine.
            arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        h.update(arr.data.cast("B"))
    return h.hexdigest()


def _make_raw(
    name: str,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    classes: list[str],
    source: str,
) -> RawDataset:
    return RawDataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        classes=list(classes),
        fingerprint=_fingerprint(x_train, y_train, x_test, y_test),
        source=source,
    )


def load_dataset(
    name: str, data_dir: str | Path | None = None, download: bool = True
) -> RawDataset:
    """Load a named data set into memory (CPU, uint8).

    Args:
        name: One of :data:`DATASETS` (case-insensitive).
        data_dir: Folder searched first for the files (see the module docstring for the full
            search order). Ignored for ``digits``, which ships with scikit-learn.
        download: Fetch missing files from the official mirror into the user cache.

    Returns:
        The data set, with its official test split (a fixed carved one for ``digits``).

    Raises:
        UnknownNameError: ``name`` is not in :data:`DATASETS` (the message suggests close names).
        DatasetNotFoundError: The files are in none of the searched folders and could not be
            downloaded; the message lists the folders and how to get the files.
        ConfigError: A data file is present but damaged (the message names it).
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in DATASETS:
        raise UnknownNameError("dataset", str(name), DATASETS)
    if key == "digits":
        return _load_digits()
    if key == "fashion-mnist":
        folder = _find_or_download("fashion-mnist", data_dir, download)
        return _load_fashion(folder)
    folder = _find_or_download("cifar10", data_dir, download)
    return _load_cifar(folder)


def _load_digits() -> RawDataset:
    from sklearn.datasets import load_digits  # heavy import, only when digits is asked for

    bunch = load_digits()
    # Values are 0..16; scale to the full uint8 range so digits looks like any other image data.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = stratified_split(
        torch.from_numpy(labels), _DIGITS_TEST_FRACTION, None, _DIGITS_TEST_SEED
    )
    x = torch.from_numpy(images)
    y = torch.from_numpy(labels)
    return _make_raw(
        "digits",
        x[train_idx], y[train_idx], x[test_idx], y[test_idx],
        [str(i) for i in range(10)],
        "scikit-learn",
    )


# --------------------------------------------------------------------------------------------
# Finding files on disk
# --------------------------------------------------------------------------------------------


def _cache_dir(name: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "policysearch" / name


def _search_roots(name: str, data_dir: str | Path | None) -> list[tuple[Path, tuple[str, ...]]]:
    """Folders to search, in order, each with the sub-folder names tried under it."""
    subs = _SUBDIRS[name]
    roots: list[tuple[Path, tuple[str, ...]]] = []
    if data_dir is not None and str(data_dir) != "":
        roots.append((Path(data_dir).expanduser(), subs))
    env = os.environ.get("POLICYSEARCH_DATA")
    if env:
        roots.append((Path(env).expanduser(), subs))
    # The cache and system folders are ours / the distribution's: only the layouts we write
    # (cifar10 extracts to a cifar-10-batches-py sub-folder) need trying there.
    extra = (_CIFAR_FOLDER,) if name == "cifar10" else ()
    roots.append((_cache_dir(name), extra))
    roots.append((_SYSTEM_ROOT / name, subs))
    seen: set[Path] = set()
    unique = []
    for root, sub in roots:
        if root not in seen:
            seen.add(root)
            unique.append((root, sub))
    return unique


def _fashion_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (gzipped or not), or None if any is missing."""
    found = {}
    for role, (gz_name, _) in _FASHION_FILES.items():
        for candidate in (folder / gz_name, folder / gz_name[: -len(".gz")]):
            if candidate.is_file():
                found[role] = candidate
                break
        else:
            return None
    return found


def _is_cifar_folder(folder: Path) -> bool:
    return all((folder / b).is_file() for b in (*_CIFAR_TRAIN_BATCHES, _CIFAR_TEST_BATCH))


def _is_complete(name: str, folder: Path) -> bool:
    if name == "fashion-mnist":
        return _fashion_files(folder) is not None
    return _is_cifar_folder(folder)


def _find_folder(name: str, data_dir: str | Path | None) -> Path | None:
    for root, subs in _search_roots(name, data_dir):
        for folder in (root, *(root / s for s in subs)):
            if _is_complete(name, folder):
                return folder
    return None


def _find_or_download(name: str, data_dir: str | Path | None, download: bool) -> Path:
    folder = _find_folder(name, data_dir)
    if folder is not None:
        return folder
    failure = "download=False, so nothing was downloaded"
    if download:
        try:
            if name == "fashion-mnist":
                return _download_fashion(_cache_dir(name))
            return _download_cifar(_cache_dir(name))
        except _DownloadFailed as exc:
            failure = str(exc)
    raise DatasetNotFoundError(_not_found_message(name, data_dir, failure))


def _not_found_message(name: str, data_dir: str | Path | None, failure: str) -> str:
    lines = [f"data set {name!r} not found. Searched:"]
    for root, subs in _search_roots(name, data_dir):
        state = " (no complete set of files)" if root.is_dir() else " (does not exist)"
        also = f" (and sub-folders {', '.join(s + '/' for s in subs)})" if subs else ""
        lines.append(f"  - {root}{also}{state}")
    lines.append(f"Download: {failure}.")
    if name == "fashion-mnist":
        files = ", ".join(f for f, _ in _FASHION_FILES.values())
        lines.append(
            "To get it: `sudo apt-get install dataset-fashion-mnist` (installs "
            f"{_SYSTEM_ROOT / name}), or put the four files ({files}; gzipped or not) in a "
            "folder and pass --data-dir FOLDER (data_dir=FOLDER) or set POLICYSEARCH_DATA=FOLDER."
        )
    else:
        lines.append(
            f"To get it: download {_CIFAR_URL}, extract it, and pass the folder holding "
            f"{_CIFAR_FOLDER}/ as --data-dir FOLDER (data_dir=FOLDER) or set "
            f"POLICYSEARCH_DATA=FOLDER; or allow the download (needs network)."
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------------------------


class _DownloadFailed(Exception):
    """Internal: a download did not complete; the message says why."""


def _resolve_host(url: str) -> None:
    # socket timeouts do not cover DNS: on a closed network getaddrinfo can hang for tens of
    # seconds, so bound it with a daemon thread.
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    outcome: list[BaseException | None] = []

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, port)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller below
            outcome.append(exc)

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(_NET_TIMEOUT)
    if not outcome:
        raise _DownloadFailed(f"resolving {host} took more than {_NET_TIMEOUT:g} s")
    if outcome[0] is not None:
        raise _DownloadFailed(f"cannot resolve {host}: {outcome[0]}")


def _download(url: str, dest: Path, md5: str) -> None:
    """Stream ``url`` to ``dest``, checking its md5; ``dest`` appears only when complete."""
    _resolve_host(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A per-process temporary name: parallel workers may download at once, and os.replace
    # makes whichever finishes last win with an identical, verified file.
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    digest = hashlib.md5()
    log.info("downloading %s to %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=_NET_TIMEOUT) as response, open(tmp, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise _DownloadFailed(
                f"{url} has md5 {digest.hexdigest()}, expected {md5} (corrupt or changed upstream)"
            )
        os.replace(tmp, dest)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise _DownloadFailed(f"fetching {url} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _download_fashion(folder: Path) -> Path:
    for gz_name, md5 in _FASHION_FILES.values():
        if not (folder / gz_name).is_file():
            _download(_FASHION_URL + gz_name, folder / gz_name, md5)
    return folder


def _download_cifar(folder: Path) -> Path:
    archive = folder / "cifar-10-python.tar.gz"
    if not archive.is_file():
        _download(_CIFAR_URL, archive, _CIFAR_MD5)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            # Extract member by member: only regular files under cifar-10-batches-py/, written
            # by name, so a crafted archive cannot place files elsewhere.
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if not member.isfile() or len(parts) != 2 or parts[0] != _CIFAR_FOLDER:
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                (folder / _CIFAR_FOLDER).mkdir(parents=True, exist_ok=True)
                with src, open(folder / _CIFAR_FOLDER / parts[1], "wb") as out:
                    shutil.copyfileobj(src, out)
    except (OSError, tarfile.TarError, EOFError, zlib.error) as exc:
        raise _DownloadFailed(f"extracting {archive} failed: {exc}") from exc
    if not _is_cifar_folder(folder / _CIFAR_FOLDER):
        raise _DownloadFailed(f"{archive} does not hold the expected {_CIFAR_FOLDER}/ batches")
    return folder / _CIFAR_FOLDER


# --------------------------------------------------------------------------------------------
# File formats
# --------------------------------------------------------------------------------------------


def _open_maybe_gz(path: Path) -> io.BufferedIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def _read_exact(f: io.BufferedIOBase, n: int, path: Path, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ConfigError(
            f"IDX file {path} is truncated: it ends inside the {what}. "
            "Delete it and get the file again."
        )
    return data


def _read_idx_header(f: io.BufferedIOBase, path: Path, ndim: int) -> tuple[int, ...]:
    magic = _read_exact(f, 4, path, "magic number")
    # IDX magic: two zero bytes, a type code (0x08 = unsigned byte), then the number of dims.
    if magic[0] != 0 or magic[1] != 0 or magic[2] != 0x08 or magic[3] != ndim:
        expected = 0x0800 + ndim
        raise ConfigError(
            f"{path} is not an IDX uint8 file with {ndim} dimension(s): magic number "
            f"0x{int.from_bytes(magic, 'big'):08x}, expected 0x{expected:08x}. "
            "The file is damaged or not what its name says; delete it and get it again."
        )
    dims = struct.unpack(f">{ndim}I", _read_exact(f, 4 * ndim, path, "dimension header"))
    return tuple(int(d) for d in dims)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file (``.gz`` or plain) holding uint8 data with ``ndim`` dimensions.

    Raises:
        ConfigError: Bad magic number, truncated or trailing data, or a broken gzip stream;
            the message names the file.
    """
    try:
        with _open_maybe_gz(path) as f:
            dims = _read_idx_header(f, path, ndim)
            out = np.empty(int(np.prod(dims)), dtype=np.uint8)
            # readinto straight into the result: no second copy of a 47 MB image file.
            view = out.data
            filled = 0
            while filled < out.size:
                n = f.readinto(view[filled:])
                if not n:
                    break
                filled += n
            if filled != out.size:
                raise ConfigError(
                    f"IDX file {path} is truncated: header promises {dims} = {out.size} bytes, "
                    f"file holds {filled}. Delete it and get the file again."
                )
            if f.read(1):
                raise ConfigError(
                    f"IDX file {path} has data past the {dims} its header declares; "
                    "it is damaged or not an IDX file. Delete it and get it again."
                )
    except (OSError, EOFError, zlib.error) as exc:
        raise ConfigError(
            f"cannot read IDX file {path}: {exc}. It is damaged (or not gzip despite its name); "
            "delete it and get it again."
        ) from exc
    return out.reshape(dims)


def _idx_count(path: Path) -> int:
    """Number of images in an IDX image file, from its header only."""
    with _open_maybe_gz(path) as f:
        return _read_idx_header(f, path, 3)[0]


def _load_fashion(folder: Path) -> RawDataset:
    files = _fashion_files(folder)
    assert files is not None  # _find_folder only returns complete folders
    parts = {}
    for part in ("train", "test"):
        images = _read_idx(files[f"{part}_images"], 3)
        labels = _read_idx(files[f"{part}_labels"], 1)
        if len(images) != len(labels):
            raise ConfigError(
                f"{files[f'{part}_images']} holds {len(images)} images but "
                f"{files[f'{part}_labels']} holds {len(labels)} labels; the files do not belong "
                "together."
            )
        if len(labels) and int(labels.max()) >= len(_FASHION_CLASSES):
            raise ConfigError(
                f"{files[f'{part}_labels']} holds label {int(labels.max())}; Fashion-MNIST "
                f"labels are 0..{len(_FASHION_CLASSES) - 1}."
            )
        parts[part] = (
            torch.from_numpy(images).unsqueeze(1),
            torch.from_numpy(labels.astype(np.int64)),
        )
    return _make_raw(
        "fashion-mnist", *parts["train"], *parts["test"], _FASHION_CLASSES, str(folder)
    )


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler for the official CIFAR batches that refuses anything but numpy arrays.

    The batches are pickles by design of the data set; restricting the classes they may name
    means a tampered file in a user folder cannot run code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes in pickles re-saved with Python 3
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            # numpy 2 warns when old pickles name numpy.core; the data is still read correctly.
            warnings.simplefilter("ignore", DeprecationWarning)
            batch = _CifarUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"cannot read CIFAR-10 batch {path}: {exc!r}. It is damaged or not a "
            f"{_CIFAR_FOLDER} file; delete the folder and get it again."
        ) from exc
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ConfigError(
            f"CIFAR-10 batch {path} holds data {data.shape} and {len(labels)} labels; expected "
            "(N, 3072) and N labels."
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(_CIFAR_CLASSES)):
        raise ConfigError(f"CIFAR-10 batch {path} holds labels outside 0..9.")
    # Each row is the red plane, then green, then blue: already channel-first.
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar(folder: Path) -> RawDataset:
    batches = [_read_cifar_batch(folder / b) for b in _CIFAR_TRAIN_BATCHES]
    x_train = np.concatenate([b[0] for b in batches])
    y_train = np.concatenate([b[1] for b in batches])
    x_test, y_test = _read_cifar_batch(folder / _CIFAR_TEST_BATCH)
    return _make_raw(
        "cifar10",
        torch.from_numpy(x_train), torch.from_numpy(y_train),
        torch.from_numpy(x_test), torch.from_numpy(y_test),
        _CIFAR_CLASSES,
        str(folder),
    )


# --------------------------------------------------------------------------------------------
# User data
# --------------------------------------------------------------------------------------------


def _describe_array(a: object) -> str:
    shape = getattr(a, "shape", None)
    dtype = getattr(a, "dtype", None)
    if shape is None:
        return type(a).__name__
    return f"{type(a).__name__} of shape {tuple(shape)} and dtype {dtype}"


def _to_numpy(a: ArrayLike, what: str) -> np.ndarray:
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


def _images_to_nchw_uint8(a: ArrayLike, what: str) -> np.ndarray:
    arr = _to_numpy(a, what)
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


def _labels_to_int64(a: ArrayLike, what: str) -> np.ndarray:
    arr = _to_numpy(a, what)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ConfigError(
            f"{what} must be 1-D class indices; got shape {arr.shape} "
            "(one-hot labels: take argmax first)."
        )
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"{what} must hold integer class labels; got dtype {arr.dtype}.")
    return arr.astype(np.int64)


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
    if x_test is None and not (isinstance(test_fraction, numbers.Real) and 0 < test_fraction < 1):
        raise ConfigError(f"test_fraction must be in (0, 1); got {test_fraction!r}.")
    xs = {"train": _images_to_nchw_uint8(x_train, "x_train")}
    ys = {"train": _labels_to_int64(y_train, "y_train")}
    if x_test is not None and y_test is not None:
        xs["test"] = _images_to_nchw_uint8(x_test, "x_test")
        ys["test"] = _labels_to_int64(y_test, "y_test")
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

    x_tr, y_tr = torch.from_numpy(xs["train"]), torch.from_numpy(ys["train"])
    if "test" in xs:
        x_te, y_te = torch.from_numpy(xs["test"]), torch.from_numpy(ys["test"])
    else:
        keep, held = stratified_split(y_tr, test_fraction, None, seed)
        x_tr, y_tr, x_te, y_te = x_tr[keep], y_tr[keep], x_tr[held], y_tr[held]
    return _make_raw(name, x_tr, y_tr, x_te, y_te, class_names, source)


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
            arr = _to_numpy(image, f"{what}[{i}] image")
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


# --------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------


def dataset_status(data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Report, without loading or downloading, which named data sets are usable here.

    Args:
        data_dir: Folder searched first, as in :func:`load_dataset`.

    Returns:
        One dict per name in :data:`DATASETS`, in that order, with keys ``name``,
        ``available`` (bool), ``location`` (folder, ``"scikit-learn"`` or None), ``images``
        (``"train+test"`` counts), ``shape`` (``"CxHxW"``), ``classes`` (int) and ``note``.
    """
    rows: list[dict[str, Any]] = []
    # digits: counts follow from the fixed test carve; computing them keeps the figure honest.
    try:
        from sklearn.datasets import load_digits

        y = torch.from_numpy(load_digits().target.astype(np.int64))
        tr, te = stratified_split(y, _DIGITS_TEST_FRACTION, None, _DIGITS_TEST_SEED)
        rows.append(dict(
            name="digits", available=True, location="scikit-learn",
            images=f"{len(tr)}+{len(te)}", shape="1x8x8", classes=10,
            note="bundled with scikit-learn; fixed stratified 20% test split (seed 0)",
        ))
    except ImportError as exc:
        rows.append(dict(
            name="digits", available=False, location=None, images="1438+359", shape="1x8x8",
            classes=10, note=f"scikit-learn is not importable: {exc}",
        ))

    folder = _find_folder("fashion-mnist", data_dir)
    row: dict[str, Any] = dict(
        name="fashion-mnist", available=folder is not None,
        location=str(folder) if folder else None, images="60000+10000", shape="1x28x28",
        classes=10,
    )
    if folder is None:
        row["note"] = (
            f"not found; downloaded to {_cache_dir('fashion-mnist')} on first use (needs "
            "network), or `sudo apt-get install dataset-fashion-mnist`"
        )
    else:
        files = _fashion_files(folder)
        assert files is not None
        try:
            n_train, n_test = _idx_count(files["train_images"]), _idx_count(files["test_images"])
            row["images"] = f"{n_train}+{n_test}"
            row["note"] = "IDX files"
        except (OSError, EOFError, zlib.error, ConfigError) as exc:
            row["available"] = False
            row["note"] = f"files present but unreadable: {exc}"
    rows.append(row)

    folder = _find_folder("cifar10", data_dir)
    rows.append(dict(
        name="cifar10", available=folder is not None,
        location=str(folder) if folder else None, images="50000+10000", shape="3x32x32",
        classes=10,
        note="python batches" if folder else (
            f"not found; downloaded to {_cache_dir('cifar10')} on first use (needs network, "
            f"163 MB) from {_CIFAR_URL}"
        ),
    ))
    return rows


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


def _allocate(counts: np.ndarray, total: int, caps: np.ndarray, at_least_one: bool) -> np.ndarray:
    """Share ``total`` among classes in proportion to ``counts`` (largest remainder).

    Each class gets between its floor (1 where ``at_least_one`` and its cap allows, else 0)
    and ``caps``. Ties go to the lower class index, so the result is deterministic.
    """
    quota = total * counts / counts.sum()
    floor = np.where(at_least_one & (caps >= 1), 1, 0).astype(np.int64)
    alloc: np.ndarray = np.clip(np.floor(quota).astype(np.int64), floor, caps)
    diff = int(total - alloc.sum())
    # Usually fewer than num_classes steps; more only when caps bind.
    while diff > 0:
        room = np.where(alloc < caps, quota - alloc, -np.inf)
        i = int(np.argmax(room))
        if room[i] == -np.inf:
            raise ConfigError(f"cannot place {total} samples: classes hold only {caps.sum()}.")
        alloc[i] += 1
        diff -= 1
    while diff < 0:
        excess = np.where(alloc > floor, alloc - quota, -np.inf)
        i = int(np.argmax(excess))
        if excess[i] == -np.inf:
            raise ConfigError(
                f"cannot place only {total} samples while keeping one per class "
                f"({int(floor.sum())} classes)."
            )
        alloc[i] -= 1
        diff += 1
    return alloc


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise ConfigError(f"seed must be a non-negative integer; got {seed!r}.")
    return int(seed)


def stratified_split(
    y: torch.Tensor, val_size: float | int, train_size: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split sample indices into a training and a validation part, stratified by label.

    The validation part takes each class in proportion to its frequency (largest-remainder
    rounding), with at least one sample of every class that has two or more when
    ``val_size`` allows it; every class keeps at least one training sample. The validation
    part does not depend on ``train_size``, so proxy runs on a smaller training set are scored
    on the same validation images.

    Args:
        y: Integer labels, shape (N,).
        val_size: Fraction in (0, 1) of N (rounded, at least 1), or a count >= 1.
        train_size: If given, the training part is a stratified subsample of this many of the
            remaining samples (at least one per class); None keeps all of them.
        seed: Seed of a numpy ``default_rng``; the same seed gives the same split.

    Returns:
        ``(train_idx, val_idx)``: sorted, disjoint int64 index tensors into ``y``.

    Raises:
        ConfigError: ``val_size`` or ``train_size`` out of range for these labels (the message
            gives the values and the limits).
    """
    seed = _check_seed(seed)
    labels = _labels_to_int64(y, "y")
    n = len(labels)
    if n < 2:
        raise ConfigError(f"need at least 2 samples to split; got {n}.")
    values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    k = len(values)
    capacity = n - k  # every class keeps one training sample

    if isinstance(val_size, bool) or not isinstance(val_size, numbers.Real):
        raise ConfigError(f"val_size must be a fraction in (0, 1) or a count; got {val_size!r}.")
    if isinstance(val_size, numbers.Integral):
        n_val = int(val_size)
        if n_val < 1:
            raise ConfigError(f"val_size must be at least 1 sample; got {n_val}.")
    else:
        if not 0 < float(val_size) < 1:
            raise ConfigError(
                f"val_size as a fraction must be in (0, 1); got {val_size!r} "
                "(pass an int for a sample count)."
            )
        n_val = max(1, int(round(float(val_size) * n)))
    if n_val > capacity:
        raise ConfigError(
            f"val_size {val_size!r} asks for {n_val} of {n} samples, but at most {capacity} can "
            f"go to validation so that each of the {k} classes keeps a training sample."
        )

    val_alloc = _allocate(
        counts, n_val, counts - 1, at_least_one=n_val >= int((counts >= 2).sum())
    )
    rng = np.random.default_rng(seed)
    # Group indices by class (stable, so the grouping itself does not depend on the seed),
    # then shuffle within each class: the first val_alloc[c] go to validation.
    by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    shuffled = [rng.permutation(idx) for idx in by_class]
    val_parts = [s[:a] for s, a in zip(shuffled, val_alloc)]
    pools = [s[a:] for s, a in zip(shuffled, val_alloc)]

    if train_size is not None:
        if isinstance(train_size, bool) or not isinstance(train_size, numbers.Integral):
            raise ConfigError(f"train_size must be an integer or None; got {train_size!r}.")
        pool_counts = counts - val_alloc
        available = int(pool_counts.sum())
        if not k <= int(train_size) <= available:
            raise ConfigError(
                f"train_size must be between the number of classes ({k}) and the samples left "
                f"after validation ({available}); got {train_size}. Lower train_size or "
                "val_size, or pass train_size=None to use all."
            )
        train_alloc = _allocate(pool_counts, int(train_size), pool_counts, at_least_one=True)
        pools = [p[:a] for p, a in zip(pools, train_alloc)]

    train_idx = np.sort(np.concatenate(pools))
    val_idx = np.sort(np.concatenate(val_parts))
    return torch.from_numpy(train_idx.astype(np.int64)), torch.from_numpy(val_idx.astype(np.int64))


def _stratified_subset(y: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Sorted indices of a stratified subsample of ``size`` samples (at least one per class)."""
    labels = y.numpy()
    values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    alloc = _allocate(counts, size, counts, at_least_one=size >= len(values))
    rng = np.random.default_rng(seed)
    by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    picked = [rng.permutation(idx)[:a] for idx, a in zip(by_class, alloc)]
    return torch.from_numpy(np.sort(np.concatenate(picked)).astype(np.int64))


# --------------------------------------------------------------------------------------------
# Device-resident data
# --------------------------------------------------------------------------------------------

_SPLITS = ("train", "val", "test")


@dataclass(eq=False, repr=False)
class DeviceData:
    """A data set split into train / val / test, resident on the training device.

    Images stay uint8 (a quarter of float32's memory); the trainer converts batches and
    normalises them with ``mean`` and ``std``.

    Attributes:
        name: Data set name.
        fingerprint: The :class:`RawDataset` fingerprint (content version, not the split).
        x_train: uint8 (N, C, H, W) on ``device``; y_train int64 (N,).
        x_val: Validation images carved from the training data; y_val their labels.
        x_test: Test images (never used during search); y_test their labels.
        classes: Class names.
        mean: float32 (C,) per-channel mean of ``x_train / 255``, on ``device``.
        std: float32 (C,) per-channel standard deviation of ``x_train / 255``, at least 1e-3.
        split: ``{"seed", "train_size", "val_size", "test_size"}``: the seed and the sizes
            actually used.
        device: Where the tensors live.
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

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

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
        if split not in _SPLITS:
            raise UnknownNameError("split", str(split), _SPLITS)
        return getattr(self, f"x_{split}"), getattr(self, f"y_{split}")

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for run configs and provenance."""
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "split": dict(self.split),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
        }

    def __repr__(self) -> str:
        s = self.split
        return (
            f"DeviceData(name={self.name!r}, train={s['train_size']}, val={s['val_size']}, "
            f"test={s['test_size']}, shape={'x'.join(map(str, self.input_shape))}, "
            f"classes={self.num_classes}, device={self.device}, "
            f"fingerprint={self.fingerprint[:12]}…)"
        )


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images scaled to [0, 1], via 256-bin histograms.

    Histograms are exact for uint8 and avoid a float copy of the whole training set.
    """
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        hist = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = hist.sum()
        mean = (hist * levels).sum() / total
        var = (hist * (levels - mean) ** 2).sum() / total
        means.append(mean)
        stds.append(var.sqrt())
    return (
        torch.stack(means).to(torch.float32),
        torch.stack(stds).to(torch.float32).clamp_min(1e-3),
    )


def _resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"invalid device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use 'cpu'.")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} requested but MPS is not available; use 'cpu'.")
    return dev


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
) -> DeviceData:
    """Split a data set and move it to the training device, once.

    Args:
        data: A name from :data:`DATASETS` (loaded with :func:`load_dataset`) or a
            :class:`RawDataset`.
        val_size: Validation part carved from the training data: a fraction in (0, 1) or a
            count (see :func:`stratified_split`).
        train_size: Cap on the training part (stratified), for quick proxy runs.
        seed: Seed of the train / val split.
        device: Where the tensors go (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
        data_dir: Passed to :func:`load_dataset` when ``data`` is a name.
        download: Passed to :func:`load_dataset` when ``data`` is a name.
        test_size: If given, a stratified subsample of the test split of this size, with a
            fixed seed (0) so every run is scored on the same images; None keeps all.

    Returns:
        The device-resident splits, channel statistics of the training part, and the split
        record.

    Raises:
        ConfigError: Bad sizes, seed or device; see also :func:`load_dataset`.
    """
    if isinstance(data, str):
        raw = load_dataset(data, data_dir=data_dir, download=download)
    elif isinstance(data, RawDataset):
        raw = data
    else:
        raise ConfigError(
            f"data must be a data set name ({', '.join(DATASETS)}) or a RawDataset; got "
            f"{type(data).__name__}. Wrap tensors with from_tensors()."
        )
    dev = _resolve_device(device)
    train_idx, val_idx = stratified_split(raw.y_train, val_size, train_size, seed)

    x_test, y_test = raw.x_test, raw.y_test
    if test_size is not None:
        if isinstance(test_size, bool) or not isinstance(test_size, numbers.Integral):
            raise ConfigError(f"test_size must be an integer or None; got {test_size!r}.")
        if not 1 <= int(test_size) <= len(y_test):
            raise ConfigError(
                f"test_size must be between 1 and the {len(y_test)} test images; got {test_size}."
            )
        if int(test_size) < len(y_test):
            keep = _stratified_subset(y_test, int(test_size), _TEST_SUBSET_SEED)
            x_test, y_test = x_test[keep], y_test[keep]

    # Index on the CPU, then copy each part to the device once.
    x_train, y_train = raw.x_train[train_idx], raw.y_train[train_idx]
    mean, std = _channel_stats(x_train)
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
    )
