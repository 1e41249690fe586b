"""Tests for policysearch.data: splits, fingerprints, loaders, errors. Tiny data only."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import pickle
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from policysearch import data as D
from policysearch.data import formats, lookup, sources
from policysearch.errors import ConfigError, DatasetNotFoundError, UnknownNameError


@pytest.fixture(scope="module")
def digits() -> D.RawDataset:
    return D.load_dataset("digits")


@pytest.fixture()
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No cache, env or system data: lookups see only what a test writes under tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("POLICYSEARCH_DATA", raising=False)
    monkeypatch.setattr(lookup, "_SYSTEM_ROOT", tmp_path / "system")
    return tmp_path


def _labels(counts: list[int], seed: int = 0) -> torch.Tensor:
    y = np.concatenate([np.full(c, k) for k, c in enumerate(counts)])
    return torch.from_numpy(np.random.default_rng(seed).permutation(y))


# An IDX image header promising 5 images of 28x28, with no pixel data after it.
_IDX3_HEADER_ONLY = bytes([0, 0, 8, 3]) + struct.pack(">3I", 5, 28, 28)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = header + arr.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def _write_fashion(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    _write_idx(folder / f"train-images-idx3-ubyte{ext}", rng.integers(0, 256, (n_train, 28, 28)))
    _write_idx(folder / f"train-labels-idx1-ubyte{ext}", np.arange(n_train) % 10)
    _write_idx(folder / f"t10k-images-idx3-ubyte{ext}", rng.integers(0, 256, (n_test, 28, 28)))
    _write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", np.arange(n_test) % 10)


# ---------------------------------------------------------------------------------- splits


def test_split_is_disjoint_complete_and_seeded() -> None:
    y = _labels([120, 60, 20])
    tr, va = D.stratified_split(y, 0.2, None, seed=1)
    assert len(set(tr.tolist()) & set(va.tolist())) == 0
    assert sorted(tr.tolist() + va.tolist()) == list(range(len(y)))
    assert len(va) == 40
    tr2, va2 = D.stratified_split(y, 0.2, None, seed=1)
    assert torch.equal(tr, tr2) and torch.equal(va, va2)
    _, va3 = D.stratified_split(y, 0.2, None, seed=2)
    assert not torch.equal(va, va3)


def test_split_is_stratified_and_covers_each_class() -> None:
    y = _labels([500, 300, 150, 45, 5])
    _, va = D.stratified_split(y, 0.1, None, seed=0)
    counts = np.bincount(y[va].numpy(), minlength=5)
    expected = np.array([500, 300, 150, 45, 5]) * 0.1
    assert counts.sum() == 100
    assert np.all(np.abs(counts - expected) <= 1), counts
    assert np.all(counts >= 1)  # even the 5-sample class is in validation


def test_train_size_caps_stratified_and_keeps_val() -> None:
    y = _labels([400, 200, 100])
    tr_full, va_full = D.stratified_split(y, 0.1, None, seed=3)
    tr, va = D.stratified_split(y, 0.1, 70, seed=3)
    assert len(tr) == 70
    assert torch.equal(va, va_full)  # proxy runs are scored on the same validation images
    assert set(tr.tolist()) <= set(tr_full.tolist())
    assert np.bincount(y[tr].numpy(), minlength=3).tolist() == [40, 20, 10]


@pytest.mark.parametrize(
    ("val_size", "train_size", "match"),
    [
        (1.5, None, "in \\(0, 1\\)"),
        (0, None, "val_size is 0, expected a fraction in \\(0, 1\\) or a count >= 1"),
        (True, None, "fraction"),
        (98, None, "at most 97"),
        (0.1, 2, "number of classes \\(3\\)"),
        (0.1, 1000, "samples left after validation \\(90\\)"),
    ],
)
def test_split_rejects_bad_sizes(val_size: object, train_size: object, match: str) -> None:
    y = _labels([50, 30, 20])
    with pytest.raises(ConfigError, match=match):
        D.stratified_split(y, val_size, train_size, seed=0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- fingerprints


def test_fingerprint_changes_with_one_pixel_or_one_label() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 1, 4, 4), dtype=np.uint8)
    y = np.arange(40) % 4
    xt, yt = x[:8].copy(), y[:8].copy()
    base = D.from_tensors(x, y, xt, yt).fingerprint
    assert D.from_tensors(x.copy(), y.copy(), xt, yt).fingerprint == base
    x2 = x.copy()
    x2[17, 0, 2, 3] ^= 1
    assert D.from_tensors(x2, y, xt, yt).fingerprint != base
    y2 = y.copy()
    y2[5] = (y2[5] + 1) % 4
    assert D.from_tensors(x, y2, xt, yt).fingerprint != base
    yt2 = yt.copy()
    yt2[0] = (yt2[0] + 1) % 4
    assert D.from_tensors(x, y, xt, yt2).fingerprint != base


# ---------------------------------------------------------------------------------- user data


def test_from_tensors_accepts_nchw_nhwc_nhw_and_float() -> None:
    rng = np.random.default_rng(0)
    nchw = rng.integers(0, 256, (20, 3, 5, 6), dtype=np.uint8)
    y = np.arange(20) % 2
    ref = D.from_tensors(torch.from_numpy(nchw), torch.from_numpy(y), nchw[:4], y[:4])
    assert ref.x_train.shape == (20, 3, 5, 6) and ref.y_train.dtype == torch.int64
    nhwc = D.from_tensors(nchw.transpose(0, 2, 3, 1), y, nchw[:4].transpose(0, 2, 3, 1), y[:4])
    assert torch.equal(nhwc.x_train, ref.x_train)
    as_float = D.from_tensors(torch.from_numpy(nchw).float() / 255, y, nchw[:4], y[:4])
    assert torch.equal(as_float.x_train, ref.x_train)
    assert as_float.fingerprint == ref.fingerprint
    nhw = D.from_tensors(nchw[:, 0], y, nchw[:4, 0], y[:4])
    assert nhw.x_train.shape == (20, 1, 5, 6)
    assert torch.equal(nhw.x_train[:, 0], ref.x_train[:, 0])


def test_from_tensors_labels_and_carved_test_split() -> None:
    x = np.zeros((50, 1, 4, 4), dtype=np.uint8)
    y = np.repeat(np.array([3, 5, 9], dtype=np.int16), [20, 20, 10])
    raw = D.from_tensors(x, y, test_fraction=0.2, seed=1)
    assert raw.classes == ["3", "5", "9"]  # compacted to 0..2, names keep the values
    assert raw.y_train.dtype == torch.int64
    assert sorted(set(raw.y_train.tolist())) == [0, 1, 2]
    assert len(raw.x_test) == 10 and len(raw.x_train) == 40
    assert np.bincount(raw.y_test.numpy()).tolist() == [4, 4, 2]
    assert raw.source == "tensors"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(x_train=np.full((4, 1, 2, 2), 2.0), y_train=[0, 1, 0, 1]), "must be in \\[0, 1\\]"),
        (dict(x_train=np.zeros((4, 1, 2, 2)), y_train=[0, 1, 0]), "4 images but y_train has 3"),
        (dict(x_train=np.zeros((4, 2, 2)), y_train=[0.5, 1, 0, 1]), "integer class labels"),
        (dict(x_train=np.zeros((4, 2)), y_train=[0, 1, 0, 1]), "got shape \\(4, 2\\)"),
        (dict(x_train=np.zeros((4, 2, 2)), y_train=[0, 1, 0, 2], classes=["a", "b"]), "0..1"),
        (
            dict(x_train=np.zeros((4, 2, 2)), y_train=[0, 1, 0, 1], x_test=np.zeros((2, 3, 3)),
                 y_test=[0, 1]),
            "x_test images are",
        ),
    ],
)
def test_from_tensors_rejects_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        D.from_tensors(**kwargs)


class _PairDataset(torch.utils.data.Dataset):
    def __init__(self, images: list, labels: list) -> None:
        self.images, self.labels, self.classes = images, labels, ["zero", "one"]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple:
        return self.images[i], self.labels[i]


def test_from_torch_dataset_tensor_numpy_and_pil_images() -> None:
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (12, 6, 6, 3), dtype=np.uint8)
    y = [i % 2 for i in range(12)]
    ref = D.from_tensors(hwc[:8], y[:8], hwc[8:], y[8:], classes=["zero", "one"])
    as_tensor = _PairDataset([torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in hwc],
                             [torch.tensor(v) for v in y])
    raw = D.from_torch_dataset(torch.utils.data.Subset(as_tensor, range(8)),
                               torch.utils.data.Subset(as_tensor, range(8, 12)),
                               classes=["zero", "one"])
    assert raw.fingerprint == ref.fingerprint
    as_numpy = _PairDataset(list(hwc), [np.int64(v) for v in y])
    raw = D.from_torch_dataset(as_numpy, test_fraction=0.25)
    assert raw.classes == ["zero", "one"]  # picked up from the dataset's .classes
    assert len(raw.x_train) + len(raw.x_test) == 12 and raw.x_train.shape[1:] == (3, 6, 6)
    image_mod = pytest.importorskip("PIL.Image")
    as_pil = _PairDataset([image_mod.fromarray(a) for a in hwc[:, :, :, 0]], y)
    raw = D.from_torch_dataset(as_pil, as_pil)
    assert torch.equal(raw.x_train[:, 0], torch.from_numpy(hwc[:, :, :, 0]))


def test_from_torch_dataset_rejects_mixed_sizes() -> None:
    ds = _PairDataset([np.zeros((4, 4)), np.zeros((5, 5))], [0, 1])
    with pytest.raises(ConfigError, match=r"train\[1\] image has shape \(5, 5\)"):
        D.from_torch_dataset(ds)


# ---------------------------------------------------------------------------------- named sets


def test_unknown_dataset_suggests_close_name() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'fashion-mnist'"):
        D.load_dataset("fashion_mnist")


def test_digits_has_fixed_test_split(digits: D.RawDataset) -> None:
    assert digits.x_train.shape == (1438, 1, 8, 8) and digits.x_test.shape == (359, 1, 8, 8)
    assert digits.x_train.dtype == torch.uint8 and int(digits.x_train.max()) == 255
    assert digits.classes == [str(i) for i in range(10)]
    assert D.load_dataset("digits").fingerprint == digits.fingerprint
    a = D.prepare(digits, seed=0)
    b = D.prepare(digits, seed=1)
    assert torch.equal(a.x_test, b.x_test)  # the user's seed never moves the test split
    assert not torch.equal(a.y_val, b.y_val)


def test_missing_folder_without_download_names_folder_and_apt(isolated: Path) -> None:
    missing = isolated / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        D.load_dataset("fashion-mnist", data_dir=missing, download=False)
    msg = str(info.value)
    assert str(missing) in msg and "does not exist" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "POLICYSEARCH_DATA" in msg
    with pytest.raises(DatasetNotFoundError, match="cifar-10-python.tar.gz"):
        D.load_dataset("cifar10", data_dir=missing, download=False)


def test_failed_download_is_fast_and_leaves_no_partial_file(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Port 9 on localhost refuses at once: the offline path without depending on DNS.
    offline = dataclasses.replace(sources.SOURCES["fashion-mnist"], url="http://127.0.0.1:9/")
    monkeypatch.setitem(sources.SOURCES, "fashion-mnist", offline)
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        D.load_dataset("fashion-mnist")
    assert time.perf_counter() - start < 5
    assert "127.0.0.1:9" in str(info.value)
    cache = isolated / "cache" / "policysearch" / "fashion-mnist"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_fashion_idx_files_found_via_env_subfolder(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_fashion(isolated / "root" / "fashion-mnist", gz=False)
    monkeypatch.setenv("POLICYSEARCH_DATA", str(isolated / "root"))
    raw = D.load_dataset("fashion-mnist", download=False)
    assert raw.x_train.shape == (30, 1, 28, 28) and raw.x_test.shape == (10, 1, 28, 28)
    assert raw.y_train.tolist() == [i % 10 for i in range(30)]
    assert raw.classes[0] == "T-shirt/top" and raw.classes[9] == "Ankle boot"
    assert raw.source == str(isolated / "root" / "fashion-mnist")


def test_data_dir_is_searched_before_env(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_fashion(isolated / "a", n_train=20)
    _write_fashion(isolated / "b", n_train=40)
    monkeypatch.setenv("POLICYSEARCH_DATA", str(isolated / "b"))
    assert len(D.load_dataset("fashion-mnist", data_dir=isolated / "a").x_train) == 20
    assert len(D.load_dataset("fashion-mnist").x_train) == 40


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(12))), "magic number"),
        (
            lambda p: p.write_bytes(gzip.compress(_IDX3_HEADER_ONLY)),
            "truncated",
        ),
        (lambda p: p.write_bytes(p.read_bytes()[:40]), "cannot read IDX file"),
    ],
)
def test_corrupt_idx_file_gives_clear_error(isolated: Path, corrupt, match: str) -> None:
    _write_fashion(isolated / "f")
    bad = isolated / "f" / "train-images-idx3-ubyte.gz"
    corrupt(bad)
    with pytest.raises(ConfigError, match=match) as info:
        D.load_dataset("fashion-mnist", data_dir=isolated / "f", download=False)
    assert str(bad) in str(info.value)


def _write_cifar(folder: Path, per_batch: int = 4) -> None:
    folder.mkdir(parents=True)
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        data = np.full((per_batch, 3072), i, dtype=np.uint8)
        data[:, 1024:2048] = 100  # green plane
        batch = {b"data": data, b"labels": [(i + j) % 10 for j in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def test_cifar_folder_loads_channel_first(isolated: Path) -> None:
    _write_cifar(isolated / "d" / "cifar-10-batches-py")
    raw = D.load_dataset("cifar10", data_dir=isolated / "d", download=False)
    assert raw.x_train.shape == (20, 3, 32, 32) and raw.x_test.shape == (4, 3, 32, 32)
    assert int(raw.x_train[0, 1].min()) == 100 == int(raw.x_train[0, 1].max())
    assert int(raw.x_test[0, 0, 0, 0]) == 5
    assert raw.classes[0] == "airplane" and len(raw.classes) == 10


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.getcwd, ())


def test_cifar_unpickler_refuses_code(isolated: Path) -> None:
    folder = isolated / "cifar-10-batches-py"
    _write_cifar(folder)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
    with pytest.raises(ConfigError, match="refusing to load"):
        D.load_dataset("cifar10", data_dir=isolated, download=False)


def test_dataset_status_lists_all_three(isolated: Path) -> None:
    _write_fashion(isolated / "fm", n_train=30, n_test=10)
    rows = D.dataset_status(isolated / "fm")
    assert [r["name"] for r in rows] == list(D.DATASETS)
    by = {r["name"]: r for r in rows}
    assert by["digits"]["available"] and by["digits"]["images"] == "1438+359"
    assert by["fashion-mnist"]["available"] and by["fashion-mnist"]["images"] == "30+10"
    assert by["fashion-mnist"]["location"] == str(isolated / "fm")
    assert not by["cifar10"]["available"] and by["cifar10"]["location"] is None
    assert by["cifar10"]["shape"] == "3x32x32"
    json.dumps(rows)


def test_real_fashion_mnist_labels_if_installed() -> None:
    folder = lookup.find_folder(sources.SOURCES["fashion-mnist"], None)
    if folder is None:
        pytest.skip("Fashion-MNIST files not installed")
    files = sources._fashion_files(folder)
    assert files is not None
    labels = formats.read_idx(files["test_labels"], 1)  # labels only: small and fast
    assert labels.shape == (10000,) and np.bincount(labels).tolist() == [1000] * 10
    assert formats.idx_count(files["train_images"]) == 60000


# ---------------------------------------------------------------------------------- prepare


def test_prepare_digits(digits: D.RawDataset) -> None:
    dd = D.prepare(digits, val_size=0.1, train_size=500, seed=0, test_size=100)
    assert dd.split == {"seed": 0, "train_size": 500, "val_size": 144, "test_size": 100}
    assert dd.input_shape == (1, 8, 8) and dd.num_classes == 10
    assert dd.x_train.dtype == torch.uint8 and dd.y_train.dtype == torch.int64
    assert dd.x_val.device.type == "cpu" and dd.device == torch.device("cpu")
    ref = dd.x_train.float().div(255)
    assert torch.allclose(dd.mean, ref.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(dd.std, ref.std(dim=(0, 2, 3), unbiased=False), atol=1e-5)
    assert np.bincount(dd.y_test.numpy(), minlength=10).min() >= 9  # stratified subsample
    x, y = dd.split_arrays("val")
    assert x is dd.x_val and y is dd.y_val
    with pytest.raises(ConfigError, match="Did you mean 'val'"):
        dd.split_arrays("valid")
    desc = json.loads(json.dumps(dd.describe()))
    assert desc["fingerprint"] == digits.fingerprint and desc["input_shape"] == [1, 8, 8]
    # the same test subsample whatever the seed
    other = D.prepare(digits, seed=5, test_size=100)
    assert torch.equal(other.y_test, dd.y_test) and torch.equal(other.x_test, dd.x_test)


def test_prepare_rejects_bad_arguments(digits: D.RawDataset) -> None:
    with pytest.raises(ConfigError, match="test_size is 1000, expected an int between 1 and the 359 test images"):
        D.prepare(digits, test_size=1000)
    with pytest.raises(ConfigError, match="RawDataset"):
        D.prepare(np.zeros(3))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="seed is -1, expected an int >= 0"):
        D.prepare(digits, seed=-1)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            D.prepare(digits, device="cuda")


def test_std_is_clamped_for_constant_images() -> None:
    levels = np.array([7, 50, 200], dtype=np.uint8)[:, None, None]
    x = np.zeros((20, 3, 4, 4), dtype=np.uint8) + levels
    dd = D.prepare(D.from_tensors(x, np.arange(20) % 2), val_size=2)
    assert torch.allclose(dd.std, torch.full((3,), 1e-3))
    assert torch.allclose(dd.mean, torch.tensor([7, 50, 200]) / 255)
