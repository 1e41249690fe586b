"""The command line's arguments: value types that refuse nonsense at parse time,
and the option groups the commands share (`options` turns the parsed options into library objects).

A bad value is refused by argparse itself (exit 2, one line naming the option and the value),
before any data is loaded or any file is written. Registries (data sets, models, controllers)
are imported only when a value is checked or a sub-command's help lists their names (`HelpFormatter`),
so building the parser, and ``policysearch --help``, import no registry and no torch.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable
from typing import Any

from policysearch.errors import UnknownNameError

ArgType = Callable[[str], Any]


# ---------------------------------------------------------------------- value types
def _number(text: str, convert: Callable[[str], Any], what: str) -> Any:
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"is {text!r}, expected {what}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"is {text!r}, expected {what}")
    return value


def int_at_least(low: int) -> ArgType:
    """An int >= `low`."""
    def parse(text: str) -> int:
        value = _number(text, int, f"an int >= {low}")
        if value < low:
            raise argparse.ArgumentTypeError(f"is {value}, expected an int >= {low}")
        return value
    parse.__name__ = f"int>={low}"
    return parse


def number_in(low: float | None = None, high: float | None = None, low_open: bool = False,
              high_open: bool = False) -> ArgType:
    """A finite float within the bounds (open bounds exclude the value itself)."""
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    what = "a finite number" + (" " + " and ".join(parts) if parts else "")

    def parse(text: str) -> float:
        value = _number(text, float, what)
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"is {text}, expected {what}")
        if high is not None and (value >= high if high_open else value > high):
            raise argparse.ArgumentTypeError(f"is {text}, expected {what}")
        return value
    parse.__name__ = "number"
    return parse


positive_int = int_at_least(1)
seed_int = int_at_least(0)
positive_number = number_in(0.0, low_open=True)
non_negative_number = number_in(0.0)
fraction = number_in(0.0, 1.0, low_open=True)  # (0, 1]


def val_size(text: str) -> float | int:
    """The validation split: a fraction in (0, 1) or a whole count >= 1."""
    what = "a fraction in (0, 1) or a whole number of images >= 1"
    value = _number(text, float, what)
    if 0.0 < value < 1.0:
        return value
    if value >= 1.0 and value == int(value):
        return int(value)
    raise argparse.ArgumentTypeError(f"is {text}, expected {what}")


def name_of(kind: str, known: Callable[[], Iterable[str]]) -> ArgType:
    """One of the names `known()` returns (called at parse time: registries load lazily).

    The parser carries `known` as ``.names``: `HelpFormatter` lists the names when help is shown."""
    def parse(text: str) -> str:
        names = tuple(known())
        if text not in names:
            raise argparse.ArgumentTypeError(str(UnknownNameError(kind, text, names)))
        return text
    parse.__name__ = kind
    parse.names = known  # type: ignore[attr-defined]
    return parse


def name_or_file(known: Callable[[], Iterable[str]]) -> ArgType:
    """A built-in name or a file, checked later by its loader (which says "Did you mean");
    the built-in names show in help."""
    def parse(text: str) -> str:
        return text
    parse.__name__ = "name or file"
    parse.names = known  # type: ignore[attr-defined]
    return parse


def names_or_files(known: Callable[[], Iterable[str]]) -> ArgType:
    """`name_list` whose built-in names show in help."""
    def parse(text: str) -> list[str]:
        return name_list(text)
    parse.__name__ = "names or files"
    parse.names = known  # type: ignore[attr-defined]
    return parse


def _datasets() -> Iterable[str]:
    from policysearch.data import DATASETS

    return DATASETS


def _models() -> Iterable[str]:
    from policysearch.models import MODELS

    return MODELS


def model_arg(text: str) -> str:
    """A model name (checked now, with "did you mean"), or an import path / ``torchvision:`` / ``timm:``
    form, which the command resolves before any data is loaded."""
    if ":" in text:
        return text
    return name_of("model", _models)(text)


model_arg.names = _models  # type: ignore[attr-defined]


def image_size(text: str) -> tuple[int, int]:
    """``H`` or ``HxW``."""
    from policysearch.data.folder import parse_image_size
    from policysearch.errors import PolicySearchError

    try:
        return parse_image_size(text)
    except PolicySearchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def normalization(text: str) -> Any:
    """A named normalisation or given ``MEAN,STD`` values."""
    from policysearch.data.preprocess import parse_normalization
    from policysearch.errors import PolicySearchError

    try:
        return parse_normalization(text)
    except PolicySearchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _controllers(drives: str | None) -> Iterable[str]:
    from policysearch.search.controllers.registry import controller_names

    return controller_names(drives)


def _reward_metrics() -> Iterable[str]:
    from policysearch.metrics import REWARD_METRICS

    return REWARD_METRICS


def _cost_metrics() -> Iterable[str]:
    from policysearch.metrics import COST_METRICS

    return COST_METRICS


def _augment_policies() -> Iterable[str]:
    from policysearch.policies.augment import BUILTIN_POLICIES

    return BUILTIN_POLICIES


def _schedules() -> Iterable[str]:
    from policysearch.policies.schedule import SCHEDULES

    return SCHEDULES


def _train_schedules() -> Iterable[str]:
    """What `train` / `evaluate` take besides files: the named schedules, the online hypergradient
    rule and the shipped zero-shot peak rule (guarded; the shipped closed-loop controllers stay loadable
    by name, with a warning, but are not offered)."""
    from policysearch.policies.schedule import SCHEDULES

    return (*SCHEDULES, "hypergradient", "zoo:peak-rule")


def _ops() -> Iterable[str]:
    from policysearch.policies.augment import OPS

    return OPS


def _fixed(*names: str) -> Callable[[], Iterable[str]]:
    """A registry of a few fixed names that belong to the CLI itself (modes, criteria)."""
    return lambda: names


def device_name(text: str) -> str:
    """A device the resolver understands and this machine has."""
    from policysearch.device import resolve_device
    from policysearch.errors import PolicySearchError

    try:
        resolve_device(text)
    except PolicySearchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that shows every option's default, and for a value from a registry its names, read when
    the help is shown (so building the parser imports nothing heavy); epilogs keep their lines."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        names = getattr(action.type, "names", None)
        if names is not None:
            listed = ", ".join(str(n) for n in names())
            text = text.replace("{names}", listed) if "{names}" in text else f"{text}; one of: {listed}"
        if ("%(default)" not in text and "default:" not in text and action.option_strings and action.nargs != 0
                and action.default not in (None, argparse.SUPPRESS)):
            text += " (default: %(default)s)"
        return text

    def _split_lines(self, text: str, width: int) -> list[str]:
        # Never break inside a name such as "cropflip-erasing": a user copies names from here.
        import textwrap

        return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width, break_on_hyphens=False)


def name_list(text: str) -> list[str]:
    """A comma-separated, non-empty list of names or files."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"is {text!r}, expected one or more comma-separated names or files")
    return items


