"""Compression benchmark: searched plans against uniform pruning and random search at the same FLOPs
target, scored by the adaptive-BN proxy; and how well each proxy predicts the fine-tuned accuracy.

Steps (`--steps`, default both):
- `teacher`: the residual ResNet-8 trained to its plateau on Fashion-MNIST (`--teacher-epochs`,
  onecycle, seed 0); cached as `--teacher` (a `policysearch train --save` checkpoint, 0.3 MB) and
  recreated deterministically when the file is missing.
- `correlation`: `--correlation-plans` random plans at the first target; each scored by the
  adaptive-BN proxy (`--bn-batches` batches, `--val-images` validation images), by plain evaluation
  without recalibration ("vanilla"), and by a short distillation (`--episode-finetune-steps`), then
  distilled for `--correlation-final-steps` and scored on the test split. Spearman and Kendall rank
  correlation of each proxy with that final accuracy, and each proxy's CPU seconds per plan.
- `search`: for each target in `--targets`, `--searches` independent searches (search k has seed
  seed + k, k from `--first-search`) of `--budget` episodes with each controller in `--controllers` and
  with `random` unless `--no-random` (the uniform plan is candidate 0 of every search); the top
  `--rerank-top` plans of each search, and uniform, re-ranked by `--rerank-steps` distillation steps on
  the validation split (batch order `--rerank-seed`, not a final seed); then the chosen plans and the
  uniform plan distilled for `--finetune-epochs` with `--seeds` paired seeds (same seed = same batch
  order for every plan), test accuracy, paired bootstrap 95 % CIs of the differences (over the seeds,
  and over the seeds and the scored images); with 2 or more searches, each controller pooled over its
  searches (nested bootstrap: searches, then seeds). Each chosen plan is saved as
  `--out`/plan-<target>-<controller>-<k>.json.
- `final`: no search: the plans a previous run compared (`--plans-from` its benchmark.json) distilled
  again, e.g. for longer: `--finetune-epochs 0.36,3` compares them at both lengths (is the ranking
  stable?).
- `duel`: no search: for each search of a previous run (`--plans-from` its record, which lists each
  search's re-ranked candidates with their ratios), its best non-uniform candidate by that re-ranking
  and the uniform plan are distilled for the final length (the last of `--finetune-epochs`) with the
  batch order `--rerank-seed` and scored on the validation split; the search keeps the candidate only
  if it beats uniform there ("duel#k", else uniform). Then the `final` comparison of those choices.
- `neighbours`: no search: is uniform a local optimum of the accuracy after the final distillation?
  Each group's kept channels times `--neighbour-factor` and divided by it, the other groups at the
  largest common ratio that meets the FLOPs target (`PlanSpace.shifted_counts`); every such plan and
  uniform distilled for the final length with `--neighbour-seeds` batch orders from `--rerank-seed` and
  scored on the validation split; the paired difference of each from uniform.
- `local`: `--searches` compass searches from uniform (`policysearch.compression.refine.refine_plan`, what
  `policysearch compress --controller local` runs): search k scores each plan by `--local-steps`
  distillation steps on `--neighbour-seeds` batch orders from `--rerank-seed` + 100 k (validation split)
  and moves only when the best neighbour wins again on as many fresh orders (+ 1000), scored there by
  `--local-confirm-steps` of distillation (default: `--local-steps`); first step
  `--neighbour-factor`, at most `--local-rounds` moves, no step below `--local-min-factor`. Against
  it, random search at equal candidates (`random#k`): as many `CompressionPlan.random` plans as search
  k scored, on the same batch orders, the best kept only if it beats uniform on the same fresh
  orders. Then the `final` comparison; `--reuse-final` takes the final runs of plans an earlier
  record distilled with the same teacher, seeds, length, learning rate and split.
- `plot`: nothing trained: the figure of every final comparison in the `--plans-from` record.

Every final comparison is also drawn, `--out`/final-<target>-<epochs>ep.png: each plan's paired
differences from uniform per seed, with the bootstrap CIs over seeds and over seeds and images.

`--jobs 2` runs two searches, and then two distillations, at once (processes, one torch thread each).

Prints tables to stderr and ONE JSON line to stdout; also writes it to `--out`/benchmark.json.

    python benchmarks/compress.py --steps teacher,correlation --targets 0.5
    python benchmarks/compress.py --steps search --targets 0.5
    python benchmarks/compress.py --steps final --plans-from benchmarks/results/compress_search_50.json \
        --targets 0.5 --finetune-epochs 3 --jobs 2
    python benchmarks/compress.py --quick      # a minutes-long smoke run on digits
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", default="teacher,correlation,search")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--teacher", default="benchmarks/results/compress_teacher.pt",
                   help="teacher checkpoint: loaded if present, else trained and written here")
    p.add_argument("--teacher-model", default="resnet")
    p.add_argument("--teacher-epochs", type=float, default=10)
    p.add_argument("--targets", default="0.5,0.25")
    p.add_argument("--controllers", default="td3")
    p.add_argument("--budget", type=int, default=300, help="episodes per search")
    p.add_argument("--searches", type=int, default=1, help="independent searches per controller and target")
    p.add_argument("--first-search", type=int, default=0,
                   help="index of the first search (search k has seed --seed + k): fresh searches on the same "
                        "data split and cached teacher as an earlier run")
    p.add_argument("--no-random", action="store_true",
                   help="skip the random-search baseline (when an earlier run on the same seeds measured it)")
    p.add_argument("--bn-batches", type=int, default=10)
    p.add_argument("--val-images", type=int, default=1000)
    p.add_argument("--min-keep", type=float, default=0.1)
    p.add_argument("--episode-finetune-steps", type=int, default=50, help="the distillation proxy's steps")
    p.add_argument("--correlation-plans", type=int, default=20)
    p.add_argument("--correlation-final-steps", type=int, default=150)
    p.add_argument("--rerank-top", type=int, default=5)
    p.add_argument("--rerank-steps", type=int, default=60)
    p.add_argument("--rerank-seed", type=int,
                   help="batch order of the re-ranking (default --seed + 1000: not one of the final seeds, so "
                        "the plan is not chosen on the batches it is then scored with)")
    p.add_argument("--finetune-epochs", default="0.5",
                   help="epochs of the final distillation; a comma list compares the plans at each length")
    p.add_argument("--plans-from", help="step `final`: a previous run's benchmark.json whose plans are compared "
                                        "again; step `duel`: a run's record of its searches")
    p.add_argument("--neighbour-factor", type=float, default=1.5,
                   help="step `neighbours`: each group's kept channels times and divided by this")
    p.add_argument("--neighbour-seeds", type=int, default=2, help="step `neighbours`: batch orders per plan")
    p.add_argument("--local-steps", type=int, default=150, help="step `local`: distillation steps per candidate")
    p.add_argument("--local-rounds", type=int, default=3, help="step `local`: at most this many moves")
    p.add_argument("--local-confirm-steps", type=int, default=None,
                   help="step `local`: distillation steps of each confirmation, local and random arms alike "
                        "(default: --local-steps)")
    p.add_argument("--local-min-factor", type=float, default=1.2,
                   help="step `local`: the search stops when its step falls below this")
    p.add_argument("--reuse-final", help="a previous record (benchmark.json) whose final runs of the same plans, "
                                         "seeds, split and length are taken instead of trained again")
    p.add_argument("--jobs", type=int, default=1,
                   help="searches, then final distillations, at once (processes, one torch thread each)")
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument("--final-split", choices=("test", "val"), default="test",
                   help="split the final distillations are scored on (val: to check a choice made on validation "
                        "with the final seeds; never for a reported result)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-final-seed", type=int, default=None,
                   help="the final distillations' first seed (default: --seed); e.g. a search's own batch "
                        "orders, to replay its scores at the final length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench-compress")
    p.add_argument("--quick", action="store_true", help="digits, tiny budget: checks the script only")
    args = p.parse_args(argv)
    if args.rerank_seed is None:
        args.rerank_seed = args.seed + 1000
    if args.first_search < 0:
        p.error(f"--first-search must be >= 0, got {args.first_search}")
    if {"final", "duel", "plot"} & set(args.steps.split(",")) and not args.plans_from:
        p.error("--steps final, duel and plot need --plans-from (a previous run's benchmark.json)")
    if args.neighbour_factor <= 1 or args.neighbour_seeds < 2:
        p.error(f"--neighbour-factor must be > 1 (got {args.neighbour_factor}) and --neighbour-seeds >= 2 "
                f"(got {args.neighbour_seeds})")
    if args.local_steps < 1 or args.local_rounds < 0 or args.local_min_factor <= 1:
        p.error(f"--local-steps must be >= 1 (got {args.local_steps}), --local-rounds >= 0 (got {args.local_rounds}) "
                f"and --local-min-factor > 1 (got {args.local_min_factor})")
    if args.local_confirm_steps is not None and args.local_confirm_steps < 1:
        p.error(f"--local-confirm-steps must be >= 1, got {args.local_confirm_steps}")
    if args.reuse_final and not Path(args.reuse_final).is_file():
        p.error(f"--reuse-final {args.reuse_final}: no such file")
    if args.plans_from and not Path(args.plans_from).is_file():
        p.error(f"--plans-from {args.plans_from}: no such file")
    if args.quick:
        args.dataset, args.teacher_epochs, args.budget, args.val_images = "digits", 15, 6, None
        args.teacher = str(Path(args.out) / "teacher.pt")
        args.correlation_plans, args.correlation_final_steps, args.episode_finetune_steps = 5, 10, 5
        args.rerank_top, args.rerank_steps, args.seeds, args.bn_batches, args.local_steps = 2, 5, 2, 4, 5
        if args.finetune_epochs == p.get_default("finetune_epochs"):
            args.finetune_epochs = "1"
    return args


def get_teacher(args: argparse.Namespace, full: Any) -> tuple[Any, dict[str, Any]]:
    from policysearch.policies.schedule import named_schedule
    from policysearch.train.checkpoint import load_checkpoint, save_checkpoint
    from policysearch.train.evaluate import evaluate
    from policysearch.train.recipe import train_run
    from policysearch.train.trainer import TrainConfig

    path = Path(args.teacher)
    if path.exists():
        ckpt = load_checkpoint(path)
        teacher = ckpt.build().eval()
        info = {"file": str(path), "epochs": ckpt.info.get("epochs"), "train_seconds": ckpt.info.get("seconds")}
    else:
        config = TrainConfig(model=args.teacher_model, seed=args.seed)
        start = time.perf_counter()
        run = train_run(full, config, args.teacher_epochs, schedule=named_schedule("onecycle", config.lr or 0.1),
                        description="teacher", progress=False)
        seconds = time.perf_counter() - start
        teacher = run.model.eval()
        save_checkpoint(path, teacher, args.teacher_model, full.input_shape, full.num_classes,
                        {"dataset": full.describe(), "epochs": args.teacher_epochs, "seconds": seconds,
                         "schedule": "onecycle", "test": run.test, "val": run.val})
        info = {"file": str(path), "epochs": args.teacher_epochs, "train_seconds": seconds}
    info.update({"val_accuracy": evaluate(teacher, full, "val")["accuracy"],
                 "test_accuracy": evaluate(teacher, full, "test")["accuracy"]})
    return teacher, info


def correlation(args: argparse.Namespace, teacher: Any, full: Any, target: float) -> dict[str, Any]:
    from policysearch.compression.distill import distill
    from policysearch.compression.pruning import adaptive_bn, proxy_correlation, val_accuracy
    from policysearch.policies.compress import CompressionPlan

    example = torch.zeros(1, *full.input_shape)
    plans = [CompressionPlan.random(teacher, example, flops_target=target, min_keep=args.min_keep, seed=s)
             for s in range(args.correlation_plans)]

    def bn(student: Any, seed: int) -> float:
        adaptive_bn(student, full, args.bn_batches, 128, seed)
        return val_accuracy(student, full, args.val_images)

    def short(student: Any, seed: int) -> float:
        distill(student, teacher, full, args.episode_finetune_steps, args.finetune_lr, seed=seed)
        return val_accuracy(student, full, args.val_images)

    def final(student: Any, seed: int) -> float:
        distill(student, teacher, full, args.correlation_final_steps, args.finetune_lr, seed=seed)
        return val_accuracy(student, full, split="test")

    proxies = {"adaptive-bn": bn, "vanilla": lambda s, _: val_accuracy(s, full, args.val_images), "distill": short}
    cpu = time.process_time()
    out = proxy_correlation(plans, teacher, full, proxies, final, seed=args.seed)
    out.update({"flops_target": target, "cpu_minutes": round((time.process_time() - cpu) / 60, 2),
                "settings": {"bn_batches": args.bn_batches, "val_images": args.val_images,
                             "distill_steps": args.episode_finetune_steps,
                             "final_steps": args.correlation_final_steps}})
    print(f"correlation over {len(plans)} random plans at {target:g} FLOPs (final: {args.correlation_final_steps} "
          "distillation steps, test accuracy):", file=sys.stderr)
    for name, row in out["proxies"].items():
        print(f"  {name:12s} Spearman {row['spearman']:+.3f}  Kendall {row['kendall']:+.3f}  "
              f"{row['seconds_per_plan']:.2f} s / plan", file=sys.stderr)
    return out


def search(args: argparse.Namespace, teacher: Any, full: Any, target: float) -> dict[str, Any]:
    from policysearch.files import write_json
    from policysearch.processes import in_processes

    uniform = _uniform(args, teacher, full, target)
    settings = {key: getattr(args, key) for key in ("teacher_model", "min_keep", "bn_batches", "val_images", "budget",
                                                    "rerank_top", "rerank_steps", "rerank_seed", "finetune_lr", "seed")}
    controllers = [*args.controllers.split(","), *([] if args.no_random else ["random"])]
    jobs = [(controller, k, target, settings, teacher, full)
            for controller in dict.fromkeys(controllers)
            for k in range(args.first_search, args.first_search + args.searches)]
    # With --jobs 2, whole searches side by side, one torch thread each; each measures its own CPU time.
    done = in_processes(_one_search, jobs, args.jobs, progress=True, desc="searches")
    plans: dict[str, Any] = {"uniform": uniform}
    searches: dict[str, list[dict[str, Any]]] = {}
    for (controller, k, *_), (chosen, row) in zip(jobs, done):
        plans[f"{controller}#{k}"] = chosen
        chosen.save(Path(args.out) / f"plan-{target:g}-{controller}-{k}.json")
        searches.setdefault(controller, []).append(row)
        row["chosen_is_uniform"] = chosen.kept() == uniform.kept()
        print(f"{target:g} {controller}#{k}: {row['episodes']} episodes, {row['search_cpu_minutes']:.1f} CPU-min, "
              f"best proxy {row['best_proxy']:.4f} (uniform {row['uniform_proxy']:.4f}); chosen search rank "
              f"{row['rerank'][0]['search_rank']}{' (uniform)' if row['chosen_is_uniform'] else ''}", file=sys.stderr)
    # What is done so far, in case the run is stopped before the final distillations.
    write_json(Path(args.out) / f"partial-{target:g}.json", {"target": target, "searches": searches})
    return {"searches": searches, **final_comparison(args, teacher, full, target, plans)}


def _one_search(controller: str, k: int, target: float, settings: dict[str, Any], teacher: Any,
                full: Any) -> tuple[Any, dict[str, Any]]:
    """Search k (seed ``seed + k``) of `controller` at `target`, its top plans re-ranked by a short
    distillation on the whole validation split; returns the chosen plan and the search's record."""
    import gymnasium as gym

    import policysearch  # noqa: F401  (registers the envs in a worker process)
    from policysearch.compression.pruning import rerank, top_plans
    from policysearch.policies.compress import CompressionPlan
    from policysearch.search import Budget, run_search

    example = torch.zeros(1, *full.input_shape)
    uniform = CompressionPlan.uniform(teacher, example, flops_target=target, min_keep=settings["min_keep"],
                                      model_name=settings["teacher_model"])
    env = gym.make("policysearch/Compress-v0", teacher=teacher, model_name=settings["teacher_model"], data=full,
                   flops_target=target, min_keep=settings["min_keep"], bn_batches=settings["bn_batches"],
                   val_images=settings["val_images"])
    cpu, wall = time.process_time(), time.perf_counter()
    result = run_search(env, controller, Budget(child_trainings=settings["budget"]), None, seed=settings["seed"] + k,
                        progress=False)
    search_cpu = time.process_time() - cpu
    candidates = top_plans(result.episodes, settings["rerank_top"])
    # The whole validation split (as the CLI): 1,000 images cannot tell the best plans apart.
    ranked = rerank(candidates, teacher, full, settings["rerank_steps"], settings["finetune_lr"],
                    seed=settings["rerank_seed"])
    chosen = ranked[0]["plan"]
    uniform_score = result.episodes[0]["score"]
    return chosen, {
        "seed": settings["seed"] + k, "episodes": len(result.episodes),
        "search_cpu_minutes": round(search_cpu / 60, 2),
        "wall_minutes": round((time.perf_counter() - wall) / 60, 2),
        "best_proxy": result.summary["best"]["val_metric"], "uniform_proxy": uniform_score,
        "episodes_above_uniform": sum(e["score"] > uniform_score for e in result.episodes),
        "rerank": [{"search_rank": r["index"] + 1, "val_accuracy": r["val_accuracy"],
                    "is_uniform": r["plan"].kept() == uniform.kept(), "ratios": r["plan"].ratios} for r in ranked],
        "chosen_ratios": chosen.ratios}


