"""``AdaptiveSchedule``: a closed-loop learning-rate controller learned on ``policysearch/Schedule-v1`` (or v0).

A :class:`~policysearch.policies.schedule.LearnedSchedule` replays the LRs of the best search
episode (open loop). An ``AdaptiveSchedule`` instead keeps the trained controller and asks it,
at every segment boundary of a new run, for the next LR given the run's own statistics (closed
loop). It is two files side by side:

- ``controller.zip``: the stable-baselines3 model, as SB3 saves it. SB3's own ``PPO.load``
  unpickles parts of it, so policysearch never does by default: it reads only the zip's plain JSON
  and its tensors (``policies/sb3_zip.py``) and rebuilds the network from this sidecar's contract;
- ``controller.json``: the sidecar (``kind: "adaptive_lr_controller"``) that says how to build
  the controller's observation from training statistics and how to turn its action into an LR,
  so the exact vector the controller saw during search is rebuilt outside the env.

:class:`ScheduleSpace` (in ``schedule_space.py``, re-exported here) is that observation / action
contract; the env and this module share it.
:class:`AdaptiveLRCallback` drives any plain PyTorch optimizer with a loaded controller.

A controller of Schedule-v1 (residual) scales a base schedule (onecycle or linear decay) that peaks
at the optimizer's LR when the callback is built: build the optimizer with your model's usual peak
LR. A controller trained with ``peak="range-test"`` (``adaptive.space.peak``) expects that peak to
come from an LR range test of the run: ``train_run`` runs it; in a plain loop pass its suggestion
as ``base_lr=`` (``policysearch.train.lr_range``). ``AdaptiveSchedule.load("zoo:adaptive")`` loads the
controller shipped in ``policies/zoo/``.

Example::

    adaptive = AdaptiveSchedule.load("runs/lr/controller.json")
    callback = AdaptiveLRCallback(optimizer, adaptive, total_steps, evaluate_fn=validate)
    for x, y in batches:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(); loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        optimizer.step()
        callback.on_step(loss.item(), float(grad_norm))
"""

from __future__ import annotations

import statistics
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from policysearch.checks import check_choice, check_int, check_lr, check_tensors
from policysearch.errors import ConfigError, PolicyFormatError
from policysearch.files import atomic_path
from policysearch.metrics import REWARD_METRICS
from policysearch.policies import zoo as shipped
from policysearch.policies.artifact import provenance as make_provenance
from policysearch.policies.artifact import read_json, read_provenance, require, unwrap, wrap, write_json
from policysearch.policies.hypergradient import Hypergradient
from policysearch.policies.linear_policy import WEIGHTS_SUFFIX, LinearPolicy
from policysearch.policies.peak_rule import PeakRule
from policysearch.policies.probe_policy import ProbePolicy
from policysearch.policies.sb3_zip import load_sb3_policy
from policysearch.policies.schedule import LearnedSchedule, load_schedule

# The observation / action contract lives in its own module; re-exported here, where users meet it.
from policysearch.policies.schedule_kinds import CLOSED_LOOP
from policysearch.policies.schedule_space import OBSERVATION_NAMES, ScheduleSpace

__all__ = ["ALGOS", "CONTROLLER_ALGOS", "OBSERVATION_NAMES", "ZOO_DIR", "AdaptiveLRCallback", "AdaptiveSchedule",
           "ScheduleSpace", "resolve_schedule", "resolve_zoo", "zoo_names"]

ZOO_DIR = shipped.ZOO_DIR

ALGOS: tuple[str, ...] = ("ppo", "sac", "a2c", "linear", "probe")
# The controller (search) name that learns each kind: `es` a linear policy, `probe` a probe policy.
CONTROLLER_ALGOS: dict[str, str] = {"ppo": "ppo", "sac": "sac", "a2c": "a2c", "es": "linear", "probe": "probe"}
# The controller file beside the sidecar: an SB3 zip, or a linear (probe) policy's weights as JSON.
_MODEL_SUFFIX: dict[str, str] = {"linear": WEIGHTS_SUFFIX, "probe": WEIGHTS_SUFFIX}

# Everything `--schedule zoo:NAME` takes: closed-loop controllers, peak rules and open-loop schedules.
_SCHEDULE_KINDS = ("adaptive_lr_controller", "peak_rule", "lr_schedule")


def zoo_names() -> tuple[str, ...]:
    """The controllers shipped in ``policies/zoo/`` (names for ``zoo:NAME``): closed-loop controllers
    (`AdaptiveSchedule`) and peak rules (`PeakRule`)."""
    return shipped.zoo_names(_SCHEDULE_KINDS)


