"""Commands that search: `augment`, `schedule`, and `demo` (a search, then a comparison).

`compress` lives in `compressing`; it shares `search_command` and `out_dir` from here.

Each goes through `search_command`: check the output folder, prepare the data, make the env, run
the search within its budget, print the report. Every option is checked before the data is
loaded; nothing is written before the search starts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from policysearch.cli.options import (
    budget,
    child_kwargs,
    data_name,
    data_option,
    emit_json,
    parallel_kwargs,
    prepare_data,
    show_progress,
    train_config,
)
from policysearch.errors import ConfigError

EXIT_INTERRUPTED = 130  # stopped by SIGINT / SIGTERM: the run folder is consistent and resumable
DEMO_POPULATION = 8  # pbt members in the demo (policysearch.search.controllers.pbt.DEFAULT_POPULATION's reasoning)


def out_dir(args: argparse.Namespace, command: str, dataset: str, run: str = "") -> Path:
    """The run folder: ``--out``, or ``runs/<command>-<dataset>-<controller>``; checked, not created.
    An existing run in it (in its sub-folder `run`) needs ``--resume`` or ``--overwrite``."""
    from policysearch.files import check_output_dir
    from policysearch.search.runstore import check_run_folder

    out = check_output_dir(args.out or f"runs/{command}-{dataset}-{args.controller}", "--out")
    check_run_folder(out / run, args.resume, args.overwrite)
    args.run_folder = out / run  # for the resume hint of an interrupted command
    return out


def search_report(result: Any) -> None:
    from policysearch.analysis.report import format_table

    s = result.summary
    print(format_table([{
        "controller": s["controller"], "episodes": s["episodes"], "child trainings": s["child_trainings"],
        "best val metric": s["best"]["val_metric"], "best episode": s["best"]["episode"],
        "wall s": s["wall_seconds"], "train TFLOPs": s["train_flops"] / 1e12,
        f"kWh ({s['energy_source']})": s["energy_kwh"], "kg CO2e": s["co2e_kg"],
        "diverged": s["diverged_episodes"],
    }]))


def search_command(args: argparse.Namespace, data: Any, make_env: Callable[[Any], Any], out: Path,
                   artefact_name: str, budget_override: Any = None) -> tuple[Any, Any]:
    """Make the env on `data`, search until the budget is spent, print the report; (env, result)."""
    from policysearch.cli.tracking import command_tracker
    from policysearch.search.driver import run_search

    env = make_env(data)
    result = run_search(env, args.controller, budget_override or budget(args), out, seed=args.seed,
                        progress=show_progress(args), tensorboard=args.tensorboard or False,
                        artefact_name=artefact_name, resume=args.resume, overwrite=args.overwrite,
                        tracker=command_tracker(args, out), objectives=args.objectives, **parallel_kwargs(args))
    search_report(result)
    return env, result


def augment_env_factory(args: argparse.Namespace, steps_per_segment: int | None = None) -> Callable[[Any], Any]:
    """Augment-v1 on given data, as the options describe (`steps_per_segment` overrides the option)."""
    import gymnasium as gym

    def make(data: Any) -> Any:
        kwargs = child_kwargs(args)
        if steps_per_segment is not None:
            kwargs["steps_per_segment"] = steps_per_segment
        return gym.make("policysearch/Augment-v1", data=data, ops=tuple(args.ops) if args.ops else None,
                        ops_per_sample=args.ops_per_sample, magnitude_scale=args.magnitude_scale, mode=args.mode,
                        lr_schedule=args.schedule, space=args.space, **kwargs)
    return make


def _check_augment_options(args: argparse.Namespace) -> None:
    """What the parser cannot check alone: op names, the search space and the child's schedule name."""
    from policysearch.envs.augment import AugmentEnv
    from policysearch.policies.augment import OPS, TRIVIAL_OPS
    from policysearch.policies.schedule import load_schedule

    for op in args.ops or ():
        if op not in OPS:
            from policysearch.errors import UnknownNameError

            raise UnknownNameError("augmentation op", op, OPS)
    AugmentEnv._make_space(args.space, tuple(args.ops or TRIVIAL_OPS), args.ops_per_sample, args.magnitude_scale)
    load_schedule(args.schedule, base_lr=train_config(args).lr)


