"""Readers for the file formats data sets ship in: IDX (MNIST family, ``.gz`` or plain) and the
pickled numpy batches of the CIFAR python folders, unpickled with a loader that cannot run code.

Every reader names the file in its error and says what to do (delete it, get it again)."""

from __future__ import annotations

import gzip
import io
import math
import pickle
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from policysearch.errors import ConfigError

__all__ = ["ArrayUnpickler", "idx_count", "open_maybe_gz", "read_idx", "unpickle_arrays"]


def open_maybe_gz(path: Path) -> io.BufferedIOBase:
    """``path`` opened for binary reading, through gzip when its name ends in ``.gz``."""
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


# A bound on what a header may promise, so a damaged header is an error, not a 10^15-byte allocation.
_MAX_IDX_BYTES = 2**34
# And on what a file of its size can hold, checked before anything is inflated: image files compress
# about 2-5x (MNIST 4.8x); a gzip bomb (a tiny file inflating to gigabytes) compresses 1000x.
_MAX_GZIP_RATIO, _SMALL_IDX_BYTES = 50, 64 * 2**20


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file (``.gz`` or plain) holding uint8 data with ``ndim`` dimensions.

    Raises:
        ConfigError: Bad magic number, truncated or trailing data, or a broken gzip stream;
            the message names the file.
    """
    try:
        with open_maybe_gz(path) as f:
            dims = _read_idx_header(f, path, ndim)
            size = math.prod(dims)
            if size == 0 or size > _MAX_IDX_BYTES:
                raise ConfigError(
                    f"IDX file {path} declares dimensions {dims} ({size:,} bytes): expected at least one "
                    f"item and at most {_MAX_IDX_BYTES:,} bytes; it is damaged or not a data set file"
                )
            stored = path.stat().st_size
            if size > (max(_SMALL_IDX_BYTES, _MAX_GZIP_RATIO * stored) if path.suffix == ".gz" else stored):
                raise ConfigError(
                    f"IDX file {path} declares dimensions {dims} ({size:,} bytes), more than its {stored:,} bytes "
                    "on disk can hold; it is damaged (or a gzip bomb): not read. Delete it and get it again."
                )
            out = np.empty(size, dtype=np.uint8)
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


def idx_count(path: Path) -> int:
    """Number of images in an IDX image file, from its header only."""
    with open_maybe_gz(path) as f:
        return _read_idx_header(f, path, 3)[0]


class ArrayUnpickler(pickle.Unpickler):
    """Unpickler for pickled numpy data (the CIFAR batches) that refuses anything but numpy arrays.

    The batches are pickles by design of the data set; restricting the classes they may name
    means a tampered file in a user folder cannot run code.
    """

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
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


def unpickle_arrays(path: Path) -> Any:
    """Load a pickle of numpy arrays, dicts, lists and bytes with :class:`ArrayUnpickler`.

    Raises:
        OSError, EOFError, pickle.UnpicklingError: The caller turns these into an error that
            names the data set.
    """
    with open(path, "rb") as f, warnings.catch_warnings():
        # numpy 2 warns when old pickles name numpy.core; the data is still read correctly.
        warnings.simplefilter("ignore", DeprecationWarning)
        return ArrayUnpickler(f, encoding="bytes").load()
