"""The parser (every sub-command and its options) and `main`, which maps errors to exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from policysearch import __version__
from policysearch.cli import arguments as a
from policysearch.cli.runs import add_compare_parser
from policysearch.cli.searching import cmd_augment, cmd_compress, cmd_demo, cmd_schedule
from policysearch.cli.tracking import add_tracking_args, tracking_session
from policysearch.cli.training import cmd_datasets, cmd_evaluate, cmd_models, cmd_train
from policysearch.errors import PolicySearchError

EXIT_USAGE, EXIT_DIVERGED = 2, 3


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line ("policysearch train: error: argument --epochs: ...")
    like every other user error of the CLI, instead of the usage block followed by the message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="policysearch", description="Learn training policies instead of hand-tuning them."
    )
    parser.add_argument("--version", action="version", version=f"policysearch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train one model with a policy and a schedule; report val/test metrics and cost")
    a.add_data_args(p)
    a.add_train_args(p)
    p.add_argument("--augment", default="none", help="built-in policy name or policy JSON file (default: %(default)s)")
    p.add_argument("--schedule", default="cosine",
                   help="built-in schedule name, schedule JSON file, or closed-loop controller.json "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=a.seed_int, default=0, help="seed of the weights, batch order and augmentation "
                   "(default: %(default)s)")
    p.add_argument("--save", default=None, help="write a checkpoint (model name, shapes, state_dict) here")
    p.add_argument("--trust-pickle", action="store_true",
                   help="open a closed-loop controller zip with SB3's own loader (runs code from the file: "
                        "only for files you trust)")
    add_tracking_args(p, search=False)
    a.add_output_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="train every policy x schedule combination with K seeds; mean ± std")
    a.add_data_args(p)
    a.add_train_args(p)
    p.add_argument("--augment", default="none,cropflip,trivial", type=a.name_list,
                   help="comma-separated policies (names or files) (default: %(default)s)")
    p.add_argument("--schedule", default="cosine", type=a.name_list,
                   help="comma-separated schedules (names or files) (default: %(default)s)")
    p.add_argument("--seeds", type=a.positive_int, default=3, help="seeds per combination (default: %(default)s)")
    p.add_argument("--seed", type=a.seed_int, default=0, help="first seed (default: %(default)s)")
    add_tracking_args(p, search=False)
    a.add_output_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("augment", help="search an augmentation policy with an RL or baseline controller")
    a.add_data_args(p)
    a.add_train_args(p, epochs=None)
    a.add_search_args(p)
    p.add_argument("--schedule", default="cosine", help="the child's LR schedule (default: %(default)s)")
    a.add_augment_space_args(p)
    a.add_output_args(p)
    p.set_defaults(func=cmd_augment)

    p = sub.add_parser("schedule", help="search a learning-rate schedule (open- and closed-loop export)")
    a.add_data_args(p)
    a.add_train_args(p, epochs=None)
    a.add_search_args(p)
    p.add_argument("--lr-min", type=a.positive_number, default=1e-4,
                   help="lowest LR an action can set (default: %(default)s)")
    p.add_argument("--lr-max", type=a.positive_number, default=1.0,
                   help="highest LR an action can set (default: %(default)s)")
    p.add_argument("--augment", default="none", help="augmentation policy used by the child trainings")
    a.add_output_args(p)
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("compress", help="learn per-layer pruning ratios (AMC), prune for real, distil from the teacher")
    p.add_argument("--checkpoint", required=True, help="teacher: a file written by `policysearch train --save`")
    p.add_argument("--trust-pickle", action="store_true",
                   help="also accept a pickled nn.Module (runs code from the file: only for files you trust)")
    a.add_data_args(p, default_dataset=None)
    a.add_search_args(p, budget=20, segmented=False)
    g = p.add_argument_group("compression")
    g.add_argument("--flops", type=a.fraction, default=0.5,
                   help="FLOPs target as a fraction of the teacher's, in (0, 1] (default: %(default)s)")
    g.add_argument("--min-keep", type=a.fraction, default=0.2,
                   help="smallest keep ratio per layer, in (0, 1] (default: %(default)s)")
    g.add_argument("--criterion", default="l2", type=a.name_of("criterion", lambda: ("l2", "l1")),
                   help="channel importance: l2 | l1 (default: %(default)s)")
    g.add_argument("--reward", default="acc", type=a.name_of("reward", lambda: ("acc", "error_log_flops")),
                   help="acc | error_log_flops (default: %(default)s)")
    g.add_argument("--finetune-steps", type=a.int_at_least(0), default=None,
                   help="distillation steps per episode (default: one epoch)")
    g.add_argument("--finetune-lr", type=a.positive_number, default=0.01,
                   help="distillation learning rate (default: %(default)s)")
    g.add_argument("--finetune-epochs", type=a.non_negative_number, default=3,
                   help="final distillation of the best plan (default: %(default)s)")
    g.add_argument("--batch-size", type=a.positive_int, default=128, help="images per step (default: %(default)s)")
    g.add_argument("--device", default="auto", type=a.device_name,
                   help="auto | cpu | cuda[:N] | mps (default: %(default)s)")
    a.add_output_args(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("demo", help="the main job on the embedded digits set: search, then compare with baselines")
    a.add_data_args(p)
    a.add_train_args(p, epochs=30)
    a.add_search_args(p, budget=24)
    p.set_defaults(val_size=0.2, out="runs/demo")
    p.add_argument("--search-epochs", type=a.positive_number, default=10,
                   help="length of one child training (default: %(default)s)")
    p.add_argument("--seeds", type=a.positive_int, default=3, help="seeds per policy in the comparison "
                   "(default: %(default)s)")
    p.add_argument("--baselines", default="none,cropflip,trivial,randaugment", type=a.name_list,
                   help="policies to compare the learned one with (default: %(default)s)")
    p.add_argument("--schedule", default="cosine", help="LR schedule of every training (default: %(default)s)")
    a.add_augment_space_args(p)
    a.add_output_args(p)
    p.set_defaults(func=cmd_demo)

    add_compare_parser(sub)

    p = sub.add_parser("datasets", help="list data sets and whether each is available locally")
    p.add_argument("--data-dir", default=None, help="also look in this folder")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("models", help="list the model registry")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (0 ok, 2 user error, 3 diverged training, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 for a bad option (its message is printed), 0 for --help
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        with tracking_session(args):  # closes the command's trackers (MLflow uploads its artefacts) at the end
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