#: `policysearch.tasks.TASKS`, spelled out so that --help imports no torch (a test keeps the two equal).
TASK_NAMES = ("classification", "segmentation", "restoration")


# ---------------------------------------------------------------------- option groups
def add_data_args(p: argparse.ArgumentParser, default_dataset: str | None = "digits") -> None:
    g = p.add_argument_group("data")
    which = g.add_mutually_exclusive_group()
    which.add_argument("--dataset", default=default_dataset, type=name_of("dataset", _datasets),
                       help="a built-in data set: {names}" + ("" if default_dataset else
                                                              " (default: the one the checkpoint was trained on)"))
    which.add_argument("--data", default=None, metavar="SOURCE",
                       help="your own data instead: an image folder (a sub-folder per class, optionally under "
                            "train/ and test/), an .npz (x_train, y_train[, x_test, y_test, class_names]), or "
                            "module:function returning arrays or a torch Dataset (default: none: --dataset)")
    g.add_argument("--task", default=None, choices=TASK_NAMES,
                   help="what the targets are: classification (a label per image), segmentation (a mask per image: "
                        "a folder of images/ and masks/, or an .npz whose y are (N, H, W) masks), restoration (a "
                        "clean image per degraded one, from an .npz) (default: the data's own: a built-in set's, "
                        "a folder's layout, else classification)")
    g.add_argument("--image-size", type=image_size, default=None, metavar="H[xW]",
                   help="resize an image folder's images; required when their sizes differ (default: their own size)")
    g.add_argument("--normalize", type=normalization, default=None, metavar="HOW",
                   help="how the model's inputs are normalised: standardize (the training split's per-channel "
                        "mean and std), none (raw [0, 1] pixels), imagenet, or MEAN,STD (default: what the "
                        "weights file records, else standardize)")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder with the data set's files (default: $POLICYSEARCH_DATA, the cache, system folders)")
    g.add_argument("--train-size", type=positive_int, default=None, metavar="N",
                   help="cap the training split for proxy tasks (default: all of it)")
    g.add_argument("--val-size", type=val_size, default=0.1, metavar="SIZE",
                   help="validation split carved from the training data: fraction or count (default: %(default)s)")
    g.add_argument("--test-size", type=positive_int, default=None, metavar="N",
                   help="subsample the test split for quick runs (default: all of it)")
    g.add_argument("--split-seed", type=seed_int, default=0, metavar="SEED",
                   help="seed of the fixed train/val split (default: %(default)s)")
    g.add_argument("--no-download", action="store_true", help="never try the network for missing data")


