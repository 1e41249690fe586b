"""Inner-loop throughput: policysearch's on-device batched augmentation vs the usual torchvision pipeline.

Both sides train the same architecture (fresh weights, seed 0) with the same batch size, optimizer
(SGD, Nesterov, lr 0.05, momentum 0.9, weight decay 5e-4 on weights only) and device:

* **policysearch**: a `Trainer` with the built-in ``trivial`` policy (TrivialAugment-wide + pad-crop +
  flip, drawn per sample on the training device) and ``profile=True``, so the augmentation's share of
  step time is measured directly.
* **torchvision**: a `Dataset` over the same uint8 training images that converts each image to PIL and
  applies ``TrivialAugmentWide``, ``RandomCrop(size, padding=4)``, ``RandomHorizontalFlip``,
  ``ToTensor`` and ``Normalize`` per sample, fed by a `DataLoader` with worker processes, and a plain
  training loop. The same loop without augmentation (``ToTensor`` + ``Normalize`` only) gives the
  model-step-bound rate, from which the baseline's augmentation share is estimated.

Each side runs warm-up steps first (worker start-up, allocator, cuDNN autotuning), then the timed steps.
Prints one JSON line on stdout; progress and notes go to stderr::

    python benchmarks/inner_loop.py --steps 60
    # larger RGB images: Fashion-MNIST upscaled (bilinear) to 64x64 with three tinted channels
    python benchmarks/inner_loop.py --shape 3x64x64 --train-size 4000 --steps 30 --batch-size 64
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from policysearch.data import DeviceData, RawDataset, load_dataset, prepare
from policysearch.data.raw import make_raw
from policysearch.device import resolve_device
from policysearch.errors import DatasetNotFoundError, MissingExtraError, PolicySearchError
from policysearch.models import build_model
from policysearch.policies.augment import builtin_policy
from policysearch.train.trainer import TrainConfig, Trainer

DEFAULT_DATASET = "fashion-mnist"
FALLBACK_DATASET = "digits"
LR, MOMENTUM, WEIGHT_DECAY, SEED = 0.05, 0.9, 5e-4, 0


def note(message: str) -> None:
    """Progress and notes go to stderr so that stdout holds only the JSON line."""
    print(f"[inner_loop] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--dataset", default=None,
                   help=f"digits | fashion-mnist | cifar10 "
                        f"(default: {DEFAULT_DATASET}, or {FALLBACK_DATASET} if absent)")
    p.add_argument("--data-dir", default=None, help="folder with the data set's files")
    p.add_argument("--model", default="cnn", help="mlp | cnn | resnet | vit (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=60, help="timed optimizer steps per pipeline (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before timing (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2,
                   help="DataLoader worker processes for the baseline (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads in the main process (default: torch's)")
    p.add_argument("--shape", default=None, metavar="CxHxW",
                   help="resize the images to HxW (bilinear) and give them C channels (1 or 3: the grey image "
                        "tinted per channel), e.g. 3x64x64 (default: the data set's own)")
    p.add_argument("--train-size", type=int, default=None, help="cap the training images (default: all)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1 or args.workers < 0:
        p.error(f"--steps {args.steps} --warmup {args.warmup} --batch-size {args.batch_size} --workers {args.workers}: "
                "expected steps >= 1, warmup >= 0, batch size >= 1, workers >= 0")
    return args


def load_data(args: argparse.Namespace, device: torch.device) -> DeviceData:
    """The requested data set; the default falls back to digits (with a note) when it is not installed."""
    name = args.dataset or DEFAULT_DATASET
    # A small validation split: this benchmark never evaluates, it only needs training images.
    kwargs: dict[str, Any] = dict(val_size=0.02, seed=SEED, device=device, train_size=args.train_size)
    try:
        raw = load_dataset(name, data_dir=args.data_dir, download=False)
    except DatasetNotFoundError:
        if args.dataset is not None:  # asked for by name: say so rather than measure something else
            raise
        note(f"{DEFAULT_DATASET} is not available locally (downloads are off here); falling back to "
             f"{FALLBACK_DATASET}: 8x8 images, so rates are not comparable with 28x28 runs")
        raw = load_dataset(FALLBACK_DATASET)
    if args.shape is not None:
        raw = reshaped(raw, args.shape, args.train_size)
    return prepare(raw, **kwargs)


def reshaped(raw: RawDataset, shape: str, cap: int | None) -> RawDataset:
    """`raw` at C x H x W: bilinear resize, the grey image tinted per channel (a fixed colour per class
    would be a shortcut; a fixed tint per channel is not). Only the first `cap` (x 1.1) training images."""
    try:
        c, h, w = (int(v) for v in shape.lower().split("x"))
    except ValueError:
        raise PolicySearchError(f"--shape {shape!r}: expected CxHxW, e.g. 3x64x64") from None
    if c not in (1, 3) or min(h, w) < 4:
        raise PolicySearchError(f"--shape {shape!r}: expected 1 or 3 channels and sizes of at least 4")
    keep = len(raw.x_train) if cap is None else min(len(raw.x_train), int(cap * 1.1) + 1)

    def convert(x: torch.Tensor) -> torch.Tensor:
        out = []
        for start in range(0, len(x), 2048):  # in chunks: the float copy of a whole set would not fit
            grey = x[start:start + 2048, :1].float()
            big = F.interpolate(grey, size=(h, w), mode="bilinear", align_corners=False)
            tint = torch.tensor([1.0, 0.8, 0.6][:c]).view(1, c, 1, 1)
            out.append((big * tint).round().clamp(0, 255).to(torch.uint8))
        return torch.cat(out)

    return make_raw(f"{raw.name}-{c}x{h}x{w}", convert(raw.x_train[:keep]), raw.y_train[:keep].clone(),
                    convert(raw.x_test[:1000]), raw.y_test[:1000].clone(), raw.classes, f"{raw.source} resized")


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """The trainer's optimizer, rebuilt for the baseline: no weight decay on norms and biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=LR, momentum=MOMENTUM, nesterov=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------- policysearch
def bench_policysearch(data: DeviceData, args: argparse.Namespace) -> dict[str, float]:
    """Images/s and augmentation share of `Trainer.train_segment` with the ``trivial`` policy."""
    config = TrainConfig(model=args.model, batch_size=args.batch_size, optimizer="sgd", lr=LR, momentum=MOMENTUM,
                         weight_decay=WEIGHT_DECAY, seed=SEED, device=str(data.device))
    trainer = Trainer(data, config, total_steps=args.warmup + args.steps, profile=True)
    policy = builtin_policy("trivial")
    if args.warmup:
        trainer.train_segment(args.warmup, policy)
    stats = trainer.train_segment(args.steps, policy)
    if stats.diverged:
        note(f"policysearch run diverged ({trainer.diverged}); throughput is still reported")
    return {"images_per_s": stats.images / stats.seconds, "augment_share": stats.augment_seconds / stats.seconds}


