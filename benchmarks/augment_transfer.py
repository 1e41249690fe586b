"""Do searched augmentation policies still win where they were not searched?

Issue 11's transfer question: a policy found on the small CNN, used on the residual net (and the
reverse), and on the full training set. The policies are the ones a headroom search chose
(`benchmarks/augment_headroom.py` writes one `chosen.json` per search); each is trained here in a
new regime (another model, training-set size or number of epochs; a schedule replays on any number
of epochs) with K paired evaluation seeds, next to the baselines trained with the same seeds (same
initial weights and data order). Differences are paired per seed, pooled over the policies (one per
independent search) with a nested bootstrap, and given per policy too.

The baselines are read from a headroom `report.json` (``--baselines-from``) when its regime is the
same as this one (data set, sizes, epochs, model, seeds), so that arms trained once are not trained
again; otherwise they are trained here. The report is rewritten after every policy, and a rerun with
the same setup resumes. Run it alone on the machine::

    python benchmarks/augment_transfer.py --policies 'runs/hb/pbt-*/chosen.json' --model resnet
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from policysearch.analysis.compare import compare, seed_values
from policysearch.analysis.report import format_table
from policysearch.analysis.stats import nested_bootstrap, paired_bootstrap
from policysearch.data import prepare
from policysearch.errors import ConfigError
from policysearch.files import write_json
from policysearch.train.trainer import TrainConfig

METRICS = ("accuracy", "nll")


def _reused_baselines(path: Path, target: dict[str, Any], wanted: list[str]) -> dict[str, dict[str, list[float]]]:
    """Per-seed baseline results from a headroom report, when it measured this very regime."""
    saved = json.loads(path.read_text())
    setup = saved.get("setup", {})
    if any(setup.get(k) != target[k] for k in target if k != "benchmark"):
        differing = sorted(k for k in target if k != "benchmark" and setup.get(k) != target[k])
        print(f"{path}: another regime ({', '.join(differing)} differ); training the baselines here", file=sys.stderr)
        return {}
    return {b: v for b, v in saved.get("baseline_per_seed", {}).items() if b in wanted}


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    rows = report["policies"]
    acc = [r["test"]["accuracy"]["mean"] for r in rows]
    out: dict[str, Any] = {
        "policies": len(rows),
        "test_accuracy_mean_over_policies": float(np.mean(acc)) if acc else None,
        "test_accuracy_sd_over_policies": float(np.std(acc, ddof=1)) if len(acc) > 1 else None,
        "baselines_test_accuracy": {b: float(np.mean(v["accuracy"])) for b, v in report["baseline_per_seed"].items()},
        "minus_baseline": {},
    }
    for base, per_seed in report["baseline_per_seed"].items():
        out["minus_baseline"][base] = {}
        for m in METRICS:
            diffs = [[a - b for a, b in zip(r["per_seed"][m], per_seed[m])] for r in rows]
            out["minus_baseline"][base][m] = nested_bootstrap(diffs) if len(diffs) >= 2 else None
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--policies", required=True,
                   help="policy files (a glob in quotes, or comma-separated paths): one per independent search")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--train-size", type=int, default=1000, help="0: the whole training part")
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--model", default="cnn")
    p.add_argument("--baselines", default="none,erasing,trivial")
    p.add_argument("--baselines-from", type=Path, help="a headroom report.json whose baselines to reuse")
    p.add_argument("--seeds", type=int, default=5, help="K paired evaluation seeds (1000, 1001, ...)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/augment_transfer"))
    args = p.parse_args(argv)

    paths = sorted(q for part in args.policies.split(",") for q in glob.glob(part))
    if not paths:
        raise ConfigError(f"--policies {args.policies!r} matches no file")
    baselines = [b for b in args.baselines.split(",") if b]
    if args.seeds < 2:
        raise ConfigError(f"--seeds is {args.seeds}, expected >= 2 (paired bootstrap)")
    report_path = args.out / "report.json"
    args.out.mkdir(parents=True, exist_ok=True)  # checked before any training: a bad path fails at once

    data = prepare(args.dataset, train_size=args.train_size or None, val_size=args.val_size, seed=0)
    config = TrainConfig(model=args.model)
    eval_seeds = list(range(1000, 1000 + args.seeds))
    target = {"benchmark": "augment_transfer", "dataset": args.dataset, "train_size": len(data.y_train),
              "val_size": len(data.y_val), "test_size": len(data.y_test), "epochs": args.epochs,
              "model": args.model, "eval_seeds": eval_seeds}
    report: dict[str, Any] = {}
    if report_path.exists():
        saved = json.loads(report_path.read_text())
        if saved.get("setup") == target:
            report = saved
            print(f"resuming {report_path}", file=sys.stderr)
    report["setup"] = target
    report.setdefault("note", "minus_baseline = policy - baseline per paired seed (higher accuracy, lower nll "
                              "are better); pooled CIs resample policies (searches), then seeds")
    report.setdefault("baseline_per_seed", {})
    report.setdefault("baseline_source", {})
    report.setdefault("policies", [])
    report.setdefault("cost", {"wall_min": 0.0})

    if args.baselines_from:
        for base, per_seed in _reused_baselines(args.baselines_from, target, baselines).items():
            if base not in report["baseline_per_seed"]:
                report["baseline_per_seed"][base] = per_seed
                report["baseline_source"][base] = str(args.baselines_from)
    todo = [b for b in baselines if b not in report["baseline_per_seed"]]
    if todo:
        print(f"baselines: {','.join(todo)} x {args.seeds} seeds ({args.model}, {len(data.y_train)} images, "
              f"{args.epochs} epochs)", file=sys.stderr)
        t0 = time.perf_counter()
        for entry in compare(data, config, todo, ["cosine"], eval_seeds, args.epochs, progress=False,
                             workers=args.workers):
            report["baseline_per_seed"][entry["augment"]] = {m: seed_values(entry, m) for m in METRICS}
            report["baseline_source"][entry["augment"]] = "trained here"
        report["cost"]["wall_min"] += round((time.perf_counter() - t0) / 60, 2)
        write_json(report_path, report)

    done = {r["policy"] for r in report["policies"]}
    for i, path in enumerate(paths):
        if path in done:
            continue
        print(f"policy {i + 1}/{len(paths)}: {path}", file=sys.stderr)
        t0 = time.perf_counter()
        entry = compare(data, config, [path], ["cosine"], eval_seeds, args.epochs, progress=False,
                        workers=args.workers)[0]
        report["cost"]["wall_min"] += round((time.perf_counter() - t0) / 60, 2)
        report["policies"].append({
            "policy": path, "test": {m: entry["test"][m] for m in METRICS},
            "per_seed": {m: seed_values(entry, m) for m in METRICS},
            "minus_baseline": {b: {m: paired_bootstrap(seed_values(entry, m), v[m]) for m in METRICS}
                               for b, v in report["baseline_per_seed"].items()},
        })
        report["summary"] = _summary(report)
        write_json(report_path, report)
    report["summary"] = _summary(report)
    write_json(report_path, report)
    print(format_table(_table(report)), file=sys.stderr)
    print(json.dumps(report))
    return 0


def _table(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per baseline: its test accuracy, and the policies' pooled difference to it."""
    summary, rows = report["summary"], []
    for base, acc in summary["baselines_test_accuracy"].items():
        d = summary["minus_baseline"][base]["accuracy"]
        rows.append({"baseline": base, "baseline accuracy": round(acc, 4),
                     "policies accuracy": round(summary["test_accuracy_mean_over_policies"], 4),
                     "policies minus baseline, points [95 % CI]":
                         f"{100 * d['mean']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]" if d else
                         " ".join(f"{100 * r['minus_baseline'][base]['accuracy']['mean']:+.2f}"
                                  for r in report["policies"])})
    return rows


if __name__ == "__main__":
    sys.exit(main())
