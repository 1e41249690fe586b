"""Commands that train and compare without searching: `train`, `evaluate`, `datasets`, `models`."""

from __future__ import annotations

import argparse
import sys

from policysearch.cli.options import emit_json, prepare_data, show_progress, train_config
from policysearch.cli.tracking import command_tracker

EXIT_DIVERGED = 3


def check_zero_epochs(args: argparse.Namespace) -> None:
    """``--epochs 0`` scores a trained model: it needs ``--weights``."""
    if args.epochs == 0 and not args.weights:
        from policysearch.errors import ConfigError

        raise ConfigError("--epochs 0 scores the model as it is: give its trained weights with --weights FILE")


def cmd_train(args: argparse.Namespace) -> int:
    from policysearch.analysis.compare import policy_label, robustness_settings
    from policysearch.analysis.report import format_table
    from policysearch.files import check_output_file
    from policysearch.policies.adaptive import resolve_schedule
    from policysearch.policies.augment import load_policy
    from policysearch.policies.schedule_kinds import OPEN_LOOP, schedule_kind
    from policysearch.train.checkpoint import save_checkpoint
    from policysearch.train.energy import EnergyMeter
    from policysearch.train.recipe import train_run

    # Everything that can be refused is refused before the data is loaded and the model trained.
    if args.save:
        check_output_file(args.save, "--save")
    check_zero_epochs(args)
    config = train_config(args, seed=args.seed)
    policy = load_policy(args.augment)
    schedule = resolve_schedule(args.schedule, base_lr=config.lr, trust_pickle=args.trust_pickle)
    data = prepare_data(args)
    tracker = command_tracker(args, artefacts=(args.save, args.augment, args.schedule))
    with EnergyMeter(data.device) as meter:
        result = train_run(data, config, args.epochs, policy, schedule, progress=show_progress(args),
                           tracker=tracker, peak=args.peak)
    cost = {**result.cost, **meter.stop()}
    if args.robustness is not None and not result.diverged:
        from policysearch.train.robustness import attack_accuracy

        result.test.update(attack_accuracy(result.model, data, "test", args.robustness, seed=args.seed))
    rows = [{"split": split, **metrics} for split, metrics in (("val", result.val), ("test", result.test))]
    augment = policy_label(args.augment)
    print(f"{data.name} ({len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_test)} test, "
          f"from {data.source}, fingerprint {data.fingerprint[:12]}) · {config.model} · "
          f"augment {augment} · "
          f"schedule {args.schedule} · {args.epochs:g} epochs · seed {args.seed}")
    if result.range_test is not None:
        r = result.range_test
        print(f"peak LR {r['peak_lr']:.4g} from an LR range test ({r['steps']} steps, {r['images']:,} images, "
              f"rule {r['rule']}); the run trained {r['steps']} steps fewer, so the images add up to the same")
    if result.selection is not None:
        sel = result.selection
        if sel.get("skipped"):
            print(f"peak rule: x1, the default peak (LR {sel['peak_lr']:.4g}), without a probe: the rule keeps the "
                  f"base schedule for {sel['skipped']}")
        else:
            print(f"peak rule: x{sel['factor']:.3g} the default peak (LR {sel['peak_lr']:.4g}); lr x sharpness "
                  f"{10 ** sel['features']['log_lr_sharpness']:.3g} at the initial weights ({sel['images']:,} images, "
                  f"counted in the cost)")
    print(format_table(rows, columns=list(rows[-1])))  # the test row may have the attack columns too
    if args.robustness is not None:
        print(f"fgsm / pgd: test accuracy under attack at eps {args.robustness:g} ([0, 1] pixels; PGD 10 steps)")
    print(f"cost: {cost['seconds']:.1f} s, {cost['images']:,} images, {cost['train_flops']:.3g} training FLOPs, "
          f"{cost['energy_kwh']:.3g} kWh, {cost['co2e_kg']:.3g} kg CO2e ({cost['energy_source']}), "
          f"{cost['params']:,} parameters, peak memory {cost['peak_memory_mb']:.0f} MB")
    if result.diverged:
        print(f"training diverged: {result.diverged}", file=sys.stderr)
        if args.save:
            print(f"checkpoint not saved to {args.save}: the training diverged", file=sys.stderr)
    elif args.save:
        info = {"dataset": data.describe(), "config": result.config, "augment": policy.to_dict(),
                "schedule": (schedule.to_dict() if schedule_kind(schedule) == OPEN_LOOP else
                             {"peak_rule": args.schedule, "selection": result.selection} if result.selection
                             else {"closed_loop": args.schedule}),
                "test": result.test, "val": result.val,
                "mean": data.mean.tolist(), "std": data.std.tolist()}
        save_checkpoint(args.save, result.model, config.model, data.input_shape, data.output_size, info)
        print(f"saved {args.save}")
    if args.json:
        extra = {"robustness": robustness_settings(args.robustness)} if args.robustness is not None else {}
        emit_json({"val": result.val, "test": result.test, "cost": cost, "dataset": data.describe(),
                   "config": result.config, "augment": augment, "schedule": args.schedule,
                   "epochs": args.epochs, "seed": args.seed, "diverged": result.diverged,
                   "range_test": result.range_test, "peak_rule": result.selection, **extra})
    return EXIT_DIVERGED if result.diverged else 0


def check_policies(augments: list[str], schedules: list[str], base_lr: float) -> None:
    """Load every policy and schedule once, so a bad one is refused before any training."""
    from policysearch.policies.adaptive import resolve_schedule
    from policysearch.policies.augment import load_policy

    for augment in augments:
        load_policy(augment)
    for schedule in schedules:
        resolve_schedule(schedule, base_lr=base_lr)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from policysearch.analysis.compare import compare, comparison_rows
    from policysearch.analysis.report import format_table

    seeds = list(range(args.seed, args.seed + args.seeds))
    check_zero_epochs(args)
    config = train_config(args)
    check_policies(args.augment, args.schedule, config.lr)
    data = prepare_data(args)
    tracker = command_tracker(args, artefacts=(*args.augment, *args.schedule))
    entries = compare(data, config, args.augment, args.schedule, seeds, args.epochs, progress=show_progress(args),
                      robustness=args.robustness, workers=args.workers, threads_per_worker=args.threads_per_worker,
                      tracker=tracker)
    print(f"{data.name}: {len(data.y_train)} train / {len(data.y_test)} test images · {config.model} · "
          f"{args.epochs:g} epochs · seeds {seeds[0]}..{seeds[-1]} (test split, mean ± std; cost per run)")
    print(format_table(comparison_rows(entries)))
    if args.robustness is not None:
        print(f"fgsm / pgd: test accuracy under attack at eps {args.robustness:g} ([0, 1] pixels; PGD 10 steps)")
    if args.json:
        emit_json({"dataset": data.describe(), "config": {k: v for k, v in vars(args).items() if k != "func"},
                   "results": entries})
    return EXIT_DIVERGED if any(e["diverged"] == len(seeds) for e in entries) else 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from policysearch.analysis.report import format_table
    from policysearch.data import dataset_status

    rows = dataset_status(args.data_dir)
    print(format_table(rows))
    if args.json:
        emit_json(rows)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from policysearch.analysis.report import format_table
    from policysearch.models import model_table

    rows = model_table()
    print(format_table(rows))
    if args.json:
        emit_json(rows)
    return 0


__all__ = ["EXIT_DIVERGED", "cmd_datasets", "cmd_evaluate", "cmd_models", "cmd_train"]
