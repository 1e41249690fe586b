"""Dense-task data: segmentation folders (PNG files written here), .npz files for segmentation and
restoration, and the built-in sets composed from Fashion-MNIST (a tiny fake copy written here; the real
one where it is installed). Tiny images, small counts."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from policysearch import data as D
from policysearch.data import derived, lookup, mask_folder
from policysearch.errors import ConfigError, DatasetNotFoundError

NAMES = ("fashion-scenes", "fashion-denoise", "fashion-sr2x")


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache, no $POLICYSEARCH_DATA, no system data: only what a test writes is found."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("POLICYSEARCH_DATA", raising=False)
    monkeypatch.setattr(lookup, "_SYSTEM_ROOT", tmp_path / "system")
    return tmp_path


# ---------------------------------------------------------------------- segmentation folders
def _save(array: np.ndarray, path: Path, palette: bool = False) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array)
    if palette:  # index k shows as a colour whose grey value is not k: reading grey values would fail
        im = Image.fromarray(array, mode="L").convert("P")
        im.putpalette([v for k in range(256) for v in ((k * 40) % 256, 255 - k, 7)])
        im.putdata(array.ravel().tolist())
    im.save(path)


def _seg_folder(root: Path, n: int = 10, size: int = 8, rgb: bool = False, split: bool = False,
                palette: bool = False, classes: list[str] | None = None, seed: int = 0) -> dict[str, tuple]:
    """Write images/ and masks/ (split into train/ and test/ when asked); return {stem: (image, mask)}."""
    rng = np.random.default_rng(seed)
    written = {}
    for i in range(n):
        image = rng.integers(0, 256, (size, size, 3) if rgb else (size, size), dtype=np.uint8)
        mask = rng.integers(0, 3, (size, size), dtype=np.uint8)
        mask[0, 0] = 255  # an ignored pixel in every mask
        part = ("test/" if i % 4 == 0 else "train/") if split else ""
        stem = f"s{i:02d}"
        _save(image, root / "images" / f"{part}{stem}.png")
        _save(mask, root / "masks" / f"{part}{stem}.png", palette=palette)
        written[f"{part}{stem}"] = (image, mask)
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return written


def _pairs_of(x: torch.Tensor, y: torch.Tensor) -> set[tuple[bytes, bytes]]:
    return {(a.numpy().tobytes(), b.numpy().tobytes()) for a, b in zip(x, y)}


def _expected(written: dict[str, tuple], prefix: str = "", rgb: bool = False) -> set[tuple[bytes, bytes]]:
    return {((im.transpose(2, 0, 1) if rgb else im[None]).tobytes(), m.tobytes())
            for stem, (im, m) in written.items() if stem.startswith(prefix)}


def test_grey_mask_folder_is_segmentation_by_layout_with_a_carved_random_test_split(isolated: Path) -> None:
    written = _seg_folder(isolated / "seg", n=10)
    raw = D.load_data(isolated / "seg")
    assert raw.task == "segmentation" and raw.classes == ["0", "1", "2"] and raw.label_map is None
    assert raw.x_train.shape == (8, 1, 8, 8) and raw.y_train.shape == (8, 8, 8) and raw.y_train.dtype == torch.uint8
    assert len(raw.x_test) == 2  # test_fraction 0.2 of 10, as the class-folder loader carves
    # every image kept with its own mask, 255 (ignored) kept as is
    assert _pairs_of(raw.x_train, raw.y_train) | _pairs_of(raw.x_test, raw.y_test) == _expected(written)
    assert raw.source.endswith("seg")
    other = D.load_data(isolated / "seg", seed=3)
    assert not torch.equal(other.x_test, raw.x_test) and other.fingerprint != raw.fingerprint
    assert D.load_data(isolated / "seg").fingerprint == raw.fingerprint


def test_rgb_split_folder_with_palette_masks_and_classes_txt(isolated: Path) -> None:
    names = ["road", "car", "tree", "sky"]
    written = _seg_folder(isolated / "city", n=12, rgb=True, split=True, palette=True, classes=names)
    raw = D.load_data(isolated / "city", task="segmentation")
    assert raw.classes == names and raw.x_train.shape[1:] == (3, 8, 8)
    assert len(raw.x_test) == 3 and len(raw.x_train) == 9  # test/ kept as the test split
    assert _pairs_of(raw.x_test, raw.y_test) == _expected(written, "test/", rgb=True)
    assert _pairs_of(raw.x_train, raw.y_train) == _expected(written, "train/", rgb=True)


def test_a_mask_folder_is_decoded_once_then_read_from_the_cache(isolated: Path, monkeypatch) -> None:
    _seg_folder(isolated / "seg", n=6)
    raw = D.load_data(isolated / "seg")
    monkeypatch.setattr(mask_folder, "_decode", lambda *a: pytest.fail("decoded again despite the cache"))
    again = D.load_data(isolated / "seg")
    assert again.fingerprint == raw.fingerprint and again.classes == raw.classes
    (isolated / "seg" / "classes.txt").write_text("a\nb\nc\n")  # a new key: decoded again
    with pytest.raises(pytest.fail.Exception, match="decoded again"):
        D.load_data(isolated / "seg")


def test_image_size_resizes_images_bilinearly_and_masks_nearest(isolated: Path) -> None:
    root = isolated / "sizes"
    checker = np.where((np.indices((8, 8)).sum(0) % 2) == 0, 0, 2).astype(np.uint8)
    for i, side in enumerate((8, 10)):
        _save(np.full((side, side), 100 + i, np.uint8), root / "images" / f"{i}.png")
        _save(np.resize(checker, (side, side)), root / "masks" / f"{i}.png")
    with pytest.raises(ConfigError, match="differ in size .*--image-size"):
        D.load_data(root)
    raw = D.load_data(root, "16x12", test_fraction=0.5)
    masks = torch.cat([raw.y_train, raw.y_test])
    assert raw.x_train.shape[2:] == (16, 12) and masks.shape[1:] == (16, 12)
    assert set(masks.unique().tolist()) == {0, 2}  # nearest: no invented class 1 between 0 and 2
    assert raw.classes == ["0", "1", "2"]


def _break(root: Path, how: str) -> None:
    from PIL import Image

    if how == "no mask":
        (root / "masks" / "s03.png").unlink()
    elif how == "no image":
        _save(np.zeros((8, 8), np.uint8), root / "masks" / "zz.png")
    elif how == "size":
        _save(np.zeros((8, 6), np.uint8), root / "masks" / "s02.png")
    elif how == "rgb mask":
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "masks" / "s01.png")
    elif how == "jpeg mask":
        (root / "masks" / "s01.png").unlink()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "masks" / "s01.jpg")
    elif how == "above classes":
        (root / "classes.txt").write_text("bg\nfg\n")  # masks hold 0..2
    elif how == "half split":
        _save(np.zeros((8, 8), np.uint8), root / "images" / "train" / "a.png")


@pytest.mark.parametrize(("how", "culprit"), [
    ("no mask", r"image \S*s03.png has no mask of the same name"),
    ("no image", r"mask \S*zz.png has no image of the same name"),
    ("size", r"image \S*s02.png is 8x8 but its mask \S*s02.png is 8x6"),
    ("rgb mask", r"mask \S*s01.png is a colour \(RGB\) image"),
    ("jpeg mask", r"mask \S*s01.jpg is a .jpg file: lossy"),
    ("above classes", r"mask \S* holds the value 2, but \S*classes.txt names 2 classes"),
    ("half split", r"images/train exists but \S*masks/train does not"),
])
def test_a_broken_mask_folder_is_one_clear_line(isolated: Path, how: str, culprit: str) -> None:
    root = isolated / "seg"
    _seg_folder(root, n=6)
    _break(root, how)
    with pytest.raises(ConfigError, match=culprit) as info:
        D.load_data(root)
    assert "\n" not in str(info.value)


def test_a_task_the_layout_contradicts_is_refused(isolated: Path) -> None:
    _seg_folder(isolated / "seg", n=4)
    with pytest.raises(ConfigError, match="segmentation folder by its layout, but task 'classification'"):
        D.load_data(isolated / "seg", task="classification")
    _save(np.zeros((8, 8), np.uint8), isolated / "cls" / "cat" / "a.png")
    _save(np.zeros((8, 8), np.uint8), isolated / "cls" / "dog" / "b.png")
    with pytest.raises(ConfigError, match="classification folder by its layout, but task 'segmentation'.*masks/"):
        D.load_data(isolated / "cls", task="segmentation")
    with pytest.raises(ConfigError, match="unknown task 'segmentaton'.*Did you mean 'segmentation'"):
        D.load_data(isolated / "seg", task="segmentaton")


# ---------------------------------------------------------------------- .npz
def test_npz_segmentation_masks(isolated: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.random((20, 6, 6, 3)).astype(np.float32)  # NHWC floats
    y = rng.integers(0, 4, (20, 6, 6)).astype(np.int64)
    y[:, 0, 0] = 255
    np.savez(isolated / "seg.npz", x_train=x[:15], y_train=y[:15], x_test=x[15:], y_test=y[15:, None],
             class_names=np.array(["a", "b", "c", "d"]))
    raw = D.load_data(isolated / "seg.npz", task="segmentation")
    assert raw.task == "segmentation" and raw.classes == ["a", "b", "c", "d"]
    assert raw.x_train.shape == (15, 3, 6, 6) and raw.y_test.shape == (5, 6, 6)  # (N, 1, H, W) masks squeezed
    assert torch.equal(raw.y_train, torch.from_numpy(y[:15].astype(np.uint8)))
    with pytest.raises(ConfigError, match="y_train must be 1-D class indices"):
        D.load_data(isolated / "seg.npz")  # the default task is classification: masks are refused, not guessed
    np.savez(isolated / "few.npz", x_train=x, y_train=y, class_names=np.array(["a", "b"]))
    with pytest.raises(ConfigError, match="class index 3 but 2 class names"):
        D.load_data(isolated / "few.npz", task="segmentation")
    np.savez(isolated / "minus.npz", x_train=x, y_train=np.where(y == 255, -1, y))
    with pytest.raises(ConfigError, match="255, not -1"):
        D.load_data(isolated / "minus.npz", task="segmentation")
    np.savez(isolated / "carve.npz", x_train=x, y_train=y)
    carved = D.load_data(isolated / "carve.npz", task="segmentation")
    assert (len(carved.x_train), len(carved.x_test)) == (16, 4) and carved.classes == ["0", "1", "2", "3"]


def test_npz_restoration_targets_are_images_read_like_the_inputs(isolated: Path) -> None:
    rng = np.random.default_rng(2)
    clean = rng.integers(0, 256, (12, 6, 6, 1), dtype=np.uint8)  # NHWC uint8
    noisy = clean.transpose(0, 3, 1, 2).astype(np.float32) / 255  # NCHW floats
    np.savez(isolated / "restore.npz", x_train=noisy, y_train=clean.astype(np.float32) / 255)
    raw = D.load_data(isolated / "restore.npz", task="restoration")
    assert raw.task == "restoration" and raw.classes == [] and raw.y_train.dtype == torch.uint8
    assert raw.y_train.shape == raw.x_train.shape == (10, 1, 6, 6) and len(raw.y_test) == 2
    assert torch.equal(raw.y_train, raw.x_train)  # the same pixels, given in two layouts and dtypes
    np.savez(isolated / "wrong.npz", x_train=noisy, y_train=clean[:, :4, :4])
    with pytest.raises(ConfigError, match="expected the inputs'"):
        D.load_data(isolated / "wrong.npz", task="restoration")
    np.savez(isolated / "named.npz", x_train=noisy, y_train=clean, class_names=np.array(["a"]))
    with pytest.raises(ConfigError, match="restoration targets are images, not classes"):
        D.load_data(isolated / "named.npz", task="restoration")


# ---------------------------------------------------------------------- built-in sets, from a fake Fashion-MNIST
def _write_idx(path: Path, array: np.ndarray) -> None:
    array = np.asarray(array, dtype=np.uint8)
    path.write_bytes(bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


@pytest.fixture
def fake_fashion(isolated: Path) -> dict[str, np.ndarray]:
    """Fashion-MNIST's four files: 40 training images of classes 0-4 and 20 test images of classes 5-9, so any
    test scene holding a training garment (or the reverse) shows in its mask."""
    rng = np.random.default_rng(3)
    # mid-grey garments (100..155): the added noise is rarely clipped, so its sigma can be measured
    arrays = {"train": rng.integers(100, 156, (40, 28, 28)).astype(np.uint8),
              "test": rng.integers(100, 156, (20, 28, 28)).astype(np.uint8)}
    for a in arrays.values():
        a[:, :4] = 0  # a black band: garments have background around them
    folder = isolated / "fm"
    folder.mkdir()
    _write_idx(folder / "train-images-idx3-ubyte", arrays["train"])
    _write_idx(folder / "train-labels-idx1-ubyte", np.arange(40) % 5)
    _write_idx(folder / "t10k-images-idx3-ubyte", arrays["test"])
    _write_idx(folder / "t10k-labels-idx1-ubyte", 5 + np.arange(20) % 5)
    return {**arrays, "folder": folder}


def test_fashion_scenes_are_composed_from_their_own_split_only(fake_fashion) -> None:
    raw = D.load_dataset("fashion-scenes", data_dir=fake_fashion["folder"], download=False)
    assert raw.task == "segmentation" and raw.classes[0] == "background" and raw.classes[1:] == list(
        D.load_dataset("fashion-mnist", data_dir=fake_fashion["folder"], download=False).classes)
    assert raw.x_train.shape == (5000, 1, 64, 64) and raw.y_train.shape == (5000, 64, 64)
    assert raw.x_test.shape == (1000, 1, 64, 64) and raw.y_test.dtype == raw.x_test.dtype == torch.uint8
    assert set(raw.y_train.unique().tolist()) == {0, 1, 2, 3, 4, 5}  # background + training classes 0-4
    assert set(raw.y_test.unique().tolist()) == {0, 6, 7, 8, 9, 10}  # background + test classes 5-9
    for x, y in ((raw.x_train, raw.y_train), (raw.x_test, raw.y_test)):
        # a pixel is garment exactly where the image is at least the threshold (fainter edges stay background)
        assert torch.equal(y > 0, x[:, 0] >= derived.FOREGROUND)
        garments = (y > 0).flatten(1).sum(1)
        assert int(garments.min()) > 0 and 0.05 < float((y > 0).float().mean()) < 0.5
    again = D.load_dataset("fashion-scenes", data_dir=fake_fashion["folder"], download=False)
    assert again.fingerprint == raw.fingerprint and torch.equal(again.y_test, raw.y_test)


def test_garments_are_scaled_bilinearly_in_their_window() -> None:
    image = np.zeros((1, 28, 28), np.uint8)
    image[0, 2:26, 2:26] = np.arange(24, dtype=np.uint8)[None, :] * 10 + 10
    same = derived._scaled(image, np.array([28]), 35)[0]
    assert np.array_equal(same[:28, :28], image[0]) and not same[28:].any()  # scale 1: the image itself
    image[0, 2:26, 2:26] = 200
    for size in (21, 35):  # the 24-pixel garment becomes 18 or 30 pixels wide (a pixel of soft edge allowed)
        scaled = derived._scaled(image, np.array([size]), 35)[0]
        cols = np.flatnonzero((scaled >= derived.FOREGROUND).any(0))
        assert abs(len(cols) - 24 * size / 28) <= 1, (size, len(cols))


def test_scene_masks_follow_the_visible_garment() -> None:
    # Two flat garments, 250 (class 0) and 120 (class 1): where they overlap, the image shows the one on top,
    # and its mask must name that one.
    images = np.zeros((2, 28, 28), np.uint8)
    images[0, 4:24, 4:24], images[1, 4:24, 4:24] = 250, 120
    x, y = derived.compose_scenes(images, np.array([0, 1]), 300, np.random.default_rng(0))
    x = x[:, 0]
    both = np.array([{1, 2} <= set(np.unique(m).tolist()) for m in y])
    assert both.sum() > 30
    assert (y[x == 250] == 1).all() and (x[y == 2] <= 120).all()
    flat120 = np.ones_like(x, dtype=bool)  # pixels inside a 3x3 block of 120: a garment's interior, not an edge
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            flat120 &= np.roll(x, (dy, dx), axis=(1, 2)) == 120
    assert flat120[both].sum() > 1000 and (y[flat120] == 2).all()
    # and the 120 garment does lie on top of the 250 one somewhere: 250 pixels on both sides of a 120 run
    left, right = np.roll(x, 3, axis=2) == 250, np.roll(x, -3, axis=2) == 250
    assert ((x == 120) & left & right & (y == 2)).any()


def test_fashion_denoise_and_sr2x_pair_degraded_inputs_with_the_clean_images(fake_fashion) -> None:
    folder = fake_fashion["folder"]
    noisy = D.load_dataset("fashion-denoise", data_dir=folder, download=False)
    sr = D.load_dataset("fashion-sr2x", data_dir=folder, download=False)
    for raw in (noisy, sr):
        assert raw.task == "restoration" and raw.classes == []
        assert raw.x_train.shape == raw.y_train.shape == (40, 1, 28, 28) and raw.x_test.dtype == torch.uint8
        assert np.array_equal(raw.y_train[:, 0].numpy(), fake_fashion["train"])  # each split from its own images
        assert np.array_equal(raw.y_test[:, 0].numpy(), fake_fashion["test"])
    diff = (noisy.x_train.float() - noisy.y_train.float())[:, :, 8:] / 255  # mid-grey rows: little clipping
    assert 0.18 < float(diff.std()) < 0.21 and abs(float(diff.mean())) < 0.01
    assert D.load_dataset("fashion-denoise", data_dir=folder, download=False).fingerprint == noisy.fingerprint
    clean = sr.y_test.double()
    low = torch.round(F.avg_pool2d(clean, 2))
    reference = torch.round(F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False))
    assert torch.equal(sr.x_test.double(), reference)


def test_built_in_sets_are_listed_with_their_task_and_need_fashion_mnist(isolated: Path, fake_fashion) -> None:
    rows = {r["name"]: r for r in D.dataset_status(fake_fashion["folder"])}
    assert all(rows[n]["available"] for n in NAMES) and rows["fashion-scenes"]["task"] == "segmentation"
    assert rows["fashion-sr2x"]["task"] == "restoration" and rows["fashion-scenes"]["images"] == "5000+1000"
    missing = {r["name"]: r for r in D.dataset_status(isolated / "nowhere")}["fashion-denoise"]
    assert not missing["available"] and "built from fashion-mnist" in missing["note"]
    with pytest.raises(DatasetNotFoundError, match="'fashion-scenes' is built from 'fashion-mnist'"):
        D.load_dataset("fashion-scenes", data_dir=isolated / "nowhere", download=False)


def test_prepare_splits_a_dense_set_plainly(fake_fashion) -> None:
    dd = D.prepare("fashion-scenes", train_size=500, data_dir=fake_fashion["folder"], download=False, test_size=100)
    assert dd.task == "segmentation" and dd.split == {"seed": 0, "train_size": 500, "val_size": 500, "test_size": 100}
    assert dd.y_val.shape == (500, 64, 64) and dd.num_classes == 11 and dd.describe()["task"] == "segmentation"
    other = D.prepare("fashion-scenes", train_size=500, data_dir=fake_fashion["folder"], download=False, seed=1)
    assert not torch.equal(other.x_val, dd.x_val)  # a seeded split
    for name in ("fashion-denoise", "fashion-sr2x"):
        dense = D.prepare(name, val_size=8, data_dir=fake_fashion["folder"], download=False)
        assert dense.task == "restoration" and dense.output_size == 1 and dense.y_val.shape == (8, 1, 28, 28)


# ---------------------------------------------------------------------- the real Fashion-MNIST, where installed
@pytest.fixture(scope="module")
def real_fashion() -> Path:
    from policysearch.data.sources import SOURCES

    folder = lookup.find_folder(SOURCES["fashion-mnist"], None)
    if folder is None:
        pytest.skip("Fashion-MNIST files not installed")
    return folder


# The data sets' versions: a change to how they are built must change these, on purpose.
FINGERPRINTS = {"fashion-scenes": "0a2ca9c470ff", "fashion-denoise": "b02b78956c13", "fashion-sr2x": "db86c44f71a0"}


@pytest.mark.parametrize("name", NAMES)
def test_the_real_sets_have_their_shapes_ranges_and_versions(real_fashion: Path, name: str) -> None:
    raw = D.load_dataset(name, data_dir=real_fashion, download=False)
    source = lookup.get_source(name)
    assert (len(raw.x_train), len(raw.x_test)) == source.images and tuple(raw.x_train.shape[1:]) == source.shape
    assert raw.task == source.task and raw.classes == list(source.classes)
    assert raw.fingerprint.startswith(FINGERPRINTS[name]), raw.fingerprint
    if name == "fashion-scenes":
        assert int(raw.y_train.max()) == 10 and int(raw.x_train.max()) == 255
    else:
        assert int(raw.y_train.max()) == 255 and int(raw.x_train.min()) == 0
    dd = D.prepare(raw, train_size=500, test_size=200)  # by name: test_prepare_splits_a_dense_set_plainly
    assert dd.task == raw.task and dd.split["train_size"] == 500 and len(dd.y_test) == 200