def plans_from(path: str, teacher: Any, full: Any, target: float, min_keep: float, model_name: str) -> dict[str, Any]:
    """The plans a previous run compared at `target` (its benchmark.json), rebuilt on `teacher` from their
    keep ratios; the uniform plan is recomputed and must match the recorded one."""
    from policysearch.errors import ConfigError
    from policysearch.policies.compress import CompressionPlan

    record = json.loads(Path(path).read_text())
    rows = record.get("targets", {}).get(f"{target:g}", {}).get("results")
    if not rows:
        raise ConfigError(f"{path} has no results at FLOPs target {target:g}; "
                          f"it has {sorted(record.get('targets', {}))}")
    example = torch.zeros(1, *full.input_shape)
    uniform = CompressionPlan.uniform(teacher, example, flops_target=target, min_keep=min_keep, model_name=model_name)
    if rows["uniform"]["ratios"] != uniform.ratios:
        raise ConfigError(f"{path}: its uniform plan differs from this teacher's; was it another teacher?")
    return {name: _with_ratios(uniform, row["ratios"], teacher, full, {"from": path, "name": name})
            for name, row in rows.items()}


def _with_ratios(uniform: Any, ratios: dict[str, float], teacher: Any, full: Any, provenance: dict[str, Any]) -> Any:
    """A plan of `teacher` with these keep ratios (the uniform plan's other fields), its FLOPs and
    parameters measured on the pruned network."""
    import dataclasses

    from policysearch.metrics import count_parameters, flops_per_image

    plan = dataclasses.replace(uniform, ratios=ratios, provenance=provenance)
    student = plan.apply(teacher, torch.zeros(1, *full.input_shape))
    flops = int(flops_per_image(student, full.input_shape)["forward"])
    return dataclasses.replace(plan, flops=flops, params=count_parameters(student))