def cmd_augment(args: argparse.Namespace) -> int:
    _check_augment_options(args)
    if _search_only(args, "augment"):
        out = out_dir(args, "augment", data_name(args))
        data = prepare_data(args)
        _, result = search_command(args, data, augment_env_factory(args), out, "policy.json")
        print(f"policy: {result.artefact.describe()}")
        print(f"wrote {out}/: {', '.join(v for v in result.summary['files'].values() if v)}, summary.json")
        print(f"use it: policysearch train {data_option(args)} --augment {out / 'policy.json'}")
        if args.json:
            emit_json(result.summary)
        return EXIT_INTERRUPTED if result.summary["stopped_by"] else 0
    from policysearch.protocol.jobs import find_augmentation

    out = out_dir(args, "augment", data_name(args), run="search")
    data = prepare_data(args)
    result = find_augmentation(
        data, config=train_config(args), epochs=args.epochs, schedule=args.schedule, segments=args.episode_length,
        space=args.space, reward_metric=args.reward_metric, baselines=args.baselines,
        env_options={"ops": tuple(args.ops) if args.ops else None, "ops_per_sample": args.ops_per_sample,
                     "magnitude_scale": args.magnitude_scale, "cost_weight": args.cost_weight,
                     "cost_metric": args.cost_metric},
        **_protocol_kwargs(args, out))
    return _protocol_report(args, result, out, f"--augment {out / 'policy.json'}")


def _search_only(args: argparse.Namespace, job: str) -> bool:
    """Whether this run is the search alone (``--search-only``, or what the protocol does not cover:
    static mode, several objectives, a task distribution, absolute LRs); the protocol's controller and
    budget come from --effort, a search alone keeps the search's own defaults (ppo, 20 children)."""
    from policysearch.protocol.effort import plan_for

    alone = bool(args.search_only or getattr(args, "mode", "schedule") == "static"
                 or getattr(args, "objectives", None) or getattr(args, "tasks", None)
                 or getattr(args, "base", None) == "none")
    plan = plan_for(job, args.effort)
    args.controller = args.controller or ("ppo" if alone else plan.controller)
    args.budget = args.budget or (20 if alone else plan.budget)
    if not alone and getattr(args, "steps_per_segment", None) is not None:
        raise ConfigError("--steps-per-segment is set by --epochs and --episode-length when the command runs the "
                          "whole protocol; drop it, or add --search-only")
    return alone


