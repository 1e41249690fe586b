"""The parser (every sub-command and its options) and `main`, which maps errors to exit codes,
configures logging (-q / -v) and keeps stdout for the JSON object under ``--json``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from policysearch import __version__
from policysearch.cli import arguments as a
from policysearch.cli.compressing import cmd_compress
from policysearch.cli.options import json_stream
from policysearch.cli.runs import add_compare_parser
from policysearch.cli.searching import cmd_augment, cmd_demo, cmd_peak_rule, cmd_schedule
from policysearch.cli.tracking import add_tracking_args, tracking_session
from policysearch.cli.training import cmd_datasets, cmd_evaluate, cmd_models, cmd_train
from policysearch.errors import PolicySearchError

EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130


CONVENTIONS = """\
conventions (every command):
  --json        stdout holds only one JSON object; tables and messages go to stderr; on an error
                it is {"error": {"message", "exit_code", ...}}
                  policysearch evaluate --augment none,trivial --json | jq '.results[].test.accuracy'
  -q / -v       log level: -q warnings only, -qq errors only, -v debug (policysearch), -vv debug (all)
  progress      bars on stderr, off with --no-progress, -q, TQDM_DISABLE=1 or when stderr is not a terminal
  energy        kWh and kg CO2e in every report: measured by CodeCarbon if installed (extra 'energy'),
                else estimated from seconds x power ($POLICYSEARCH_POWER_W, $POLICYSEARCH_CARBON_INTENSITY);
                POLICYSEARCH_ENERGY=estimate never starts CodeCarbon
  exit status   0 ok, 2 bad input, a full disk or a denied write (one line naming it), 3 training
                diverged, 130 interrupted by SIGINT or SIGTERM (a search says how to --resume)
