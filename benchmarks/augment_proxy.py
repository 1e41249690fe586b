"""Which cheap child ranks augmentation policies the way the full target training does?

A search can afford many more episodes on a proxy child (fewer images, fewer epochs) than on the
target training, but only if the proxy ranks policies as the target does. This script measures it
(issue 11, item 2):

1. **Policies**: the built-in baselines plus random policies drawn uniformly from Augment-v1's
   action box (static: one policy for the whole training), ``--policies`` in all.
2. **Target**: each policy trained once at the target setting (default: Fashion-MNIST, 1,000
   training images, 40 epochs, the small CNN, cosine), scored on the validation split (what a
   search sees) and on the test split (reported only).
3. **Proxies**: each policy trained at every proxy setting ``TRAIN_SIZExEPOCHS`` (same seed,
   same validation split), scored on the validation split.
4. **Agreement**: Spearman's rho and Kendall's tau between each proxy's scores and the target's,
   with the proxy's cost as a fraction of one target training (images seen), and how many of the
   target's top 5 the proxy's top 5 holds.

Prints one JSON line (also written to --out). Run it alone on the machine::

    python benchmarks/augment_proxy.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
import torch
from scipy import stats

from policysearch.analysis.compare import compare
from policysearch.data import prepare
from policysearch.files import write_json
from policysearch.train.trainer import TrainConfig


def _policies(count: int, seed: int, builtins: list[str]) -> list[Any]:
    """The built-ins, then random static policies from Augment-v1's full space (the space the
    headroom benchmark searches)."""
    from policysearch.envs.augment_space import FullSpace
    from policysearch.policies.augment import TRIVIAL_OPS

    space = FullSpace(tuple(TRIVIAL_OPS), 1, "standard")
    rng = np.random.default_rng(seed)
    out: list[Any] = list(builtins)
    for i in range(count - len(builtins)):
        action = rng.uniform(-1.0, 1.0, space.dim).astype(np.float32)
        out.append(space.policy(space.decode(action), name=f"random-{i}"))
    return out


def _scores(entries: list[dict[str, Any]], split: str, metric: str) -> list[float]:
    return [float(e[split][metric]["mean"]) for e in entries]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--train-size", type=int, default=1000, help="target training images")
    p.add_argument("--epochs", type=int, default=40, help="target epochs")
    p.add_argument("--model", default="cnn")
    p.add_argument("--proxies", default="1000x10,500x10,250x20", help="TRAIN_SIZExEPOCHS, comma-separated")
    p.add_argument("--policies", type=int, default=20)
    p.add_argument("--builtins", default="none,cropflip,erasing,trivial,randaugment,autoaugment-cifar10")
    p.add_argument("--metric", default="accuracy")
    p.add_argument("--seed", type=int, default=0, help="training seed of every run (and of the random policies)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/augment_proxy.json")
    args = p.parse_args(argv)
    proxies = []
    for spec in args.proxies.split(","):
        size, epochs = spec.lower().split("x")
        proxies.append((int(size), float(epochs)))
    policies = _policies(args.policies, args.seed, args.builtins.split(","))
    names = [p if isinstance(p, str) else p.name for p in policies]
    config = TrainConfig(model=args.model)

    def run(train_size: int, epochs: float) -> tuple[list[dict[str, Any]], Any, float]:
        data = prepare(args.dataset, train_size=train_size, val_size=1000, seed=0)
        t0 = time.perf_counter()
        entries = compare(data, config, policies, ["cosine"], [args.seed], epochs, progress=False,
                          workers=args.workers)
        return entries, data, time.perf_counter() - t0

    print(f"target: {args.train_size} images x {args.epochs} epochs, {len(policies)} policies", file=sys.stderr)
    target, target_data, target_s = run(args.train_size, args.epochs)
    target_val = _scores(target, "val", args.metric)
    target_images = args.train_size * args.epochs
    report: dict[str, Any] = {
        "benchmark": "augment_proxy", "dataset": args.dataset, "model": args.model, "metric": args.metric,
        "target": {"train_size": args.train_size, "epochs": args.epochs, "wall_s": round(target_s, 1),
                   "val": dict(zip(names, target_val)),
                   "test": dict(zip(names, _scores(target, "test", args.metric)))},
        "policies": {n: (p if isinstance(p, str) else p.describe()) for n, p in zip(names, policies)},
        "proxies": [],
    }
    top_target = set(np.argsort(target_val)[::-1][:5])
    for size, epochs in proxies:
        print(f"proxy: {size} images x {epochs:g} epochs", file=sys.stderr)
        entries, data, seconds = run(size, epochs)
        if not torch.equal(data.y_val.cpu(), target_data.y_val.cpu()):
            print("warning: the proxy's validation split differs from the target's", file=sys.stderr)
        val = _scores(entries, "val", args.metric)
        rho, rho_p = stats.spearmanr(val, target_val)
        tau, tau_p = stats.kendalltau(val, target_val)
        report["proxies"].append({
            "train_size": size, "epochs": epochs, "cost_fraction": round(size * epochs / target_images, 4),
            "wall_s": round(seconds, 1), "spearman": float(rho), "spearman_p": float(rho_p),
            "kendall": float(tau), "kendall_p": float(tau_p),
            "top5_overlap": len(top_target & set(np.argsort(val)[::-1][:5])),
            "val": dict(zip(names, val)),
        })
        write_json(args.out, report)
    write_json(args.out, report)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
