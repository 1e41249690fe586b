"""Model checkpoints that later commands can load: model name, shapes, state_dict, provenance;
and child-training states (`save_child_state` / `load_child_state`, the files of an env's
`get_state()`).

Saved with torch.save but holding only tensors and plain values, so they load with
``torch.load(weights_only=True)``, i.e. without trusting the file to run code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from policysearch.checks import check_int, check_shape, check_tensors, is_int
from policysearch.errors import ConfigError, PolicyFormatError
from policysearch.files import atomic_path
from policysearch.models import build_model
from policysearch.policies.compress import CompressionPlan
from policysearch.tasks import TASKS, get_task

CHECKPOINT_KIND = "policysearch_checkpoint"
CHECKPOINT_VERSION = 1
CHILD_STATE_KIND = "policysearch_child_state"
CHILD_STATE_VERSION = 1
# Bounds on what a checkpoint may claim, checked before anything is allocated: a damaged or crafted
# header must be an error, not a terabyte allocation. Far above the image classifiers policysearch trains.
MAX_INPUT_ELEMENTS = 2**24  # C x H x W of one image, e.g. 3 x 2048 x 2048
MAX_CLASSES = 100_000
MAX_MODEL_PARAMETERS = 2**28  # 1 GiB of float32 weights


@dataclass
class Checkpoint:
    model_name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    state_dict: dict[str, torch.Tensor]
    info: dict[str, Any]  # dataset name / fingerprint, normalisation, training config, metrics
    source: str = "checkpoint"  # the file it was read from, for messages

    @property
    def task(self) -> str:
        """What the model predicts: the task its training data recorded (classification for older files)."""
        dataset = self.info.get("dataset")
        task = dataset.get("task") if isinstance(dataset, dict) else None
        return task if task in TASKS else "classification"

    def _build(self) -> nn.Module:
        outputs = get_task(self.task).output_shape(self.input_shape, self.num_classes)
        return build_model(self.model_name, self.input_shape, self.num_classes, outputs)

    def build(self) -> nn.Module:
        """A registered model with the saved weights; a compressed one (its plan in `info`) is
        rebuilt with the pruned architecture first.

        The architecture is first built on the ``meta`` device (no memory): its size is bounded and
        the saved tensors must have its names, shapes and dtypes before the model is allocated.

        Raises:
            PolicyFormatError: The weights do not fit the model the file names, or it is too large.
        """
        with torch.device("meta"):
            skeleton = self._build()
        size = sum(p.numel() for p in skeleton.parameters())
        if size > MAX_MODEL_PARAMETERS:
            raise PolicyFormatError(
                f"{self.source}: model {self.model_name!r} for input {self.input_shape} and {self.num_classes} classes "
                f"would hold {size:,} parameters, expected at most {MAX_MODEL_PARAMETERS:,}; the file is damaged")
        misfit = (f"{self.source}: its weights do not fit model {self.model_name!r} with input {self.input_shape} "
                  f"and {self.num_classes} classes")
        if self.info.get("plan"):
            plan = CompressionPlan.from_dict(self.info["plan"], source=f"{self.source}: its plan")
            model = plan.build()
            check_tensors(misfit, self.state_dict, model.state_dict())
            model.load_state_dict(self.state_dict)
            return model
        check_tensors(misfit, self.state_dict, skeleton.state_dict())
        model = self._build()
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:  # torch lists every mismatched tensor; the first lines say enough
            detail = " ".join(str(exc).split())[:300]
            raise PolicyFormatError(
                f"{self.source}: its weights do not fit model {self.model_name!r} with input {self.input_shape} "
                f"and {self.num_classes} classes ({detail})"
            ) from None
        return model


def save_checkpoint(
    path: str | Path, model: nn.Module, model_name: str, input_shape: tuple[int, int, int], num_classes: int,
    info: dict[str, Any] | None = None,
) -> Path:

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = {
        "kind": CHECKPOINT_KIND,
        "format_version": CHECKPOINT_VERSION,
        "model": model_name,
        "input_shape": list(input_shape),
        "num_classes": int(num_classes),
        "state_dict": state,
        "info": info or {},
    }
    with atomic_path(path) as tmp:  # a failed write (full disk) leaves the old checkpoint intact
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint with ``torch.load(weights_only=True)``: nothing in the file is executed.

    Raises:
        PolicyFormatError: The file is missing, not a policysearch checkpoint (a pickled module
            among them: such a file needs ``--trust-pickle`` where a command accepts one), from a
            newer policysearch, or lacks a field; the message names the problem.
    """
    path = Path(path)
    raw = _load_weights_only(path, "checkpoint")
    if not isinstance(raw, dict) or raw.get("kind") != CHECKPOINT_KIND:
        raise PolicyFormatError(f"{path}: not a policysearch checkpoint (field 'kind' missing or wrong)")
    version = raw.get("format_version")
    if not is_int(version) or not 1 <= version <= CHECKPOINT_VERSION:
        raise PolicyFormatError(
            f"{path}: field 'format_version' is {version!r}; this policysearch reads checkpoint versions "
            f"1..{CHECKPOINT_VERSION} (upgrade policysearch for newer files)"
        )
    expected = {"model": str, "input_shape": list, "num_classes": int, "state_dict": dict, "info": dict}
    for field, kind in expected.items():
        if not isinstance(raw.get(field), kind) or isinstance(raw.get(field), bool):  # True is an int
            got = "missing" if field not in raw else f"{type(raw[field]).__name__}"
            raise PolicyFormatError(f"{path}: field {field!r} is {got}, expected {kind.__name__}")
    shape = check_shape(f"{path}: field 'input_shape'", raw["input_shape"], error=PolicyFormatError)
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise PolicyFormatError(f"{path}: field 'input_shape' is {list(shape)} ({math.prod(shape):,} values per "
                                f"image), expected at most {MAX_INPUT_ELEMENTS:,}; the file is damaged")
    # 1: a grey restoration net's one output channel (`num_classes` holds the model's outputs)
    check_int(f"{path}: field 'num_classes'", raw["num_classes"], 1, MAX_CLASSES, error=PolicyFormatError)
    if not all(isinstance(v, torch.Tensor) for v in raw["state_dict"].values()):
        raise PolicyFormatError(f"{path}: field 'state_dict' holds non-tensor values")
    check_tensors(str(path), raw["state_dict"])  # finite weights, before any work is done with them
    return Checkpoint(raw["model"], shape, raw["num_classes"], raw["state_dict"], raw["info"], str(path))