"""

#: Two or three runnable examples per sub-command, shown at the end of its --help.
EXAMPLES = {
    "train": """\
  policysearch train --dataset digits --model cnn --epochs 30
  policysearch train --dataset fashion-mnist --augment trivial --schedule onecycle --epochs 12 --save cnn.pt
  policysearch train --augment runs/digits-ppo/policy.json --robustness 0.03 --json | jq .test""",
    "evaluate": """\
  policysearch evaluate --dataset digits --augment none,cropflip,trivial --seeds 3 --epochs 30
  policysearch evaluate --augment none,runs/a/policy.json,runs/b/policy.json --schedule cosine,onecycle
  policysearch evaluate --augment none,trivial --robustness 0.03 --json > results.json""",
    "augment": """\
  policysearch augment --dataset digits --controller ppo --budget 24 --out runs/digits-ppo
  policysearch augment --dataset digits --controller random --budget 24 --out runs/digits-random
  policysearch augment --reward-metric fgsm_accuracy --cost-weight 0.01 --cost-metric seconds""",
    "schedule": """\
  policysearch schedule --dataset digits --controller ppo --budget 24 --out runs/digits-lr
  policysearch schedule --tasks cheap --episode-length 6 --budget 300 --paired-reward --out runs/lr-tasks
  policysearch train --dataset digits --model resnet --schedule zoo:adaptive               # the shipped controller
  policysearch train --dataset digits --schedule runs/digits-lr/schedule.json      # open loop
  policysearch train --dataset digits --schedule runs/digits-lr/controller.json    # closed loop""",
    "peak-rule": """\
  policysearch peak-rule --tasks cheap --n-tasks 150 --workers 2 --out runs/peak-rule
  policysearch train --dataset fashion-mnist --model cnn --schedule runs/peak-rule/rule.json
  policysearch train --dataset digits --model cnn --epochs 30 --schedule zoo:peak-rule   # the shipped rule""",
    "compress": """\
  policysearch train --dataset digits --model resnet --epochs 15 --save teacher.pt
  policysearch compress --checkpoint teacher.pt --flops 0.5 --budget 20 --out runs/digits-half
  policysearch compress --checkpoint teacher.pt --flops 0.25 --controller random --json > half.json
  policysearch compress --checkpoint teacher.pt --flops 0.5 --controller uniform    # the baseline, no search
  policysearch compress --checkpoint teacher.pt --flops 0.5 --controller local --workers 2   # uniform's neighbours
  policysearch compress --checkpoint teacher.pt --flops 0.5 --params 0.4 --latency 0.7 --latency-batch 32""",
    "demo": """\
  policysearch demo
  policysearch demo --controller random --out runs/demo-random
  policysearch demo --controller ppo --budget 24 --train-size 1150 --epochs 30 --search-epochs 10
  policysearch demo --baselines none,trivial --seeds 5 -q""",
    "datasets": """\
  policysearch datasets
  policysearch datasets --data-dir ~/data --json | jq '.[] | select(.available) | .name'""",
    "models": """\
  policysearch models
  policysearch models --json | jq '.[].model'""",
}


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line ("policysearch train: error: argument --epochs: ...")
    like every other user error of the CLI, instead of the usage block followed by the message.
    Its sub-command parsers share its help format (defaults shown, registry names listed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", a.HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        line = f"{self.prog}: error: {message} (see {self.prog} --help)"
        _Parser.last_error = line
        self.exit(EXIT_USAGE, line + "\n")

    last_error: str | None = None  # the last usage error, for the --json error object


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="policysearch", description="Learn training policies instead of hand-tuning them.", epilog=CONVENTIONS,
    )
    parser.add_argument("--version", action="version", version=f"policysearch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train one model with a policy and a schedule; report val/test metrics and cost")
    a.add_data_args(p)
    a.add_train_args(p, zero_epochs=True)
    p.add_argument("--augment", default="none", type=a.name_or_file(a._augment_policies),
                   help="augmentation policy: {names}, or a policy JSON file (default: %(default)s)")
    p.add_argument("--schedule", default="cosine", type=a.name_or_file(a._train_schedules),
                   help="LR schedule: {names}, a schedule JSON file, or a closed-loop controller.json "
                        "(zoo:NAME: a controller shipped with policysearch) (default: %(default)s)")
    p.add_argument("--peak", default="default", type=a.name_of("peak", a._fixed("default", "range-test")),
                   help="the schedule's peak LR: --lr (or the model's default), or the suggestion of a 20-step LR "
                        "range test run first, whose steps come out of the run: {names} (default: %(default)s)")
    p.add_argument("--seed", type=a.seed_int, default=0, help="seed of the weights, batch order and augmentation "
                   "(default: %(default)s)")
    p.add_argument("--save", default=None, metavar="FILE",
                   help="write a checkpoint (model name, shapes, state_dict) here (default: none)")
    a.add_robustness_arg(p)
    p.add_argument("--trust-pickle", action="store_true",
                   help="open a closed-loop controller zip with SB3's own loader (runs code from the file: "
                        "only for files you trust)")
    add_tracking_args(p, search=False)
    a.add_output_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="train every policy x schedule combination with K seeds; mean ± std")
    a.add_data_args(p)
    a.add_train_args(p, zero_epochs=True)
    p.add_argument("--augment", default="none,cropflip,trivial", type=a.names_or_files(a._augment_policies),
                   metavar="POLICY,...",
                   help="comma-separated policies: {names}, or policy JSON files (default: %(default)s)")
    p.add_argument("--schedule", default="cosine", type=a.names_or_files(a._train_schedules),
                   metavar="SCHEDULE,...",
                   help="comma-separated schedules: {names}, or schedule / controller JSON files "
                        "(default: %(default)s)")
    p.add_argument("--seeds", type=a.positive_int, default=3, metavar="K",
                   help="seeds per combination (default: %(default)s)")
    p.add_argument("--seed", type=a.seed_int, default=0, help="first seed (default: %(default)s)")
    a.add_robustness_arg(p)
    a.add_parallel_args(p, search=False)
    add_tracking_args(p, search=False)
    a.add_output_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("augment", help="find an augmentation policy that beats the hand-made ones (or keep the best "
                                       "of those): search, re-rank, compare, export")
    a.add_data_args(p)
    a.add_train_args(p, epochs=20)
    # --tensorboard [DIR], --mlflow [URI], --objectives
    add_tracking_args(a.add_search_args(p, budget=None, controller=None), search=True)
    a.add_protocol_args(p, None,
                        "standard is the headroom benchmark's protocol: tpe, 4 children, the top 3 re-ranked on 1 "
                        "fresh seed, 5 paired seeds (benchmarks/RESULTS.md)")
    a.add_parallel_args(p)
    p.add_argument("--schedule", default="cosine", type=a.name_or_file(a._schedules),
                   help="the child's LR schedule: {names}, or a schedule JSON file (default: %(default)s)")
    a.add_augment_space_args(p)
    a.add_output_args(p)
    p.set_defaults(func=cmd_augment)

    p = sub.add_parser("schedule", help="find an LR schedule that beats onecycle, cosine and linear decay (or keep the "
                                        "best of those): search, re-rank, compare, export")
    a.add_data_args(p)
    a.add_train_args(p, epochs=20)
    add_tracking_args(a.add_search_args(p, budget=None, controller=None), search=True)
    a.add_protocol_args(p, "onecycle,cosine,linear",
                        "standard: tpe over the peak LR (one segment), 8 children, the top 3 re-ranked, 5 paired "
                        "seeds; per-task searches tied onecycle in the benchmarks, so the best hand-made schedule "
                        "is often what comes out")
    a.add_parallel_args(p)
    p.set_defaults(episode_length=None)  # the protocol searches the peak (1 segment); --search-only: 4
    p.add_argument("--base", default="onecycle", type=a.name_of("base schedule", a._fixed("onecycle", "linear",
                                                                                          "none")),
                   help="residual actions (Schedule-v1) scale this base schedule, peaking at the model's LR: "
                        "{names} (none: absolute LRs in [--lr-min, --lr-max], Schedule-v0) (default: %(default)s)")
    p.add_argument("--scale", type=a.positive_number, default=4.0, metavar="F",
                   help="residual actions multiply the base schedule by F**a, a in [-1, 1] (default: %(default)s)")
    p.add_argument("--tasks", default=None, metavar="SPEC",
                   help="learn one controller over a distribution of tasks (each episode draws data set, size, "
                        "model, epochs, batch size, weight decay): a preset (cheap, default) or "
                        "'pairs=digits:mlp,fashion-mnist:mlp;train-sizes=1000,2000;epochs=3-12;batch=32,64;wd=0,5e-4'; "
                        "--dataset and --model are then not used (default: one task)")
    p.add_argument("--peak", default="default", type=a.name_of("base peak", a._fixed("default", "range-test")),
                   help="where the base schedule's peak LR comes from: the model's default LR, or a 20-step LR range "
                        "test at each child's start (its images come out of the run): {names} (default: %(default)s)")
    p.add_argument("--paired-reward", action="store_true",
                   help="reward the gain over a shadow child trained with the base schedule from the same seed "
                        "(paired: removes task and seed noise; two child trainings per episode) (default: the gain)")
    p.add_argument("--lr-min", type=a.positive_number, default=1e-4, metavar="LR",
                   help="lowest LR an action can set with --base none (default: %(default)s)")
    p.add_argument("--lr-max", type=a.positive_number, default=1.0, metavar="LR",
                   help="highest LR an action can set with --base none (default: %(default)s)")
    p.add_argument("--augment", default="none", type=a.name_or_file(a._augment_policies),
                   help="augmentation policy of the child trainings: {names}, or a policy JSON file "
                        "(default: %(default)s)")
    a.add_output_args(p)
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("peak-rule", help="learn once, over a task distribution, which factor of the default peak LR "
                                        "to train at, from the curvature at the run's start")
    p.add_argument("--tasks", default="cheap", metavar="SPEC",
                   help="the task distribution: a preset (cheap, default) or 'pairs=digits:mlp,fashion-mnist:cnn;"
                        "train-sizes=1000,2000;epochs=3-20;batch=64,128;wd=0,5e-4;val-size=500' (default: %(default)s)")
    p.add_argument("--n-tasks", type=a.positive_int, default=150, metavar="N",
                   help="tasks drawn; each trains every factor from one seed (default: %(default)s)")
    p.add_argument("--factors", type=a.positive_number, nargs="+", default=[1.0, 2 ** 0.5, 2.0], metavar="F",
                   help="factors of the model's default peak to choose from, 1 among them (default: 1 1.414 2)")
    p.add_argument("--base", default="onecycle",
                   type=a.name_of("base schedule", a._fixed("onecycle", "linear", "cosine", "warmup-cosine")),
                   help="the schedule the factor scales: {names} (default: %(default)s)")
    p.add_argument("--seed", type=a.seed_int, default=0, help="seed of the task stream (default: %(default)s)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where local data sets are (default: the usual places)")
    p.add_argument("--out", default="runs/peak-rule", metavar="DIR",
                   help="run folder: settings, table.jsonl, rule.json, summary.json (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (trains only missing tasks)")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out (default: refuse)")
    a.add_parallel_args(p, search=False)
    a.add_output_args(p)
    p.set_defaults(func=cmd_peak_rule)

    p = sub.add_parser("compress", help="learn per-layer pruning ratios (AMC), prune for real, distil from the teacher")
    g = p.add_argument_group("teacher: --checkpoint FILE, or --model with --weights")
    g.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="a file written by `policysearch train --save` (its model, weights and normalisation) "
                        "(default: none)")
    g.add_argument("--model", default=None, type=a.model_arg,
                   help="your own network: {names}, module:function, file.py:function, torchvision:NAME or "
                        "timm:NAME, built for the data, then loaded with --weights (default: none)")
    g.add_argument("--weights", default=None, metavar="FILE",
                   help="the teacher's trained weights for --model: a state dict, read without running code "
                        "(default: none)")
    g.add_argument("--trust-pickle", action="store_true",
                   help="also accept a pickled nn.Module as --checkpoint (runs code from the file: only for files "
                        "you trust)")
    a.add_data_args(p, default_dataset=None)
    add_tracking_args(a.add_search_args(p, budget=20, segmented=False, drives=None, controller="local"), search=True)
    g = p.add_argument_group("protocol: from the uniform plan, choose on validation, compare on the test split")
    g.add_argument("--effort", default="standard", type=a.name_of("effort", a._fixed("quick", "standard", "thorough")),
                   help="{names}: sizes the compass search and the comparison; standard is the search that beat "
                        "uniform pruning in the benchmarks (benchmarks/RESULTS.md) (default: %(default)s)")
    g.add_argument("--seeds", type=a.positive_int, default=None, metavar="N",
                   help="paired seeds of the final comparison with uniform on the test split (default: the "
                        "--effort's)")
    a.add_held_out_arg(g, "the searched plan and uniform")
    g.add_argument("--no-compare", action="store_true",
                   help="skip the final comparison with uniform on the test split")
    a.add_parallel_args(p)
    g = p.add_argument_group("compression")
    g.add_argument("--flops", type=a.fraction, default=0.5, metavar="FRACTION",
                   help="FLOPs target as a fraction of the teacher's, in (0, 1] (default: %(default)s)")
    g.add_argument("--min-keep", type=a.fraction, default=0.2, metavar="RATIO",
                   help="smallest keep ratio per layer, in (0, 1] (default: %(default)s)")
    g.add_argument("--criterion", default="l2", type=a.name_of("criterion", a._fixed("l2", "l1")),
                   help="channel importance: {names} norm (default: %(default)s)")
    g.add_argument("--reward", default="acc", type=a.name_of("reward", a._fixed("acc", "error_log_flops")),
                   help="{names}: the validation metric of the data's task (accuracy, mIoU, PSNR), or AMC's "
                        "-(1 - accuracy) x ln FLOPs (default: %(default)s)")
    g.add_argument("--params", type=a.fraction, default=1.0, metavar="FRACTION",
                   help="parameter target as a fraction of the teacher's, in (0, 1] (default: %(default)s)")
    g.add_argument("--latency", type=a.fraction, default=1.0, metavar="FRACTION",
                   help="CPU latency target as a fraction of the teacher's, at batch 1 and --latency-batch, "
                        "measured (default: %(default)s)")
    g.add_argument("--latency-batch", type=a.positive_int, default=64, metavar="N",
                   help="the second batch size the latency target holds at (default: %(default)s)")
    g.add_argument("--proxy", default="adaptive-bn", type=a.name_of("proxy", a._fixed("adaptive-bn", "distill")),
                   help="episode score: {names}: prune, recompute BatchNorm statistics on --bn-batches training "
                        "batches, validate (EagleEye); or distil --finetune-steps, validate (default: %(default)s)")
    g.add_argument("--bn-batches", type=a.int_at_least(0), default=20, metavar="K",
                   help="adaptive-BN batches per episode (default: %(default)s)")
    g.add_argument("--val-images", type=a.positive_int, default=None, metavar="N",
                   help="score episodes on the first N validation images (default: all)")
    g.add_argument("--rerank-top", type=a.int_at_least(0), default=5, metavar="K",
                   help="after the search, distil the K best plans (and the uniform plan) --rerank-steps each and keep "
                        "the best on the whole validation split (0 or 1: keep the search's best) "
                        "(default: %(default)s)")
    g.add_argument("--rerank-steps", type=a.int_at_least(0), default=100, metavar="N",
                   help="distillation steps per re-ranked plan (default: %(default)s)")
    g.add_argument("--finetune-steps", type=a.int_at_least(0), default=None, metavar="N",
                   help="distillation steps per episode with --proxy distill (default: one epoch)")
    g.add_argument("--finetune-lr", type=a.positive_number, default=0.01, metavar="LR",
                   help="distillation learning rate (default: %(default)s)")
    g.add_argument("--finetune-epochs", type=a.non_negative_number, default=3, metavar="E",
                   help="final distillation of the best plan (default: %(default)s)")
    g = p.add_argument_group("controller local: compass search from the uniform plan, scored by distillation")
    g.add_argument("--local-steps", type=a.positive_int, default=None, metavar="N",
                   help="distillation steps per candidate and seed (default: the --effort's; 150 at standard)")
    g.add_argument("--local-seeds", type=a.positive_int, default=None, metavar="N",
                   help="batch orders every candidate is scored on, validation split (default: the --effort's; 2 at "
                        "standard)")
    g.add_argument("--local-confirm-seeds", type=a.positive_int, default=None, metavar="N",
                   help="fresh batch orders on which the best neighbour must beat the current plan again before "
                        "the search moves (default: the --effort's; 2 at standard)")
    g.add_argument("--local-confirm-steps", type=a.positive_int, default=None, metavar="N",
                   help="distillation steps of that confirmation: a short score can favour plans that learn fast "
                        "over those that end best; the final length (3 epochs = 1263 steps on Fashion-MNIST) "
                        "makes a move wait for the length that counts (default: --local-steps)")
    g.add_argument("--local-factor", type=a.number_in(1.0, None, low_open=True), default=1.5, metavar="F",
                   help="first step: one group's channels times or divided by F, the others rescaled to the "
                        "targets; halved (in log space) when no neighbour wins (default: %(default)s)")
    g.add_argument("--local-rounds", type=a.int_at_least(0), default=None, metavar="N",
                   help="at most this many moves (default: the --effort's; 3 at standard)")
    g.add_argument("--batch-size", type=a.positive_int, default=128, metavar="N",
                   help="images per step (default: %(default)s)")
    g.add_argument("--device", default="auto", type=a.device_name,
                   help="auto | cpu | cuda[:N] | mps (default: %(default)s)")
    a.add_output_args(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("demo", help="the main job on the embedded digits set: search, then compare with baselines")
    a.add_data_args(p)
    a.add_train_args(p, epochs=150)
    add_tracking_args(a.add_search_args(p, budget=8), search=True)
    a.add_parallel_args(p)
    # Few images trained for long, where augmentation could pay; pbt: its population trains once and starts
    # every member at no augmentation: 8 members taking turns in 2 worker processes (both cores of a small
    # machine, which also train the comparison), one generation, 8 policy segments.
    p.set_defaults(val_size=0.2, out="runs/demo", train_size=300, controller="pbt", episode_length=8, workers=2)
    p.add_argument("--search-epochs", type=a.positive_number, default=150, metavar="E",
                   help="length of one child training (default: %(default)s)")
    p.add_argument("--seeds", type=a.positive_int, default=3, metavar="K",
                   help="seeds per policy in the comparison (default: %(default)s)")
    p.add_argument("--baselines", default="none,cropflip,erasing,trivial,randaugment", metavar="POLICY,...",
                   type=a.names_or_files(a._augment_policies),
                   help="policies to compare the learned one with: {names}, or policy JSON files "
                        "(default: %(default)s)")
    p.add_argument("--schedule", default="cosine", type=a.name_or_file(a._schedules),
                   help="LR schedule of every training: {names}, or a schedule JSON file (default: %(default)s)")
    a.add_augment_space_args(p)
    a.add_output_args(p)
    p.set_defaults(func=cmd_demo)

    add_compare_parser(sub)

    p = sub.add_parser("datasets", help="list data sets and whether each is available locally")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="also look in this folder (default: none)")
    a.add_output_args(p, progress=False)
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("models", help="list the model registry")
    a.add_output_args(p, progress=False)
    p.set_defaults(func=cmd_models)

    for name, command in sub.choices.items():
        if name in EXAMPLES:
            command.epilog = "examples:\n" + EXAMPLES[name]
    return parser


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (it may be redirected or captured after set-up)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _Formatter(logging.Formatter):
    """INFO lines as plain messages ("downloading ..."); other levels prefixed ("warning: ...")."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno == logging.INFO else f"{record.levelname.lower()}: {message}"


@contextlib.contextmanager
def configure_logging(verbosity: int) -> Iterator[None]:
    """Log to stderr while a command runs: policysearch at INFO by default (WARNING with -q, ERROR with
    -qq, DEBUG with -v), other libraries at WARNING (DEBUG with -vv). Undone afterwards, so calling
    `main` from Python leaves the caller's logging as it was."""
    ours = {-2: logging.ERROR, -1: logging.WARNING, 0: logging.INFO}.get(max(-2, min(verbosity, 1)), logging.DEBUG)
    theirs = logging.DEBUG if verbosity >= 2 else max(ours, logging.WARNING)
    handler = _StderrHandler()
    handler.setFormatter(_Formatter("%(message)s"))
    package, root = logging.getLogger("policysearch"), logging.getLogger()
    saved = (package.level, package.propagate, root.level)
    package.setLevel(ours)
    package.addHandler(handler)
    package.propagate = False  # one line per message, not a second copy through a root handler
    root.setLevel(theirs)
    root_handler = _StderrHandler() if not root.handlers else None
    if root_handler is not None:
        root_handler.setFormatter(_Formatter("%(name)s: %(message)s"))
        root.addHandler(root_handler)
    try:
        yield
    finally:
        package.removeHandler(handler)
        if root_handler is not None:
            root.removeHandler(root_handler)
        package.setLevel(saved[0])
        package.propagate = saved[1]
        root.setLevel(saved[2])