def duel(args: argparse.Namespace, teacher: Any, full: Any, target: float) -> dict[str, Any]:
    """Each search's best non-uniform candidate against uniform at the final length, on validation
    with the re-ranking's batch order; the winner is the search's choice, then compared on test."""
    from policysearch.compression.pruning import distilled_accuracies
    from policysearch.errors import ConfigError

    record = json.loads(Path(args.plans_from).read_text())
    searches = record.get("searches") or record.get("targets", {}).get(f"{target:g}", {}).get("searches")
    if not searches:
        raise ConfigError(f"{args.plans_from} records no searches at FLOPs target {target:g}")
    uniform = _uniform(args, teacher, full, target)
    candidates: dict[str, Any] = {}
    for controller, rows in searches.items():
        for row in rows:
            best = next((r for r in row["rerank"] if not r["is_uniform"]), None)
            if best is None or "ratios" not in best:
                raise ConfigError(f"{args.plans_from}: search {controller} seed {row['seed']} records no "
                                  "non-uniform candidate with its ratios (re-run it with this benchmark)")
            candidates[f"{controller}#{row['seed'] - args.seed}"] = _with_ratios(
                uniform, best["ratios"], teacher, full,
                {"from": args.plans_from, "search_seed": row["seed"], "search_rank": best["search_rank"]})
    steps = _final_steps(args, full)
    wall = time.perf_counter()
    val = distilled_accuracies([uniform, *candidates.values()], teacher, full, steps, args.finetune_lr,
                               [args.rerank_seed], split="val", workers=args.jobs)
    uniform_val = val[0][0]
    plans: dict[str, Any] = {"uniform": uniform}
    duels = {}
    for (name, plan), (acc,) in zip(candidates.items(), val[1:]):
        kept = acc > uniform_val
        plans[name] = plan if kept else uniform
        duels[name] = {"candidate_val_accuracy": acc, "uniform_val_accuracy": uniform_val, "kept": kept,
                       "ratios": plan.ratios, **plan.provenance}
        print(f"{target:g} {name}: candidate {acc:.4f} vs uniform {uniform_val:.4f} on validation after {steps} "
              f"steps: {'candidate' if kept else 'uniform'}", file=sys.stderr)
    return {"duels": duels, "duel_steps": steps, "duel_seed": args.rerank_seed,
            "duel_wall_minutes": round((time.perf_counter() - wall) / 60, 2),
            **final_comparison(args, teacher, full, target, plans)}


