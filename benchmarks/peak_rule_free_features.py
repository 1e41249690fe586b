"""Could the peak rule decide without its curvature probe? Refit it on features that cost nothing.

The shipped `zoo:peak-rule` reads the curvature at the run's start (`log_lr_sharpness`), the run's steps
and whether the optimizer is adaptive. The probe costs images the run could have trained on (issue 31's
zero-shot task Z5). This script refits the rule on its own table
(`benchmarks/results/schedule_zero_shot/train-peak-rule/table.jsonl`, 150 tasks x 3 factors, validation
accuracy) with feature sets that need no probe (steps, optimizer, weight decay, training-set size,
epochs), with the same fit, penalties and cross-validations as the shipped rule
(`contrib.peak_rule_search`), and the shipped features for reference. Nothing is trained.

    python benchmarks/peak_rule_free_features.py --out benchmarks/results/peak_rule_free_features.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

TABLE = Path(__file__).resolve().parent / "results" / "schedule_zero_shot" / "train-peak-rule" / "table.jsonl"
FEATURE_SETS = (
    ("log_lr_sharpness", "log_steps", "adaptive"),  # the shipped rule's
    ("log_steps", "adaptive"),
    ("log_steps", "adaptive", "log_weight_decay"),
    ("log_steps", "adaptive", "log_weight_decay", "log_train_images"),
    ("log_epochs", "log_train_images", "adaptive", "log_weight_decay"),
    ("adaptive",),
)


def feature(row: dict[str, Any], name: str) -> float:
    """A feature of a table row: the stored start features, or one computed from the task's settings."""
    spec = row["spec"]
    if name in row["features"]:
        return float(row["features"][name])
    if name == "log_weight_decay":  # some tasks train without weight decay
        return math.log10(spec["weight_decay"] + 1e-5)
    if name == "log_train_images":
        return math.log10(row["total_steps"] * spec["batch_size"] / spec["epochs"])
    if name == "log_epochs":
        return math.log10(spec["epochs"])
    raise SystemExit(f"unknown feature {name!r}")


def _at(cv: list[dict[str, Any]], penalty: float) -> float:
    """The cross-validated gain at the chosen penalty."""
    return float(next(x["value"] for x in cv if x["penalty"] == penalty))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    started = (time.perf_counter(), time.process_time())

    from policysearch.analysis.report import finish_record
    from policysearch.contrib.peak_rule_search import cross_validated_fit

    rows = [json.loads(line) for line in TABLE.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: r["index"])  # as the rule was fitted: the folds follow the tasks' order
    gains = np.array([r["gains"] for r in rows])
    results = []
    for names in FEATURE_SETS:
        features = np.array([[feature(r, n) for n in names] for r in rows])
        fit, penalty, cv, by_pair = cross_validated_fit(features, gains, 0, [r["group"] for r in rows])
        choices = fit.choices(features)
        results.append({"features": list(names), "needs_probe": "log_lr_sharpness" in names,
                        "penalty": "inf" if math.isinf(penalty) else penalty, "cv_gain_5_folds": _at(cv, penalty),
                        "cv_gain_leave_pair_out": _at(by_pair, penalty),
                        "choices": {f"x{f:.3g}": int(np.sum(choices == j)) for j, f in enumerate([1.0, 2 ** .5, 2.0])}})
        row = results[-1]
        print(f"{', '.join(names):<60} CV {row['cv_gain_5_folds']:+.2f}  leave pair out "
              f"{row['cv_gain_leave_pair_out']:+.2f}", flush=True)
    record = {"benchmark": "peak_rule_free_features", "tasks": len(rows), "results": results}
    finish_record(record, args.out, started, "python benchmarks/peak_rule_free_features.py"
                  + (f" --out {args.out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
