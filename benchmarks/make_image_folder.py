"""Write a user-style RGB image folder from real images: Fashion-MNIST upscaled to 3x32x32 PNGs.

    python benchmarks/make_image_folder.py --out benchmarks/results/product/fashion-rgb32

``train/<class>/`` holds training images 50,000-51,999 (images no benchmark of this project has
searched on), ``test/<class>/`` official test images 0-1,999; each grey image is resized (bilinear)
and tinted per channel (1.0, 0.8, 0.6). Deterministic; prints one JSON line with the folder's file
count and a sha256 over every file's relative path and bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from policysearch.data import load_dataset
from policysearch.files import atomic_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, default=32)
    args = p.parse_args(argv)
    raw = load_dataset("fashion-mnist", download=False)
    out = Path(args.out)
    parts = {"train": (raw.x_train[50_000:52_000], raw.y_train[50_000:52_000]),
             "test": (raw.x_test[:2_000], raw.y_test[:2_000])}
    tint = np.array([1.0, 0.8, 0.6])
    for part, (x, y) in parts.items():
        for i, (image, label) in enumerate(zip(x.numpy(), y.numpy())):
            grey = Image.fromarray(image[0]).resize((args.size, args.size), Image.Resampling.BILINEAR)
            rgb = np.clip(np.rint(np.asarray(grey, dtype=np.float64)[..., None] * tint), 0, 255).astype(np.uint8)
            folder = out / part / raw.classes[int(label)].replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            save_png(rgb, folder / f"{part}-{i:05d}.png")
    print(json.dumps(fingerprint(out)))
    return 0


def save_png(pixels: np.ndarray, path: Path) -> None:
    """One PNG, written through a temporary file, fsynced and renamed (a cut run leaves no torn image)."""
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


def fingerprint(folder: Path) -> dict[str, object]:
    """The folder, its file count and a sha256 over every file's relative path and bytes."""
    h = hashlib.sha256()
    files = sorted(q for q in folder.rglob("*") if q.is_file())
    for q in files:
        h.update(str(q.relative_to(folder)).encode() + b"\0" + q.read_bytes())
    return {"folder": str(folder), "files": len(files), "sha256": h.hexdigest()}


if __name__ == "__main__":
    sys.exit(main())