def resolve_zoo(spec: str | Path) -> Path:
    """The sidecar path of a shipped controller ``zoo:NAME`` (any other spec is returned as a path).

    Raises:
        UnknownNameError: For a NAME the zoo does not ship ("Did you mean ...").
    """
    return shipped.resolve_zoo(spec, _SCHEDULE_KINDS)


class AdaptiveSchedule:
    """A trained controller that picks the LR of each segment from the run's statistics.

    Args:
        model: A stable-baselines3 PPO, SAC or A2C model trained on ``policysearch/Schedule-v1`` (or
            v0), or a ``LinearPolicy`` (controller `es`).
        space: The observation / action contract it was trained with.
        reward_metric: What ``val_metric`` in the statistics must be ("accuracy", "macro_f1",
            "neg_ece", "neg_nll"), as during search.
        algo: "ppo", "sac", "a2c", "linear" or "probe"; None reads it from the model.
        name: A short label for reports.
        search_steps_per_segment: Optimizer steps per segment during search (informational: a
            new run spreads ``space.segments`` segments over its own length).
        provenance: Where the controller came from (see ``policies.artifact.provenance``).

    Raises:
        ConfigError: If the model's spaces do not match ``space`` or a name is unknown.
    """

    KIND: ClassVar[str] = "adaptive_lr_controller"
    SCHEDULE_KIND: ClassVar[str] = CLOSED_LOOP
    FORMAT_VERSION: ClassVar[int] = 1

    def __init__(
        self,
        model: Any,
        space: ScheduleSpace,
        reward_metric: str = "accuracy",
        algo: str | None = None,
        name: str = "adaptive",
        search_steps_per_segment: int | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> None:
        algo = algo if algo is not None else getattr(model, "algo", None) or type(model).__name__.lower()
        check_choice("controller algorithm", algo, ALGOS)
        check_choice("reward metric", reward_metric, REWARD_METRICS)
        obs_shape = tuple(getattr(model.observation_space, "shape", ()) or ())
        act_shape = tuple(getattr(model.action_space, "shape", ()) or ())
        if obs_shape != (space.dim,) or act_shape != (1,):
            raise ConfigError(
                f"controller has observation shape {obs_shape} and action shape {act_shape}, expected "
                f"({space.dim},) and (1,): it was not trained on policysearch/Schedule-"
                f"{'v1' if space.residual else 'v0'} with this space"
            )
        self.model, self.space, self.reward_metric, self.algo = model, space, reward_metric, algo
        self.name, self.search_steps_per_segment = name, search_steps_per_segment
        self.provenance = dict(provenance or {})

    @property
    def segments(self) -> int:
        """LR decisions per run: call :meth:`lr_for` at the start and after each of the first
        ``segments - 1`` equal parts of training."""
        return self.space.segments

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_env(
        cls, controller: Any, env: Any, algo: str = "ppo", provenance: dict[str, Any] | None = None
    ) -> AdaptiveSchedule:
        """The controller a search trained, with the contract of the env it was trained on.

        Args:
            controller: An SB3 model or a ``LinearPolicy``, or the path of its file (e.g.
                ``run_dir / "controller.zip"``).
            env: The ``ScheduleEnv`` of the search (wrapped or not).
            algo: How to load a file: "ppo", "sac", "a2c", "linear" or "probe" (ignored for a model object).
            provenance: Defaults to the library versions plus the env's ``describe()`` essentials.
        """
        base = env.unwrapped
        if isinstance(controller, (str, Path)):
            model, model_algo = _load_model(controller, algo, str(controller), base.space), algo
        else:
            model, model_algo = controller, None  # read from the model's class
        if provenance is None:
            info = base.describe()
            provenance = make_provenance(
                env_id=info.get("env_id"), dataset=info.get("dataset"),
                dataset_fingerprint=info.get("dataset_fingerprint"), model=info.get("model"),
                reward_metric=info.get("reward_metric"), classes=info.get("classes"),
                label_map=info.get("label_map"), normalization=info.get("normalization"),
            )
        return cls(model, base.space, base.reward_metric, model_algo,
                   search_steps_per_segment=base.steps_per_segment, provenance=provenance)

    # ------------------------------------------------------------------ decisions
    def observation(self, stats: Mapping[str, Any]) -> np.ndarray:
        """:meth:`ScheduleSpace.observation` of ``stats``."""
        return self.space.observation(stats)

    def action_for(self, stats: Mapping[str, Any]) -> float:
        """The controller's deterministic action in [-1, 1] for the run's statistics."""
        action, _ = self.model.predict(self.observation(stats), deterministic=True)
        return float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1.0, 1.0))

    def lr_for(self, stats: Mapping[str, Any], base_lr: float | None = None) -> float:
        """The LR for the next segment given the run's statistics (see :meth:`ScheduleSpace.observation`
        for the keys); uses the controller's deterministic action, so equal stats give equal LRs.
        A residual controller needs ``base_lr`` (the run's peak LR) and gives the LR at
        ``stats["progress"]``; within the segment its LR follows the base schedule."""
        action = self.action_for(stats)
        if not self.space.residual:
            return self.space.lr([action])
        if base_lr is None:
            raise ConfigError("lr_for: a residual controller (Schedule-v1) needs base_lr, the run's peak LR")
        return self.space.residual_lr([action], float(stats["progress"]), base_lr)

    def callback(
        self, optimizer: torch.optim.Optimizer, total_steps: int, evaluate_fn: Callable[[], tuple[float, float]],
        base_lr: float | None = None,
    ) -> AdaptiveLRCallback:
        """An :class:`AdaptiveLRCallback` for ``optimizer`` (sets the first LR at once)."""
        return AdaptiveLRCallback(optimizer, self, total_steps, evaluate_fn, base_lr)

    # ------------------------------------------------------------------ files
    def to_dict(self, controller_file: str) -> dict[str, Any]:
        """The sidecar as a JSON-able dict, naming ``controller_file`` (relative to the sidecar)."""
        body = {
            "name": self.name,
            "algo": self.algo,
            "controller_file": controller_file,
            "reward_metric": self.reward_metric,
            **self.space.to_dict(),
            "search_steps_per_segment": self.search_steps_per_segment,
        }
        return wrap(self.KIND, self.FORMAT_VERSION, body, self.provenance)

    def save(self, dir_or_prefix: str | Path) -> Path:
        """Write ``<prefix>.json`` and ``<prefix>.zip`` (a linear policy: ``<prefix>.weights.json``);
        return the JSON's path.

        Args:
            dir_or_prefix: An existing directory (files ``controller.json`` / ``controller.zip``
                in it), a ``.json`` path, or a path prefix.
        """
        path = Path(dir_or_prefix)
        prefix = path / "controller" if path.is_dir() else path.with_suffix("") if path.suffix == ".json" else path
        prefix.parent.mkdir(parents=True, exist_ok=True)
        zip_path = prefix.with_name(prefix.name + _MODEL_SUFFIX.get(self.algo, ".zip"))

        with atomic_path(zip_path) as tmp:
            self.model.save(tmp)
        return write_json(prefix.with_name(prefix.name + ".json"), self.to_dict(zip_path.name))

    @classmethod
    def load(cls, path: str | Path, trust_pickle: bool = False) -> AdaptiveSchedule:
        """Read a sidecar written by :meth:`save` and the controller zip it names (next to it).

        ``path`` may also be ``"zoo:NAME"``: a controller shipped in ``policies/zoo/`` (offline).

        Nothing in either file is executed: the zip's network is rebuilt from the sidecar's
        contract and its weights read as tensors. ``trust_pickle=True`` opens the zip with SB3's
        own loader instead (it unpickles, i.e. can run code: only for files you trust).

        Raises:
            PolicyFormatError: If either file is missing or malformed; the message names the field.
        """
        source = str(path)
        path = shipped.resolve_zoo(path, (cls.KIND,))
        data = unwrap(read_json(path), cls.KIND, cls.FORMAT_VERSION, source)
        name = require(data, "name", str, source)
        algo = require(data, "algo", str, source)
        check_choice(f"{source}: field 'algo'", algo, ALGOS, error=PolicyFormatError)
        controller_file = require(data, "controller_file", str, source)
        reward_metric = require(data, "reward_metric", str, source)
        check_choice(f"{source}: field 'reward_metric'", reward_metric, REWARD_METRICS, error=PolicyFormatError)
        space = ScheduleSpace.from_dict(data, source)
        steps = data.get("search_steps_per_segment")
        if steps is not None:
            check_int(f"{source}: field 'search_steps_per_segment'", steps, 1, error=PolicyFormatError)
        prov = read_provenance(data, source)
        zip_path = Path(path).parent / controller_file
        if Path(controller_file).name != controller_file:
            raise PolicyFormatError(f"{source}: field 'controller_file' is {controller_file!r}, expected a file name "
                                    "beside the sidecar (no folders)")
        if not zip_path.is_file():
            raise PolicyFormatError(
                f"{source}: field 'controller_file' names {zip_path}, which does not exist; "
                "keep the .zip next to the .json"
            )
        model = _load_model(zip_path, algo, source, space, trust_pickle)
        try:
            return cls(model, space, reward_metric, algo, name, steps, prov)
        except ConfigError as exc:
            raise PolicyFormatError(f"{source}: {exc}") from exc