def _load_weights_only(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU, every failure a PolicyFormatError naming `what`."""
    if not path.is_file():
        raise PolicyFormatError(f"{path}: no such {what} file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign, pickled or corrupt files
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise PolicyFormatError(
                f"{path}: holds pickled Python objects, which policysearch does not load unasked "
                "(a pickle can run code); pass --trust-pickle (or trust_pickle=True) only for a file you trust"
            ) from None
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise PolicyFormatError(f"{path}: not a policysearch {what} ({type(exc).__name__}: {first})") from None


def child_state_problem(state: Any, env_id: str | None = None) -> str | None:
    """What is wrong with a child state's header (kind, format version, env id), or None if nothing.

    One check for both callers: `load_child_state` raises it as a PolicyFormatError (a bad file),
    an env's `set_state` as a ConfigError (a state that does not fit the env).
    """
    if not isinstance(state, dict) or state.get("kind") != CHILD_STATE_KIND:
        got = state.get("kind") if isinstance(state, dict) else type(state).__name__
        return f"not a child-training state (kind {got!r}, expected {CHILD_STATE_KIND!r})"
    version = state.get("format_version")
    if not is_int(version) or not 1 <= version <= CHILD_STATE_VERSION:
        return (f"child-state format_version is {version!r}; this policysearch reads versions "
                f"1..{CHILD_STATE_VERSION} (upgrade policysearch for newer states)")
    if env_id is not None and state.get("env_id") != env_id:
        return f"the state is of env {state.get('env_id')!r}, not {env_id!r}"
    return None


def save_child_state(state: dict[str, Any], path: str | Path) -> Path:
    """Write an env's `get_state()` atomically (a temporary file renamed into place) with torch.save.

    Raises:
        ConfigError: `state` is not a child-training state.
    """

    problem = child_state_problem(state)
    if problem:
        raise ConfigError(f"save_child_state: {problem}")
    path = Path(path)
    with atomic_path(path) as tmp:  # a kill mid-write leaves the previous state file whole
        torch.save(state, tmp)
    return path


def load_child_state(path: str | Path) -> dict[str, Any]:
    """Read a file from `save_child_state` with ``torch.load(weights_only=True)``: nothing in it runs.

    Pass the result to the env's `set_state`, which checks that it fits that env.

    Raises:
        PolicyFormatError: The file is missing, pickled, not a child state, or from a newer policysearch.
    """
    path = Path(path)
    raw = _load_weights_only(path, "child-training state")
    problem = child_state_problem(raw)
    if problem:
        raise PolicyFormatError(f"{path}: {problem}")
    return raw