def add_train_args(p: argparse.ArgumentParser, epochs: float | None = 10, zero_epochs: bool = False) -> None:
    """The model and its training; `zero_epochs` lets ``--epochs 0`` score a given model (``--weights``)."""
    g = p.add_argument_group("training")
    g.add_argument("--model", default=None, type=model_arg,
                   help="the network: {names}, or your own as module:function or file.py:function (a factory "
                        "taking the input shape and the class count), torchvision:NAME or timm:NAME "
                        "(default: cnn; unet for segmentation and restoration data)")
    g.add_argument("--weights", default=None, metavar="FILE",
                   help="start from these weights: a state dict (torch.save(model.state_dict(), FILE)) or a "
                        "`train --save` checkpoint, read without running code from it (default: none: the seeded "
                        "initial weights)")
    if epochs is not None:
        g.add_argument("--epochs", type=non_negative_number if zero_epochs else positive_number, default=epochs,
                       metavar="E", help="passes over the training split" + (
                           "; 0 scores the --weights model as it is" if zero_epochs else "")
                       + " (default: %(default)s)")
    add_child_args(g)


def add_child_args(g: Any) -> None:
    """The child-training options every training command honours."""
    g.add_argument("--batch-size", type=positive_int, default=128, metavar="N",
                   help="images per optimizer step (default: %(default)s)")
    g.add_argument("--lr", type=positive_number, default=None,
                   help="base learning rate (default: the model's)")
    g.add_argument("--optimizer", default=None, type=name_of("optimizer", _fixed("sgd", "adamw")),
                   help="{names} (default: the model's)")
    g.add_argument("--weight-decay", type=non_negative_number, default=5e-4, metavar="WD",
                   help="L2 (SGD) or decoupled (AdamW) weight decay (default: %(default)s)")
    g.add_argument("--label-smoothing", type=number_in(0.0, 1.0, high_open=True), default=0.0, metavar="S",
                   help="label smoothing in [0, 1) (default: %(default)s)")
    g.add_argument("--device", default="auto", type=device_name,
                   help="auto | cpu | cuda[:N] | mps (default: %(default)s)")
    g.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")