def _load_model(path: str | Path, algo: str, source: str, space: ScheduleSpace, trust_pickle: bool = False) -> Any:
    """Load a controller zip of class ``algo`` on the CPU (a controller is tiny; the GPU is for training).

    By default nothing in the zip is executed (:func:`~policysearch.policies.sb3_zip.load_sb3_policy`
    rebuilds the network for ``space``); ``trust_pickle=True`` uses SB3's own loader, which
    unpickles the zip's serialized entries and so runs code from the file.
    """
    check_choice("controller algorithm", algo, ALGOS)
    from gymnasium import spaces

    observation_space = spaces.Box(-space.clip, space.clip, shape=(space.dim,), dtype=np.float32)
    action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
    if algo == "linear":  # plain JSON weights: nothing to unpickle
        return LinearPolicy.load(path, observation_space, action_space, source=f"{source} ({path})")
    if algo == "probe":  # plain JSON too
        policy = ProbePolicy.load(path, observation_space, action_space, source=f"{source} ({path})")
        if policy.segments != space.segments:
            raise PolicyFormatError(f"{source}: the probe policy decides in runs of {policy.segments} segments, the "
                                    f"sidecar says {space.segments}")
        return policy
    if not trust_pickle:
        return load_sb3_policy(path, algo, observation_space, action_space, source=f"{source} ({path})")
    import warnings

    import stable_baselines3 as sb3

    warnings.warn(f"{path}: loading with SB3's unpickling loader (trust_pickle=True): the file can run code",
                  stacklevel=3)
    try:
        model = getattr(sb3, algo.upper()).load(str(path), device="cpu")
    except (OSError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile) as exc:
        raise PolicyFormatError(f"{source}: cannot load {path} as an SB3 {algo.upper()} model ({exc})") from exc
    check_tensors(f"{source} ({path})", model.policy.state_dict())  # NaN weights would fail mid-training
    return model


