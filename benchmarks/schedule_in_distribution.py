"""A learned LR controller on NEW tasks drawn from the distribution it was trained on, against hand-made schedules.

`schedule_zero_shot.py` asks the issue's question: tasks outside the training distribution (another model,
size, number of epochs). This asks the easier one a user of `policysearch schedule --tasks` meets first:
tasks of the same kind, never trained on. `--tasks SPEC` is the controller's training spec; `--n-tasks`
tasks are drawn from it with `--task-seed` (a stream the training run never used: its episodes were drawn
from the env's seeded generator, these from `TaskSampler.tasks(n, seed)`), each trained once per arm from
the same seed (`--task-seed` + the task's index: same initial weights and batch order) and scored on the
TEST split, which no search saw. Reported: test accuracy per task and arm, and the paired difference
controller - arm with a bootstrap 95 % CI over tasks (`policysearch.analysis.stats.paired_bootstrap`);
"best hand-made" is, per task, the best of the hand-made arms on that task's test split — an oracle no
user has, so a conservative bar.

Prints a table to stderr and ONE JSON line to stdout; `--out FILE` also writes it.

    python benchmarks/schedule_in_distribution.py --controller runs/lr-probe/controller.json \\
        --tasks "pairs=digits:mlp,fashion-mnist:cnn;train-sizes=1000,2000;epochs=3-8;batch=64,128;wd=0" --n-tasks 30
    python benchmarks/schedule_in_distribution.py --quick     # seconds: checks the script only
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from schedule_zero_shot import HAND_MADE, split_scale  # the arm names of the held-out benchmark

QUICK_TASKS = "pairs=digits:mlp;epochs=2-3;batch=128;wd=0;val-size=100"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--controller", required=False, help="the closed-loop controller (sidecar or zoo:NAME)")
    p.add_argument("--tasks", default=None, help="the controller's training task spec (policysearch schedule --tasks)")
    p.add_argument("--n-tasks", type=int, default=30)
    p.add_argument("--task-seed", type=int, default=1000,
                   help="the sampler's seed for the drawn tasks; task i trains from seed task-seed + i")
    p.add_argument("--arms", default=",".join(("onecycle", "linear", "cosine")), help="hand-made schedules")
    p.add_argument("--jobs", type=int, default=2, help="tasks trained at once, one process each (one torch thread)")
    p.add_argument("--out", default=None)
    p.add_argument("--quick", action="store_true", help="2 tiny tasks: checks the script only")
    args = p.parse_args()
    if args.quick:
        args.tasks, args.n_tasks, args.arms = QUICK_TASKS, 2, "onecycle"
        args.controller = args.controller or "onecycle@x1.5"
    if not args.controller or not args.tasks:
        p.error("--controller and --tasks are required (or --quick)")
    if args.n_tasks < 2:
        p.error("--n-tasks: at least 2 (the CI is over tasks)")
    if args.out:
        from policysearch.files import check_output_file

        check_output_file(args.out, "--out")
    return args


def _one(job: tuple[int, dict[str, Any], str, list[str], int]) -> dict[str, Any]:
    """Every arm on one drawn task, from one seed (`--task-seed` + the task's index): test accuracy per arm."""
    import dataclasses

    import torch

    from policysearch.data import prepare
    from policysearch.policies.adaptive import resolve_schedule
    from policysearch.train.recipe import train_run
    from policysearch.train.trainer import TrainConfig

    torch.set_num_threads(1)
    index, task, controller, arms, task_seed = job
    seed = task_seed + index
    data = prepare(task["dataset"], val_size=300 if task["dataset"] == "digits" else 500,
                   train_size=task["train_size"], seed=0)
    config = TrainConfig(model=task["model"], batch_size=task["batch_size"], weight_decay=task["weight_decay"],
                         seed=seed)
    rows = []
    for label, spec in zip(["controller", *arms], [controller, *arms]):
        name, scale = split_scale(spec)
        run_config = dataclasses.replace(config, lr=config.lr * scale) if scale != 1.0 else config
        result = train_run(data, run_config, task["epochs"], schedule=resolve_schedule(name, base_lr=run_config.lr),
                           progress=False)
        row = {"arm": label, "test_accuracy": 0.0 if result.diverged else float(result.test["accuracy"]),
               "diverged": bool(result.diverged)}
        factors = [round(h["factor"], 4) for h in result.history if "factor" in h]
        if label == "controller" and factors:
            row["factors"] = factors
        rows.append(row)
    print(f"task {index} ({task}): " + ", ".join(f"{r['arm']} {r['test_accuracy']:.4f}" for r in rows),
          file=sys.stderr, flush=True)
    return {"task": task, "seed": seed, "train_images": len(data.y_train), "test_images": len(data.y_test),
            "rows": rows}


def main() -> int:
    args = parse_args()
    from policysearch.analysis.report import finish_record, format_table
    from policysearch.analysis.stats import paired_bootstrap
    from policysearch.envs.schedule_tasks import TaskSampler

    sampler = TaskSampler.parse(args.tasks)
    tasks = [t.to_dict() for t in sampler.tasks(args.n_tasks, seed=args.task_seed)]
    arms = [a for a in args.arms.split(",") if a]
    started = (time.perf_counter(), time.process_time())
    jobs = [(i, task, args.controller, arms, args.task_seed) for i, task in enumerate(tasks)]
    if args.jobs <= 1:
        results = [_one(job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(_one, jobs))
    acc = {label: [] for label in ["controller", *arms]}
    for result in results:
        for row in result["rows"]:
            acc[row["arm"]].append(row["test_accuracy"])
    hand = [a for a in arms if a.split("@")[0] in HAND_MADE]
    best_hand = [max(acc[a][i] for a in hand) for i in range(len(tasks))] if hand else None
    summary = []
    for label in ["controller", *arms, *(["best hand-made (per task)"] if hand else [])]:
        values = best_hand if label.startswith("best hand-made") else acc[label]
        row: dict[str, Any] = {"arm": label, "mean": sum(values) / len(values)}
        if label != "controller":
            row["controller_minus_arm"] = paired_bootstrap(acc["controller"], values, seed=0)
        summary.append(row)
    def ci(r: dict[str, Any]) -> str:
        d = r.get("controller_minus_arm")
        return "" if d is None else f"{100 * d['mean']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]"

    print(format_table([{"arm": r["arm"], "test acc % (mean over tasks)": round(100 * r["mean"], 2),
                         "controller - arm, points [95% CI over tasks]": ci(r)} for r in summary]), file=sys.stderr)
    record = {"benchmark": "schedule_in_distribution", "controller": args.controller, "tasks_spec": args.tasks,
              "task_seed": args.task_seed, "arms": arms, "tasks": results, "summary": summary, "jobs": args.jobs}
    finish_record(record, args.out, started, "python " + " ".join(sys.argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
