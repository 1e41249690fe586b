"""Augmentation search benchmark: RL controller vs random search at equal budget, then the found
policies against the hand-made ones on the full training set.

Protocol (defaults are the README's run):
1. Search on a proxy: `--proxy-train-size` training images, the small CNN, schedule mode,
   `--budget` child trainings of `--search-epochs` epochs each, once per controller (`ppo`, `random`),
   same seed, same proxy split, same budget.
2. Train on the full training split with each found policy and with none / cropflip / trivial /
   randaugment, `--seeds` seeds, `--epochs` epochs; report test accuracy, macro F1 and ECE as
   mean ± std, plus each search's cost (child trainings, CPU-minutes, training FLOPs).

Prints the table to stderr and ONE JSON line to stdout. Writes every run under `--out`.

    python benchmarks/augment_search.py                       # the README figures (about an hour on 2 cores)
    python benchmarks/augment_search.py --quick               # a minutes-long smoke run on digits
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--model", default="cnn")
    p.add_argument("--controllers", default="ppo,random")
    p.add_argument("--budget", type=int, default=24, help="child trainings per controller")
    p.add_argument("--proxy-train-size", type=int, default=4000)
    p.add_argument("--proxy-val-size", type=int, default=1000)
    p.add_argument("--search-epochs", type=float, default=4, help="epochs of one child training on the proxy")
    p.add_argument("--episode-length", type=int, default=4)
    p.add_argument("--child-seed", type=int, default=None, help="fix the child's seed in every episode")
    p.add_argument("--baselines", default="none,cropflip,trivial,randaugment")
    p.add_argument("--epochs", type=float, default=3, help="epochs of each final training")
    p.add_argument("--train-size", type=int, default=None, help="cap the final training split (default: all)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench-augment")
    p.add_argument("--reuse-searches", action="store_true",
                   help="take the searches already in --out (policy.json + summary.json) instead of searching again")
    p.add_argument("--quick", action="store_true", help="digits, tiny budget: checks the script, not the claim")
    args = p.parse_args()
    if args.quick:
        args.dataset, args.budget, args.proxy_train_size, args.proxy_val_size = "digits", 6, 800, 200
        args.search_epochs, args.epochs, args.seeds = 4, 8, 2
    return args


def main() -> int:
    args = parse_args()
    import gymnasium as gym

    import policysearch  # noqa: F401  (registers the envs)
    from policysearch.analysis.compare import compare, comparison_rows
    from policysearch.analysis.report import format_table
    from policysearch.data import load_dataset, prepare
    from policysearch.search import Budget, read_episodes, run_search
    from policysearch.train.trainer import TrainConfig

    out = Path(args.out)
    raw = load_dataset(args.dataset)
    proxy = prepare(raw, val_size=args.proxy_val_size, train_size=args.proxy_train_size, seed=args.seed)
    steps_per_epoch = max(1, len(proxy.y_train) // 128)
    steps_per_segment = max(1, round(args.search_epochs * steps_per_epoch / args.episode_length))

    searches: dict[str, dict] = {}
    for name in [c for c in args.controllers.split(",") if c]:
        folder = out / f"search-{name}"
        cpu_minutes: float | None = None
        if args.reuse_searches and (folder / "summary.json").is_file():
            summary = json.loads((folder / "summary.json").read_text())
            episodes = read_episodes(folder / "episodes.jsonl")
        else:
            env = gym.make("policysearch/Augment-v0", data=proxy, model=args.model,
                           episode_length=args.episode_length, steps_per_segment=steps_per_segment,
                           child_seed=args.child_seed)
            cpu0 = time.process_time()
            result = run_search(env, name, Budget(child_trainings=args.budget), folder, seed=args.seed)
            cpu_minutes = round((time.process_time() - cpu0) / 60, 2)
            summary, episodes = result.summary, result.episodes
        searches[name] = {
            "policy": str(folder / "policy.json"),
            "child_trainings": summary["child_trainings"],
            "best_val_accuracy": summary["best"]["val_metric"],
            "mean_val_accuracy_last_quarter": _tail_mean([e["metric"] for e in episodes]),
            "wall_minutes": round(summary["wall_seconds"] / 60, 2),
            "child_training_minutes": round(summary["child_training_seconds"] / 60, 2),
            "cpu_minutes": cpu_minutes,
            "train_flops": summary["train_flops"],
        }
        print(f"{name}: best proxy val accuracy {searches[name]['best_val_accuracy']:.4f} "
              f"after {searches[name]['child_trainings']} child trainings", file=sys.stderr)

    full = prepare(raw, val_size=0.1, train_size=args.train_size, seed=args.seed)
    policies = [s["policy"] for s in searches.values()] + [b for b in args.baselines.split(",") if b]
    entries = compare(full, TrainConfig(model=args.model), policies, ["cosine"],
                      list(range(args.seed, args.seed + args.seeds)), args.epochs)
    for entry, name in zip(entries, [*searches, *args.baselines.split(",")]):
        entry["augment"] = f"learned ({name})" if name in searches else name
    print(format_table(comparison_rows(entries)), file=sys.stderr)

    acc = {e["augment"]: e["test"]["accuracy"]["mean"] for e in entries}
    rl = next((k for k in acc if k.startswith("learned (ppo") or k.startswith("learned (sac")
               or k.startswith("learned (a2c")), None)
    goals = {
        "rl_beats_random_on_proxy_val": (searches["ppo"]["best_val_accuracy"] > searches["random"]["best_val_accuracy"]
                                         if {"ppo", "random"} <= searches.keys() else None),
        "rl_beats_random_on_test": (acc[rl] > acc["learned (random)"] if rl and "learned (random)" in acc else None),
        "learned_beats_trivial_on_test": (acc[rl] > acc["trivial"] if rl and "trivial" in acc else None),
    }
    record = {
        "benchmark": "augment_search", "dataset": args.dataset, "model": args.model,
        "proxy": {"train": len(proxy.y_train), "val": len(proxy.y_val), "search_epochs": args.search_epochs,
                  "episode_length": args.episode_length, "steps_per_segment": steps_per_segment},
        "final": {"train": len(full.y_train), "test": len(full.y_test), "epochs": args.epochs, "seeds": args.seeds},
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
        "searches": searches,
        "results": [{k: e[k] for k in ("augment", "test", "cost")} for e in entries],
        "goals": goals,
    }
    from policysearch.files import write_json

    write_json(out / "benchmark.json", record)  # temporary file, fsync, rename
    print(json.dumps(record))
    return 0


def _tail_mean(values: list[float]) -> float:
    tail = values[-max(1, len(values) // 4):]
    return sum(tail) / len(tail)


if __name__ == "__main__":
    sys.exit(main())
