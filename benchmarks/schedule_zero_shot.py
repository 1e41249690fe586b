"""Zero-shot LR control: one controller learned once over a task distribution, on tasks it never saw,
against the hand-made schedules and hypergradient descent at the model's default peak LR.

Protocol:
- Held-out tasks (`HELD_OUT`), each outside the `cheap` task distribution the shipped
  `zoo:adaptive` controller was trained on (digits mlp / cnn / vit and Fashion-MNIST mlp on
  1k-4k images, 3-12 epochs): a different model (resnet), a different training-set size (10,000
  Fashion-MNIST images), a different number of epochs (30), and a model-data pair it never trained
  (the cnn on 10,000 Fashion-MNIST images, the per-task schedule benchmark's task).
- Arms: the controller (closed loop, `--controller`, default `zoo:adaptive`), onecycle, linear
  decay to zero, cosine, warmup-cosine (all peaking at the model's default LR) and hypergradient
  SGD starting from that LR (online, zero search).
- `NAME@range-test` (an arm, or `--controller`): the run's peak LR comes from a 20-step LR range test
  from its own initial weights, and the run trains 20 steps fewer (`train_run(peak="range-test")`),
  e.g. `--controller onecycle@range-test` puts onecycle at the tested peak in the controller's slot.
- `NAME@xF`: NAME peaking at F times the model's default LR (e.g. `onecycle@x1.8`), to check whether a
  controller that learned a near-constant factor does anything a higher `--lr` does not.
- `NAME@equal-images` (with a peak rule as `--controller`): NAME trained for as many more images as the
  rule's curvature estimate cost on that seed (fractional epochs), so that both process the same images.
- `--task` also takes the second held-out set (`FRESH`), fixed before the peak rule was evaluated.
- Seeds `--seed .. --seed + --seeds - 1`; a seed fixes the initial weights and the batch order, the
  same for every arm (paired). Test accuracy of each run; per arm mean ± std; the paired difference
  controller - arm with a bootstrap 95 % CI (`policysearch.analysis.stats.paired_bootstrap`).

Prints a table per task to stderr and ONE JSON line to stdout; `--out FILE` also writes the JSON.

`--reuse-baselines FILE` takes the other arms' per-seed accuracies from an earlier run's JSON (same
task, seeds and arms; that run's controller counts as the arm its `--controller` names, e.g.
`onecycle@range-test`) instead of training them again — training on the CPU is deterministic for a
seed on one torch build and CPU (the JSON records both under `environment`) — after re-training the
first seed of every reused arm and refusing if any differs in any bit.
Only the controller arm is then trained for every seed (a new controller costs 1/6 of the full run).

    python benchmarks/schedule_zero_shot.py --task resnet-digits --seeds 10 --out benchmarks/results/x.json
    python benchmarks/schedule_zero_shot.py --quick     # seconds: checks the script only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# name -> (data set, training images (None: all), model, epochs, batch size, weight decay, what is new)
HELD_OUT: dict[str, tuple[str, int | None, str, int, int, float, str]] = {
    "resnet-digits": ("digits", None, "resnet", 8, 64, 5e-4, "a model never trained on (resnet)"),
    "fashion10k-mlp": ("fashion-mnist", 10_000, "mlp", 6, 128, 5e-4,
                       "a training-set size never trained on (10,000; trained on 1k-4k)"),
    "cnn-digits-30ep": ("digits", None, "cnn", 30, 128, 5e-4,
                        "a number of epochs never trained on (30; trained on 3-12)"),
    "fashion10k-cnn": ("fashion-mnist", 10_000, "cnn", 3, 128, 5e-4,
                       "a model-data pair never trained on (cnn on Fashion-MNIST, 10,000 images): "
                       "the per-task schedule benchmark's task"),
}
# A second held-out set, fixed on 2026-12-03 before the peak rule (`policysearch peak-rule`) was fitted
# or evaluated: the first set had by then judged eight controllers, and choices made after seeing
# its results (the peak rule never lowers the peak, a lesson of its Fashion-MNIST CNN) need tasks
# that informed nothing. Each lies outside the peak rule's training distribution (digits mlp / cnn /
# vit and Fashion-MNIST mlp / cnn on 1k-5k images, 3-20 epochs, batch 64 / 128).
FRESH: dict[str, tuple[str, int | None, str, int, int, float, str]] = {
    "fashion20k-mlp": ("fashion-mnist", 20_000, "mlp", 4, 128, 5e-4,
                       "a training-set size never trained on (20,000; trained on 1k-5k)"),
    "mlp-digits-40ep": ("digits", None, "mlp", 40, 64, 5e-4,
                        "a number of epochs never trained on (40; trained on 3-20)"),
    "resnet-fashion2k": ("fashion-mnist", 2_000, "resnet", 3, 128, 5e-4,
                         "a model never trained on (resnet), on Fashion-MNIST"),
    "vit-fashion2k": ("fashion-mnist", 2_000, "vit", 5, 128, 5e-4,
                      "a model-data pair never trained on (the vit on Fashion-MNIST)"),
}
# The zero-shot tasks of benchmarks/preregistered/product_defaults.md (issue 31), committed before any
# of them ran: the guarded `zoo:peak-rule` against onecycle and onecycle@equal-images, 10 seeds from 1000.
# Batch size and weight decay are the product's (TrainConfig's) defaults.
PREREGISTERED: dict[str, tuple[str, int | None, str, int, int, float, str]] = {
    "Z1": ("fashion-mnist", 3_000, "mlp", 8, 128, 5e-4, "issue 31's first held-out check (3 seeds there)"),
    "Z2": ("fashion-mnist", 2_000, "cnn", 10, 128, 5e-4, "issue 31's second held-out check (3 seeds there)"),
    "Z3": ("digits", None, "resnet", 20, 128, 5e-4, "a residual net on another data set"),
    "Z4": ("fashion-mnist", 2_000, "vit", 10, 128, 5e-4, "where the unguarded rule lost 1.44 points at equal images"),
}
# Two more, for the cheaper probe's check (benchmarks/preregistered/zero_shot_cheap_probe.md), committed before
# it ran: a residual net on 1,000 images (the rule's table has none) and an MLP trained longer than any of
# the table's runs (3-20 epochs).
PREREGISTERED_PROBE: dict[str, tuple[str, int | None, str, int, int, float, str]] = {
    "Z5": ("fashion-mnist", 1_000, "resnet", 10, 128, 5e-4,
           "a residual net on 1,000 images (none in the rule's table)"),
    "Z6": ("fashion-mnist", 4_000, "mlp", 30, 128, 5e-4, "an MLP trained 30 epochs (the table's runs: 3-20)"),
}
# The third zero-shot check (benchmarks/preregistered/zero_shot_power.md), committed before it ran: Z5 again on
# fresh seeds, as many as its scatter needs, and four new tasks whose seed counts come from a pilot on other seeds.
PREREGISTERED_POWER: dict[str, tuple[str, int | None, str, int, int, float, str]] = {
    "Z7": ("digits", 500, "cnn", 40, 128, 5e-4, "a CNN on 500 digits images, 40 epochs (the table's runs: 3-20)"),
    "Z8": ("fashion-mnist", 1_000, "mlp", 60, 128, 5e-4, "an MLP on 1,000 images trained 60 epochs"),
    "Z9": ("digits", 700, "resnet", 30, 128, 5e-4, "a residual net on 700 digits images (none in the table)"),
    "Z10": ("fashion-mnist", 1_500, "vit", 8, 128, 5e-4, "the vit on 1,500 Fashion-MNIST images (the table: digits)"),
}
# The check of the rule that decides only for the kinds of nets its table gained on
# (benchmarks/preregistered/zero_shot_layer_kinds.md), committed before it ran: nets with batch normalisation and a
# user's LeNet without any (the rule keeps onecycle without a probe), and short runs of the kinds it decides for,
# where the probe's images are 2.9-4.8 % of the run's (Z5's were 2.9 %), one of them a user's own MLP.
PREREGISTERED_LAYER_KINDS: dict[str, tuple[str, int | None, str, int, int, float, str]] = {
    "Z11": ("digits", 400, "resnet", 25, 128, 5e-4, "a residual net on 400 digits images (batch norm)"),
    "Z12": ("fashion-mnist", 1_500, "cnn", 6, 128, 5e-4, "the cnn on 1,500 Fashion-MNIST images (batch norm)"),
    "Z13": ("fashion-mnist", 800, "mlp", 12, 128, 5e-4, "an MLP on 800 images, 12 epochs: the probe is 3.0 %"),
    "Z14": ("fashion-mnist", 1_000, "vit", 6, 128, 5e-4, "the vit on 1,000 images, 6 epochs: the probe is 4.8 %"),
    "Z15": ("fashion-mnist", 1_000, "benchmarks/user_models.py:lenet", 10, 128, 5e-4,
            "a user's LeNet without normalisation (layer kinds the table never had), 10 epochs"),
    "Z16": ("fashion-mnist", 1_000, "benchmarks/user_models.py:mlp_dropout", 10, 128, 5e-4,
            "a user's MLP with dropout (linear layers: a kind the rule decides for), 10 epochs: the probe is 2.9 %"),
}
ISSUE_31 = {**PREREGISTERED, **PREREGISTERED_PROBE, **PREREGISTERED_POWER, **PREREGISTERED_LAYER_KINDS}
HAND_MADE = ("onecycle", "linear", "cosine", "warmup-cosine")
# An arm (or the controller) named "X@range-test" first runs an LR range test from the run's initial
# weights and then trains X peaking at the LR it suggests, for the run's steps minus the test's
# (`train_run(peak="range-test")`): every arm trains on the same number of images. The test's rule
# and length (`policysearch.train.lr_range`) were chosen on tasks of the controllers' training
# distribution, never on these held-out tasks.
RANGE_SUFFIX = "@range-test"
# "X@xF" (an arm, or the controller): X peaking at F times the model's default LR, e.g. onecycle@x1.8,
# to check whether a controller that learned a near-constant factor is just a higher peak.
SCALE_MARK = "@x"
# "X@equal-images" (an arm, with a peak rule as the controller): X trained for the run's images plus the
# images the rule's curvature estimate cost on the same seed, so that both arms process as many.
EQUAL_SUFFIX = "@equal-images"


def split_scale(spec: str) -> tuple[str, float]:
    """("onecycle", 1.8) for "onecycle@x1.8"; (spec, 1.0) without the mark."""
    name, mark, factor = spec.rpartition(SCALE_MARK)
    if not mark:
        return spec, 1.0
    try:
        value = float(factor)
    except ValueError:
        raise SystemExit(f"{spec!r}: expected NAME@xFACTOR, e.g. onecycle@x1.8") from None
    if not value > 0:
        raise SystemExit(f"{spec!r}: the factor must be positive")
    return name, value


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default=",".join(HELD_OUT),
                   help=f"comma-separated held-out tasks: {', '.join(HELD_OUT)}; the second set: {', '.join(FRESH)}; "
                        f"issue 31's pre-registered sets: {', '.join(ISSUE_31)}")
    p.add_argument("--controller", default="zoo:adaptive", help="the closed-loop controller (zoo:NAME or sidecar)")
    p.add_argument("--arms", default=",".join((*HAND_MADE, "hypergradient")),
                   help="the other arms: named schedules and/or hypergradient")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--reuse-baselines", default=None, metavar="FILE",
                   help="the other arms' results from an earlier run of this script (checked on the first seed)")
    p.add_argument("--quick", action="store_true", help="one short task, 2 seeds: checks the script only")
    args = p.parse_args()
    if args.quick:
        args.task, args.seeds = "quick", 2
    return args


def reused_rows(path: str, name: str, arms: list[str], seeds: list[int]) -> dict[str, dict[str, Any]]:
    """The arms' rows (per-seed test accuracies, divergences) of task `name` in an earlier run's JSON."""
    record = json.loads(Path(path).read_text())
    task = next((t for t in record["results"] if t["task"] == name), None)
    if task is None or task["seeds"] != seeds:
        raise SystemExit(f"{path}: no results of task {name!r} with seeds {seeds}")
    rows = {row["arm"]: row for row in task["rows"]}
    rows.setdefault(record["controller"], rows["controller"])  # its controller can be an arm here (by its spec)
    missing = [a for a in arms if a not in rows]
    if missing:
        raise SystemExit(f"{path}: no results of arms {missing} for task {name!r}")
    return {a: rows[a] for a in arms}


def run_task(name: str, spec: tuple, controller: str, arms: list[str], seeds: list[int],
             reuse: str | None = None) -> dict[str, Any]:
    from policysearch.analysis.stats import paired_bootstrap
    from policysearch.data import prepare
    from policysearch.policies.adaptive import resolve_schedule
    from policysearch.train.recipe import train_run
    from policysearch.train.trainer import TrainConfig

    dataset, train_size, model, epochs, batch, decay, novelty = spec
    data = prepare(dataset, val_size=300 if dataset == "digits" else 1000, train_size=train_size, seed=0)
    labels = ["controller", *arms]
    acc: dict[str, list[float]] = {label: [] for label in labels}
    seconds: dict[str, float] = dict.fromkeys(labels, 0.0)
    diverged: dict[str, int] = dict.fromkeys(labels, 0)
    reused_row = reused_rows(reuse, name, arms, seeds) if reuse else {}
    reused = {label: row["test_accuracy"] for label, row in reused_row.items()}
    checked: dict[str, bool] = {}
    peaks: dict[str, list[dict]] = {}  # the range test of each seed, for arms that use one
    factors: list[list[float]] = []  # a residual controller's decisions (factor x base) per seed
    selections: list[dict[str, Any]] = []  # a peak rule's decision and its curvature estimate per seed
    for seed in seeds:
        config = TrainConfig(model=model, batch_size=batch, weight_decay=decay, seed=seed)
        for label, spec_name in zip(labels, [controller, *arms]):
            if label in reused and seed != seeds[0]:
                acc[label].append(reused[label][seeds.index(seed)])
                continue
            t0 = time.perf_counter()
            run_epochs = epochs
            if spec_name.endswith(EQUAL_SUFFIX):  # the peak rule's estimate of this seed, as training images
                if not selections or label == "controller":
                    raise SystemExit(f"{spec_name}: needs a peak rule as --controller (its images this seed)")
                run_epochs = epochs + selections[-1]["images"] / len(data.y_train)
                spec_name = spec_name.removesuffix(EQUAL_SUFFIX)
            peak = "range-test" if spec_name.endswith(RANGE_SUFFIX) else "default"
            spec_name, scale = split_scale(spec_name.removesuffix(RANGE_SUFFIX))
            run_config = dataclasses.replace(config, lr=config.lr * scale) if scale != 1.0 else config
            # fresh per run (hypergradient keeps state)
            schedule = resolve_schedule(spec_name, base_lr=run_config.lr)
            result = train_run(data, run_config, run_epochs, schedule=schedule, progress=False, peak=peak)
            seconds[label] += time.perf_counter() - t0
            if result.range_test is not None:  # the test's steps came out of the run: equal images
                peaks.setdefault(label, []).append(result.range_test)
            diverged[label] += bool(result.diverged)
            if label == "controller" and any("factor" in h for h in result.history):
                factors.append([round(h["factor"], 4) for h in result.history if "factor" in h])
            elif label == "controller" and result.selection is not None:  # a peak rule: one factor, at the start
                factors.append([result.selection["factor"]])
                selections.append({k: result.selection[k] for k in ("factor", "features", "sharpness", "images")})
            acc[label].append(float(result.test["accuracy"]) if not result.diverged else 0.0)
            print(f"{name} seed {seed} {label}: {acc[label][-1]:.4f}", file=sys.stderr, flush=True)
            if label in reused:  # the first seed, re-trained: the reused figures must be reproduced exactly
                checked[label] = acc[label][-1] == reused[label][0]
                if not checked[label]:
                    raise SystemExit(f"{reuse}: {label} seed {seed} gave {reused[label][0]!r} there and "
                                     f"{acc[label][-1]!r} now: not reproducible, run every arm")
    rows = []
    for label in labels:
        row: dict[str, Any] = {"arm": label, "mean": statistics.fmean(acc[label]),
                               "std": statistics.stdev(acc[label]) if len(acc[label]) > 1 else 0.0,
                               "test_accuracy": acc[label]}
        if label in reused:  # divergences and run times as the reused file has them
            row.update(reused_from=reuse, first_seed_reproduced=checked[label],
                       diverged=reused_row[label]["diverged"], seconds_per_run=reused_row[label]["seconds_per_run"])
        else:
            row.update(diverged=diverged[label], seconds_per_run=seconds[label] / len(seeds))
        if label in reused and "peak_lr" in reused_row[label]:
            row.update(range_test=reused_row[label]["range_test"], peak_lr=reused_row[label]["peak_lr"])
        elif label in peaks:
            first = peaks[label][0]
            row.update(range_test={"steps": first["steps"], "rule": first["rule"]},
                       peak_lr=[p["peak_lr"] for p in peaks[label]])
        if label != "controller":
            row["controller_minus_arm"] = paired_bootstrap(acc["controller"], acc[label], seed=0)
        elif factors:
            row["factors"] = factors  # per seed, one per decision
            if selections:
                row["selections"] = selections
        rows.append(row)
    hand = [r for r in rows if r["arm"] in HAND_MADE]
    best_hand = max(hand, key=lambda r: r["mean"])["arm"] if hand else None
    return {"task": name, "dataset": dataset, "train_images": len(data.y_train), "val_images": len(data.y_val),
            "test_images": len(data.y_test), "model": model, "epochs": epochs, "batch_size": batch,
            "weight_decay": decay, "peak_lr": TrainConfig(model=model).lr, "held_out_because": novelty,
            "seeds": seeds, "rows": rows, "best_hand_made": best_hand}


def main() -> int:
    args = parse_args()
    import torch

    torch.set_num_threads(1)
    from policysearch.analysis.report import finish_record, format_table

    tasks = dict(HELD_OUT, **FRESH, **ISSUE_31,
                 quick=("digits", None, "mlp", 5, 128, 5e-4, "script check"))
    names = [t for t in args.task.split(",") if t]
    for t in names:
        if t not in tasks:
            print(f"unknown task {t!r}; known: {', '.join([*HELD_OUT, *FRESH, *ISSUE_31])}",
                  file=sys.stderr)
            return 2
    if args.out:
        from policysearch.files import check_output_file

        check_output_file(args.out, "--out")
    seeds = list(range(args.seed, args.seed + args.seeds))
    arms = [a for a in args.arms.split(",") if a]
    started = time.perf_counter(), time.process_time()
    results = [run_task(t, tasks[t], args.controller, arms, seeds, args.reuse_baselines) for t in names]
    for r in results:
        print(f"\n{r['task']}: {r['dataset']} {r['train_images']} train images, {r['model']}, {r['epochs']} epochs, "
              f"peak LR {r['peak_lr']} ({r['held_out_because']}); {len(seeds)} paired seeds", file=sys.stderr)
        table = []
        for row in r["rows"]:
            diff = row.get("controller_minus_arm")
            table.append({"arm": row["arm"], "test acc mean": row["mean"], "std": row["std"],
                          "controller - arm": "" if diff is None else f"{diff['mean']:+.4f}",
                          "95% CI": "" if diff is None else f"[{diff['low']:+.4f}, {diff['high']:+.4f}]",
                          "diverged": row["diverged"]})
        print(format_table(table), file=sys.stderr)
    record = {"benchmark": "schedule_zero_shot", "controller": args.controller, "arms": arms, "results": results}
    finish_record(record, args.out, started, "python " + " ".join(sys.argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
