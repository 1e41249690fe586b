"""The command line's tracking options (``--tensorboard [DIR]``, ``--mlflow [URI]``, ``--objectives``)
and the trackers a command opens, closed by `main` once the command has written its last file.

Where things go, unless a value is given:

- a search (``--out OUT``): TensorBoard in ``OUT/tensorboard/search`` (SB3's own curves beside it);
  MLflow in ``sqlite:///OUT/mlflow.db``, artefacts in ``OUT/mlartifacts``;
- ``train`` / ``evaluate``: TensorBoard in ``runs/tensorboard/<command>-<dataset>-<model>-<time>``
  (evaluate: one folder per training below it); MLflow in ``sqlite:///runs/mlflow.db``, artefacts
  in ``runs/mlartifacts``.

A missing extra is refused at parse time (exit 2, "pip install 'policysearch[tensorboard]'"), and
so is a multi-objective CMA-ES; nothing is created before the command starts its work.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from policysearch.cli.options import data_name
from policysearch.errors import PolicySearchError

_OPEN: list[Any] = []  # the trackers of the running command, closed by `tracking_session`
TRAIN_ROOT = Path("runs")


class _NeedsExtra(argparse.Action):
    """An option with an optional value (True when given bare) whose extra must be installed."""

    module = extra = ""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs="?", const=True, default=None, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        from policysearch.tracking import require_extra

        try:
            require_extra(self.module, self.extra, str(option_string))
        except PolicySearchError as exc:
            raise argparse.ArgumentError(self, str(exc)) from None
        if isinstance(values, str) and not values.strip():
            raise argparse.ArgumentError(self, "is empty, expected a folder or URI (or nothing: the default)")
        setattr(namespace, self.dest, True if values is None else values)


class _TensorBoard(_NeedsExtra):
    module = extra = "tensorboard"


class _MLflow(_NeedsExtra):
    module = extra = "mlflow"


def objective_list(text: str) -> tuple[Any, ...]:
    """``--objectives``: names checked at parse time (`policysearch.search.pareto.parse_objectives`)."""
    from policysearch.search.pareto import parse_objectives

    try:
        return parse_objectives(text)
    except PolicySearchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_tracking_args(g: Any, search: bool) -> None:
    """``--tensorboard [DIR]`` and ``--mlflow [URI]``; for a search also ``--objectives``."""
    where = "OUT/tensorboard" if search else "runs/tensorboard"
    g.add_argument("--tensorboard", action=_TensorBoard, metavar="DIR",
                   help=f"TensorBoard scalars of every {'child training and episode' if search else 'epoch'} "
                        f"(and SB3's own curves) under DIR (default: {where}); the tensorboard extra")
    store = "OUT/mlflow.db" if search else "runs/mlflow.db"
    g.add_argument("--mlflow", action=_MLflow, metavar="URI",
                   help=f"log params, metrics and artefacts to MLflow at URI (default: sqlite:///{store}); "
                        "the mlflow extra")
    if search:
        g.add_argument("--objectives", type=objective_list, default=None, metavar="A,B",
                       help="also write the Pareto front of the child trainings over these objectives "
                            "(pareto.json, pareto.png, pareto/), e.g. accuracy,tflops or accuracy,neg_ece; "
                            "tpe then searches a multi-objective study (default: none)")


def check_tracking_options(args: argparse.Namespace) -> None:
    """What the parser cannot check alone, before any work: CMA-ES with several objectives."""
    objectives = getattr(args, "objectives", None)
    if objectives:
        from policysearch.search.pareto import study_options

        study_options(objectives, getattr(args, "controller", ""))


def _train_name(args: argparse.Namespace) -> str:
    return f"{args.command}-{data_name(args)}-{args.model}"


def command_tracker(args: argparse.Namespace, out: Path | None = None, artefacts: tuple[Any, ...] = ()) -> Any:
    """The trackers the options ask for, closed after the command (by `tracking_session`).

    Args:
        args: the parsed options.
        out: a search's run folder (its TensorBoard writer is the search driver's, from ``--tensorboard``);
            None for `train` / `evaluate`.
        artefacts: files an MLflow run uploads at the end (a search uploads its run folder).
    """
    from policysearch.tracking import TensorBoardTracker, Trackers

    trackers: list[Any] = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if out is None and args.tensorboard:
        root = TRAIN_ROOT / "tensorboard" if args.tensorboard is True else Path(args.tensorboard)
        trackers.append(TensorBoardTracker(root / f"{_train_name(args)}-{stamp}"))
    if args.mlflow:
        from policysearch.tracking_mlflow import MLflowTracker, default_uri

        folder = out if out is not None else TRAIN_ROOT
        custom = args.mlflow is not True
        run_name = out.name if out is not None else f"{_train_name(args)}-{stamp}"
        trackers.append(MLflowTracker(
            args.mlflow if custom else default_uri(folder), f"policysearch-{args.command}", run_name,
            artefacts=(out,) if out is not None else tuple(a for a in artefacts if a),
            artifact_location=None if custom else (folder / "mlartifacts").resolve()))
    tracker = Trackers(trackers)
    _OPEN.append(tracker)
    return tracker


@contextlib.contextmanager
def tracking_session(args: argparse.Namespace) -> Iterator[None]:
    """Check the tracking options, run the command, then close its trackers (failed when it raised)."""
    check_tracking_options(args)
    failed = True
    try:
        yield
        failed = False
    finally:
        while _OPEN:
            _OPEN.pop().close(failed)
