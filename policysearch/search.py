"""The search driver: run a controller on an env within a budget, log every episode, export the best.

A run directory holds ``episodes.jsonl`` (every decision with its concrete values, so a search can
be replayed and plotted), ``summary.json``, the exported artefact, the controller (SB3 zip),
``search.png``, and whatever files the env exports besides (Schedule-v0: ``controller.json``).
What the driver may ask of an env is `policysearch.search_env.SearchEnv`.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym

from policysearch.errors import ConfigError
from policysearch.search_env import SearchEnv, as_search_env


@dataclass(frozen=True)
class Budget:
    """When a search stops: whichever limit is reached first (at least one must be set).

    Attributes:
        child_trainings: complete child training runs (an episode in schedule mode, a step in static mode).
        env_steps: environment steps.
        seconds: wall-clock seconds (checked between steps).
    """

    child_trainings: int | None = None
    env_steps: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.child_trainings is None and self.env_steps is None and self.seconds is None:
            raise ConfigError("budget: set child trainings, env steps or seconds")
        for name in ("child_trainings", "env_steps", "seconds"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"budget {name}={value!r}: expected a positive number")


def episode_score(metric: float, cost_units: float, cost_weight: float) -> float:
    """What 'best' means: the final validation metric minus the weighted cost of the whole run."""
    return metric - cost_weight * cost_units


class SearchRecorder(gym.Wrapper):
    """Wraps an env: logs every step and episode to JSONL, tracks the best episode, enforces the budget.

    Args:
        env: an env whose `unwrapped` implements `policysearch.search_env.SearchEnv`.
        budget: when to stop.
        path: the episodes.jsonl file (None: keep in memory only).
        progress: show a progress bar on stderr.
        controller: the controller's name, written into each record.
    """

    def __init__(self, env: gym.Env, budget: Budget, path: str | Path | None = None, progress: bool = True,
                 controller: str = "") -> None:
        super().__init__(env)
        from tqdm.auto import tqdm

        self.budget, self.controller = budget, controller
        self.base: SearchEnv = as_search_env(env)
        self.path = Path(path) if path else None
        if self.path:
            from policysearch.files import atomic_write

            atomic_write(self.path, lambda f: None)  # a fresh, empty log
        self.episodes: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.child_trainings = self.env_steps = 0
        self.train_seconds = self.train_flops = 0.0
        self.started = time.perf_counter()
        self._current: dict[str, Any] | None = None
        self._bar = tqdm(total=budget.child_trainings, disable=not progress, unit="child", desc=f"search {controller}")

    # ------------------------------------------------------------------ budget
    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def exhausted(self) -> bool:
        b = self.budget
        return bool(
            (b.child_trainings is not None and self.child_trainings >= b.child_trainings)
            or (b.env_steps is not None and self.env_steps >= b.env_steps)
            or (b.seconds is not None and self.elapsed >= b.seconds)
        )

    def step_limit(self) -> int:
        """An upper bound on env steps for learners that need one (SB3's total_timesteps)."""
        if self.budget.env_steps is not None:
            return self.budget.env_steps
        if self.budget.child_trainings is not None:
            per_training = 1 if self.base.mode == "static" else self.base.episode_length
            return self.budget.child_trainings * per_training + self.base.episode_length
        return 10**9

    # ------------------------------------------------------------------ gym API
    def reset(self, **kwargs: Any) -> Any:
        obs, info = self.env.reset(**kwargs)
        self._current = {"start_val": info.get("val", {}), "child_seed": info.get("child_seed"), "steps": []}
        return obs, info

    def step(self, action: Any) -> Any:
        if self._current is None:
            raise ConfigError("reset() the env before step()")
        obs, reward, terminated, truncated, info = self.env.step(action)
        seconds = float(self.base.last_seconds)
        self.env_steps += 1
        self.train_seconds += seconds
        self.train_flops += float(info.get("train_flops", 0.0))
        self._current["steps"].append({**info, "reward": float(reward), "seconds": round(seconds, 4)})
        if self.base.mode == "static":
            self.child_trainings += 1
        if terminated or truncated:
            if self.base.mode != "static":
                self.child_trainings += 1
            self._finish_episode()
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        self._bar.close()
        super().close()

    # ------------------------------------------------------------------ records
    def _finish_episode(self) -> None:
        assert self._current is not None
        steps = self._current["steps"]
        diverged = next((s["diverged"] for s in steps if s.get("diverged")), None)
        seconds = sum(s["seconds"] for s in steps)
        flops = sum(s.get("train_flops", 0.0) for s in steps)
        from policysearch.metrics import cost_units

        units = cost_units(self.base.cost_metric, seconds, flops)
        metric = float(steps[-1].get("metric", float("-inf"))) if not diverged else float("-inf")
        record = {
            "episode": len(self.episodes),
            "controller": self.controller,
            "child_seed": self._current["child_seed"],
            "return": sum(s["reward"] for s in steps),
            "metric": metric,
            "score": episode_score(metric, units, self.base.cost_weight),
            "seconds": round(seconds, 4),
            "train_flops": flops,
            "diverged": diverged,
            "elapsed": round(self.elapsed, 2),
            "start_val": self._current["start_val"],
            "steps": steps,
        }
        self.episodes.append(record)
        if not diverged and (self.best is None or record["score"] > self.best["score"]):
            self.best = record
        if self.path:
            from policysearch.files import append_line

            append_line(self.path, record)  # one whole line, fsynced; NaN written as null
        best = self.best["score"] if self.best else float("nan")
        self._bar.update(1)  # an episode is one child training in both modes
        self._bar.set_postfix(ep=record["episode"], reward=f"{record['return']:.4f}", best=f"{best:.4f}")
        self._current = {"start_val": {}, "child_seed": None, "steps": []}


@dataclass
class SearchResult:
    """What a search produced: the best artefact, every episode, the summary written to disk."""

    artefact: Any
    episodes: list[dict[str, Any]]
    summary: dict[str, Any]
    out_dir: Path | None


def run_search(
    env: gym.Env,
    controller_name: str,
    budget: Budget,
    out_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    tensorboard: bool = False,
    artefact_name: str = "policy.json",
) -> SearchResult:
    """Search with `controller_name` on `env` until `budget` is spent and export the best episode.

    Args:
        env: a policysearch env (Augment-v0, ...): its `unwrapped` implements
            `policysearch.search_env.SearchEnv`. Its `export_files` hook writes any further files
            (Schedule-v0: the closed-loop `controller.json`), listed in the summary's "files".
        controller_name: see `policysearch.controllers.CONTROLLERS`.
        budget: when to stop.
        out_dir: where to write the run (None: nothing is written).
        seed: seeds the controller and the env's episode stream.
        progress: progress bar on stderr.
        tensorboard: log SB3 training curves to ``out_dir/tensorboard``.
        artefact_name: file name of the exported best policy.
    """
    from policysearch.controllers import make_controller
    from policysearch.policies.artifact import provenance, write_json

    base = as_search_env(env)
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    controller = make_controller(controller_name, base.episode_length,
                                 tensorboard_log=str(out / "tensorboard") if (tensorboard and out) else None)
    recorder = SearchRecorder(env, budget, out / "episodes.jsonl" if out else None, progress, controller_name)
    from policysearch.energy import EnergyMeter

    try:
        with EnergyMeter(getattr(getattr(base, "data", None), "device", "cpu")) as meter:
            controller.run(recorder, seed)
    finally:
        recorder.close()
    if recorder.best is None:
        raise ConfigError(
            f"the search finished {len(recorder.episodes)} episode(s) and none completed without diverging; "
            "raise the budget or lower the learning rate"
        )
    best = recorder.best
    env_info = base.describe()
    search_prov = provenance(
        env_id=env_info.get("env_id"), dataset=env_info.get("dataset"),
        dataset_fingerprint=env_info.get("dataset_fingerprint"), model=env_info.get("model"),
        reward_metric=env_info.get("reward_metric"), controller=controller_name, seed=seed,
        budget=asdict(budget), episodes=len(recorder.episodes), child_trainings=recorder.child_trainings,
    )
    artefact = base.export(best["steps"], {**search_prov, "best_episode": best["episode"],
                                           "best_val_metric": best["metric"]})
    summary: dict[str, Any] = {
        "env": env_info,
        "controller": controller_name,
        "seed": seed,
        "budget": asdict(budget),
        "episodes": len(recorder.episodes),
        "child_trainings": recorder.child_trainings,
        "env_steps": recorder.env_steps,
        "wall_seconds": round(recorder.elapsed, 2),
        "child_training_seconds": round(recorder.train_seconds, 2),
        "train_flops": recorder.train_flops,
        **meter.stop(),  # energy_kwh, co2e_kg, energy_source (measured / estimated), energy_basis
        "diverged_episodes": sum(1 for e in recorder.episodes if e["diverged"]),
        "best": {"episode": best["episode"], "score": best["score"], "val_metric": best["metric"],
                 "return": best["return"]},
    }
    if out:
        artefact.save(out / artefact_name)
        saved = controller.save(out / "controller.zip")
        summary["files"] = {"artefact": artefact_name, "episodes": "episodes.jsonl",
                            "controller": saved.name if saved else None}
        from policysearch.plots import plot_search

        # Compress-v0's AMC reward is not a validation metric: name it as it is.
        reward = env_info.get("reward")
        metric_name = reward if reward not in (None, "acc") else env_info.get("reward_metric")
        png = plot_search(recorder.episodes, out / "search.png",
                          title=f"{controller_name} on {env_info.get('dataset')}", metric=metric_name,
                          val_size=(env_info.get("split") or {}).get("val_size"))
        summary["files"]["plot"] = png.name if png else None
        # The env's own exports from the search (Schedule-v0: the closed-loop controller.json).
        summary["files"].update(base.export_files(out, saved, controller_name, search_prov))
        write_json(out / "summary.json", summary)
    return SearchResult(artefact, recorder.episodes, summary, out)


def read_episodes(path: str | Path) -> list[dict[str, Any]]:
    """Load an episodes.jsonl file written by a search. A torn last line (a search killed in the
    middle of an append) is skipped with a warning; a bad line anywhere else is a PolicyFormatError."""
    from policysearch.files import read_jsonl

    records, torn = read_jsonl(path)
    if torn:
        warnings.warn(torn, stacklevel=2)
    return records
