"""LR-schedule search benchmark: the learned schedule (open and closed loop) against the hand-made
ones at the same epoch budget, plus transfer to another data set.

Protocol (defaults are the README's run):
1. Search on a proxy of `--dataset` (`--proxy-train-size` images, the small CNN) with `--controller`
   (PPO by default) for `--budget` child trainings of `--search-epochs` epochs; also on `--transfer-from`
   (digits by default) with the same settings.
2. Train on `--train-size` images of `--dataset` for `--epochs` epochs with constant, step, cosine,
   onecycle, warmup-cosine (peak = the model's default LR), the learned open-loop schedule, the learned
   closed-loop controller, and the open-loop schedule and controller learned on `--transfer-from`;
   `--seeds` seeds each; report test accuracy, macro F1 and ECE as mean ± std and the search cost.

Prints the table to stderr and ONE JSON line to stdout; writes every run under `--out`.

    python benchmarks/schedule_search.py               # the README figures
    python benchmarks/schedule_search.py --quick       # a minutes-long smoke run on digits
    python benchmarks/schedule_search.py --base onecycle --transfer-from '' --baselines onecycle --seeds 10
                                                       # Schedule-v1, per-task learned vs onecycle, paired CIs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--transfer-from", default="digits",
                   help="data set whose learned schedule is transferred ('' to skip)")
    p.add_argument("--model", default="cnn")
    p.add_argument("--controller", default="ppo")
    p.add_argument("--budget", type=int, default=16, help="child trainings per search")
    p.add_argument("--proxy-train-size", type=int, default=4000)
    p.add_argument("--proxy-val-size", type=int, default=1000)
    p.add_argument("--search-epochs", type=float, default=4)
    p.add_argument("--episode-length", type=int, default=4)
    p.add_argument("--base", default="none",
                   help="Schedule-v1's base schedule (onecycle, linear); none: Schedule-v0, absolute LRs "
                        "in [--lr-min, --lr-max] (the README's first run)")
    p.add_argument("--lr-min", type=float, default=1e-3)
    p.add_argument("--lr-max", type=float, default=0.5)
    p.add_argument("--baselines", default="constant,step,cosine,onecycle,warmup-cosine")
    p.add_argument("--epochs", type=float, default=4)
    p.add_argument("--train-size", type=int, default=None, help="cap the final training split (default: all)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1,
                   help="final trainings at once (processes, one torch thread each)")
    p.add_argument("--out", default="runs/bench-schedule")
    p.add_argument("--quick", action="store_true", help="digits both ways, tiny budget: checks the script only")
    args = p.parse_args()
    if args.quick:
        args.dataset, args.budget, args.proxy_train_size, args.proxy_val_size = "digits", 4, 800, 200
        args.search_epochs, args.epochs, args.seeds = 4, 6, 2
    return args


def search(dataset: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One schedule search on a proxy of `dataset`; returns the artefact paths and the search cost."""
    import gymnasium as gym

    from policysearch.data import prepare
    from policysearch.search import Budget, run_search

    data = prepare(dataset, val_size=min(args.proxy_val_size, 300 if dataset == "digits" else args.proxy_val_size),
                   train_size=args.proxy_train_size if dataset != "digits" else None, seed=args.seed)
    steps_per_segment = max(1, round(args.search_epochs * max(1, len(data.y_train) // 128) / args.episode_length))
    space = ({"lr_min": args.lr_min, "lr_max": args.lr_max} if args.base == "none"
             else {"base": args.base})
    env = gym.make("policysearch/Schedule-v0" if args.base == "none" else "policysearch/Schedule-v1", data=data,
                   model=args.model, episode_length=args.episode_length, steps_per_segment=steps_per_segment,
                   **space)
    cpu0 = time.process_time()
    result = run_search(env, args.controller, Budget(child_trainings=args.budget), out, seed=args.seed,
                        artefact_name="schedule.json")
    cpu_minutes = (time.process_time() - cpu0) / 60
    closed_loop = result.summary["files"].get("closed_loop")  # controller.json, written by the env's export
    controller = str(out / closed_loop) if closed_loop else None
    lrs = result.artefact.lrs([i / args.episode_length for i in range(args.episode_length)])
    return {"schedule": str(out / "schedule.json"), "controller": controller, "segment_lrs": lrs,
            "child_trainings": result.summary["child_trainings"],
            "best_val_accuracy": result.summary["best"]["val_metric"],
            "wall_minutes": round(result.summary["wall_seconds"] / 60, 2), "cpu_minutes": round(cpu_minutes, 2),
            "train_flops": result.summary["train_flops"]}


def main() -> int:
    args = parse_args()
    import policysearch  # noqa: F401  (registers the envs)
    from policysearch.analysis.compare import compare, comparison_rows
    from policysearch.analysis.report import format_table
    from policysearch.data import prepare
    from policysearch.train.trainer import TrainConfig

    out = Path(args.out)
    searches = {args.dataset: search(args.dataset, args, out / f"search-{args.dataset}")}
    if args.transfer_from and args.transfer_from != args.dataset:
        searches[args.transfer_from] = search(args.transfer_from, args, out / f"search-{args.transfer_from}")

    labels: list[str] = [b for b in args.baselines.split(",") if b]
    specs: list[str] = list(labels)
    for source, s in searches.items():
        tag = "" if source == args.dataset else f", from {source}"
        specs.append(s["schedule"])
        labels.append(f"learned open-loop{tag}")
        if s["controller"]:
            specs.append(s["controller"])
            labels.append(f"learned closed-loop{tag}")

    full = prepare(args.dataset, val_size=0.1, train_size=args.train_size, seed=args.seed)
    entries = compare(full, TrainConfig(model=args.model), ["none"], specs,
                      list(range(args.seed, args.seed + args.seeds)), args.epochs, workers=args.workers)
    for entry, label in zip(entries, labels):
        entry["schedule"] = label
    print(format_table(comparison_rows(entries)), file=sys.stderr)

    acc = {e["schedule"]: e["test"]["accuracy"]["mean"] for e in entries}
    best_hand = max((b for b in args.baselines.split(",") if b), key=lambda b: acc[b])
    # Paired by seed (same initial weights and batch order): each learned arm minus the best hand-made one.
    from policysearch.analysis.stats import paired_bootstrap

    per_seed = {e["schedule"]: [r["test"]["accuracy"] if not r["diverged"] else 0.0 for r in e["runs"]]
                for e in entries}
    paired = {label: paired_bootstrap(per_seed[label], per_seed[best_hand])
              for label in per_seed if label.startswith("learned") and args.seeds > 1}
    record = {
        "benchmark": "schedule_search", "dataset": args.dataset, "model": args.model, "controller": args.controller,
        "final": {"train": len(full.y_train), "test": len(full.y_test), "epochs": args.epochs, "seeds": args.seeds},
        "searches": searches,
        "results": [{k: e[k] for k in ("schedule", "test", "cost")} for e in entries],
        "best_hand_made": best_hand,
        "base": args.base,
        "learned_minus_best_hand_made": paired,
        "command": "python " + " ".join(sys.argv),
        "goals": {
            "open_loop_matches_or_beats_best_hand_made": acc.get("learned open-loop", float("-inf")) >= acc[best_hand],
            "closed_loop_matches_or_beats_best_hand_made": (acc["learned closed-loop"] >= acc[best_hand]
                                                            if "learned closed-loop" in acc else None),
        },
    }
    from policysearch.files import write_json

    write_json(out / "benchmark.json", record)  # temporary file, fsync, rename
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
