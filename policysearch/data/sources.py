"""The named data sets, one :class:`Source` record each: what the set holds, where its files are
looked for, how they are read, and where they are downloaded from.

Adding a data set is adding one record to :data:`SOURCES` (and a row to the table in the
:mod:`policysearch.data` docstring); :mod:`policysearch.data.lookup` does the searching, fetching
and status for every record alike.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from policysearch.data import derived
from policysearch.data.formats import idx_count, read_idx, unpickle_arrays
from policysearch.data.raw import RawDataset, make_raw
from policysearch.data.splits import stratified_split
from policysearch.errors import ConfigError

__all__ = ["DATASETS", "SOURCES", "Source"]


@dataclass(frozen=True)
class Source:
    """One named data set.

    Attributes:
        name: The name users pass (``load_dataset(name)``, ``--dataset name``).
        shape: Image shape ``(C, H, W)``.
        images: Published ``(train, test)`` counts, shown by ``dataset_status`` when the files are
            absent or not counted.
        classes: Class names, label order.
        read: ``read(folder)`` -> the whole data set; ``folder`` is None for a bundled set.
        bundled: For a set shipped inside a Python package, that package's name (there are no
            files to find, and ``complete`` / ``files`` are unused); empty for a set on disk.
        complete: ``complete(folder)``: does the folder hold a complete set of files?
        subdirs: Sub-folder names tried under ``data_dir``, ``$POLICYSEARCH_DATA`` and the system
            folder, besides the folder itself.
        url: Base URL of ``files``.
        files: ``(file name, md5)`` pairs fetched from ``url`` into the user cache.
        archive_folder: If set, the (single) downloaded file is a tar archive holding this folder,
            which is extracted next to it; the set is then read from that folder.
        count: ``count(folder)`` -> actual ``(train, test)`` counts, read cheaply (headers only);
            None shows the published ``images``.
        how_to_get: Last line of the "not found" error; may use ``{system}`` (this set's system
            folder), ``{url}`` and ``{files}`` (the file names).
        found_note: ``dataset_status`` note when the set is usable.
        missing_note: ``dataset_status`` note when it is not found; may use ``{cache}``, ``{url}``
            and ``{files}``.
        base: For a set built from another named set's files (`policysearch.data.derived`), that set's
            name: its files are found, downloaded and reported as the base's, and ``read`` gets the
            base's folder. Empty for a set with files of its own.
        task: What the targets are ("classification", "segmentation", "restoration"; `policysearch.tasks`).
    """

    name: str
    shape: tuple[int, int, int]
    images: tuple[int, int]
    classes: tuple[str, ...]
    read: Callable[[Path | None], RawDataset]
    bundled: str = ""
    complete: Callable[[Path], bool] | None = None
    subdirs: tuple[str, ...] = ()
    url: str = ""
    files: tuple[tuple[str, str], ...] = ()
    archive_folder: str | None = None
    count: Callable[[Path | None], tuple[int, int]] | None = None
    how_to_get: str = ""
    found_note: str = ""
    missing_note: str = ""
    base: str = ""
    task: str = "classification"

    @property
    def cache_subdirs(self) -> tuple[str, ...]:
        """Sub-folders tried under the user cache: only the layouts the download writes."""
        return (self.archive_folder,) if self.archive_folder else ()

    def fill(self, template: str, **fields: object) -> str:
        """``template`` with ``{url}``, ``{files}`` and the given fields filled in."""
        return template.format(url=self.url, files=", ".join(f for f, _ in self.files), **fields)


# --------------------------------------------------------------------------------------------
# digits (scikit-learn)
# --------------------------------------------------------------------------------------------

# The digits test split is part of the data set's definition, not of an experiment, so it uses
# its own fixed seed: changing the user's seed must never move images in or out of the test set.
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_TEST_SEED = 0


def _read_digits(folder: Path | None = None) -> RawDataset:
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
    return make_raw(
        "digits",
        x[train_idx], y[train_idx], x[test_idx], y[test_idx],
        [str(i) for i in range(10)],
        "scikit-learn",
    )


def _count_digits(folder: Path | None = None) -> tuple[int, int]:
    # The counts follow from the fixed test carve; computing them keeps the figure honest.
    from sklearn.datasets import load_digits

    y = torch.from_numpy(load_digits().target.astype(np.int64))
    train, test = stratified_split(y, _DIGITS_TEST_FRACTION, None, _DIGITS_TEST_SEED)
    return len(train), len(test)


DIGITS = Source(
    name="digits",
    shape=(1, 8, 8),
    images=(1438, 359),
    classes=tuple(str(i) for i in range(10)),
    read=_read_digits,
    bundled="scikit-learn",
    count=_count_digits,
    found_note="bundled with scikit-learn; fixed stratified 20% test split (seed 0)",
)


# --------------------------------------------------------------------------------------------
# Fashion-MNIST (four IDX files)
# --------------------------------------------------------------------------------------------

_FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FASHION_FILES: dict[str, tuple[str, str]] = {
    # role: (file name, md5 of the .gz file as published)
    "train_images": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
}


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


def _found_fashion_files(folder: Path) -> dict[str, Path]:
    files = _fashion_files(folder)
    if files is None:  # lookup only hands over complete folders; a race with a deletion lands here
        raise ConfigError(f"{folder} no longer holds the four Fashion-MNIST IDX files.")
    return files


def _fashion_arrays(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per part ("train", "test"): uint8 images (N, 28, 28) and int64 labels, checked."""
    files = _found_fashion_files(folder)
    parts = {}
    for part in ("train", "test"):
        images = read_idx(files[f"{part}_images"], 3)
        labels = read_idx(files[f"{part}_labels"], 1)
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
        parts[part] = (images, labels.astype(np.int64))
    return parts


