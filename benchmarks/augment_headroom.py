"""Does a searched augmentation schedule beat the hand-made ones where augmentation has headroom?

The protocol (issue 11), at a size this script's flags set:

1. **Target regime**: few labelled images trained for long (default: Fashion-MNIST, 1,000 training
   images, 40 epochs, the small CNN, cosine), scored on the official test split.
2. **Baselines**: none, cropflip, erasing, trivial, randaugment, each trained with the K evaluation
   seeds (the same seeds for every arm: same initial weights and data order, so arms are paired).
3. **Searches**: each controller gets the same budget in child-training images: P children of the
   full target length (P target trainings): `pbt` (a population of P trained once, the bottom quarter
   copying the top quarter every segment) and `random` (P random schedules). S independent searches
   per controller (search seeds 0..S-1). Search uses the validation split only.
4. **Choosing without the test split**: the top `--top` candidates of a search (by validation score)
   are re-trained with a fresh seed and the best validation score is kept (the best of many noisy
   runs is biased upward).
5. **Test**: the chosen policy is trained with the K evaluation seeds; paired differences to each
   baseline with bootstrap 95 % CIs (accuracy and NLL).

Search cost is reported in target trainings (P + top) and CPU-minutes. Prints one JSON line; writes
the run folders and found policies under --out. Run it alone on the machine::

    python benchmarks/augment_headroom.py --searches 1 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym

from policysearch.compare import compare
from policysearch.data import prepare
from policysearch.policies.schedule import named_schedule
from policysearch.search import Budget, run_search
from policysearch.stats import paired_bootstrap
from policysearch.trainer import TrainConfig, train_run

METRICS = ("accuracy", "nll")


def _per_seed(entry: dict[str, Any], metric: str) -> list[float]:
    return [float(run["test"][metric]) for run in entry["runs"]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--train-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--model", default="cnn")
    p.add_argument("--baselines", default="none,cropflip,erasing,trivial,randaugment")
    p.add_argument("--controllers", default="pbt,random")
    p.add_argument("--population", type=int, default=4, help="P: children per search = target trainings")
    p.add_argument("--segments", type=int, default=8, help="policy decisions per training (default: %(default)s)")
    p.add_argument("--searches", type=int, default=1, help="S independent searches per controller")
    p.add_argument("--seeds", type=int, default=3, help="K paired evaluation seeds")
    p.add_argument("--top", type=int, default=2, help="candidates re-trained before choosing")
    p.add_argument("--space", default="full", help="Augment-v1 search space: full | small")
    p.add_argument("--reward-metric", default="accuracy")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/augment_headroom")
    args = p.parse_args(argv)
    out = Path(args.out)
    data = prepare(args.dataset, train_size=args.train_size, val_size=1000, seed=0)
    steps_per_epoch = max(1, len(data.y_train) // 128)
    total_steps = args.epochs * steps_per_epoch
    config = TrainConfig(model=args.model)
    eval_seeds = list(range(1000, 1000 + args.seeds))
    started = time.process_time()

    print(f"baselines: {args.baselines} x {args.seeds} seeds", file=sys.stderr)
    baselines = compare(data, config, args.baselines.split(","), ["cosine"], eval_seeds, args.epochs, progress=False,
                        workers=args.workers)
    report: dict[str, Any] = {"baselines": {e["augment"]: {m: e["test"][m] for m in METRICS} for e in baselines},
                              "note": "minus_baseline = chosen - baseline per paired seed; higher accuracy and "
                                      "lower nll are better"}
    baseline_cpu = time.process_time() - started

    searches: dict[str, list[dict[str, Any]]] = {}
    for controller in args.controllers.split(","):
        for s in range(args.searches):
            print(f"search {controller} #{s}", file=sys.stderr)
            env = gym.make("policysearch/Augment-v1", data=data, model=args.model, episode_length=args.segments,
                           steps_per_segment=total_steps // args.segments, space=args.space,
                           reward_metric=args.reward_metric)
            t0, c0 = time.perf_counter(), time.process_time()
            result = run_search(env, controller, Budget(child_trainings=args.population),
                                out / f"{controller}-{s}", seed=s, progress=False, workers=args.population,
                                overwrite=True)
            # Re-train the top candidates with a fresh seed; choose by validation only.
            ranked = sorted(result.episodes, key=lambda e: -(e["score"] if e["score"] is not None else -1e9))
            candidates = []
            for k, record in enumerate(ranked[: args.top]):
                policy = env.unwrapped.export(record["steps"], {"search": f"{controller}-{s}",
                                                                "episode": record["episode"]})
                check = train_run(data, TrainConfig(model=args.model, seed=500 + k), args.epochs, policy,
                                  named_schedule("cosine", base_lr=config.lr), progress=False)
                candidates.append((check.val[args.reward_metric], k, policy, record))
            _, k, chosen, record = max(candidates, key=lambda c: (c[0], -c[1]))
            path = chosen.save(out / f"{controller}-{s}" / "chosen.json")
            entry = compare(data, config, [str(path)], ["cosine"], eval_seeds, args.epochs, progress=False,
                            workers=args.workers)[0]
            paired = {base["augment"]: {m: paired_bootstrap(_per_seed(entry, m), _per_seed(base, m))
                                        for m in METRICS} for base in baselines}
            searches.setdefault(controller, []).append({
                "search_seed": s, "chosen_episode": record["episode"], "inherited": record.get("inherited"),
                "val_of_candidates": [round(c[0], 4) for c in candidates],
                "test": {m: entry["test"][m] for m in METRICS}, "minus_baseline": paired,
                "policy": str(path), "describe": chosen.describe(),
                "cost": {"target_trainings": args.population + args.top,
                         "search_wall_min": round((time.perf_counter() - t0) / 60, 2),
                         "search_cpu_min_this_process": round((time.process_time() - c0) / 60, 2)},
            })
    report.update({
        "benchmark": "augment_headroom", "dataset": args.dataset, "train_size": len(data.y_train),
        "val_size": len(data.y_val), "test_size": len(data.y_test), "epochs": args.epochs, "model": args.model,
        "segments": args.segments, "space": args.space, "population": args.population, "top": args.top,
        "eval_seeds": eval_seeds, "reward_metric": args.reward_metric, "searches": searches,
        "baseline_cpu_min_this_process": round(baseline_cpu / 60, 2),
    })
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