class AdaptiveLRCallback:
    """Drives a plain PyTorch optimizer with an :class:`AdaptiveSchedule`.

    Training is split into ``adaptive.segments`` equal parts of ``total_steps``. The constructor
    evaluates once and sets the first part's LR (as the env does at reset); after the last
    optimizer step of each part, :meth:`on_step` calls ``evaluate_fn`` again, builds the
    statistics the controller was trained on, and sets the next LR on every param group.

    Call order: build the optimizer, build this callback, then per batch ``loss.backward()``,
    ``optimizer.step()``, ``callback.on_step(loss, grad_norm)``.

    Args:
        optimizer: Any ``torch.optim.Optimizer``.
        adaptive: The loaded controller.
        total_steps: Optimizer steps of the whole run.
        evaluate_fn: Returns ``(val_loss, val_metric)`` for the current model, ``val_metric``
            being ``adaptive.reward_metric`` (e.g. accuracy in [0, 1]; for "neg_nll" pass -NLL).
            It should put the model back in train mode if it switches to eval mode.
        base_lr: A residual controller's peak LR (that of the base schedule it scales); None takes
            the optimizer's LR at construction. Ignored for a v0 controller.

    A residual controller (Schedule-v1) sets the LR at every step, ``base(progress) * factor``, the
    factor being its last decision; a v0 controller only at the segment boundaries.

    Attributes:
        lr: The LR currently set.
        history: One dict per decision: ``step``, ``lr`` and the ``stats`` it was based on.

    Raises:
        ConfigError: If ``total_steps`` is not an int of at least ``adaptive.segments``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        adaptive: AdaptiveSchedule,
        total_steps: int,
        evaluate_fn: Callable[[], tuple[float, float]],
        base_lr: float | None = None,
    ) -> None:
        segments = adaptive.segments
        check_int("total_steps (one step per segment at least)", total_steps, segments)
        self.optimizer, self.adaptive, self.total_steps = optimizer, adaptive, total_steps
        self.evaluate_fn = evaluate_fn
        self.base = None
        self.action = 0.0
        if adaptive.space.residual:
            peak = check_lr("base_lr", base_lr if base_lr is not None else float(optimizer.param_groups[0]["lr"]))
            self.base_lr = peak
            self.base = adaptive.space.base_schedule(peak)
        # Decision points in steps; rounding spreads any remainder over the parts.
        self.boundaries = {round(i * total_steps / segments): i for i in range(1, segments)}
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self._losses: list[float] = []
        self._norms: list[float] = []
        val_loss, metric = self._evaluate()
        self._prev: dict[str, float] = {"train_loss": adaptive.space.loss_scale, "val_loss": val_loss,
                                        "val_metric": metric}
        self.lr = self._decide({"progress": 0.0, "val_loss": val_loss, "val_metric": metric,
                                "segments_left": segments, "total_steps": total_steps, "action": 0.0})

    def on_step(self, train_loss: float | torch.Tensor, grad_norm: float | torch.Tensor) -> float:
        """Record one optimizer step (its loss and total gradient norm); return the LR now set.

        Passing tensors works but synchronises with the device; pass ``loss.item()`` where you
        already have it.
        """
        self.step += 1
        self._losses.append(float(train_loss))
        self._norms.append(float(grad_norm))
        segment = self.boundaries.get(self.step)
        if segment is not None:
            val_loss, metric = self._evaluate()
            train = statistics.fmean(self._losses) if self._losses else self._prev["train_loss"]
            # Sample std, as the env's trainer computes it (torch's default, 0 for one step).
            std = statistics.stdev(self._norms) if len(self._norms) > 1 else 0.0
            stats = {
                "progress": self.step / self.total_steps,
                "train_loss": train,
                "val_loss": val_loss,
                "val_metric": metric,
                "prev_train_loss": self._prev["train_loss"],
                "prev_val_loss": self._prev["val_loss"],
                "prev_val_metric": self._prev["val_metric"],
                "lr": self.lr,
                "grad_norm_mean": statistics.fmean(self._norms) if self._norms else 0.0,
                "grad_norm_std": std,
                "segments_left": self.adaptive.segments - segment,
                "total_steps": self.total_steps,
                "action": self.action,
            }
            self._prev = {"train_loss": train, "val_loss": val_loss, "val_metric": metric}
            self._losses, self._norms = [], []
            self.lr = self._decide(stats)
        elif self.base is not None:  # residual: the LR follows the base schedule within a segment
            self._set_lr(self._residual_lr())
        return self.lr

    def _evaluate(self) -> tuple[float, float]:
        result = self.evaluate_fn()
        try:
            val_loss, metric = result
            return float(val_loss), float(metric)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"evaluate_fn returned {result!r}, expected (val_loss, val_metric)") from exc

    def _residual_lr(self) -> float:
        return self.base.lr_at(min(1.0, self.step / self.total_steps)) * self.adaptive.space.factor([self.action])

    def _set_lr(self, lr: float) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.lr = lr
        return lr

    def _decide(self, stats: dict[str, Any]) -> float:
        self.action = self.adaptive.action_for(stats)
        if self.base is not None:
            lr = self._set_lr(self._residual_lr())
            self.history.append({"step": self.step, "lr": lr, "action": self.action,
                                 "factor": self.adaptive.space.factor([self.action]), "stats": stats})
            return lr
        lr = self._set_lr(self.adaptive.space.lr([self.action]))
        self.history.append({"step": self.step, "lr": lr, "stats": stats})
        return lr


def resolve_schedule(spec: str | Path, base_lr: float, trust_pickle: bool = False) -> Any:
    """What `--schedule` names: a built-in schedule, "hypergradient" (online hypergradient descent
    from `base_lr`), a `LearnedSchedule` JSON file (open loop), a `PeakRule` JSON file (the peak
    picked at the run's start), or an `AdaptiveSchedule` (closed loop) given by its JSON sidecar,
    its controller zip (loaded without executing anything from it unless `trust_pickle`) or
    ``zoo:NAME`` (shipped in ``policies/zoo/``, either kind)."""

    if str(spec) == "hypergradient":
        return Hypergradient(base_lr)

    zoo = shipped.is_zoo(spec)
    path = resolve_zoo(spec)
    if path.suffix == ".zip":
        path = path.with_suffix(".json")
        if not path.is_file():
            raise PolicyFormatError(f"{spec}: a controller zip needs its sidecar {path.name} beside it")
        return AdaptiveSchedule.load(path, trust_pickle)
    if path.suffix == ".json" and path.is_file():
        try:
            data = read_json(path)
        except PolicyFormatError:
            data = None  # let the schedule loader report the problem precisely
        kind = data.get("kind") if isinstance(data, dict) else None
        if kind == PeakRule.KIND:
            return PeakRule.from_dict(data, str(path))
        if kind == AdaptiveSchedule.KIND:
            return AdaptiveSchedule.load(path, trust_pickle)
        if zoo:  # a shipped open-loop schedule
            return LearnedSchedule.load(path)
    return load_schedule(str(spec), base_lr=base_lr)