# ---------------------------------------------------------------------- torchvision baseline
def import_torchvision() -> Any:
    try:
        import torchvision  # noqa: F401 - only the baseline needs it
        from torchvision import transforms
    except ImportError as exc:
        raise MissingExtraError("torchvision", "bench", "the inner-loop benchmark's baseline") from exc
    return transforms


class UInt8ImageDataset(torch.utils.data.Dataset):
    """uint8 (N, C, H, W) images served as PIL images through a transform, as torchvision's data sets do.

    Args:
        images: uint8 array (N, C, H, W) with C = 1 or 3.
        labels: int64 array (N,).
        transform: PIL image -> normalised float tensor.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable[[Any], torch.Tensor]) -> None:
        from PIL import Image

        self._image = Image
        # HWC (or HW for grey) once up front, so __getitem__ pays only for what users' code pays for.
        self.images = images[:, 0] if images.shape[1] == 1 else np.ascontiguousarray(images.transpose(0, 2, 3, 1))
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self._image.fromarray(self.images[index])
        return self.transform(image), int(self.labels[index])


def baseline_transform(data: DeviceData, augment: bool) -> Callable[[Any], torch.Tensor]:
    transforms = import_torchvision()
    _, h, w = data.input_shape
    steps: list[Any] = []
    if augment:
        steps += [transforms.TrivialAugmentWide(), transforms.RandomCrop((h, w), padding=4),
                  transforms.RandomHorizontalFlip()]
    steps += [transforms.ToTensor(), transforms.Normalize(data.mean.cpu().tolist(), data.std.cpu().tolist())]
    return transforms.Compose(steps)


def bench_torchvision(data: DeviceData, args: argparse.Namespace, augment: bool) -> float:
    """Images/s of a plain loop over a DataLoader with per-sample PIL transforms."""
    device = data.device
    cuda = device.type == "cuda"
    dataset = UInt8ImageDataset(data.x_train.cpu().numpy(), data.y_train.cpu().numpy(),
                                baseline_transform(data, augment))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.workers,
        persistent_workers=args.workers > 0, pin_memory=cuda, generator=torch.Generator().manual_seed(SEED),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = build_model(args.model, data.input_shape, data.num_classes).to(device)
    # Same model-side settings as the Trainer (channels_last + bf16 autocast on CUDA), so the two
    # sides differ only in how batches are produced and augmented.
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else nullcontext
    optimizer = make_optimizer(model)
    model.train()

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:  # epochs back to back; persistent workers survive between them
            yield from loader

    stream = batches()

    def run(steps: int) -> None:
        for _ in range(steps):
            x, y = next(stream)
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast():
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    run(args.warmup)
    sync(device)
    start = time.perf_counter()
    run(args.steps)
    sync(device)
    seconds = time.perf_counter() - start
    # Close the generator so the loader's worker processes stop before the next measurement.
    stream.close()
    gc.collect()
    return args.steps * args.batch_size / seconds


# ---------------------------------------------------------------------- main
def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    import_torchvision()  # fail before any timing when the baseline cannot run
    data = load_data(args, device)
    if len(data.y_train) < args.batch_size:
        raise PolicySearchError(f"--batch-size {args.batch_size} exceeds the {len(data.y_train)} training images")
    note(f"{data!r}, model {args.model}, batch {args.batch_size}, {args.warmup} warm-up + {args.steps} timed steps, "
         f"{args.workers} workers, {torch.get_num_threads()} torch threads")

    note("policysearch: Trainer + trivial policy ...")
    ours = bench_policysearch(data, args)
    note(f"  {ours['images_per_s']:.0f} images/s, augmentation {100 * ours['augment_share']:.1f}% of step time")
    note("torchvision: DataLoader + TrivialAugmentWide + crop/flip ...")
    tv = bench_torchvision(data, args, augment=True)
    note(f"  {tv:.0f} images/s")
    note("torchvision without augmentation ...")
    tv_noaug = bench_torchvision(data, args, augment=False)
    note(f"  {tv_noaug:.0f} images/s")

    speedup = ours["images_per_s"] / tv
    on_cpu = device.type == "cpu"
    return {
        "benchmark": "inner_loop",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dataset": data.name,
        "input_shape": list(data.input_shape),
        "train_images": len(data.y_train),
        "model": args.model,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "workers": args.workers,
        "threads": torch.get_num_threads(),
        "policysearch_images_per_s": round(ours["images_per_s"], 1),
        "policysearch_augment_share": round(ours["augment_share"], 4),
        "torchvision_images_per_s": round(tv, 1),
        "torchvision_noaug_images_per_s": round(tv_noaug, 1),
        # Time per image with augmentation minus time without, over time with: the baseline's
        # augmentation (and its data-loading overhead) share, estimated from the two rates.
        "torchvision_augment_share_est": round(max(0.0, 1.0 - tv / tv_noaug), 4),
        "speedup": round(speedup, 3),
        "targets": {
            "cpu_parity": speedup >= 1.0 if on_cpu else None,
            "cpu_augment_share_below_10pct": ours["augment_share"] < 0.10 if on_cpu else None,
            "gpu_5x": None if on_cpu else speedup >= 5.0,
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run_benchmark(args)
    except PolicySearchError as exc:
        print(f"inner_loop: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
