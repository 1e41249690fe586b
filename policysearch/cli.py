"""The `policysearch` command line.

Each sub-command prints a readable table; with ``--json`` the last line of stdout is one JSON
object for scripts. User errors exit with status 2 and a one-line message; a diverged training
run exits with status 3.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from policysearch.errors import PolicySearchError

EXIT_USAGE, EXIT_DIVERGED = 2, 3


# ---------------------------------------------------------------------- shared arguments
def add_data_args(p: argparse.ArgumentParser, default_dataset: str = "digits") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=default_dataset, help="digits | fashion-mnist | cifar10 (default: %(default)s)")
    g.add_argument("--data-dir", default=None, help="folder with the data set's files (else $POLICYSEARCH_DATA, the cache, system folders)")
    g.add_argument("--train-size", type=int, default=None, help="cap the training split (proxy tasks)")
    g.add_argument("--val-size", type=float, default=0.1, help="validation split carved from the training data: fraction or count (default: %(default)s)")
    g.add_argument("--test-size", type=int, default=None, help="subsample the test split for quick runs")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the fixed train/val split (default: %(default)s)")
    g.add_argument("--no-download", action="store_true", help="never try the network for missing data")


def add_train_args(p: argparse.ArgumentParser, epochs: float = 10) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--model", default="cnn", help="mlp | cnn | resnet | vit (default: %(default)s)")
    g.add_argument("--epochs", type=float, default=epochs, help="passes over the training split (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--lr", type=float, default=None, help="base learning rate (default: the model's)")
    g.add_argument("--optimizer", default=None, help="sgd | adamw (default: the model's)")
    g.add_argument("--weight-decay", type=float, default=5e-4)
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument("--device", default="auto", help="cpu | cuda | auto (default: %(default)s)")
    g.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")


def add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def prepare_data(args: argparse.Namespace) -> Any:
    from policysearch.data import prepare
    from policysearch.trainer import resolve_device

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


def _emit_json(obj: Any) -> None:
    print(json.dumps(obj, default=float, allow_nan=True))


# ---------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    from policysearch.checkpoint import save_checkpoint
    from policysearch.evaluate import policy_label
    from policysearch.policies.augment import load_policy
    from policysearch.policies.schedule import load_schedule
    from policysearch.report import format_table
    from policysearch.trainer import train_run

    config = train_config(args, seed=args.seed)
    policy = load_policy(args.augment)
    schedule = load_schedule(args.schedule, base_lr=config.lr)
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
                "schedule": schedule.to_dict(), "test": result.test, "val": result.val,
                "mean": data.mean.tolist(), "std": data.std.tolist()}
        save_checkpoint(args.save, result.model, config.model, data.input_shape, data.num_classes, info)  # type: ignore[arg-type]
        print(f"saved {args.save}")
    if args.json:
        _emit_json({"val": result.val, "test": result.test, "cost": cost, "dataset": data.describe(),
                    "config": result.config, "augment": policy_label(args.augment), "schedule": args.schedule,
                    "epochs": args.epochs, "seed": args.seed, "diverged": result.diverged})
    return EXIT_DIVERGED if result.diverged else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from policysearch.evaluate import comparison_rows, compare
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
        _emit_json({"dataset": data.describe(), "config": {**vars(args), "func": None}, "results": entries})
    return EXIT_DIVERGED if any(e["diverged"] == len(seeds) for e in entries) else 0


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
        print(f"policysearch {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
