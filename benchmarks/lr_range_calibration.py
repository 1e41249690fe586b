"""How the LR range test's rule and length were chosen (`policysearch.train.lr_range`): on tasks of the LR
controllers' training distribution only, never on the zero-shot benchmark's held-out tasks.

For each task: onecycle at 0.5, 1 and 2 x the model's default peak LR, 3 seeds, validation accuracy
(which side of the default is better), and the range test of every seed at each length in
`--steps`, read by each rule in `policysearch.train.lr_range.RULES`, as a multiple of the default peak. A
rule "agrees" on a task when its median suggestion lies on the same side of the default (above,
below, or within a factor 1.2 of it when the default is best) as the best of the three scales; its
regret is the validation accuracy lost by training at the scale nearest to that median instead of
the best one.

Prints a table to stderr and ONE JSON line to stdout; `--out FILE` also writes the JSON.

    python benchmarks/lr_range_calibration.py --out benchmarks/results/lr_range_calibration.json
    python benchmarks/lr_range_calibration.py --quick     # seconds: checks the script only
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from typing import Any

# (data set, training images (None: all), model, epochs, batch size): drawn from the `cheap` task
# distribution plus the Fashion-MNIST cnn of the third controller's (README, "One controller").
TASKS: list[tuple[str, int | None, str, int, int]] = [
    ("digits", None, "mlp", 6, 64), ("digits", None, "cnn", 8, 128), ("digits", None, "vit", 6, 64),
    ("fashion-mnist", 2000, "mlp", 6, 128), ("fashion-mnist", 2000, "cnn", 4, 128),
    ("fashion-mnist", 4000, "mlp", 3, 64), ("fashion-mnist", 1000, "cnn", 8, 64),
]
SCALES = (0.5, 1.0, 2.0)
NEAR_DEFAULT = 1.2  # a suggestion within this factor of the default counts as "the default"


def side(scale: float) -> int:
    """-1 below the default, 0 at it (within NEAR_DEFAULT), +1 above."""
    return 0 if 1 / NEAR_DEFAULT <= scale <= NEAR_DEFAULT else (1 if scale > 1 else -1)


def run_task(task: tuple, seeds: int, lengths: list[int]) -> dict[str, Any]:
    from policysearch.data import prepare
    from policysearch.policies.schedule import named_schedule
    from policysearch.train.lr_range import RULES, lr_range_test
    from policysearch.train.recipe import train_run
    from policysearch.train.trainer import TrainConfig

    dataset, size, model, epochs, batch = task
    data = prepare(dataset, val_size=300 if dataset == "digits" else 500, train_size=size, seed=0)
    val: dict[float, list[float]] = {s: [] for s in SCALES}
    suggestions: dict[str, list[float]] = {f"{n} steps, {rule}": [] for n in lengths for rule in RULES}
    for seed in range(seeds):
        config = TrainConfig(model=model, batch_size=batch, weight_decay=5e-4, seed=seed)
        for scale in SCALES:
            result = train_run(data, config, epochs, schedule=named_schedule("onecycle", config.lr * scale),
                               progress=False)
            val[scale].append(float(result.val["accuracy"]))
        for n in lengths:
            test = lr_range_test(data, config, steps=n)
            for rule in RULES:
                suggestions[f"{n} steps, {rule}"].append(test.suggestion(rule) / config.lr)
    means = {s: statistics.fmean(v) for s, v in val.items()}
    best = max(SCALES, key=means.__getitem__)
    medians = {k: statistics.median(v) for k, v in suggestions.items()}
    # What following the rule would cost: the best scale's accuracy minus that of the scale nearest
    # (on a log scale) to the median suggestion, in points.
    nearest = {k: min(SCALES, key=lambda s, m=m: abs(math.log(s / m))) for k, m in medians.items()}
    regret = {k: 100 * (means[best] - means[s]) for k, s in nearest.items()}
    return {"task": f"{dataset}/{size or 'all'} {model} {epochs}ep bs{batch}",
            "val_accuracy": {str(s): v for s, v in val.items()},
            "val_mean": {str(s): m for s, m in means.items()}, "best_scale": best,
            "suggested_scale": suggestions, "median_suggested_scale": medians,
            "agrees": {k: side(m) == side(best) for k, m in medians.items()}, "regret_points": regret}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", default="20,40", help="comma-separated range-test lengths")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--quick", action="store_true", help="one task, 1 seed: checks the script only")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from policysearch.analysis.report import finish_record, format_table
    from policysearch.files import check_output_file

    if args.out:
        check_output_file(args.out, "--out")
    lengths = [int(n) for n in args.steps.split(",") if n]
    tasks = [("digits", None, "mlp", 3, 64)] if args.quick else TASKS
    seeds = 1 if args.quick else args.seeds
    started = time.perf_counter(), time.process_time()
    results = []
    for task in tasks:
        results.append(run_task(task, seeds, lengths))
        print(f"{results[-1]['task']}: best scale {results[-1]['best_scale']}", file=sys.stderr, flush=True)
    rules = list(results[0]["agrees"])
    summary = {rule: sum(r["agrees"][rule] for r in results) for rule in rules}
    regret = {rule: statistics.fmean(r["regret_points"][rule] for r in results) for rule in rules}
    table = [{"task": r["task"], "best": r["best_scale"],
              **{rule: f"{r['median_suggested_scale'][rule]:.2f}{'' if r['agrees'][rule] else ' x'}" for rule in rules}}
             for r in results]
    print(format_table(table), file=sys.stderr)
    print(f"tasks where the rule agrees: {summary}; mean regret (points): {regret}", file=sys.stderr)
    record = {"benchmark": "lr_range_calibration", "scales": list(SCALES), "seeds": seeds, "results": results,
              "agrees_on": summary, "mean_regret_points": regret, "tasks": len(results)}
    finish_record(record, args.out, started, "python " + " ".join(sys.argv if argv is None else [__file__, *argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
