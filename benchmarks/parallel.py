"""Children per hour with 1 and N workers, local processes and Ray, and the cost of a resume.

Fashion-MNIST, the small CNN, Augment-v1 (schedule mode), the `random` controller (its actions cost
nothing, so the figures are the plumbing's): each setting runs the same search and reports child
trainings per hour, over the whole call (worker start-up included) and over the search loop alone.

* `1 worker x 1 thread`: the reference for parallel efficiency (N x this = perfect scaling);
* `1 worker x T threads`: the best a single child can do with every core;
* `N workers x 1 thread`, local processes (`--workers N`);
* `N workers x 1 thread`, Ray actors on a local Ray (`--backend ray`), when Ray is installed.

Then a search is killed (SIGKILL) half-way and resumed: the resume overhead is the resumed call's
wall time minus the child training it still had to do (start-up plus the replay of the log).
Run it alone on the machine. Prints one JSON line::

    python benchmarks/parallel.py --children 6 --train-size 4000 --steps-per-segment 20
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from policysearch.data import prepare
from policysearch.search import Budget, read_episodes, run_search


def _search(data: Any, args: argparse.Namespace, out: Path, **kwargs: Any) -> dict[str, Any]:
    env = gym.make("policysearch/Augment-v1", data=data, model=args.model, episode_length=2,
                   steps_per_segment=args.steps_per_segment, batch_size=128)
    start = time.perf_counter()
    result = run_search(env, "random", Budget(child_trainings=args.children), out, seed=0, progress=False, **kwargs)
    wall = time.perf_counter() - start
    s = result.summary
    return {"children": s["child_trainings"], "wall_s": round(wall, 2), "loop_s": s["wall_seconds"],
            "children_per_hour": round(3600 * s["child_trainings"] / wall, 1),
            "children_per_hour_loop": round(3600 * s["child_trainings"] / s["wall_seconds"], 1),
            "mean_child_s": round(s["child_training_seconds"] / max(1, s["child_trainings"]), 2)}


def _resume_overhead(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    out = folder / "resume"
    cli = [sys.executable, "-m", "policysearch.cli", "augment", "--dataset", args.dataset, "--train-size",
           str(args.train_size), "--model", args.model, "--controller", "random", "--budget", str(args.children),
           "--episode-length", "2", "--steps-per-segment", str(args.steps_per_segment), "--out", str(out),
           "--no-progress", "--threads-per-worker", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cli, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "episodes.jsonl"
    while proc.poll() is None and not (log.is_file() and log.read_bytes().count(b"\n") >= args.children // 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(read_episodes(log))
    start, started_at = time.perf_counter(), time.time()
    subprocess.run([*cli, "--resume"], env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    run = json.loads((out / "summary.json").read_text())["run"]
    return {"episodes_before_kill": before, "episodes_after": len(read_episodes(log)),
            "replayed_episodes": run.get("replayed_episodes"), "resumed_wall_s": round(wall, 2),
            "restart_to_first_new_child_step_s": round(run["first_live_step_at"] - started_at, 2),
            "note": "process start (imports, data preparation, workers) + replay of the log + the restore of "
                    "the child in flight"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--model", default="cnn")
    p.add_argument("--train-size", type=int, default=4000)
    p.add_argument("--children", type=int, default=6, help="child trainings per setting (default: %(default)s)")
    p.add_argument("--steps-per-segment", type=int, default=20, help="two segments per child (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="N (default: %(default)s, the cores of the CI machine)")
    p.add_argument("--no-ray", action="store_true")
    args = p.parse_args(argv)
    data = prepare(args.dataset, train_size=args.train_size, val_size=1000, seed=0)
    cores = os.cpu_count() or 1
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _search(data, argparse.Namespace(**{**vars(args), "children": 1}), folder / "warm-up")  # imports, caches
        torch.set_num_threads(1)
        rows["1x1"] = _search(data, args, folder / "a")
        torch.set_num_threads(cores)
        rows[f"1x{cores}"] = _search(data, args, folder / "b")
        torch.set_num_threads(1)
        rows[f"{args.workers}x1 local"] = _search(data, args, folder / "c", workers=args.workers)
        if not args.no_ray:
            try:
                import ray

                rows[f"{args.workers}x1 ray"] = _search(data, args, folder / "d", workers=args.workers, backend="ray")
                ray.shutdown()
            except ImportError:
                rows["ray"] = "not installed (pip install 'policysearch[ray]')"
        resume = _resume_overhead(args, folder)
    single = rows["1x1"]["children_per_hour_loop"]
    best_single = max(single, rows[f"1x{cores}"]["children_per_hour_loop"])
    local = rows[f"{args.workers}x1 local"]["children_per_hour_loop"]
    result = {
        "benchmark": "parallel", "dataset": args.dataset, "model": args.model, "train_size": args.train_size,
        "children": args.children, "steps_per_child": 2 * args.steps_per_segment, "cores": cores,
        "torch": torch.__version__, "settings": rows,
        "parallel_efficiency": round(local / (args.workers * single), 3),
        "speedup_over_best_single": round(local / best_single, 3),
        "resume": resume,
    }
    if isinstance(rows.get(f"{args.workers}x1 ray"), dict):
        result["ray_over_local"] = round(rows[f"{args.workers}x1 ray"]["children_per_hour_loop"] / local, 3)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