def neighbours(args: argparse.Namespace, teacher: Any, full: Any, target: float) -> dict[str, Any]:
    """Uniform against the plans next to it at the same FLOPs (one group's channels times or divided by
    `--neighbour-factor`), all distilled for the final length on validation batch orders from
    `--rerank-seed`: if none beats uniform, uniform is a local optimum of what the search is after."""
    from policysearch.analysis.stats import paired_bootstrap
    from policysearch.channels.space import PlanSpace
    from policysearch.compression.pruning import distilled_accuracies

    example = torch.zeros(1, *full.input_shape)
    uniform = _uniform(args, teacher, full, target)
    space = PlanSpace(teacher, example, target, args.min_keep)
    counts = [uniform.kept()[g.name] for g in space.groups]
    plans: dict[str, Any] = {"uniform": uniform}
    for index, group in enumerate(space.groups):
        for sign, factor in (("x", args.neighbour_factor), ("/", 1 / args.neighbour_factor)):
            shifted = space.shifted_counts(counts, index, factor)
            if shifted[index] == counts[index]:
                continue  # the group is at its bound
            ratios = {g.name: c / g.channels for g, c in zip(space.groups, shifted)}
            plans[f"{group.name} {sign}{args.neighbour_factor:g}"] = _with_ratios(
                uniform, ratios, teacher, full, {"neighbour_of": "uniform", "group": group.name, "factor": factor})
    steps = _final_steps(args, full)
    seeds = [args.rerank_seed + s for s in range(args.neighbour_seeds)]
    wall = time.perf_counter()
    accs = dict(zip(plans, distilled_accuracies(list(plans.values()), teacher, full, steps, args.finetune_lr, seeds,
                                                split="val", workers=args.jobs)))
    rows = {}
    print(f"{target:g} FLOPs: uniform and its neighbours, {steps} distillation steps, validation, seeds {seeds}:",
          file=sys.stderr)
    for name, plan in plans.items():
        row = {"val_accuracy": accs[name], "mean": sum(accs[name]) / len(seeds), "ratios": plan.ratios,
               "kept": plan.kept(), "flops_fraction": plan.flops_fraction, "params_fraction": plan.params_fraction}
        if name != "uniform":
            row["minus_uniform"] = paired_bootstrap(accs[name], accs["uniform"])
        rows[name] = row
        diff = row.get("minus_uniform")
        print(f"  {name:22s} val {row['mean']:.4f} FLOPs {plan.flops_fraction:.3f} kept "
              f"{[row['kept'][g.name] for g in space.groups]}"
              + ("" if diff is None else f"  {100 * diff['mean']:+.2f} points vs uniform"), file=sys.stderr)
    better = [n for n, r in rows.items() if n != "uniform" and r["mean"] > rows["uniform"]["mean"]]
    return {"neighbours": rows, "neighbour_steps": steps, "neighbour_seeds": seeds,
            "neighbours_above_uniform": better, "groups": [g.name for g in space.groups],
            "wall_minutes": round((time.perf_counter() - wall) / 60, 2)}


