"""From parsed options to library objects: the data, the training and child configurations, the
budget, the parallel keyword arguments, whether to show progress, and the ``--json`` output.

`arguments` defines the options; this module reads them (a `argparse.Namespace`), importing the
library only when a command runs.
"""

from __future__ import annotations

import argparse
import contextvars
import os
import sys
from typing import Any


def parallel_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The `run_search` keyword arguments of the parallel options."""
    return dict(workers=args.workers, population=args.population, es_tasks=args.es_tasks,
                threads_per_worker=args.threads_per_worker,
                backend=args.backend, ray_address=args.ray_address, devices=args.devices,
                actor_resources=(args.actor_cpus, args.actor_gpus))


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars on stderr: on unless --no-progress or -q, ``TQDM_DISABLE`` is set (to anything but
    0 / false / no), or stderr is not a terminal (a log file must not fill with carriage returns)."""
    if getattr(args, "no_progress", False) or getattr(args, "quiet", 0) > 0:
        return False
    flag = os.environ.get("TQDM_DISABLE", "").strip().lower()
    if flag and flag not in ("0", "false", "no"):
        return False
    return sys.stderr.isatty()


def data_name(args: argparse.Namespace) -> str:
    """What the data is called in run folder names: the built-in name, or the stem of ``--data``."""
    if getattr(args, "data", None):
        text = str(args.data).rstrip("/")
        return os.path.splitext(os.path.basename(text.rpartition(":")[2] if ":" in text else text))[0] or "data"
    return args.dataset or "digits"


def data_option(args: argparse.Namespace) -> str:
    """The data option of this command line, for the "use it:" hints."""
    return f"--data {args.data}" if getattr(args, "data", None) else f"--dataset {args.dataset or 'digits'}"


def input_normalization(args: argparse.Namespace, recorded: dict[str, Any] | None = None,
                        what: str | None = None) -> Any:
    """How the model's inputs are normalised: ``--normalize``; else what the model's weights record
    (`recorded`, or the ``--weights`` file's); else "standardize" for a model trained here. Weights
    that record nothing (a plain state dict, a pickled module) need ``--normalize``: guessing would
    score the model on inputs it was not trained on, silently.

    Raises:
        ConfigError: weights without a recorded normalisation and no ``--normalize``.
    """
    from policysearch.data.preprocess import Normalization
    from policysearch.errors import ConfigError

    if getattr(args, "normalize", None) is not None:
        return args.normalize
    weights = getattr(args, "weights", None)
    if recorded is None and weights:
        from policysearch.models.weights import read_weights

        recorded = read_weights(weights).normalization
        what = what or f"--weights {weights}"
        if recorded is None:
            raise ConfigError(f"{what} is a plain state dict: it does not record how the model expects its inputs; "
                              "pass --normalize none (raw [0, 1] pixels), standardize (the data's per-channel mean "
                              "and std), imagenet, or MEAN,STD")
    if recorded is not None:
        return Normalization.from_dict(recorded, what or "the weights' normalization")
    return "standardize"


def prepare_data(args: argparse.Namespace, dataset: str | None = None, normalize: Any = None) -> Any:
    """The device-resident data the options describe: ``--data`` (a user's own), or `dataset` (overrides
    ``--dataset``); normalised as `normalize` says (default: `input_normalization`)."""
    from policysearch.data import load_data, prepare
    from policysearch.device import resolve_device
    from policysearch.errors import ConfigError

    normalize = normalize if normalize is not None else input_normalization(args)  # refused before any loading
    if "model" in args and args.command != "compress":  # compress's --model is the teacher's (None: the checkpoint's)
        settle_model(args)
    source: Any = dataset or args.dataset or "digits"
    task = getattr(args, "task", None)
    if getattr(args, "data", None):
        source = load_data(args.data, args.image_size, task=task, seed=args.split_seed)
    elif getattr(args, "image_size", None) is not None:
        raise ConfigError("--image-size resizes the images of --data FOLDER; a built-in data set has its own size")
    data = prepare(
        source, val_size=args.val_size, train_size=args.train_size, seed=args.split_seed,
        device=resolve_device(args.device), data_dir=args.data_dir, download=not args.no_download,
        test_size=args.test_size, normalize=normalize,
    )
    if task is not None and task != data.task:
        raise ConfigError(f"--task {task}, but {data_option(args)} is {data.task} data")
    return data


def expected_task(args: argparse.Namespace) -> str:
    """The task of the data the options name, known before loading it: ``--task``, a built-in set's own,
    an image folder's layout (images/ and masks/: segmentation), else classification."""
    if getattr(args, "task", None):
        return args.task
    if getattr(args, "data", None):
        from policysearch.data.mask_folder import is_mask_folder

        return "segmentation" if is_mask_folder(args.data) else "classification"
    from policysearch.data.sources import SOURCES

    source = SOURCES.get(getattr(args, "dataset", None) or "digits")
    return source.task if source is not None else "classification"


def settle_model(args: argparse.Namespace) -> str:
    """``--model``, or its default for the data's task (cnn; unet for segmentation and restoration)."""
    if args.model is None:
        from policysearch.tasks import get_task

        args.model = get_task(expected_task(args)).default_model
    return args.model


def train_config(args: argparse.Namespace, seed: int = 0) -> Any:
    """The `TrainConfig` the training options describe."""
    from policysearch.train.trainer import TrainConfig

    return TrainConfig(
        model=settle_model(args), weights=getattr(args, "weights", None), batch_size=args.batch_size,
        optimizer=args.optimizer, lr=args.lr,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, seed=seed,
        device=args.device, amp=not args.no_amp,
    )


def child_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The `ChildConfig` fields the options set, for the envs that train a child in segments."""
    return dict(
        model=settle_model(args), weights=getattr(args, "weights", None), device=args.device,
        batch_size=args.batch_size,
        lr=args.lr, optimizer=args.optimizer,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, amp=not args.no_amp,
        episode_length=args.episode_length, steps_per_segment=args.steps_per_segment,
        reward_metric=args.reward_metric, cost_weight=args.cost_weight, cost_metric=args.cost_metric,
        child_seed=args.child_seed,
    )


def budget(args: argparse.Namespace) -> Any:
    from policysearch.search.vecenv import Budget

    return Budget(child_trainings=args.budget, env_steps=args.budget_steps, seconds=args.budget_time)


#: Where `emit_json` writes: `main` points it at the real stdout while a ``--json`` command runs with
#: stdout redirected to stderr (so the readable report stays visible and stdout holds only the JSON).
json_stream: contextvars.ContextVar[Any] = contextvars.ContextVar("json_stream", default=None)


def emit_json(obj: Any) -> None:
    """The `--json` contract: stdout holds one strict JSON object (NaN as null) and nothing else."""
    from policysearch.files import json_dumps

    print(json_dumps(obj), file=json_stream.get() or sys.stdout, flush=True)
