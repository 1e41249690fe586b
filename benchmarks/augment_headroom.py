"""Does a searched augmentation schedule beat the hand-made ones where augmentation has headroom?

The protocol (issue 11), at a size this script's flags set:

1. **Target regime**: few labelled images trained for long (default: Fashion-MNIST, 1,000 training
   images, 40 epochs, the small CNN, cosine), scored on the official test split.
2. **Baselines**: none, cropflip, erasing, trivial, randaugment, autoaugment-cifar10, each trained with the K evaluation
   seeds (the same seeds for every arm: same initial weights and data order, so arms are paired).
3. **Searches**: each controller gets the same budget in child-training images: P children of the
   full target length (P target trainings): `pbt` (a population of P trained once, the bottom quarter
   copying the top quarter every segment), `random` (P random schedules) and `ppo` (P episodes).
   S independent searches per controller (search seeds 0..S-1), interleaved (search 0 of every
   controller, then search 1, ...). Search uses the validation split only.
4. **Choosing without the test split**: the top `--top` candidates of a search (by validation score)
   are re-trained with one fresh seed (shared by the candidates, so they are paired) and the best
   validation score is kept (the best of many noisy runs is biased upward).
5. **Test**: the chosen policy is trained with the K evaluation seeds; paired differences to each
   baseline with bootstrap 95 % CIs (accuracy and NLL); pooled over the S searches with a nested
   bootstrap (searches, then seeds), and controller against controller the same way.

Search cost is reported in target trainings (P + top) and wall-minutes. Prints one JSON line; writes
the run folders, the found policies and `report.json` under --out. `report.json` is rewritten after
every search, so a cut run keeps its figures and a rerun with the same setup resumes. Run it alone on
the machine (about 2.5 CPU-hours at the defaults)::

    python benchmarks/augment_headroom.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from policysearch.analysis.compare import compare, seed_values
from policysearch.analysis.stats import nested_bootstrap, paired_bootstrap
from policysearch.data import prepare
from policysearch.files import write_json
from policysearch.metrics import reward_value
from policysearch.search import Budget, run_search
from policysearch.train.trainer import TrainConfig

METRICS = ("accuracy", "nll")


def _pooled(rows: list[dict[str, Any]], other: dict[str, list[float]] | list[dict[str, Any]], metric: str) -> Any:
    """Nested bootstrap of (search, seed) differences: against a baseline's per-seed values, or against
    another controller's searches (search s paired with search s: both independent, seeds paired)."""
    if isinstance(other, dict):
        diffs = [[a - b for a, b in zip(r["per_seed"][metric], other[metric])] for r in rows]
    else:
        n = min(len(rows), len(other))
        diffs = [[a - b for a, b in zip(rows[s]["per_seed"][metric], other[s]["per_seed"][metric])]
                 for s in range(n)]
    return nested_bootstrap(diffs) if len(diffs) >= 2 else None


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """Per controller: test accuracy / NLL of the chosen policies over searches, and pooled CIs."""
    out: dict[str, Any] = {}
    searches = report["searches"]
    for name, rows in searches.items():
        acc = [r["test"]["accuracy"]["mean"] for r in rows]
        entry: dict[str, Any] = {
            "searches": len(rows),
            "test_accuracy_mean_over_searches": float(np.mean(acc)),
            "test_accuracy_sd_over_searches": float(np.std(acc, ddof=1)) if len(acc) > 1 else None,
            "test_nll_mean_over_searches": float(np.mean([r["test"]["nll"]["mean"] for r in rows])),
            "minus_baseline": {b: {m: _pooled(rows, per_seed, m) for m in METRICS}
                               for b, per_seed in report["baseline_per_seed"].items()},
            "minus_controller": {o: {m: _pooled(rows, others, m) for m in METRICS}
                                 for o, others in searches.items() if o != name},
        }
        out[name] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--train-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--model", default="cnn")
    p.add_argument("--baselines", default="none,cropflip,erasing,trivial,randaugment,autoaugment-cifar10")
    p.add_argument("--controllers", default="pbt,random,ppo")
    p.add_argument("--population", type=int, default=4, help="P: children per search = target trainings")
    p.add_argument("--segments", type=int, default=8, help="policy decisions per training (default: %(default)s)")
    p.add_argument("--searches", type=int, default=5, help="S independent searches per controller")
    p.add_argument("--seeds", type=int, default=5, help="K paired evaluation seeds")
    p.add_argument("--top", type=int, default=3, help="candidates re-trained with a fresh seed before choosing")
    p.add_argument("--space", default="full", help="Augment-v1 search space: full | small")
    p.add_argument("--reward-metric", default="accuracy", help="what the search maximises, and the re-ranking "
                   "too: accuracy | macro_f1 | neg_nll | neg_ece (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/augment_headroom")
    args = p.parse_args(argv)
    out = Path(args.out)
    data = prepare(args.dataset, train_size=args.train_size, val_size=1000, seed=0)
    steps_per_epoch = max(1, len(data.y_train) // 128)
    total_steps = args.epochs * steps_per_epoch
    config = TrainConfig(model=args.model)
    eval_seeds = list(range(1000, 1000 + args.seeds))
    target = {"benchmark": "augment_headroom", "dataset": args.dataset, "train_size": len(data.y_train),
              "val_size": len(data.y_val), "test_size": len(data.y_test), "epochs": args.epochs,
              "model": args.model, "eval_seeds": eval_seeds}
    setup = {**target, "segments": args.segments, "space": args.space, "population": args.population,
             "top": args.top, "reward_metric": args.reward_metric}
    # The report is rewritten after every step, so an interrupted run resumes where it stopped and a
    # partial run still has figures: the baselines are kept when the target regime is the same, the
    # searches only when the whole setup is.
    report_path = out / "report.json"
    report: dict[str, Any] = {}
    if report_path.exists():
        saved = json.loads(report_path.read_text())
        if {k: saved.get("setup", {}).get(k) for k in target} == target:
            keep = ("note", "baselines", "baseline_per_seed", "cost")
            report = saved if saved["setup"] == setup else {k: saved[k] for k in keep if k in saved}
            print(f"resuming {report_path} ({'all' if report is saved else 'baselines only'})", file=sys.stderr)
    report["setup"] = setup
    report.setdefault("note", "minus_baseline = chosen - baseline per paired seed; higher accuracy and lower "
                              "nll are better; pooled CIs resample searches, then seeds within a search")
    report.setdefault("baselines", {})
    report.setdefault("baseline_per_seed", {})
    report.setdefault("searches", {})
    report.setdefault("cost", {"baseline_wall_min": 0.0})

    todo = [b for b in args.baselines.split(",") if b not in report["baselines"]]
    if todo:
        print(f"baselines: {','.join(todo)} x {args.seeds} seeds", file=sys.stderr)
        t0 = time.perf_counter()
        for entry in compare(data, config, todo, ["cosine"], eval_seeds, args.epochs, progress=False,
                             workers=args.workers):
            report["baselines"][entry["augment"]] = {m: entry["test"][m] for m in METRICS}
            report["baseline_per_seed"][entry["augment"]] = {m: seed_values(entry, m) for m in METRICS}
        report["cost"]["baseline_wall_min"] += round((time.perf_counter() - t0) / 60, 2)
        write_json(report_path, report)

    # Interleaved (search 0 of every controller, then search 1, ...) so that a cut run stays balanced.
    for s in range(args.searches):
        for controller in args.controllers.split(","):
            rows = report["searches"].setdefault(controller, [])
            if any(r["search_seed"] == s for r in rows):
                continue
            print(f"search {controller} #{s}", file=sys.stderr)
            env = gym.make("policysearch/Augment-v1", data=data, model=args.model, episode_length=args.segments,
                           steps_per_segment=total_steps // args.segments, space=args.space,
                           reward_metric=args.reward_metric)
            t0 = time.perf_counter()
            result = run_search(env, controller, Budget(child_trainings=args.population),
                                out / f"{controller}-{s}", seed=s, progress=False, workers=args.population,
                                overwrite=True)
            search_min = (time.perf_counter() - t0) / 60
            # Re-train the top candidates with one fresh seed (the same for all of them, so they are
            # paired); choose by validation only.
            t0 = time.perf_counter()
            scored = [e for e in result.episodes if e["score"] is not None]
            ranked = sorted(scored, key=lambda e: -e["score"])
            top = ranked[: args.top]
            run_provenance = {k: v for k, v in result.artefact.provenance.items()
                              if k not in ("best_episode", "best_val_metric", "run_id")}
            policies = [env.unwrapped.export(r["steps"], {**run_provenance, "search": f"{controller}-{s}",
                                                          "chosen_episode": r["episode"]})
                        for r in top]
            checks = compare(data, config, policies, ["cosine"], [500 + s], args.epochs, progress=False,
                             workers=args.workers)
            candidates = [(reward_value({m: v["mean"] for m, v in c["val"].items()}, args.reward_metric), k, policy,
                           record)
                          for k, (c, policy, record) in enumerate(zip(checks, policies, top))]
            _, k, chosen, record = max(candidates, key=lambda c: (c[0], -c[1]))
            rerank_min = (time.perf_counter() - t0) / 60
            path = chosen.save(out / f"{controller}-{s}" / "chosen.json")
            entry = compare(data, config, [str(path)], ["cosine"], eval_seeds, args.epochs, progress=False,
                            workers=args.workers)[0]
            paired = {base: {m: paired_bootstrap(seed_values(entry, m), per_seed[m]) for m in METRICS}
                      for base, per_seed in report["baseline_per_seed"].items()}
            rows.append({
                "search_seed": s, "chosen_episode": record["episode"], "chosen_rank_by_search_score": k,
                "inherited": record.get("inherited"),
                "val_of_candidates": [round(c[0], 4) for c in candidates],
                "test": {m: entry["test"][m] for m in METRICS},
                "per_seed": {m: seed_values(entry, m) for m in METRICS}, "minus_baseline": paired,
                "policy": str(path), "describe": chosen.describe(),
                "cost": {"target_trainings": args.population + min(args.top, len(ranked)),
                         "search_wall_min": round(search_min, 2), "rerank_wall_min": round(rerank_min, 2)},
            })
            report["summary"] = _summary(report)
            write_json(report_path, report)
    report["summary"] = _summary(report)
    write_json(report_path, report)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