def _read_fashion(folder: Path | None) -> RawDataset:
    assert folder is not None  # a set on disk is always read from a folder
    parts = {part: (torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y))
             for part, (x, y) in _fashion_arrays(folder).items()}
    return make_raw(
        "fashion-mnist", *parts["train"], *parts["test"], _FASHION_CLASSES, str(folder)
    )


def _count_fashion(folder: Path | None) -> tuple[int, int]:
    assert folder is not None
    files = _found_fashion_files(folder)
    return idx_count(files["train_images"]), idx_count(files["test_images"])


FASHION_MNIST = Source(
    name="fashion-mnist",
    shape=(1, 28, 28),
    images=(60000, 10000),
    classes=_FASHION_CLASSES,
    read=_read_fashion,
    complete=lambda folder: _fashion_files(folder) is not None,
    # "FashionMNIST/raw" is where torchvision leaves the same IDX files, so an existing
    # torchvision download is picked up too.
    subdirs=("fashion-mnist", "FashionMNIST/raw"),
    url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    files=tuple(_FASHION_FILES.values()),
    count=_count_fashion,
    how_to_get=(
        "To get it: `sudo apt-get install dataset-fashion-mnist` (installs {system}), or put the four "
        "files ({files}; gzipped or not) in a folder and pass --data-dir FOLDER (data_dir=FOLDER) or set "
        "POLICYSEARCH_DATA=FOLDER."
    ),
    found_note="IDX files",
    missing_note=(
        "not found; downloaded to {cache} on first use (needs network), or "
        "`sudo apt-get install dataset-fashion-mnist`"
    ),
)


# --------------------------------------------------------------------------------------------
# CIFAR-10 (the python folder of pickled batches)
# --------------------------------------------------------------------------------------------

_CIFAR_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST_BATCH = "test_batch"


def _is_cifar_folder(folder: Path) -> bool:
    return all((folder / b).is_file() for b in (*_CIFAR_TRAIN_BATCHES, _CIFAR_TEST_BATCH))


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = unpickle_arrays(path)
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


