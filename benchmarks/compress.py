"""Compression benchmark: the learned (AMC-style) plan against uniform pruning and random plans at
the same FLOPs target, with identical distillation fine-tuning.

Protocol (defaults are the README's run):
1. Train the teacher (`--teacher-model`, the residual ResNet) on `--dataset` for `--teacher-epochs`,
   or load `--teacher` (a `policysearch train --save` checkpoint).
2. For each FLOPs target in `--targets`: search plans with `--controller` and with `random` for
   `--budget` episodes each (each episode prunes, distils `--episode-finetune-steps` steps on a
   `--search-train-size` proxy, and scores on the validation split); build the uniform plan (one
   keep ratio everywhere, the largest that meets the target).
3. Distil every plan's student from the teacher for `--finetune-epochs` on the full training split
   (same seed, same steps) and report test accuracy, its drop from the teacher, FLOPs, parameters
   and CPU latency, plus the search cost.

Prints the table to stderr and ONE JSON line to stdout.

    python benchmarks/compress.py              # the README figures
    python benchmarks/compress.py --quick      # a minutes-long smoke run on digits
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--teacher", default=None, help="a checkpoint from `policysearch train --save` (else trained here)")
    p.add_argument("--teacher-model", default="resnet")
    p.add_argument("--teacher-epochs", type=float, default=4)
    p.add_argument("--targets", default="0.5,0.25")
    p.add_argument("--controller", default="ppo")
    p.add_argument("--budget", type=int, default=16, help="episodes per search")
    p.add_argument("--search-train-size", type=int, default=10000)
    p.add_argument("--episode-finetune-steps", type=int, default=60)
    p.add_argument("--finetune-epochs", type=float, default=2)
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument("--min-keep", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench-compress")
    p.add_argument("--quick", action="store_true", help="digits, tiny budget: checks the script only")
    args = p.parse_args()
    if args.quick:
        args.dataset, args.teacher_epochs, args.budget = "digits", 15, 3
        args.search_train_size, args.episode_finetune_steps, args.finetune_epochs = 800, 10, 3
    return args


def uniform_plan(env: Any) -> Any:
    """One episode whose every action asks for the same keep ratio: the largest that meets the target."""
    base = env.unwrapped
    groups = len(base.groups)
    lo, hi = base.min_keep, base.max_keep
    for _ in range(40):  # bisection on the FLOPs model: FLOPs grow with the ratio
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if base.flops_model([mid] * groups) <= base.target_flops else (lo, mid)
    action = np.array([2 * (lo - base.min_keep) / max(base.max_keep - base.min_keep, 1e-9) - 1], dtype=np.float32)
    env.reset(seed=0)
    steps = []
    done = False
    while not done:
        _, _, done, _, info = env.step(action)
        steps.append(info)
    return base.export(steps, {"baseline": "uniform", "keep": lo})


def main() -> int:
    args = parse_args()
    import gymnasium as gym

    import policysearch  # noqa: F401  (registers the envs)
    from policysearch.checkpoint import load_checkpoint
    from policysearch.data import load_dataset, prepare
    from policysearch.distill import finish
    from policysearch.policies.schedule import named_schedule
    from policysearch.report import format_table
    from policysearch.search import Budget, run_search
    from policysearch.trainer import TrainConfig, train_run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = load_dataset(args.dataset)
    full = prepare(raw, val_size=0.1, seed=args.seed)
    proxy = prepare(raw, val_size=0.1, train_size=min(args.search_train_size, len(full.y_train)), seed=args.seed)

    t0 = time.perf_counter()
    if args.teacher:
        teacher = load_checkpoint(args.teacher).build()
    else:
        config = TrainConfig(model=args.teacher_model, seed=args.seed)
        run = train_run(full, config, args.teacher_epochs, schedule=named_schedule("onecycle", config.lr or 0.1),
                        description="teacher")
        teacher = run.model
    teacher_seconds = time.perf_counter() - t0

    rows, record_targets = [], {}
    for target in [float(t) for t in args.targets.split(",") if t]:
        def make_env(target: float = target) -> Any:
            return gym.make("policysearch/Compress-v0", teacher=teacher, model_name=args.teacher_model, data=proxy,
                            flops_target=target, min_keep=args.min_keep, finetune_steps=args.episode_finetune_steps,
                            finetune_lr=args.finetune_lr)

        plans, costs = {}, {}
        for name in (args.controller, "random"):
            cpu0 = time.process_time()
            result = run_search(make_env(), name, Budget(child_trainings=args.budget),
                                out / f"search-{target:g}-{name}", seed=args.seed, artefact_name="plan.json")
            plans[name] = result.artefact
            costs[name] = {"episodes": result.summary["episodes"],
                           "wall_minutes": round(result.summary["wall_seconds"] / 60, 2),
                           "cpu_minutes": round((time.process_time() - cpu0) / 60, 2),
                           "best_val_accuracy": result.summary["best"]["val_metric"]}
        plans["uniform"] = uniform_plan(make_env())
        results = {}
        for name, plan in plans.items():
            _, report = finish(plan, teacher, full, args.finetune_epochs, args.finetune_lr, seed=args.seed)
            results[name] = {"plan_ratios": plan.ratios, "flops_fraction": report["ratios"]["flops"], **report}
            rows.append({"target": target, "plan": f"learned ({name})" if name in costs else name,
                         "test acc": report["student"]["test_accuracy"],
                         "drop (points)": report["accuracy_drop_points"],
                         "FLOPs": report["ratios"]["flops"], "params": report["ratios"]["params"],
                         "CPU ms b64": report["student"]["latency_ms_batch64"]})
        record_targets[f"{target:g}"] = {"search_cost": costs, "results": results}
    print(format_table(rows), file=sys.stderr)

    first = record_targets[next(iter(record_targets))]["results"]
    goals = {}
    for key, value in record_targets.items():
        res = value["results"]
        learned = res[args.controller]["student"]["test_accuracy"]
        goals[key] = {
            "learned_ahead_of_uniform": learned > res["uniform"]["student"]["test_accuracy"],
            "learned_ahead_of_random": learned > res["random"]["student"]["test_accuracy"],
            "drop_points_learned": res[args.controller]["accuracy_drop_points"],
        }
    record = {"benchmark": "compress", "dataset": args.dataset, "teacher_model": args.teacher_model,
              "teacher": first[args.controller]["teacher"], "teacher_train_seconds": round(teacher_seconds, 1),
              "search": {"budget": args.budget, "train_size": len(proxy.y_train),
                         "episode_finetune_steps": args.episode_finetune_steps},
              "finetune_epochs": args.finetune_epochs, "targets": record_targets, "goals": goals,
              "goal_half_flops_drop_at_most_0.5": goals.get("0.5", {}).get("drop_points_learned", 99) <= 0.5}
    (out / "benchmark.json").write_text(json.dumps(record, indent=2, default=float))
    print(json.dumps(record, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