def add_search_args(p: argparse.ArgumentParser, budget: int | None = 20, segmented: bool = True,
                    drives: str | None = "env", controller: str | None = "ppo") -> Any:
    """Options of every search; `segmented` adds those of the envs that train a child in segments
    (Augment-v0, Schedule-v0), which Compress-v0 does not read and so does not show; `drives` limits
    ``--controller`` to the registry's env controllers ("env") or takes plan searchers too (None: compress)."""
    g = p.add_argument_group("search")
    g.add_argument("--controller", default=controller,
                   type=name_of("controller", lambda: _controllers(drives)),
                   help="the searcher: {names}; random is the baseline every claim must beat"
                        + (" (default: %(default)s)" if controller else " (default: the --effort's)"))
    g.add_argument("--budget", type=positive_int, default=budget, metavar="N",
                   help="child trainings" + (" (default: %(default)s)" if budget else " (default: the --effort's)"))
    g.add_argument("--budget-steps", type=positive_int, default=None, metavar="N",
                   help="also stop after this many env steps (default: no limit)")
    g.add_argument("--budget-time", type=positive_number, default=None, metavar="SECONDS",
                   help="also stop after this many seconds (default: no limit)")
    if segmented:
        g.add_argument("--mode", default="schedule", type=name_of("mode", _fixed("schedule", "static")),
                       help="{names}: one action per segment (PBA-like) or one whole policy per child training "
                            "(AutoAugment-like) (default: %(default)s)")
        g.add_argument("--episode-length", type=positive_int, default=4, metavar="N",
                       help="segments per child training (default: %(default)s)")
        g.add_argument("--steps-per-segment", type=positive_int, default=None, metavar="N",
                       help="optimizer steps per segment (default: one epoch)")
        g.add_argument("--reward-metric", default=None, type=name_of("reward metric", _reward_metrics),
                       help="validation figure the search maximises: {names}; fgsm_accuracy is accuracy under "
                            "FGSM at eps 8/255; miou and pixel_accuracy on segmentation data, psnr, ssim and "
                            "neg_mse on restoration data (default: accuracy; miou; psnr)")
        g.add_argument("--cost-weight", type=non_negative_number, default=0.0, metavar="W",
                       help="reward -= weight x cost (default: %(default)s)")
        g.add_argument("--cost-metric", default="tflops", type=name_of("cost metric", _cost_metrics),
                       help="unit of the cost term: {names} (default: %(default)s)")
    g.add_argument("--seed", type=seed_int, default=0, help="seed of the controller and the episode stream "
                   "(default: %(default)s)")
    g.add_argument("--child-seed", type=seed_int, default=None, metavar="SEED",
                   help="fix every child's seed (common random numbers) (default: a new seed per episode)")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="run folder (default: runs/<command>-<dataset>-<controller>)")
    g.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out: logged children are not trained again")
    g.add_argument("--overwrite", action="store_true", help="replace the run in --out (default: refuse)")
    return g  # the command adds the tracking options here (`policysearch.cli.tracking.add_tracking_args`)


def add_protocol_args(p: argparse.ArgumentParser, baselines: str | None, evidence: str) -> None:
    """The protocol's options (`policysearch.protocol`): how much work each phase does, the baselines (None:
    the data's task's, `policysearch.tasks.Task.augment_baselines`)."""
    g = p.add_argument_group("protocol: search, re-rank the top candidates with the baselines on fresh seeds, choose "
                             "on validation, compare on the test split over paired seeds, export the best")
    g.add_argument("--effort", default="standard", type=name_of("effort", _fixed("quick", "standard", "thorough")),
                   help="{names}: sizes the search, the re-ranking and the comparison; " + evidence
                        + " (default: %(default)s)")
    g.add_argument("--top", type=int_at_least(0), default=None, metavar="K",
                   help="distinct search candidates re-ranked on validation (default: the --effort's)")
    g.add_argument("--rerank-seeds", type=positive_int, default=None, metavar="N",
                   help="fresh seeds every candidate and baseline trains with on validation (default: the --effort's)")
    g.add_argument("--seeds", type=positive_int, default=None, metavar="N",
                   help="paired seeds of the final comparison on the test split (default: the --effort's)")
    g.add_argument("--decision-seeds", type=positive_int, default=None, metavar="N",
                   help="seeds the best searched candidate and the best baseline each train with for the held-out "
                        "decision, the re-ranking's included (default: the --effort's)")
    g.add_argument("--decision-confidence", type=number_in(0.5, 1.0, high_open=True), default=None, metavar="P",
                   help="the held-out decision exports the searched candidate when it is ahead of the best baseline "
                        "with a probability above this, counting the held-out images' noise (a bootstrap) and the "
                        "decision seeds' scatter (a Student t); 0.975 is about a 95 %% interval above zero "
                        "(default: 0.8, from the registered runs: docs, reference/controllers)")
    g.add_argument("--baselines", default=baselines, type=name_list, metavar="LIST",
                   help="the hand-made arms the search must beat on validation to be exported, and that the "
                        "final comparison reports (default: " + (baselines or "none,cropflip,erasing,trivial; for "
                        "segmentation and restoration data none,cropflip,cropflip-jitter,trivial") + ")")
    add_held_out_arg(g, "the best searched candidate and the best baseline",
                     "above zero often enough (--decision-confidence)")
    g.add_argument("--no-compare", action="store_true",
                   help="skip the final comparison on the test split (the choice on validation is still made)")
    g.add_argument("--search-only", action="store_true",
                   help="only the search: export its best episode without re-ranking or baselines")


