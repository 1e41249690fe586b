"""The `policysearch` command line.

Each sub-command prints a readable table; with ``--json`` the last line of stdout is one JSON
object for scripts (NaN written as null). User errors exit with status 2 and a message whose first
line says what is wrong (details, if any, indented below); a diverged training run exits with 3.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from policysearch.errors import PolicySearchError

EXIT_USAGE, EXIT_DIVERGED = 2, 3


# ---------------------------------------------------------------------- shared arguments
def add_data_args(p: argparse.ArgumentParser, default_dataset: str | None = "digits") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=default_dataset, help="digits | fashion-mnist | cifar10 (default: %(default)s)")
    g.add_argument("--data-dir", default=None, help="folder with the data set's files (else $POLICYSEARCH_DATA, the cache, system folders)")
    g.add_argument("--train-size", type=int, default=None, help="cap the training split (proxy tasks)")
    g.add_argument("--val-size", type=float, default=0.1, help="validation split carved from the training data: fraction or count (default: %(default)s)")
    g.add_argument("--test-size", type=int, default=None, help="subsample the test split for quick runs")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the fixed train/val split (default: %(default)s)")
    g.add_argument("--no-download", action="store_true", help="never try the network for missing data")


def add_train_args(p: argparse.ArgumentParser, epochs: float | None = 10) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--model", default="cnn", help="mlp | cnn | resnet | vit (default: %(default)s)")
    if epochs is not None:
        g.add_argument("--epochs", type=float, default=epochs, help="passes over the training split (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--lr", type=float, default=None, help="base learning rate (default: the model's)")
    g.add_argument("--optimizer", default=None, help="sgd | adamw (default: the model's)")
    g.add_argument("--weight-decay", type=float, default=5e-4)
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: %(default)s)")
    g.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")


def add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def prepare_data(args: argparse.Namespace) -> Any:
    from policysearch.data import prepare
    from policysearch.device import resolve_device

    val: float | int = int(args.val_size) if args.val_size >= 1 else args.val_size
    return prepare(
        args.dataset, val_size=val, train_size=args.train_size, seed=args.split_seed,
        device=resolve_device(args.device), data_dir=args.data_dir, download=not args.no_download,
        test_size=args.test_size,
    )


def train_config(args: argparse.Namespace, seed: int = 0) -> Any:
    from policysearch.trainer import TrainConfig

    return TrainConfig(
        model=args.model, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, seed=seed,
        device=args.device, amp=not args.no_amp,
    )


def _json_safe(obj: Any) -> Any:
    """NaN / inf become null so the line is strict JSON (jq and browsers reject NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _emit_json(obj: Any) -> None:
    print(json.dumps(_json_safe(obj), default=float, allow_nan=False))


# ---------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    from policysearch.checkpoint import save_checkpoint
    from policysearch.compare import policy_label
    from policysearch.policies.adaptive import resolve_schedule
    from policysearch.policies.augment import load_policy
    from policysearch.report import format_table
    from policysearch.trainer import train_run

    config = train_config(args, seed=args.seed)
    policy = load_policy(args.augment)
    schedule = resolve_schedule(args.schedule, base_lr=config.lr)
    data = prepare_data(args)
    result = train_run(data, config, args.epochs, policy, schedule, progress=not args.no_progress)
    rows = [{"split": split, **{k: v for k, v in metrics.items()}} for split, metrics in
            (("val", result.val), ("test", result.test))]
    print(f"{data.name} ({len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_test)} test, "
          f"fingerprint {data.fingerprint[:12]}) · {config.model} · augment {policy_label(args.augment)} · "
          f"schedule {args.schedule} · {args.epochs:g} epochs · seed {args.seed}")
    print(format_table(rows))
    cost = result.cost
    print(f"cost: {cost['seconds']:.1f} s, {cost['images']:,} images, {cost['train_flops']:.3g} training FLOPs, "
          f"{cost['params']:,} parameters, peak memory {cost['peak_memory_mb']:.0f} MB")
    if result.diverged:
        print(f"training diverged: {result.diverged}", file=sys.stderr)
    if args.save and not result.diverged:
        info = {"dataset": data.describe(), "config": result.config, "augment": policy.to_dict(),
                "schedule": schedule.to_dict() if hasattr(schedule, "lr_at") else {"closed_loop": args.schedule},
                "test": result.test, "val": result.val,
                "mean": data.mean.tolist(), "std": data.std.tolist()}
        save_checkpoint(args.save, result.model, config.model, data.input_shape, data.num_classes, info)  # type: ignore[arg-type]
        print(f"saved {args.save}")
    if args.json:
        _emit_json({"val": result.val, "test": result.test, "cost": cost, "dataset": data.describe(),
                    "config": result.config, "augment": policy_label(args.augment), "schedule": args.schedule,
                    "epochs": args.epochs, "seed": args.seed, "diverged": result.diverged})
    return EXIT_DIVERGED if result.diverged else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from policysearch.compare import compare, comparison_rows
    from policysearch.report import format_table

    augments = [a for a in args.augment.split(",") if a]
    schedules = [s for s in args.schedule.split(",") if s]
    seeds = list(range(args.seed, args.seed + args.seeds))
    if args.seeds < 1:
        raise PolicySearchError(f"--seeds {args.seeds}: expected at least 1")
    config = train_config(args)
    data = prepare_data(args)
    entries = compare(data, config, augments, schedules, seeds, args.epochs, progress=not args.no_progress)
    print(f"{data.name}: {len(data.y_train)} train / {len(data.y_test)} test images · {config.model} · "
          f"{args.epochs:g} epochs · seeds {seeds[0]}..{seeds[-1]} (test split, mean ± std)")
    print(format_table(comparison_rows(entries)))
    if args.json:
        _emit_json({"dataset": data.describe(), "config": {k: v for k, v in vars(args).items() if k != "func"},
                    "results": entries})
    return EXIT_DIVERGED if any(e["diverged"] == len(seeds) for e in entries) else 0


def add_search_args(p: argparse.ArgumentParser, budget: int = 20) -> None:
    g = p.add_argument_group("search")
    g.add_argument("--controller", default="ppo", help="ppo | sac | a2c | random | tpe | cmaes (default: %(default)s)")
    g.add_argument("--budget", type=int, default=budget, help="child trainings (default: %(default)s)")
    g.add_argument("--budget-steps", type=int, default=None, help="also stop after this many env steps")
    g.add_argument("--budget-time", type=float, default=None, help="also stop after this many seconds")
    g.add_argument("--mode", default="schedule", help="schedule (PBA-like) | static (AutoAugment-like)")
    g.add_argument("--episode-length", type=int, default=4, help="segments per child training (default: %(default)s)")
    g.add_argument("--steps-per-segment", type=int, default=None, help="optimizer steps per segment (default: one epoch)")
    g.add_argument("--reward-metric", default="accuracy", help="accuracy | macro_f1 | neg_ece | neg_nll")
    g.add_argument("--cost-weight", type=float, default=0.0, help="reward -= weight x cost (default: %(default)s)")
    g.add_argument("--cost-metric", default="tflops", help="seconds | tflops (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--child-seed", type=int, default=None,
                   help="fix every child's seed (common random numbers); default: a new seed per episode")
    g.add_argument("--out", default=None, help="run folder (default: runs/<command>-<dataset>-<controller>)")
    g.add_argument("--tensorboard", action="store_true", help="log SB3 curves to OUT/tensorboard")


def augment_env(args: argparse.Namespace, data: Any) -> Any:
    import gymnasium as gym

    ops = tuple(o for o in args.ops.split(",") if o) if args.ops else None
    return gym.make(
        "policysearch/Augment-v0", data=data, model=args.model, device=args.device, ops=ops,
        ops_per_sample=args.ops_per_sample, magnitude_scale=args.magnitude_scale, mode=args.mode,
        episode_length=args.episode_length, steps_per_segment=args.steps_per_segment,
        reward_metric=args.reward_metric, cost_weight=args.cost_weight, cost_metric=args.cost_metric,
        batch_size=args.batch_size, lr=args.lr, lr_schedule=args.schedule, child_seed=args.child_seed,
    )


def _budget(args: argparse.Namespace) -> Any:
    from policysearch.search import Budget

    return Budget(child_trainings=args.budget, env_steps=args.budget_steps, seconds=args.budget_time)


def _search_report(result: Any) -> None:
    from policysearch.report import format_table

    s = result.summary
    print(format_table([{
        "controller": s["controller"], "episodes": s["episodes"], "child trainings": s["child_trainings"],
        "best val metric": s["best"]["val_metric"], "best episode": s["best"]["episode"],
        "wall s": s["wall_seconds"], "train TFLOPs": s["train_flops"] / 1e12,
        "diverged": s["diverged_episodes"],
    }]))


def cmd_augment(args: argparse.Namespace) -> int:
    from pathlib import Path

    from policysearch.search import run_search

    budget = _budget(args)
    data = prepare_data(args)
    env = augment_env(args, data)
    out = Path(args.out or f"runs/augment-{data.name}-{args.controller}")
    result = run_search(env, args.controller, budget, out, seed=args.seed, progress=not args.no_progress,
                        tensorboard=args.tensorboard)
    _search_report(result)
    print(f"policy: {result.artefact.describe()}")
    print(f"wrote {out}/: {', '.join(v for v in result.summary['files'].values() if v)}, summary.json")
    print(f"use it: policysearch train --dataset {args.dataset} --augment {out / 'policy.json'}")
    if args.json:
        _emit_json(result.summary)
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from pathlib import Path

    import gymnasium as gym

    from policysearch.plots import plot_schedules
    from policysearch.search import run_search

    budget = _budget(args)
    data = prepare_data(args)
    env = gym.make(
        "policysearch/Schedule-v0", data=data, model=args.model, device=args.device, augment=args.augment,
        lr_min=args.lr_min, lr_max=args.lr_max, optimizer=args.optimizer, episode_length=args.episode_length,
        steps_per_segment=args.steps_per_segment, reward_metric=args.reward_metric, cost_weight=args.cost_weight,
        cost_metric=args.cost_metric, batch_size=args.batch_size, child_seed=args.child_seed,
    )
    out = Path(args.out or f"runs/schedule-{data.name}-{args.controller}")
    result = run_search(env, args.controller, budget, out, seed=args.seed, progress=not args.no_progress,
                        tensorboard=args.tensorboard, artefact_name="schedule.json")
    # The env wrote the closed-loop export (controller.json) for an SB3 controller.
    closed_loop = result.summary["files"].get("closed_loop")
    files = [v for v in result.summary["files"].values() if v]
    base_lr = env.unwrapped.config.lr  # what `train` would use with a hand-made schedule
    png = plot_schedules(result.artefact, base_lr, out / "schedule.png", title=f"learned on {data.name} ({args.model})")
    if png:
        files.append(png.name)
    _search_report(result)
    lrs = ", ".join(f"{lr:.3g}" for lr in result.artefact.lrs([i / args.episode_length for i in range(args.episode_length)]))
    print(f"learned LRs per segment: {lrs}")
    print(f"wrote {out}/: {', '.join(files)}, summary.json")
    print(f"use it: policysearch train --dataset {args.dataset} --schedule {out / 'schedule.json'}"
          + (f"  (closed loop: --schedule {out / closed_loop})" if closed_loop else ""))
    if args.json:
        _emit_json(result.summary)
    return 0


def _load_teacher(args: argparse.Namespace) -> tuple[Any, str | None, dict[str, Any]]:
    """The teacher module, its registered model name (None for a pickled module) and checkpoint info."""
    import torch

    from policysearch.checkpoint import load_checkpoint
    from policysearch.errors import PolicyFormatError

    try:
        ckpt = load_checkpoint(args.checkpoint)
        return ckpt.build(), ckpt.model_name, ckpt.info
    except PolicyFormatError:
        if not args.trust_pickle:
            raise
    print(f"warning: loading {args.checkpoint} as a pickled module runs code stored in the file; "
          "do this only for files you trust", file=sys.stderr)
    module = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    if not isinstance(module, torch.nn.Module):
        raise PolicySearchError(f"{args.checkpoint}: holds a {type(module).__name__}, expected a torch.nn.Module")
    return module, None, {}


def cmd_compress(args: argparse.Namespace) -> int:
    from pathlib import Path

    import gymnasium as gym

    from policysearch.checkpoint import save_checkpoint
    from policysearch.distill import finish
    from policysearch.policies.artifact import write_json
    from policysearch.report import format_table
    from policysearch.search import run_search

    budget = _budget(args)
    teacher, model_name, info = _load_teacher(args)
    if args.dataset is None:
        args.dataset = (info.get("dataset") or {}).get("name") or "digits"
    data = prepare_data(args)
    env = gym.make(
        "policysearch/Compress-v0", teacher=teacher, model_name=model_name, data=data, flops_target=args.flops,
        min_keep=args.min_keep, criterion=args.criterion, finetune_steps=args.finetune_steps, device=args.device,
        finetune_lr=args.finetune_lr, reward=args.reward, batch_size=args.batch_size, child_seed=args.child_seed,
    )
    out = Path(args.out or f"runs/compress-{data.name}-{args.controller}")
    result = run_search(env, args.controller, budget, out, seed=args.seed, progress=not args.no_progress,
                        tensorboard=args.tensorboard, artefact_name="plan.json")
    _search_report(result)
    plan = result.artefact
    print(f"best plan keeps {plan.flops_fraction:.3f} of the FLOPs ({args.flops:g} asked); distilling it for "
          f"{args.finetune_epochs:g} epochs ...")
    student, report = finish(plan, teacher, data, args.finetune_epochs, args.finetune_lr, seed=args.seed)
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
    result.summary["comparison"] = report
    result.summary["files"]["model"] = "model.pt"
    write_json(out / "summary.json", result.summary)
    print(f"wrote {out}/: plan.json, model.pt, episodes.jsonl, summary.json, search.png")
    print(f"load it: policysearch.checkpoint.load_checkpoint('{out / 'model.pt'}').build()")
    if args.json:
        _emit_json(result.summary)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from policysearch.compare import compare, comparison_rows
    from policysearch.plots import plot_comparison
    from policysearch.policies.artifact import write_json
    from policysearch.report import format_table
    from policysearch.search import Budget, run_search

    out = Path(args.out)
    data = prepare_data(args)
    print(f"1/2 searching an augmentation policy for {data.name} ({len(data.y_train)} train / {len(data.y_val)} val "
          f"images) with {args.controller}, {args.budget} child trainings of {args.search_epochs:g} epochs")
    steps_per_epoch = max(1, len(data.y_train) // args.batch_size)
    args.steps_per_segment = max(1, round(args.search_epochs * steps_per_epoch / args.episode_length))
    env = augment_env(args, data)
    result = run_search(env, args.controller, Budget(child_trainings=args.budget), out / "search", seed=args.seed,
                        progress=not args.no_progress)
    _search_report(result)
    policy_path = out / "search" / "policy.json"
    baselines = [b for b in args.baselines.split(",") if b]
    print(f"2/2 evaluating the learned policy against {', '.join(baselines)}: {args.seeds} seeds x "
          f"{args.epochs:g} epochs each, scored on the {len(data.y_test)} held-out test images")
    config = train_config(args)
    seeds = list(range(args.seed, args.seed + args.seeds))
    entries = compare(data, config, [str(policy_path), *baselines], [args.schedule], seeds, args.epochs,
                      progress=not args.no_progress)
    for entry in entries:
        if entry["augment"] == "policy":
            entry["augment"] = "learned"
    print(format_table(comparison_rows(entries)))
    write_json(out / "comparison.json", {"dataset": data.describe(), "search": result.summary, "results": entries})
    png = plot_comparison(entries, "accuracy", out / "comparison.png", title=f"{data.name}: test accuracy")
    learned = entries[0]["test"]["accuracy"]["mean"]
    best_base = max(entries[1:], key=lambda e: e["test"]["accuracy"]["mean"]) if len(entries) > 1 else None
    if best_base is not None:
        verdict = "beats" if learned > best_base["test"]["accuracy"]["mean"] else "does not beat"
        print(f"the learned policy {verdict} the best baseline ({best_base['augment']}) on mean test accuracy")
    print(f"wrote {out}/: search/ (policy.json, episodes.jsonl, summary.json, controller, search.png), "
          f"comparison.json{', comparison.png' if png else ''}")
    if args.json:
        _emit_json({"search": result.summary, "results": entries})
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from policysearch.data import dataset_status
    from policysearch.report import format_table

    rows = dataset_status(args.data_dir)
    print(format_table(rows))
    if args.json:
        _emit_json(rows)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from policysearch.models import model_table
    from policysearch.report import format_table

    rows = model_table()
    print(format_table(rows))
    if args.json:
        _emit_json(rows)
    return 0


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="policysearch", description="Learn training policies instead of hand-tuning them."
    )
    parser.add_argument("--version", action="version", version="policysearch 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train one model with a policy and a schedule; report val/test metrics and cost")
    add_data_args(p)
    add_train_args(p)
    p.add_argument("--augment", default="none", help="built-in policy name or policy JSON file (default: %(default)s)")
    p.add_argument("--schedule", default="cosine", help="built-in schedule name or schedule JSON file (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, help="write a checkpoint (model name, shapes, state_dict) here")
    add_output_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="train every policy x schedule combination with K seeds; mean ± std")
    add_data_args(p)
    add_train_args(p)
    p.add_argument("--augment", default="none,cropflip,trivial", help="comma-separated policies (names or files)")
    p.add_argument("--schedule", default="cosine", help="comma-separated schedules (names or files)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per combination (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default: %(default)s)")
    add_output_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("augment", help="search an augmentation policy with an RL or baseline controller")
    add_data_args(p)
    add_train_args(p, epochs=None)
    add_search_args(p)
    p.add_argument("--schedule", default="cosine", help="the child's LR schedule (default: %(default)s)")
    p.add_argument("--ops", default=None, help="comma-separated subset of the op table (default: TrivialAugment's 13)")
    p.add_argument("--ops-per-sample", type=int, default=1)
    p.add_argument("--magnitude-scale", default="standard", help="standard (kornia) | wide (TrivialAugment-wide)")
    add_output_args(p)
    p.set_defaults(func=cmd_augment)

    p = sub.add_parser("schedule", help="search a learning-rate schedule (open- and closed-loop export)")
    add_data_args(p)
    add_train_args(p, epochs=None)
    add_search_args(p)
    p.add_argument("--lr-min", type=float, default=1e-4, help="lowest LR an action can set (default: %(default)s)")
    p.add_argument("--lr-max", type=float, default=1.0, help="highest LR an action can set (default: %(default)s)")
    p.add_argument("--augment", default="none", help="augmentation policy used by the child trainings")
    add_output_args(p)
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("compress", help="learn per-layer pruning ratios (AMC), prune for real, distil from the teacher")
    p.add_argument("--checkpoint", required=True, help="teacher: a file written by `policysearch train --save`")
    p.add_argument("--trust-pickle", action="store_true",
                   help="also accept a pickled nn.Module (runs code from the file: only for files you trust)")
    add_data_args(p, default_dataset=None)
    add_search_args(p, budget=20)
    p.add_argument("--flops", type=float, default=0.5, help="FLOPs target as a fraction of the teacher's (default: %(default)s)")
    p.add_argument("--min-keep", type=float, default=0.2, help="smallest keep ratio per layer (default: %(default)s)")
    p.add_argument("--criterion", default="l2", help="channel importance: l2 | l1 (default: %(default)s)")
    p.add_argument("--reward", default="acc", help="acc | error_log_flops (default: %(default)s)")
    p.add_argument("--finetune-steps", type=int, default=None, help="distillation steps per episode (default: one epoch)")
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument("--finetune-epochs", type=float, default=3, help="final distillation of the best plan (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: %(default)s)")
    add_output_args(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("demo", help="the main job on the embedded digits set: search, then compare with baselines")
    add_data_args(p)
    add_train_args(p, epochs=30)
    add_search_args(p, budget=24)
    p.set_defaults(val_size=0.2, out="runs/demo")
    p.add_argument("--search-epochs", type=float, default=10, help="length of one child training (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--baselines", default="none,cropflip,trivial,randaugment")
    p.add_argument("--schedule", default="cosine")
    p.add_argument("--ops", default=None)
    p.add_argument("--ops-per-sample", type=int, default=1)
    p.add_argument("--magnitude-scale", default="standard")
    add_output_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("datasets", help="list data sets and whether each is available locally")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("models", help="list the model registry")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)
    return parser



def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except PolicySearchError as exc:
        first, *details = str(exc).splitlines() or [type(exc).__name__]
        print(f"policysearch {args.command}: error: {first}", file=sys.stderr)
        for line in details:
            print(f"  {line}" if line.strip() else "", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
