"""Population-based search (PBT / PBA): a population trains once; the weak copy the strong.

After Ho et al. 2019 (Population Based Augmentation): N children train in lockstep, one segment
per step. Every `interval` segments the members are ranked by their last validation metric; each
member of the bottom quarter copies the whole child state of a member of the top quarter (weights,
optimizer, RNGs, the policy schedule so far: *exploit*) and perturbs the copied knobs (*explore*:
each knob is resampled with probability `resample`, else shifted by up to `shift` of its range).
Every member starts at the centre of the action box, which is "no augmentation" for Augment-v1
(the learning rate of the base schedule for Schedule-v0). A search of N child trainings is one
generation; a larger budget runs further generations from the start point again.

The result is the best member's whole inherited schedule (its record's steps), which the env
exports as a schedule over training progress, replayable on any number of epochs.

Resume: the controller is deterministic given its seed and the members' validation metrics, so a
resumed search replays the log (every exploit and explore again, answered from the log without
training) up to the last segment the in-flight file holds, restores each member's state there, and
goes on (`SearchVecEnv.copy_child` copies only the records while members replay).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from policysearch.checks import check_int, check_number
from policysearch.errors import ConfigError
from policysearch.search.controllers.base import Controller, ControllerSettings

if TYPE_CHECKING:
    from policysearch.search.vecenv import SearchVecEnv

DEFAULT_POPULATION = 8  # PBA trained 16; 8 halves the cost and keeps a top and a bottom quarter of 2


def truncation_pairs(scores: np.ndarray, fraction: float = 0.25) -> list[tuple[int, int]]:
    """(source, destination) pairs of one exploit round: the bottom `fraction` of the members
    copies the top `fraction`, best to worst; ties broken by index, NaN (diverged) ranked last."""
    n = len(scores)
    k = max(1, math.floor(n * fraction)) if n >= 2 else 0
    keyed = np.where(np.isfinite(scores), scores, -np.inf)
    order = sorted(range(n), key=lambda i: (-keyed[i], i))  # best first
    top, bottom = order[:k], order[n - k:][::-1]  # bottom: worst first
    return [(src, dst) for src, dst in zip(top, bottom) if src != dst]


def explore(action: np.ndarray, rng: np.random.Generator, resample: float = 0.2, shift: float = 0.2,
            low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """Perturb a copied action: each entry resampled uniformly in [low, high] with probability
    `resample`, else shifted by a uniform amount in ±`shift` x (high - low); kept in bounds."""
    action = np.asarray(action, dtype=np.float64)
    fresh = rng.uniform(low, high, size=action.shape)
    moved = action + rng.uniform(-shift, shift, size=action.shape) * (high - low)
    out = np.where(rng.random(action.shape) < resample, fresh, moved)
    return np.clip(out, low, high).astype(np.float32)


class PBTController(Controller):
    """Population-based training over the children of a `SearchVecEnv` (N = its slots: the search's
    `population`, in N workers or taking turns in one process).

    Args:
        interval: segments between exploit / explore rounds.
        fraction: the top / bottom share in truncation selection.
        resample, shift: the explore operator (see `explore`).
        start: the members' first action (default: the centre of the action box).
    """

    name = "pbt"

    def __init__(self, interval: int = 1, fraction: float = 0.25, resample: float = 0.2, shift: float = 0.2,
                 start: np.ndarray | None = None) -> None:
        self.interval = check_int("interval", interval, 1)
        self.fraction = check_number("fraction", fraction, 0.0, 0.5, low_open=True)
        self.resample = check_number("resample", resample, 0.0, 1.0)
        self.shift = check_number("shift", shift, 0.0, 1.0)
        self.start = start
        self.history: list[dict[str, Any]] = []  # every exploit: segment, source, destination, scores

    def run(self, recorder: SearchVecEnv, seed: int) -> None:
        n = recorder.num_envs
        if n < 2:
            raise ConfigError(f"controller 'pbt' needs a population: it has {n} member, expected 2 or more "
                              "(--population N)")
        if recorder.base.mode == "static":
            raise ConfigError("controller 'pbt' needs a segmented episode (mode='schedule'): it copies "
                              "children between segments")
        space = recorder.action_space
        low, high = float(np.min(space.low)), float(np.max(space.high))
        start = np.zeros(space.shape, dtype=np.float32) if self.start is None else np.asarray(self.start, np.float32)
        rng = np.random.default_rng(seed)
        recorder.seed(seed)
        recorder.reset()
        actions = np.stack([start] * n)
        segment = 0
        while not recorder.exhausted:
            _, _, dones, infos = recorder.step(actions)
            segment += 1
            if dones.any():  # a generation ended (members end together): the next starts afresh
                actions, segment = np.stack([start] * n), 0
                continue
            if segment % self.interval:
                continue
            scores = np.array([float(info.get("metric", float("nan"))) for info in infos])
            for src, dst in truncation_pairs(scores, self.fraction):
                recorder.copy_child(src, dst)
                actions[dst] = explore(actions[src], rng, self.resample, self.shift, low, high)
                self.history.append({"segment": segment, "source": src, "destination": dst,
                                     "scores": [None if not math.isfinite(s) else s for s in scores.tolist()]})


def make_pbt(name: str, settings: ControllerSettings) -> PBTController:
    return PBTController()