def _protocol_kwargs(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    return dict(effort=args.effort, controller=args.controller, budget=args.budget, top=args.top,
                rerank_seeds=args.rerank_seeds, seeds=args.seeds, decision_seeds=args.decision_seeds,
                decision_confidence=args.decision_confidence, compare=not args.no_compare, held_out=args.held_out,
                out=out,
                resume=args.resume, overwrite=args.overwrite, workers=args.workers, seed=args.seed,
                budget_seconds=args.budget_time, progress=show_progress(args), say=print)


def _protocol_report(args: argparse.Namespace, result: Any, out: Path, use: str) -> int:
    result.report(print)
    files = ", ".join(f for f in (result.artefact_name, "protocol.json", "comparison.png", "trainings.jsonl")
                      if (out / f).exists())
    print(f"wrote {out}/: {files}, search/")
    print(f"use it: policysearch train {data_option(args)} {use}")
    if args.json:
        emit_json(result.to_dict())
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from policysearch.analysis.plots import plot_schedules
    from policysearch.policies.augment import load_policy

    if not args.lr_min < args.lr_max:
        raise ConfigError(f"--lr-min is {args.lr_min:g} and --lr-max {args.lr_max:g}, expected lr-min < lr-max")
    load_policy(args.augment)
    tasks = None
    if args.tasks is not None:
        from policysearch.envs.schedule_tasks import TaskSampler

        tasks = TaskSampler.parse(args.tasks)  # refused now, before anything is prepared
        if args.base == "none":
            raise ConfigError("--tasks needs residual actions: --base onecycle or linear, not none")
        if args.steps_per_segment is not None:
            raise ConfigError("--tasks sets the segments' length from each task's epochs: drop --steps-per-segment")
    if args.peak != "default" and args.base == "none":
        raise ConfigError(f"--peak {args.peak} needs a base schedule: --base onecycle or linear, not none")
    if args.paired_reward and args.base == "none":
        raise ConfigError("--paired-reward needs a base schedule: --base onecycle or linear, not none")
    search_only = _search_only(args, "schedule")
    if args.episode_length is None:  # the protocol searches the peak (one segment); a search alone, 4 segments
        args.episode_length = 4 if search_only else 1
    if not search_only:
        from policysearch.protocol.jobs import find_schedule

        if args.lr is not None:
            raise ConfigError("--lr: the schedule search and the hand-made baselines peak at the model's default LR; "
                              "drop --lr (the searched factor scales it)")
        out = out_dir(args, "schedule", data_name(args), run="search")
        data = prepare_data(args)
        result = find_schedule(
            data, config=train_config(args), epochs=args.epochs, augment=args.augment, segments=args.episode_length,
            base=args.base, scale=args.scale, reward_metric=args.reward_metric, baselines=args.baselines,
            env_options={"peak": args.peak, "reward": "vs-base" if args.paired_reward else "gain",
                         "cost_weight": args.cost_weight, "cost_metric": args.cost_metric},
            **_protocol_kwargs(args, out))
        return _protocol_report(args, result, out, f"--schedule {out / 'schedule.json'}")
    out = out_dir(args, "schedule", "tasks" if tasks else data_name(args))
    data = prepare_data(args) if tasks is None else None
    kwargs = child_kwargs(args)
    del kwargs["lr"]  # the searched quantity: Schedule-v1 sets it
    if tasks is not None:
        for key in ("model", "batch_size", "weight_decay", "optimizer"):  # each task sets them
            del kwargs[key]
    if args.base == "none":
        env_id, space = "policysearch/Schedule-v0", {"lr_min": args.lr_min, "lr_max": args.lr_max}
    else:
        env_id, space = "policysearch/Schedule-v1", {"base": args.base, "scale": args.scale, "tasks": tasks,
                                                     "reward": "vs-base" if args.paired_reward else "gain",
                                                     "peak": args.peak}
    env, result = search_command(
        args, data, lambda d: gym.make(env_id, data=d, augment=args.augment, **space, **kwargs),
        out, "schedule.json")
    data = env.unwrapped.data
    # The env wrote the closed-loop export (controller.json) for an SB3 controller.
    closed_loop = result.summary["files"].get("closed_loop")
    files = [v for v in result.summary["files"].values() if v]
    base_lr = env.unwrapped.config.lr  # what `train` would use with a hand-made schedule
    where = "a task distribution" if tasks else f"{data.name} ({args.model})"
    png = plot_schedules(result.artefact, base_lr, out / "schedule.png", title=f"learned on {where}")
    if png:
        files.append(png.name)
    segments = args.episode_length
    lrs = ", ".join(f"{lr:.3g}" for lr in result.artefact.lrs([i / segments for i in range(segments)]))
    print(f"learned LRs per segment: {lrs}")
    print(f"wrote {out}/: {', '.join(files)}, summary.json")
    print(f"use it: policysearch train {data_option(args)} --schedule {out / 'schedule.json'}"
          + (f"  (closed loop: --schedule {out / closed_loop})" if closed_loop else ""))
    if args.json:
        emit_json(result.summary)
    return EXIT_INTERRUPTED if result.summary["stopped_by"] else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from policysearch.analysis.compare import compare, comparison_rows
    from policysearch.analysis.plots import plot_comparison
    from policysearch.analysis.report import format_table
    from policysearch.cli.training import check_policies
    from policysearch.files import write_json

    config = train_config(args)
    if args.controller == "pbt" and args.population is None and args.backend == "local":
        args.population = max(DEMO_POPULATION, args.workers)  # over --workers processes, 4 members each by default
    check_policies(args.baselines, [args.schedule], config.lr)  # refused now, not after the search
    _check_augment_options(args)
    out = out_dir(args, "demo", data_name(args), run="search")
    data = prepare_data(args)
    print(f"1/2 searching an augmentation policy for {data.name} ({len(data.y_train)} train / {len(data.y_val)} val "
          f"images) with {args.controller}, {args.budget} child trainings of {args.search_epochs:g} epochs")
    steps_per_epoch = max(1, len(data.y_train) // args.batch_size)
    steps_per_segment = max(1, round(args.search_epochs * steps_per_epoch / args.episode_length))
    _, result = search_command(args, data, augment_env_factory(args, steps_per_segment), out / "search",
                               "policy.json")
    if result.summary["stopped_by"]:
        return EXIT_INTERRUPTED
    policy_path = out / "search" / "policy.json"
    print(f"2/2 evaluating the learned policy against {', '.join(args.baselines)}: {args.seeds} seeds x "
          f"{args.epochs:g} epochs each, scored on the {len(data.y_test)} held-out test images")
    seeds = list(range(args.seed, args.seed + args.seeds))
    entries = compare(data, config, [str(policy_path), *args.baselines], [args.schedule], seeds, args.epochs,
                      progress=show_progress(args), workers=args.workers, threads_per_worker=args.threads_per_worker)
    entries[0]["augment"] = "learned"
    print(format_table(comparison_rows(entries)))
    png = plot_comparison(entries, out / "comparison.png", title=f"{data.name}: learned policy vs baselines",
                          note=f"{len(data.y_test)} test images, {config.model}")
    verdict = _demo_verdict(entries, seeds)
    if verdict:
        print(verdict["line"])
    write_json(out / "comparison.json", {"command": args.command_line,
                                         "dataset": data.describe(), "search": result.summary, "verdict": verdict,
                                         "results": entries})
    print(f"wrote {out}/: search/ (policy.json, episodes.jsonl, summary.json, controller, search.png), "
          f"comparison.json{', comparison.png' if png else ''}")
    if args.json:
        emit_json({"search": result.summary, "results": entries})
    return 0


def _demo_verdict(entries: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any] | None:
    """The learned policy minus the best baseline on mean test accuracy, with a paired bootstrap CI
    when every seed of both finished (the same seeds: initial weights and data order are paired)."""
    from policysearch.analysis.stats import paired_bootstrap

    if len(entries) < 2:
        return None
    learned = entries[0]["test"]["accuracy"]["mean"]
    best = max(entries[1:], key=lambda e: e["test"]["accuracy"]["mean"])
    beats = bool(learned > best["test"]["accuracy"]["mean"])
    verdict: dict[str, Any] = {"best_baseline": best["augment"], "beats": beats}
    line = (f"the learned policy {'beats' if beats else 'does not beat'} the best baseline "
            f"({best['augment']}) on mean test accuracy")
    per_seed = [[(run.get("test") or {}).get("accuracy") for run in e["runs"]] for e in (entries[0], best)]
    if len(seeds) >= 2 and all(len(v) == len(seeds) and None not in v for v in per_seed):  # a diverged run: no pair
        d = paired_bootstrap(*per_seed)
        verdict["difference_points"] = {k: 100 * d[k] for k in ("mean", "low", "high")} | {"n": d["n"]}
        line += (f"; learned minus {best['augment']}: {100 * d['mean']:+.2f} points, 95 % bootstrap CI "
                 f"[{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] over {d['n']} paired seeds")
    verdict["line"] = line
    return verdict


def cmd_peak_rule(args: argparse.Namespace) -> int:
    """Learn a peak rule over a task distribution (`policysearch.contrib.peak_rule_search`)."""
    from policysearch.analysis.report import format_table
    from policysearch.contrib.peak_rule_search import learn_peak_rule
    from policysearch.envs.schedule_tasks import TaskSampler

    sampler = TaskSampler.parse(args.tasks)  # refused now, before anything runs
    factors = tuple(float(f) for f in args.factors)
    rule, summary = learn_peak_rule(
        sampler, args.n_tasks, args.out, seed=args.seed, base=args.base, factors=factors, workers=args.workers,
        threads=args.threads_per_worker, data_dir=args.data_dir, resume=args.resume, overwrite=args.overwrite,
        progress=show_progress(args))
    fit = summary["fit"]
    names = [f"x{f:.3g}" for f in rule.factors]
    rows = [{"pair": pair, **{f"gain {n}": g for n, g in zip(names, gains)},
             **{f"chose {n}": c for n, c in zip(names, fit["choices_by_pair"][pair])}}
            for pair, gains in fit["mean_gain_per_factor_by_pair"].items()]
    print(format_table(rows), file=sys.stderr if args.json else sys.stdout)
    cv = {str(c["penalty"]): round(c["value"], 3) for c in fit["cross_validation"]}
    pairs = {str(c["penalty"]): round(c["value"], 3) for c in fit["cross_validation_by_pair"]}
    lines = [f"{summary['tasks_trained']} tasks x {len(rule.factors)} factors = {summary['child_trainings']} "
             f"trainings, {summary['train_tflops']} TFLOPs, {summary['child_seconds'] / 60:.1f} child-minutes",
             f"gain over factor 1 (points), 5-fold CV by penalty: {cv}",
             f"leave-one-pair-out CV: {pairs}",
             f"chosen penalty {fit['penalty']}; in-sample gain {fit['in_sample_gain']:+.3f}",
             f"wrote {args.out}/rule.json; use it: policysearch train --schedule {args.out}/rule.json"]
    print("\n".join(lines), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        emit_json({k: v for k, v in summary.items() if k != "rows"})
    return 0
