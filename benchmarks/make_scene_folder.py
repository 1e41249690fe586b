"""Write a user-style segmentation mask folder from the offline ``fashion-scenes`` set.

    python benchmarks/make_scene_folder.py --out benchmarks/results/dense/scenes --train 500 --test 1000

``images/train`` and ``masks/train`` hold training scenes 0..train-1, ``images/test`` and
``masks/test`` test scenes 0..test-1, as 64x64 PNGs of the same names (a mask's pixels are class
indices, 0 = background, 1 + a Fashion-MNIST class); ``classes.txt`` names the 11 classes. Runs read
it through ``--data FOLDER`` like any user's folder (``--image-size`` resizes images bilinearly and
masks by nearest neighbour). Deterministic; prints one JSON line with the file count and a sha256
over every file's relative path and bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from make_image_folder import fingerprint, save_png  # benchmarks/ is the script's folder

from policysearch.data import load_dataset
from policysearch.files import atomic_write


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, default=500, help="training scenes (the first N)")
    p.add_argument("--test", type=int, default=1000, help="test scenes (the first N)")
    args = p.parse_args(argv)
    raw = load_dataset("fashion-scenes", download=False)
    out = Path(args.out)
    parts = {"train": (raw.x_train[:args.train], raw.y_train[:args.train]),
             "test": (raw.x_test[:args.test], raw.y_test[:args.test])}
    for part, (x, y) in parts.items():
        for folder in ("images", "masks"):
            (out / folder / part).mkdir(parents=True, exist_ok=True)
        for i, (image, mask) in enumerate(zip(x.numpy(), y.numpy())):
            save_png(image[0], out / "images" / part / f"{part}-{i:05d}.png")
            save_png(mask, out / "masks" / part / f"{part}-{i:05d}.png")
    atomic_write(out / "classes.txt", lambda f: f.write(("\n".join(raw.classes) + "\n").encode()))
    print(json.dumps(fingerprint(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