def _read_cifar(folder: Path | None) -> RawDataset:
    assert folder is not None  # a set on disk is always read from a folder
    batches = [_read_cifar_batch(folder / b) for b in _CIFAR_TRAIN_BATCHES]
    x_train = np.concatenate([b[0] for b in batches])
    y_train = np.concatenate([b[1] for b in batches])
    x_test, y_test = _read_cifar_batch(folder / _CIFAR_TEST_BATCH)
    return make_raw(
        "cifar10",
        torch.from_numpy(x_train), torch.from_numpy(y_train),
        torch.from_numpy(x_test), torch.from_numpy(y_test),
        _CIFAR_CLASSES,
        str(folder),
    )


CIFAR10 = Source(
    name="cifar10",
    shape=(3, 32, 32),
    images=(50000, 10000),
    classes=_CIFAR_CLASSES,
    read=_read_cifar,
    complete=_is_cifar_folder,
    subdirs=("cifar10", _CIFAR_FOLDER, f"cifar10/{_CIFAR_FOLDER}"),
    url="https://www.cs.toronto.edu/~kriz/",
    files=(("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
    archive_folder=_CIFAR_FOLDER,
    how_to_get=(
        "To get it: download {url}{files}, extract it, and pass the folder holding "
        f"{_CIFAR_FOLDER}/ as --data-dir FOLDER (data_dir=FOLDER) or set "
        "POLICYSEARCH_DATA=FOLDER; or allow the download (needs network)."
    ),
    found_note="python batches",
    missing_note="not found; downloaded to {cache} on first use (needs network, 163 MB) from {url}{files}",
)


# --------------------------------------------------------------------------------------------
# Dense-task sets composed from Fashion-MNIST (policysearch.data.derived)
# --------------------------------------------------------------------------------------------


def _read_scenes(folder: Path | None) -> RawDataset:
    assert folder is not None  # the base set's folder
    parts = _fashion_arrays(folder)
    return derived.fashion_scenes(parts["train"], parts["test"], _FASHION_CLASSES, str(folder))


def _read_denoise(folder: Path | None) -> RawDataset:
    assert folder is not None
    parts = _fashion_arrays(folder)
    return derived.fashion_denoise(parts["train"][0], parts["test"][0], str(folder))


def _read_sr2x(folder: Path | None) -> RawDataset:
    assert folder is not None
    parts = _fashion_arrays(folder)
    return derived.fashion_sr2x(parts["train"][0], parts["test"][0], str(folder))


FASHION_SCENES = Source(
    name="fashion-scenes",
    shape=(1, derived.SCENE_SIZE, derived.SCENE_SIZE),
    images=derived.SCENE_COUNTS,
    classes=("background", *_FASHION_CLASSES),
    read=_read_scenes,
    base="fashion-mnist",
    task="segmentation",
    found_note="synthetic scenes of 1-3 real Fashion-MNIST garments, fixed seed",
)
FASHION_DENOISE = Source(
    name="fashion-denoise",
    shape=(1, 28, 28),
    images=(60000, 10000),
    classes=(),
    read=_read_denoise,
    base="fashion-mnist",
    task="restoration",
    found_note=f"Fashion-MNIST + Gaussian noise (sigma {derived.NOISE_SIGMA:g}), fixed seed",
)
FASHION_SR2X = Source(
    name="fashion-sr2x",
    shape=(1, 28, 28),
    images=(60000, 10000),
    classes=(),
    read=_read_sr2x,
    base="fashion-mnist",
    task="restoration",
    found_note="Fashion-MNIST 2x super-resolution (2x2 area down, bilinear up)",
)


#: Every named data set, by name, in the order ``dataset_status`` lists them.
SOURCES: dict[str, Source] = {s.name: s for s in (DIGITS, FASHION_MNIST, CIFAR10, FASHION_SCENES, FASHION_DENOISE,
                                                  FASHION_SR2X)}

#: The names :func:`~policysearch.data.load_dataset` accepts.
DATASETS: tuple[str, ...] = tuple(SOURCES)
