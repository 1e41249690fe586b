"""Commands that search: `augment`, `schedule`, `compress`, and `demo` (a search, then a comparison).

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

from policysearch.cli.arguments import (
    budget,
    child_kwargs,
    data_name,
    data_option,
    emit_json,
    input_normalization,
    parallel_kwargs,
    prepare_data,
    show_progress,
    train_config,
)
from policysearch.errors import ConfigError, PolicySearchError

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
                rerank_seeds=args.rerank_seeds, seeds=args.seeds, compare=not args.no_compare, out=out,
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


def load_teacher(path: str, trust_pickle: bool) -> tuple[Any, str | None, dict[str, Any]]:
    """The teacher module, its model name (None for a pickled module) and checkpoint info."""
    import torch

    from policysearch.checks import check_tensors
    from policysearch.errors import PolicyFormatError
    from policysearch.imports import first_line
    from policysearch.train.checkpoint import load_checkpoint

    try:
        ckpt = load_checkpoint(path)
        return ckpt.build(), ckpt.model_name, {**ckpt.info, "input_shape": ckpt.input_shape}
    except PolicyFormatError:
        if not trust_pickle:
            raise
    print(f"warning: loading {path} as a pickled module runs code stored in the file; "
          "do this only for files you trust", file=sys.stderr)
    try:
        module = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a corrupt file fails in many ways; say which file and why, in one line
        hint = (" (the module that defines the model's class must be importable: run from its folder or install "
                "it)" if isinstance(exc, (ModuleNotFoundError, AttributeError)) else "")
        raise PolicyFormatError(f"{path}: cannot be read as a pickled module ({type(exc).__name__}: "
                                f"{first_line(exc)}){hint}") from None
    if not isinstance(module, torch.nn.Module):
        raise PolicySearchError(f"{path}: holds a {type(module).__name__}, expected a torch.nn.Module")
    check_tensors(path, module.state_dict())  # finite weights, before any work
    return module, None, {}


def _compress_teacher(args: argparse.Namespace) -> tuple[Any, str | None, dict[str, Any], str]:
    """What ``--checkpoint`` or ``--model`` with ``--weights`` name, checked before any data is loaded:
    the checkpoint's module (None for --model: it is built for the data), its model name, the
    checkpoint's info, and how messages name the teacher."""
    if args.checkpoint and (args.model or args.weights):
        raise ConfigError("the teacher is --checkpoint FILE, or --model with --weights: not both")
    if not args.checkpoint and not (args.model and args.weights):
        raise ConfigError("name the teacher: --checkpoint FILE (from `policysearch train --save`), or your own "
                          "network as --model MODEL --weights FILE (a state dict)")
    if not args.checkpoint:
        from policysearch.models import resolve_model
        from policysearch.models.weights import read_weights

        read_weights(args.weights)  # a bad file fails before the data is loaded
        return None, resolve_model(args.model).name, {}, f"--model {args.model} --weights {args.weights}"
    teacher, model_name, info = load_teacher(args.checkpoint, args.trust_pickle)
    return teacher, model_name, info, f"--checkpoint {args.checkpoint}"


def _teacher_on_data(args: argparse.Namespace, teacher: Any, model_name: str | None, info: dict[str, Any],
                     what: str) -> tuple[Any, Any]:
    """The data, normalised as the teacher expects, and the teacher checked against it."""
    from policysearch.compression.teacher import check_teacher
    from policysearch.models.weights import recorded_normalization

    if teacher is None:  # --model with --weights: normalised as the file records, or as --normalize says
        from policysearch.models import build_model
        from policysearch.models.weights import load_weights

        data = prepare_data(args)
        teacher = build_model(model_name, data.input_shape, data.num_classes)
        load_weights(teacher, args.weights)
    else:
        # A policysearch checkpoint that records nothing was trained standardized (the only way there
        # was); a pickled module (no model name) says nothing about its inputs.
        recorded = recorded_normalization(info)
        if recorded is None and model_name is None and args.normalize is None:
            raise ConfigError(f"{what} is a pickled module: it does not record how it expects its inputs; pass "
                              "--normalize none (raw [0, 1] pixels), standardize (the data's per-channel mean and "
                              "std), imagenet, or MEAN,STD")
        dataset = args.dataset or (info.get("dataset") or {}).get("name") or "digits"
        data = prepare_data(args, dataset, input_normalization(args, recorded, what))
        shape = info.get("input_shape")
        if shape is not None and tuple(shape) != tuple(data.input_shape):
            raise ConfigError(f"{data_option(args)} has images of shape {tuple(data.input_shape)}, but the teacher "
                              f"{args.checkpoint} takes {tuple(shape)}; pass the data it was trained on")
    check_teacher(teacher, data, what)
    return teacher, data


