"""Controller `probe`: learn, over a task distribution, which factor of the base schedule to hold after a
probe segment — from a full table of outcomes per task, not from one sampled action per episode.

What the six earlier LR controllers taught (README, "One LR controller, zero-shot"): the one signal
that is large and consistent across tasks is whether the model's default peak LR is too high or too
low for the run, and a controller that sees no statistics of the run before its first decision can
only learn the training distribution's average answer (×1.6–2 of onecycle, right for some held-out
tasks and wrong for others). Timing changes within a run were never worth more than noise.

So the policy here (``policies.probe_policy.ProbePolicy``) trains the first segment at the base
schedule, then reads that segment's statistics once and holds one factor to the end; the
statistics are clipped to the range the table covered, so a run unlike every training run gets the
decision at the edge of what was measured rather than a linear extrapolation. Because it has
a single decision, its learning problem is a contextual bandit with full information, which needs
no credit assignment and no exploration noise: for every training task drawn (one child seed),
every factor of a grid (``2^a``, ``a`` in ``linspace(-1, 1, grid)`` times ``log2 scale``) is
trained from the same initial weights and batch order (`SearchVecEnv.seed_each`, as `es` does), so
the probe segment, its statistics and the starting point are identical and the table row says
exactly what each factor gains on that task. The policy ``a = tanh(w · standardised features + b)``
is then fitted to maximise the mean gain over the table (a row's gain between grid points is
interpolated linearly), with an L2 penalty on ``w`` chosen by 5-fold cross-validation over the
tasks and the one-standard-error rule (the largest penalty whose held-out gain is within one
standard error of the best one's: the simpler policy when the table cannot tell them apart). The
largest penalty tried is infinite — one constant factor — so the table's best constant is always a
candidate and the summary says whether the statistics earned their keep. The same penalties are
also cross-validated leaving out one (data set, model) pair at a time: reported, not used to
choose, as the estimate of what carries over to a pair the fit never saw (the zero-shot question;
with a handful of pairs, each with its own answer, it is too coarse to choose by).

Everything is in ``summary.json`` → ``probe``: the table (task, features, gains per factor), both
cross-validations per penalty and fold, the chosen penalty, and the fitted policy's decision per
training task. The policy is saved as ``controller.weights.json`` (plain JSON) and exported by
Schedule-v1 as an ``AdaptiveSchedule`` (``algo: probe``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from policysearch.contrib.es import run_shared_episodes
from policysearch.errors import ConfigError, MissingExtraError
from policysearch.policies.linear_policy import WEIGHTS_SUFFIX
from policysearch.policies.probe_policy import ProbePolicy, decision_index
from policysearch.policies.schedule_space import RESIDUAL_OBSERVATION_NAMES
from policysearch.search.controllers.base import Controller, ControllerSettings

if TYPE_CHECKING:
    from policysearch.search.vecenv import SearchVecEnv

DEFAULT_GRID = 5
# The observation entries a decision after the probe reads: the others are the same for every run
# at that point (progress, segments and budget left, the probe's own action 0).
FEATURES: tuple[str, ...] = ("train_loss", "val_loss", "val_metric", "train_loss_trend", "val_loss_trend",
                             "val_metric_trend", "grad_norm_mean", "grad_norm_std", "horizon")
# L2 penalties on the standardised weights, in points of gain per unit weight squared; inf: a constant.
PENALTIES: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, math.inf)
_FIT_GENERATIONS = 150
CV_FOLDS = 5


def grid_actions(grid: int) -> np.ndarray:
    """The grid's actions in [-1, 1], 0 (the base schedule) among them."""
    return np.linspace(-1.0, 1.0, grid)