def add_held_out_arg(g: Any, between: str, bar: str = "above zero at 95 %%") -> None:
    """--held-out: the validation images the search never scores, which decide the export
    (`policysearch.protocol.selection`)."""
    g.add_argument("--held-out", type=number_in(0.0, 1.0, high_open=True), default=0.5, metavar="FRACTION",
                   help=f"share of the validation images the search never scores: they decide between {between}, "
                        f"and the searched one is exported only when its lead there is {bar} (a bootstrap over "
                        "the images); 0: choose on the validation mean alone (default: %(default)s)")


def add_augment_space_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("augmentation search space")
    g.add_argument("--ops", default=None, type=names_or_files(_ops), metavar="OP,OP,...",
                   help="comma-separated subset of the op table: {names} (default: TrivialAugment's 13)")
    g.add_argument("--ops-per-sample", type=positive_int, default=1, metavar="N",
                   help="ops applied per image (default: %(default)s)")
    g.add_argument("--space", default="full", type=name_of("search space", _fixed("full", "small")),
                   help="{names}: every op's probability and strength, crop, flip, erasing, mixup, cutmix; or 5 "
                        "knobs for tiny budgets (ops per image, one magnitude, probability, erasing, mix) "
                        "(default: %(default)s)")
    g.add_argument("--magnitude-scale", default="standard",
                   type=name_of("magnitude scale", _fixed("standard", "wide")),
                   help="{names}: kornia's ranges or TrivialAugment-wide's (default: %(default)s)")


def add_robustness_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--robustness", type=number_in(0.0, 1.0), default=None, metavar="EPS",
                   help="also report test accuracy under FGSM and PGD (10 steps, random start) at this L-inf "
                        "epsilon, in [0, 1] pixel units of the un-normalised image, e.g. 0.03 (about 8/255) "
                        "(default: off)")


def add_parallel_args(p: argparse.ArgumentParser, search: bool = True) -> None:
    """How many children train at once, and where (`policysearch.search.workers`)."""
    g = p.add_argument_group("parallel children")
    g.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="trainings at once, each in its own worker process (default: %(default)s: in this process)")
    g.add_argument("--threads-per-worker", type=positive_int, default=1, metavar="N",
                   help="torch threads in each worker, with --workers > 1 (default: %(default)s)")
    if not search:
        return
    g.add_argument("--population", type=positive_int, default=None, metavar="N",
                   help="controller pbt: members trained together; more members than --workers take turns in "
                        "them (default: --workers when above 1, one member per worker; else 8, taking turns in "
                        "this process; demo: 8). Controller es: candidates per CMA-ES generation (default: "
                        "4 + 3 ln of the policy's size)")
    g.add_argument("--es-tasks", type=positive_int, default=None, metavar="N",
                   help="controller es: episodes (task, initial weights, batch order) that every candidate of a "
                        "generation runs, the same for all (default: 4)")
    g.add_argument("--backend", default="local", type=name_of("backend", lambda: ("local", "ray")),
                   help="local (processes on this machine) | ray (actors, needs policysearch[ray]) "
                        "(default: %(default)s)")
    g.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="an existing Ray cluster, e.g. auto or ray://HEAD:10001 (default: start a local Ray)")
    g.add_argument("--actor-cpus", type=positive_number, default=1.0, metavar="N",
                   help="CPUs Ray reserves for each child's actor, with --backend ray (default: %(default)s)")
    g.add_argument("--actor-gpus", type=non_negative_number, default=0.0, metavar="N",
                   help="GPUs (or a fraction) Ray reserves for each child's actor (default: %(default)s)")
    g.add_argument("--devices", default=None, type=name_list, metavar="LIST",
                   help="spread the workers over these devices, e.g. cuda:0,cuda:1 (default: --device)")


def add_output_args(p: argparse.ArgumentParser, progress: bool = True) -> None:
    """--json, -q / -v, and (for commands that train) --no-progress: the conventions of every command."""
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true",
                   help="stdout holds only one JSON object (NaN as null); the readable report goes to stderr")
    if progress:
        g.add_argument("--no-progress", action="store_true",
                       help="hide progress bars (they are also off when stderr is not a terminal or "
                            "TQDM_DISABLE is set)")
    g.add_argument("-q", "--quiet", action="count", default=0,
                   help="less logging: warnings only (-qq: errors only); also hides progress bars")
    g.add_argument("-v", "--verbose", action="count", default=0,
                   help="more logging: debug messages of policysearch (-vv: of every library too)")