def cmd_compress(args: argparse.Namespace) -> int:
    import dataclasses

    import gymnasium as gym

    from policysearch.analysis.report import format_table
    from policysearch.compression.distill import finish
    from policysearch.files import write_json
    from policysearch.search.controllers.registry import controller_info
    from policysearch.train.checkpoint import save_checkpoint

    teacher, model_name, info, what = _compress_teacher(args)
    named = args.dataset or (info.get("dataset") or {}).get("name") or "digits"
    out = out_dir(args, "compress", data_name(args) if args.data else named)
    teacher, data = _teacher_on_data(args, teacher, model_name, info, what)
    searches_plans = controller_info(args.controller).drives == "plan"
    student = report = None
    if searches_plans:  # the protocol: from the uniform plan, chosen on validation, compared on test
        from policysearch.protocol.compress import compress_model

        protocol = compress_model(
            teacher, data, flops=args.flops, params=args.params, latency=args.latency,
            latency_batch=args.latency_batch, min_keep=args.min_keep, criterion=args.criterion, model_name=model_name,
            effort=args.effort, controller=args.controller, seeds=args.seeds, compass=_compass_options(args),
            finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr, batch_size=args.batch_size,
            compare=not args.no_compare, workers=args.workers, seed=args.seed, say=print)
        plan, student, report = protocol.artefact, protocol.student, protocol.report
        out.mkdir(parents=True, exist_ok=True)
        plan.save(out / "plan.json")
        if protocol.comparison is not None:
            print(format_table(protocol.table()))
        print(protocol.verdict["line"])
        summary_base: dict[str, Any] = {"controller": args.controller, "files": {"artefact": "plan.json"},
                                        "protocol": protocol.to_dict(), **protocol.search}
    else:
        _, result = search_command(
            args, data, lambda d: gym.make(
                "policysearch/Compress-v0", teacher=teacher, model_name=model_name, data=d, flops_target=args.flops,
                params_target=args.params, latency_target=args.latency, latency_batch=args.latency_batch,
                proxy=args.proxy, bn_batches=args.bn_batches, val_images=args.val_images,
                min_keep=args.min_keep, criterion=args.criterion, finetune_steps=args.finetune_steps,
                device=args.device, finetune_lr=args.finetune_lr, reward=args.reward, batch_size=args.batch_size,
                child_seed=args.child_seed),
            out, "plan.json")
        if result.summary["stopped_by"]:
            return EXIT_INTERRUPTED  # the plan so far is in the run folder; the final distillation waits
        plan = result.artefact
        summary_base = dict(result.summary)
        if args.rerank_top > 1:
            from policysearch.compression.pruning import rerank, top_plans

            candidates = top_plans(result.episodes, args.rerank_top)
            print(f"re-ranking {len(candidates)} plans (the {args.rerank_top} best by the proxy, plus uniform if not "
                  f"among them) by {args.rerank_steps} distillation steps each ...")
            # Scored on the whole validation split, not the proxy's --val-images slice: at 1,000 images
            # the standard error (about 0.9 points at 91 %) exceeds the gaps between the best plans.
            ranked = rerank(candidates, teacher, data, args.rerank_steps, args.finetune_lr, seed=args.seed,
                            batch_size=args.batch_size)
            print(format_table([{"search rank": r["index"] + 1, "val accuracy": r["val_accuracy"],
                                 "FLOPs": r["plan"].flops_fraction, "params": r["plan"].params_fraction}
                                for r in ranked]))
            best = ranked[0]
            plan = dataclasses.replace(best["plan"], provenance={
                **plan.provenance, "reranked": {"search_rank": best["index"] + 1, "steps": args.rerank_steps,
                                                "val_accuracy": best["val_accuracy"], "candidates": len(ranked)}})
            plan.save(out / "plan.json")
            summary_base["rerank"] = [{"search_rank": r["index"] + 1, "val_accuracy": r["val_accuracy"]}
                                      for r in ranked]
    if student is None or report is None:
        print(f"best plan keeps {plan.flops_fraction:.3f} of the FLOPs ({args.flops:g} asked); distilling it for "
              f"{args.finetune_epochs:g} epochs ...")
        student, report = finish(plan, teacher, data, args.finetune_epochs, args.finetune_lr, seed=args.seed,
                                 batch_size=args.batch_size)
    rows = []
    for key, label in (("test_accuracy", "test accuracy"), ("test_macro_f1", "test macro F1"), ("flops", "FLOPs"),
                       ("params", "parameters"), ("file_bytes", "file bytes"),
                       ("latency_ms_batch1", "CPU ms, batch 1"), ("latency_ms_batch64", "CPU ms, batch 64")):
        t, st = report["teacher"][key], report["student"][key]
        rows.append({"": label, "teacher": t, "student": st, "student / teacher": st / t if t else float("nan")})
    print(format_table(rows))
    print(f"test accuracy drop: {report['accuracy_drop_points']:.2f} points")
    save_checkpoint(out / "model.pt", student, model_name or type(teacher).__name__, data.input_shape,
                    data.num_classes, {"dataset": data.describe(), "plan": plan.to_dict(), "comparison": report})
    summary = {**summary_base, "comparison": report, "files": {**summary_base["files"], "model": "model.pt"}}
    write_json(out / "summary.json", summary)
    print(f"wrote {out}/: plan.json, model.pt, summary.json"
          + ("" if searches_plans else ", episodes.jsonl, search.png"))
    if model_name is not None:
        print(f"load it: policysearch.train.checkpoint.load_checkpoint('{out / 'model.pt'}').build()")
    else:  # a user's own architecture: policysearch cannot rebuild it by name
        print(f"load it: student = CompressionPlan.load('{out / 'plan.json'}').apply(your_model, example_batch); "
              f"student.load_state_dict(torch.load('{out / 'model.pt'}', weights_only=True)['state_dict'])")
    if args.json:
        emit_json(summary)
    return 0


def _compass_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--local-*`` options given (the others come from --effort), for the compass search."""
    if args.controller != "local":
        return {}
    given = {"steps": args.local_steps, "seeds": args.local_seeds, "confirm_seeds": args.local_confirm_seeds,
             "confirm_steps": args.local_confirm_steps, "factor": args.local_factor, "rounds": args.local_rounds}
    return {k: v for k, v in given.items() if v is not None}


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