def local_searches(args: argparse.Namespace, teacher: Any, full: Any, target: float) -> dict[str, Any]:
    """Compass searches from uniform against random search at equal candidates, both scored by the
    same distillation on the same batch orders; then the chosen plans on the final comparison."""
    from policysearch.compression.refine import DistilledScore, pick_confirmed, refine_plan
    from policysearch.policies.compress import CompressionPlan

    example = torch.zeros(1, *full.input_shape)
    uniform = _uniform(args, teacher, full, target)
    plans: dict[str, Any] = {"uniform": uniform}
    searches: dict[str, list[dict[str, Any]]] = {"local": [], "random": []}
    for k in range(args.first_search, args.first_search + args.searches):
        seeds = [args.rerank_seed + 100 * k + j for j in range(args.neighbour_seeds)]
        confirm = [s + 1000 for s in seeds]
        cpu, wall = time.process_time(), time.perf_counter()
        score = DistilledScore(teacher, full, args.local_steps, args.finetune_lr, args.jobs)  # shared: same seeds
        confirm_score = score.at(args.local_confirm_steps)  # shared by both arms' confirmations
        found = refine_plan(uniform, teacher, full, steps=args.local_steps, seeds=seeds, confirm_seeds=confirm,
                            factor=args.neighbour_factor, min_factor=args.local_min_factor, rounds=args.local_rounds,
                            min_keep=args.min_keep,
                            progress=lambda line, k=k: print(f"{target:g} local#{k}: {line}", file=sys.stderr),
                            score=score, confirm_score=confirm_score)
        plans[f"local#{k}"] = found.plan
        candidates = sum(len(r["candidates"]) for r in found.rounds)
        searches["local"].append({"search": k, "seeds": seeds, "confirm_seeds": confirm, "candidates": candidates,
                                  "chosen_is_uniform": found.plan.kept() == uniform.kept(),
                                  "wall_minutes": round((time.perf_counter() - wall) / 60, 2),
                                  "main_process_cpu_minutes": round((time.process_time() - cpu) / 60, 2),
                                  **found.summary()})
        # Random search with as many candidates, scored the same way (uniform's runs shared: same seeds).
        scorers = [score] if confirm_score is score else [score, confirm_score]
        wall = time.perf_counter()
        before, images_before = sum(c.distillations for c in scorers), sum(c.images for c in scorers)
        randoms = [CompressionPlan.random(teacher, example, flops_target=target, min_keep=args.min_keep,
                                          seed=10_000 * (k + 1) + i) for i in range(candidates)]
        pick = pick_confirmed(uniform, randoms, score, seeds, confirm, confirm_score)
        plans[f"random#{k}"] = randoms[pick["best"]] if pick["moved"] else uniform
        searches["random"].append({"search": k, "seeds": seeds, "confirm_seeds": confirm, "candidates": candidates,
                                   "uniform_val_accuracy": pick["current"], "accuracies": pick["accuracies"],
                                   "best_ratios": randoms[pick["best"]].ratios,
                                   "confirmation": pick.get("confirmation"), "chosen_is_uniform": not pick["moved"],
                                   "distillations": sum(c.distillations for c in scorers) - before,
                                   "images": sum(c.images for c in scorers) - images_before,
                                   "wall_minutes": round((time.perf_counter() - wall) / 60, 2)})
        print(f"{target:g} search {k}: local {found.start_val_accuracy:.4f} -> {found.val_accuracy:.4f} "
              f"({searches['local'][-1]['moves']} moves, {found.distillations} distillations); random: best of "
              f"{candidates} {max(pick['accuracies']):.4f} vs uniform {pick['current']:.4f}, "
              f"{'kept' if pick['moved'] else 'uniform kept'}", file=sys.stderr)
    from policysearch.files import write_json

    write_json(Path(args.out) / f"partial-{target:g}.json", {"target": target, "searches": searches})
    return {"searches": searches, **final_comparison(args, teacher, full, target, plans)}