def interpolated_gain(actions: np.ndarray, gains: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Each row's gain at its action, linear between the grid's points (rows of `gains` over `grid`)."""
    t = (np.clip(actions, grid[0], grid[-1]) - grid[0]) / (grid[1] - grid[0])
    i = np.minimum(np.floor(t).astype(int), len(grid) - 2)
    frac = t - i
    rows = np.arange(len(actions))
    return gains[rows, i] * (1.0 - frac) + gains[rows, i + 1] * frac


class ProbeFit:
    """The policy ``a = tanh(w · (x - mean) / std + b)`` fitted to a gain table (see the module docstring).

    Args:
        features: ``(tasks, len(FEATURES))`` statistics after the probe.
        gains: ``(tasks, grid)`` gain of each grid action over action 0, in points.
        grid: The grid's actions.
        penalty: The L2 penalty on ``w`` (inf: ``w = 0``, a constant action).
        seed: CMA-ES's seed (the fit is deterministic for a seed).
    """

    def __init__(self, features: np.ndarray, gains: np.ndarray, grid: np.ndarray, penalty: float,
                 seed: int = 0) -> None:
        self.mean = features.mean(axis=0)
        std = features.std(axis=0)
        self.std = np.where(std > 1e-12, std, 1.0)
        self.grid, self.penalty = grid, penalty
        z = (features - self.mean) / self.std
        # Start from the best constant (exact, on a fine grid of actions): the infinite penalty's answer.
        fine = np.linspace(-0.999, 0.999, 401)
        constant = [interpolated_gain(np.full(len(gains), a), gains, grid).mean() for a in fine]
        b0 = math.atanh(float(fine[int(np.argmax(constant))]))
        self.weights, self.bias = np.zeros(features.shape[1]), b0
        if math.isinf(penalty) or len(gains) < 2:
            return
        try:
            from cmaes import CMA
        except ImportError as exc:
            raise MissingExtraError("cmaes", "optuna", "controller 'probe'") from exc

        def loss(x: np.ndarray) -> float:
            w, b = x[:-1], x[-1]
            value = interpolated_gain(np.tanh(z @ w + b), gains, grid).mean()
            return -(value - penalty * float(w @ w))

        start = np.append(np.zeros(features.shape[1]), b0)
        best_x, best = start, loss(start)
        es = CMA(mean=start, sigma=0.5, seed=seed)
        for _ in range(_FIT_GENERATIONS):
            told = []
            for _ in range(es.population_size):
                x = es.ask()
                value = loss(x)
                told.append((x, value))
                if value < best:
                    best_x, best = x, value
            es.tell(told)
        self.weights, self.bias = best_x[:-1], float(best_x[-1])

    def actions(self, features: np.ndarray) -> np.ndarray:
        return np.tanh(((features - self.mean) / self.std) @ self.weights + self.bias)

    def value(self, features: np.ndarray, gains: np.ndarray) -> float:
        """The mean gain (points) of the fitted policy on a table."""
        return float(interpolated_gain(self.actions(features), gains, self.grid).mean())

    def raw_range(self, features: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The clip range over Schedule-v1's whole observation: the features' range in the table, the
        observation's own bounds (`low`, `high`) for the entries the policy does not read."""
        lo, hi = np.array(low, np.float64), np.array(high, np.float64)
        for k, name in enumerate(FEATURES):
            i = RESIDUAL_OBSERVATION_NAMES.index(name)
            lo[i], hi[i] = features[:, k].min(), features[:, k].max()
        return lo, hi

    def raw_weights(self) -> np.ndarray:
        """The weights over Schedule-v1's whole observation (standardisation folded in), bias last."""
        row = np.zeros(len(RESIDUAL_OBSERVATION_NAMES) + 1)
        for k, name in enumerate(FEATURES):
            row[RESIDUAL_OBSERVATION_NAMES.index(name)] = self.weights[k] / self.std[k]
        row[-1] = self.bias - float(np.sum(self.weights * self.mean / self.std))
        return row.reshape(1, -1)


def cross_validate(features: np.ndarray, gains: np.ndarray, groups: list[str], grid: np.ndarray | None,
                   penalties: tuple[float, ...] = PENALTIES, seed: int = 0,
                   fit: Callable[[np.ndarray, np.ndarray, float], Any] | None = None) -> list[dict[str, Any]]:
    """For each penalty, the mean over groups of the gain on a group of a fit on the other groups.

    With fewer than two groups (one task), five interleaved folds of the rows stand in for them.
    `fit(features, gains, penalty)` makes the fitted policy (anything with ``value(features, gains)``);
    None: a `ProbeFit` over `grid`."""
    make = fit or (lambda f, g, penalty: ProbeFit(f, g, grid, penalty, seed))
    names = sorted(set(groups))
    if len(names) < 2:
        folds = [str(i % 5) for i in range(len(groups))]
        groups, names = folds, sorted(set(folds))
    groups_arr = np.array(groups)
    out = []
    for penalty in penalties:
        per_group = {}
        for name in names:
            test = groups_arr == name
            if test.all() or not test.any():
                continue
            model = make(features[~test], gains[~test], penalty)
            per_group[name] = model.value(features[test], gains[test])
        out.append({"penalty": penalty, "value": float(np.mean(list(per_group.values()))) if per_group else math.nan,
                    "per_group": per_group})
    return out


def one_standard_error_choice(cv: list[dict[str, Any]]) -> float:
    """The largest penalty whose mean held-out gain is within one standard error of the best penalty's,
    the error being that of the per-fold differences to the best (Hastie et al., ESL 7.10)."""
    best = max(cv, key=lambda c: (c["value"], c["penalty"]))
    folds = sorted(best["per_group"])
    chosen = best["penalty"]
    for c in cv:
        diffs = np.array([best["per_group"][f] - c["per_group"][f] for f in folds])
        se = float(diffs.std(ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else 0.0
        if c["penalty"] > chosen and diffs.mean() <= se:
            chosen = c["penalty"]
    return chosen


def task_group(label: str | None) -> str:
    """The (data set, model) pair of a task label ("fashion-mnist/2000 cnn 4ep ..." -> "fashion-mnist cnn")."""
    if not label:
        return "task"
    parts = label.split()
    return f"{parts[0].split('/')[0]} {parts[1]}" if len(parts) > 1 else parts[0]


def check_env(base: Any, probe: int = 1) -> None:
    """Refuse an env the controller cannot drive (`run_search` asks before it opens anything).

    Raises:
        ConfigError: Unless `base` is Schedule-v1 with a base schedule and episodes longer than the probe.
    """
    space = getattr(base, "space", None)
    if base.mode == "static" or not getattr(space, "residual", False) or space.dim != len(RESIDUAL_OBSERVATION_NAMES):
        raise ConfigError("controller 'probe' holds a factor of a base schedule: it needs policysearch/Schedule-v1 "
                          "with a base schedule (--base onecycle or linear)")
    if probe >= int(base.episode_length):
        raise ConfigError(f"a probe of {probe} segments leaves no decision in episodes of {base.episode_length}")


def _json_penalty(penalty: float) -> float | str:
    return "inf" if math.isinf(penalty) else penalty  # strict JSON has no infinity


class _HeldArm:
    """One column of the table: action 0 for the probe, then `action` to the end."""

    def __init__(self, action: float, segments: int, probe: int, dtype: Any) -> None:
        self.action, self.segments, self.probe, self.dtype = action, segments, probe, dtype

    def act(self, observation: Any) -> np.ndarray:
        value = 0.0 if decision_index(observation, self.segments) < self.probe else self.action
        return np.array([value], dtype=self.dtype)


class ProbeController(Controller):
    """Full-information table over a grid of held factors, then a linear policy fitted to it.

    Args:
        grid: Factors per task (odd, at least 3: action 0, the base schedule, is one of them).
        probe: Segments at the base schedule before the decision.

    Attributes:
        policy: The fitted `ProbePolicy` (None before the table has two tasks).
        rows: The table: one dict per task (task, episode seed, features, gains in points).
    """

    name = "probe"

    def __init__(self, grid: int = DEFAULT_GRID, probe: int = 1) -> None:
        if grid < 3 or grid % 2 == 0:
            raise ConfigError(f"probe grid is {grid}; it needs an odd number of factors, at least 3, so that the "
                              "base schedule (factor 1) is one of them")
        if probe < 1:
            raise ConfigError(f"probe is {probe} segments; at least 1")
        self.grid, self.probe = grid, probe
        self.policy: ProbePolicy | None = None
        self.rows: list[dict[str, Any]] = []
        self.dropped: list[dict[str, Any]] = []
        self.cv: list[dict[str, Any]] = []  # 5 folds over tasks: chooses the penalty
        self.cv_pairs: list[dict[str, Any]] = []  # one fold per (data set, model) pair: reported
        self.penalty: float | None = None
        self.fit_value: float | None = None  # the fitted policy's mean gain on its own table (in-sample)
        self.scale: float | None = None

    def run(self, recorder: SearchVecEnv, seed: int) -> None:
        base = recorder.base
        obs_space, act_space = recorder.observation_space, recorder.action_space
        check_env(base, self.probe)
        segments = int(base.episode_length)
        self.scale = float(base.space.scale)
        grid = grid_actions(self.grid)
        arms = [_HeldArm(float(a), segments, self.probe, act_space.dtype) for a in grid]
        centre = self.grid // 2
        draws = np.random.default_rng(seed)
        n = recorder.num_envs
        while not recorder.exhausted:
            seeds = [int(s) for s in draws.integers(0, 2**31 - 1, size=n)]
            jobs = [(a, s) for s in range(n) for a in range(self.grid)]
            returns = np.zeros((self.grid, n))
            probed: dict[int, tuple[np.ndarray | None, str | None]] = {}
            for start in range(0, len(jobs), n):
                batch = jobs[start:start + n]
                result = run_shared_episodes(recorder, [arms[a] for a, _ in batch], [seeds[s] for _, s in batch])
                if result is None:  # the budget cut the round: its tasks are incomplete, nothing is added
                    return self._fit(grid, segments, obs_space, act_space, seed)
                totals, observations, infos = result
                for k, (a, s) in enumerate(batch):
                    returns[a, s] = totals[k]
                    if a == centre:
                        obs = observations[k][self.probe - 1] if len(observations[k]) > self.probe else None
                        probed[s] = (obs, infos[k][0].get("task"))
            for s in range(n):
                obs, label = probed[s]
                row = {"task": label, "group": task_group(label), "episode_seed": seeds[s]}
                if obs is None:  # the base schedule's child diverged or ended within the probe
                    self.dropped.append(row)
                    continue
                row["features"] = {name: float(obs[RESIDUAL_OBSERVATION_NAMES.index(name)]) for name in FEATURES}
                row["gains"] = [round(100.0 * float(r - returns[centre, s]), 6) for r in returns[:, s]]
                self.rows.append(row)
        self._fit(grid, segments, obs_space, act_space, seed)

    def _fit(self, grid: np.ndarray, segments: int, obs_space: Any, act_space: Any, seed: int) -> None:
        if len(self.rows) < 2:
            return
        features = np.array([[r["features"][f] for f in FEATURES] for r in self.rows])
        gains = np.array([r["gains"] for r in self.rows])
        groups = [r["group"] for r in self.rows]
        folds = [str(i % CV_FOLDS) for i in range(len(self.rows))]
        self.cv = cross_validate(features, gains, folds, grid, seed=seed)
        self.cv_pairs = cross_validate(features, gains, groups, grid, seed=seed)
        self.penalty = one_standard_error_choice(self.cv)
        fit = ProbeFit(features, gains, grid, self.penalty, seed)
        for row, action in zip(self.rows, fit.actions(features)):
            row["decision"] = round(float(action), 6)
        self.fit_value = fit.value(features, gains)
        dim = len(RESIDUAL_OBSERVATION_NAMES)
        low, high = fit.raw_range(features, np.broadcast_to(obs_space.low, (dim,)),
                                  np.broadcast_to(obs_space.high, (dim,)))
        self.policy = ProbePolicy(fit.raw_weights(), obs_space, act_space, segments, self.probe, low, high)

    def summary(self) -> dict[str, Any]:
        grid = grid_actions(self.grid)
        gains = np.array([r["gains"] for r in self.rows]) if self.rows else np.zeros((0, self.grid))
        factors = [round(self.scale ** float(a), 6) for a in grid] if self.scale else None
        return {"probe": {
            "grid_actions": [round(float(a), 6) for a in grid], "grid_factors": factors, "probe_segments": self.probe,
            "features": list(FEATURES), "tasks": self.rows, "dropped": self.dropped,
            "mean_gain_per_factor": [round(float(g), 4) for g in gains.mean(axis=0)] if len(gains) else [],
            "cross_validation": [{**c, "penalty": _json_penalty(c["penalty"])} for c in self.cv],
            "cross_validation_by_pair": [{**c, "penalty": _json_penalty(c["penalty"])} for c in self.cv_pairs],
            "penalty": None if self.penalty is None else _json_penalty(self.penalty),
            "fit_value": self.fit_value,
        }}

    def save(self, path: str | Path) -> Path | None:
        """Write the fitted policy as ``<path stem>.weights.json`` beside `path` (as `es` does)."""
        if self.policy is None:
            return None
        path = Path(path)
        return self.policy.save(path.with_name(path.stem + WEIGHTS_SUFFIX))

def make_probe(name: str, settings: ControllerSettings) -> ProbeController:
    return ProbeController()