def _json_error(command: str | None, message: str, details: list[str], code: int, kind: str) -> None:
    """Under --json, stdout holds one object on error too: ``{"error": {...}}`` (scripts test for it)."""
    from policysearch.files import json_dumps

    print(json_dumps({"error": {"command": command, "message": message, "details": details, "exit_code": code,
                                "type": kind}}), file=sys.stdout, flush=True)


@contextlib.contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM (`timeout`, a job scheduler, `kill`) stops a command as Ctrl-C does: as a
    KeyboardInterrupt, so every command ends with exit status 130 and says what it leaves behind,
    instead of dying silently with 143. A search replaces the handler while it runs (it finishes
    the current step first)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted_line(args: argparse.Namespace, exc: KeyboardInterrupt) -> str:
    """What an interrupted command leaves behind, and how to go on."""
    from pathlib import Path

    how = str(exc) if str(exc).startswith("SIG") else "SIGINT"
    folder = getattr(args, "run_folder", None)
    if folder is not None and (Path(folder) / "run.json").is_file():
        return (f"interrupted by {how}; continue with the same command and --resume (run folder {folder})")
    if args.command == "train":
        return (f"interrupted by {how}; nothing was saved (--save is written when training ends): "
                "run the command again")
    return f"interrupted by {how}; nothing of it was kept: run the command again"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (0 ok, 2 user error, 3 diverged training, 130 interrupted)."""
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    _Parser.last_error = None
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 for a bad option (its message is printed), 0 for --help
        code = int(exc.code or 0)
        if code and "--json" in raw and _Parser.last_error:
            _json_error(raw[0] if raw and not raw[0].startswith("-") else None, _Parser.last_error, [], code,
                        "UsageError")
        return code
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    # The command line as given, for the files a command writes (sys.argv is the host's under a test or API call).
    args.command_line = " ".join(["policysearch", *raw])
    verbosity = getattr(args, "verbose", 0) - getattr(args, "quiet", 0)
    # Under --json the object is the only thing on stdout: everything else printed goes to stderr.
    json_mode = bool(getattr(args, "json", False))
    token = json_stream.set(sys.stdout if json_mode else None)
    redirect = contextlib.redirect_stdout(sys.stderr) if json_mode else contextlib.nullcontext()
    failure: tuple[str, list[str], int, str] | None = None
    try:
        # tracking_session closes the command's trackers (MLflow uploads its artefacts) at the end
        with _interrupt_on_sigterm(), configure_logging(verbosity), redirect, tracking_session(args):
            return args.func(args)
    except PolicySearchError as exc:
        first, *details = str(exc).splitlines() or [type(exc).__name__]
        code = getattr(exc, "exit_code", EXIT_USAGE)
        failure = (first, details, code, type(exc).__name__)
    except KeyboardInterrupt as exc:
        failure = (_interrupted_line(args, exc), [], EXIT_INTERRUPTED, "Interrupted")
    except OSError as exc:  # a full disk, a permission, a vanished file: one line, never a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        failure = (f"{where}{exc.strerror or exc}", [], EXIT_USAGE, type(exc).__name__)
    finally:
        json_stream.reset(token)
    first, details, code, kind = failure
    label = "error: " if code == EXIT_USAGE else ""
    print(f"policysearch {args.command}: {label}{first}", file=sys.stderr)
    for line in details:
        print(f"  {line}" if line.strip() else "", file=sys.stderr)
    if json_mode:
        _json_error(args.command, first, details, code, kind)
    return code