def _uniform(args: argparse.Namespace, teacher: Any, full: Any, target: float) -> Any:
    """The uniform plan of `teacher` at FLOPs `target`: the baseline of every step."""
    from policysearch.policies.compress import CompressionPlan

    return CompressionPlan.uniform(teacher, torch.zeros(1, *full.input_shape), flops_target=target,
                                   min_keep=args.min_keep, model_name=args.teacher_model)


def _final_steps(args: argparse.Namespace, full: Any) -> int:
    """Steps of the final distillation (the last length of `--finetune-epochs`)."""
    return _distill_steps(float(str(args.finetune_epochs).split(",")[-1]), full)


def _distill_steps(epochs: float, full: Any) -> int:
    """Steps of a distillation `epochs` long at batch 128 (at least one)."""
    return max(1, round(epochs * (len(full.y_train) // 128)))


def final_comparison(args: argparse.Namespace, teacher: Any, full: Any, target: float,
                     plans: dict[str, Any]) -> dict[str, Any]:
    """Every plan distilled for each length in `--finetune-epochs` with `--seeds` paired seeds; test
    accuracy, drop from the teacher, paired bootstrap CIs against uniform (and against random search):
    over the seeds, and over the seeds and the scored images (`seeds_and_images`). Each run's per-image
    correctness is kept (`correct_bits`: base64 of `numpy.packbits`, in the split's order)."""
    from policysearch.compression.pruning import accuracy_of, distilled_correct, val_accuracy

    split = args.final_split
    teacher_acc = val_accuracy(teacher, full, split=split)
    first_seed = args.seed if args.first_final_seed is None else args.first_final_seed
    seeds = [first_seed + s for s in range(args.seeds)]
    lengths: dict[str, Any] = {}
    for epochs in [float(e) for e in str(args.finetune_epochs).split(",")]:
        steps = _distill_steps(epochs, full)
        wall = time.perf_counter()
        done = _reusable_runs(args, target, epochs, steps, seeds, split, plans,
                              len(full.y_test if split == "test" else full.y_val), teacher_acc)
        todo = [name for name in plans if name not in done]
        if todo:
            done.update(zip(todo, distilled_correct([plans[n] for n in todo], teacher, full, steps, args.finetune_lr,
                                                      seeds, split=split, workers=args.jobs)))
        correct = {name: done[name] for name in plans}
        finals = {name: [accuracy_of(c) for c in runs] for name, runs in correct.items()}
        results = {name: {f"{split}_accuracy": a, "mean": sum(a) / len(a),
                          "drop_points": 100 * (teacher_acc - sum(a) / len(a)),
                          "flops_fraction": plans[name].flops_fraction, "params_fraction": plans[name].params_fraction,
                          "ratios": plans[name].ratios, "correct_bits": [_packed(c) for c in correct[name]]}
                   for name, a in finals.items()}
        comparisons = {}
        for name in finals:
            if name == "uniform":
                continue
            comparisons[f"{name} - uniform"] = _compared(name, "uniform", finals, correct)
            base, _, k = name.partition("#")
            if base != "random" and f"random#{k}" in finals:
                comparisons[f"{name} - random#{k}"] = _compared(name, f"random#{k}", finals, correct)
        pooled = pooled_differences(finals)
        print(f"{target:g} FLOPs, {epochs:g} epochs of distillation ({steps} steps), {len(seeds)} seeds:",
              file=sys.stderr)
        for name, r in results.items():
            print(f"  {name:10s} {split} {r['mean']:.4f} drop {r['drop_points']:.2f} FLOPs "
                  f"{r['flops_fraction']:.3f} params {r['params_fraction']:.3f}", file=sys.stderr)
        for key, c in comparisons.items():
            images = c.get("seeds_and_images")
            print(f"  {key}: {100 * c['mean']:+.2f} points, 95 % CI [{100 * c['low']:+.2f}, "
                  f"{100 * c['high']:+.2f}] over seeds"
                  + ("" if images is None else f", [{100 * images['low']:+.2f}, {100 * images['high']:+.2f}] over "
                                               f"seeds and {images['images']} images"), file=sys.stderr)
        for key, c in pooled.items():
            print(f"  {key}: {100 * c['mean']:+.2f} points, 95 % CI [{100 * c['low']:+.2f}, {100 * c['high']:+.2f}] "
                  f"({c['searches']} searches x {c['seeds']} seeds)", file=sys.stderr)
        lengths[f"{epochs:g}"] = {"finetune_steps": steps, "seeds": seeds, "results": results,
                                  "paired_differences": comparisons, "pooled_differences": pooled,
                                  "wall_minutes": round((time.perf_counter() - wall) / 60, 2)}
        plot_final(lengths[f"{epochs:g}"], target, epochs, split, Path(args.out))
    first = next(iter(lengths.values()))
    # The first length's figures stay at the top level, where earlier result files keep them.
    return {f"teacher_{split}_accuracy": teacher_acc, "split": split, "finetune_steps": first["finetune_steps"],
            "seeds": args.seeds,
            "results": first["results"], "paired_differences": first["paired_differences"],
            "by_finetune_epochs": lengths}


def plot_final(length: dict[str, Any], target: float, epochs: float, split: str, out: Path) -> Path | None:
    """One final comparison as a figure, ``final-<target>-<epochs>ep.png`` in `out`: each plan's paired
    differences from uniform per seed, with the CIs over seeds and over seeds and images."""
    from policysearch.analysis.plots import plot_paired_differences

    results, compared = length["results"], length["paired_differences"]
    base = results["uniform"][f"{split}_accuracy"]
    rows = []
    for name, r in results.items():
        c = compared.get(f"{name} - uniform")
        if c is None:
            continue
        images = c.get("seeds_and_images")
        same = " = uniform" if r["ratios"] == results["uniform"]["ratios"] else ""
        rows.append({"label": f"{name} (drop {r['drop_points']:.2f}{same})",
                     "differences": [a - u for a, u in zip(r[f"{split}_accuracy"], base)], "ci": (c["low"], c["high"]),
                     "ci_images": None if images is None else (images["low"], images["high"])})
    if not rows:
        return None
    title = (f"{100 * target:g} % FLOPs, {epochs:g} epochs of distillation: − uniform "
             f"(drop {results['uniform']['drop_points']:.2f})")
    return plot_paired_differences(rows, out / f"final-{target:g}-{epochs:g}ep.png", title=title,
                                   note=f"{split} split, drop in points from the teacher")


def plot_record(path: str, out: Path) -> list[Path]:
    """`--steps plot`: the figure of every final comparison in a benchmark record, nothing retrained."""
    record = json.loads(Path(path).read_text())
    written = []
    for target, entry in record.get("targets", {}).items():
        split = entry.get("split", "test")
        for epochs, length in entry.get("by_finetune_epochs", {}).items():
            png = plot_final(length, float(target), float(epochs), split, out)
            if png is not None:
                written.append(png)
    return written


def _reusable_runs(args: argparse.Namespace, target: float, epochs: float, steps: int, seeds: list[int], split: str,
                   plans: dict[str, Any], images: int, teacher_acc: float) -> dict[str, list[Any]]:
    """`--reuse-final`: the per-image results of plans (same kept channels) that the earlier record
    distilled with the same teacher, seeds, steps, learning rate and split; {} without the option."""
    import dataclasses

    from policysearch.errors import ConfigError

    if not args.reuse_final:
        return {}
    record = json.loads(Path(args.reuse_final).read_text())
    settings, at = record.get("settings", {}), record.get("targets", {}).get(f"{target:g}", {})
    same = {"teacher": at.get(f"teacher_{split}_accuracy") == teacher_acc,  # another teacher scores otherwise
            "finetune_lr": settings.get("finetune_lr") == args.finetune_lr,
            "split": settings.get("final_split", "test") == split}
    if not all(same.values()):
        raise ConfigError(f"--reuse-final {args.reuse_final}: other settings ({[k for k, v in same.items() if not v]}; "
                          f"teacher {split} accuracy {teacher_acc} here, {at.get(f'teacher_{split}_accuracy')} there)")
    length = at.get("by_finetune_epochs", {}).get(f"{epochs:g}")
    if not length or length["finetune_steps"] != steps or length["seeds"][:len(seeds)] != seeds:
        return {}
    some = next(iter(plans.values()))
    by_kept = {tuple(sorted(dataclasses.replace(some, ratios=row["ratios"]).kept().items())):
               row["correct_bits"][:len(seeds)]
               for row in length["results"].values() if None not in row["correct_bits"][:len(seeds)]}
    reused = {}
    for name, plan in plans.items():
        bits = by_kept.get(tuple(sorted(plan.kept().items())))
        if bits is not None:
            reused[name] = [_unpacked(b, images) for b in bits]
    if reused:
        print(f"  reusing the final runs of {sorted(reused)} from {args.reuse_final}", file=sys.stderr)
    return reused


def _compared(name: str, other: str, finals: dict[str, list[float]], correct: dict[str, list[Any]]) -> dict[str, Any]:
    """`name` - `other` over the paired seeds, and (when no run diverged) over the seeds and the images."""
    from policysearch.analysis.stats import paired_bootstrap, seeds_and_images

    out: dict[str, Any] = paired_bootstrap(finals[name], finals[other])
    if all(c is not None for c in (*correct[name], *correct[other])):
        out["seeds_and_images"] = seeds_and_images(correct[name], correct[other])
    return out


def _packed(correct: Any) -> str | None:
    """One run's per-image correctness as base64 of `numpy.packbits` (None: the run diverged)."""
    import base64

    import numpy as np

    return None if correct is None else base64.b64encode(np.packbits(correct).tobytes()).decode("ascii")


def _unpacked(bits: str, images: int) -> Any:
    """`_packed` undone: one run's per-image correctness, `images` booleans."""
    import base64

    import numpy as np

    return np.unpackbits(np.frombuffer(base64.b64decode(bits), dtype=np.uint8))[:images].astype(bool)


def pooled_differences(finals: dict[str, list[float]]) -> dict[str, Any]:
    """Each controller over its independent searches (``name#k``), pooled by a nested bootstrap (searches,
    then paired seeds): against uniform, and against random search (search k paired with search k)."""
    from policysearch.analysis.stats import nested_bootstrap

    by_controller: dict[str, list[list[float]]] = {}
    for name, accs in finals.items():
        base, _, k = name.partition("#")
        if k:
            by_controller.setdefault(base, []).append(accs)
    pooled = {}
    for base, rows in by_controller.items():
        if len(rows) < 2:
            continue
        pooled[f"{base} (pooled) - uniform"] = nested_bootstrap(
            [[a - u for a, u in zip(row, finals["uniform"])] for row in rows])
        others = by_controller.get("random", [])
        if base != "random" and len(others) >= 2:
            pooled[f"{base} (pooled) - random (pooled)"] = nested_bootstrap(
                [[a - r for a, r in zip(row, other)] for row, other in zip(rows, others)])
    return pooled


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    import policysearch  # noqa: F401  (registers the envs)
    from policysearch.data import load_dataset, prepare
    from policysearch.files import write_json

    steps = set(args.steps.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if steps == {"plot"}:
        written = plot_record(args.plans_from, out)
        print(json.dumps({"benchmark": "compress", "plots": [str(p) for p in written]}))
        return 0
    full = prepare(load_dataset(args.dataset), val_size=0.1, seed=args.seed, device="cpu")
    teacher, teacher_info = get_teacher(args, full)
    print(f"teacher: {teacher_info}", file=sys.stderr)
    targets = [float(t) for t in args.targets.split(",") if t]
    record: dict[str, Any] = {"benchmark": "compress", "dataset": args.dataset, "teacher_model": args.teacher_model,
                              "teacher": teacher_info, "command": " ".join(sys.argv), "settings": vars(args)}
    if "correlation" in steps:
        record["correlation"] = correlation(args, teacher, full, targets[0])
    if "search" in steps:
        record["targets"] = {f"{t:g}": search(args, teacher, full, t) for t in targets}
    elif "neighbours" in steps:
        record["targets"] = {f"{t:g}": neighbours(args, teacher, full, t) for t in targets}
    elif "local" in steps:
        record["targets"] = {f"{t:g}": local_searches(args, teacher, full, t) for t in targets}
    elif "duel" in steps:
        record["targets"] = {f"{t:g}": duel(args, teacher, full, t) for t in targets}
    elif "final" in steps:
        record["targets"] = {
            f"{t:g}": final_comparison(args, teacher, full, t, plans_from(args.plans_from, teacher, full, t,
                                                                           args.min_keep, args.teacher_model))
            for t in targets}
    write_json(out / "benchmark.json", record)
    print(json.dumps(record, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
