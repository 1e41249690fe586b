"""The search driver: run a controller on an env within a budget, log every episode, export the best.

A run directory holds ``episodes.jsonl`` (every decision with its concrete values, so a search can
be replayed and plotted), ``summary.json``, the exported artefact, the controller (SB3 zip),
``search.png``, and whatever files the env exports besides (Schedule-v0: ``controller.json``).
What the driver may ask of an env is `policysearch.search_env.SearchEnv`.
"""

from __future__ import annotations

import signal
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from policysearch.errors import ConfigError
from policysearch.files import write_json
from policysearch.pareto import Objective, as_objectives, write_pareto
from policysearch.runstore import RunStore
from policysearch.search_env import SearchEnv, as_search_env
from policysearch.tracking import Tracker


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
    """Wraps an env: logs every step and episode, tracks the best episode, enforces the budget, and
    replays a logged run on resume.

    Args:
        env: an env whose `unwrapped` implements `policysearch.search_env.SearchEnv`.
        budget: when to stop.
        store: the run folder (None: keep everything in memory only).
        progress: show a progress bar on stderr.
        controller: the controller's name, written into each record.
        on_episode: called with each new finished episode's record (not for replayed ones).
        tracker: told of every step and episode, replayed ones included (`policysearch.tracking`).
    """

    def __init__(self, env: gym.Env, budget: Budget, store: RunStore | None = None, progress: bool = True,
                 controller: str = "", on_episode: Callable[[dict[str, Any]], None] | None = None,
                 tracker: Tracker | None = None) -> None:
        super().__init__(env)
        from tqdm.auto import tqdm

        self.budget, self.controller, self.store, self.on_episode = budget, controller, store, on_episode
        self.tracker = tracker or Tracker()
        self.base: SearchEnv = as_search_env(env)
        self.episodes: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.child_trainings = self.env_steps = 0
        self.train_seconds = self.train_flops = 0.0
        self.stop_requested: str | None = None  # set by a signal handler: stop after the current step
        self._current: dict[str, Any] | None = None
        # Resume: logged episodes are answered from the log, then the in-flight one from its steps.
        self._logged: deque[dict[str, Any]] = deque(store.episodes if store else ())
        inflight = store.inflight if store else None
        self._inflight_steps: deque[dict[str, Any]] = deque(inflight["steps"] if inflight else ())
        self._inflight_state = inflight["state"] if inflight else None
        self._replay: deque[dict[str, Any]] = deque()
        offset = float(self._logged[-1].get("elapsed", 0.0)) if self._logged else 0.0
        self.started = time.perf_counter() - offset  # wall-clock budgets count the time before a resume
        self._bar = tqdm(total=budget.child_trainings, disable=not progress, unit="child", desc=f"search {controller}")

    # ------------------------------------------------------------------ budget
    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def replaying(self) -> bool:
        """True while steps are answered from the log of an interrupted run."""
        return bool(self._replay or self._logged or self._inflight_steps)

    @property
    def exhausted(self) -> bool:
        b = self.budget
        return bool(
            self.stop_requested
            or (b.child_trainings is not None and self.child_trainings >= b.child_trainings)
            or (b.env_steps is not None and self.env_steps >= b.env_steps)
            or (b.seconds is not None and self.elapsed >= b.seconds and not self.replaying)
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
        obs, info = self.env.reset(**kwargs)  # always for real: it advances the env's own random stream
        self._current = {"start_val": info.get("val", {}), "child_seed": info.get("child_seed"), "steps": []}
        return obs, info

    def step(self, action: Any) -> Any:
        if self._current is None:
            raise ConfigError("reset() the env before step()")
        taken = [round(float(a), 6) for a in np.ravel(np.asarray(action, dtype=np.float64))]
        if not self._replay and not self._current["steps"]:
            self._start_replay_of_next_episode()
        if self._replay:
            return self._replayed_step(taken)
        obs, reward, terminated, truncated, info = self.env.step(action)
        seconds = float(self.base.last_seconds)
        record = {**info, "reward": float(reward), "seconds": round(seconds, 4), "controller_action": taken,
                  "obs": [float(v) for v in np.ravel(obs)], "terminated": bool(terminated),
                  "truncated": bool(truncated)}
        self._account(record)
        if terminated or truncated:
            self._finish_episode()
        elif self.store is not None and hasattr(self.base, "get_state"):
            self.store.save_inflight(len(self.episodes), self._current["steps"], self.base.get_state())
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        self._bar.close()
        super().close()

    # ------------------------------------------------------------------ replay
    def _start_replay_of_next_episode(self) -> None:
        """At the first step of an episode: queue its logged steps, if the log has it."""
        if self._logged:
            logged = self._logged[0]
            self._check_replay(logged.get("child_seed") == self._current["child_seed"], "child seed",
                               logged.get("child_seed"), self._current["child_seed"])
            self._replay = deque(logged["steps"])
        elif self._inflight_steps:
            self._replay, self._inflight_steps = self._inflight_steps, deque()

    def _replayed_step(self, taken: list[float]) -> Any:
        logged = self._replay.popleft()
        self._check_replay(logged.get("controller_action") == taken, "action", logged.get("controller_action"), taken)
        self._account(logged)
        obs = np.asarray(logged["obs"], dtype=self.observation_space.dtype).reshape(self.observation_space.shape)
        terminated, truncated = bool(logged["terminated"]), bool(logged["truncated"])
        info = {k: v for k, v in logged.items()
                if k not in ("reward", "seconds", "controller_action", "obs", "terminated", "truncated")}
        if terminated or truncated:
            if self._logged:  # a finished episode of the log: keep its record as it was
                self._add_episode(self._logged.popleft(), new=False)
                self._current = {"start_val": {}, "child_seed": None, "steps": []}
            else:  # cannot happen for a consistent log: the in-flight episode had not ended
                self._finish_episode()
        elif not self._replay and self._inflight_state is not None:
            # The in-flight child continues from its state after the last logged segment.
            self.base.set_state(self._inflight_state)  # type: ignore[attr-defined]
            self._inflight_state = None
        return obs, float(logged["reward"]), terminated, truncated, info

    def _check_replay(self, ok: bool, what: str, logged: Any, now: Any) -> None:
        if not ok:
            raise ConfigError(
                f"--resume: the run no longer follows its log at episode {len(self.episodes)} ({what} {now!r}, "
                f"logged {logged!r}): the code, data or settings changed since; use --overwrite to start again"
            )

    # ------------------------------------------------------------------ records
    def _account(self, step: dict[str, Any]) -> None:
        assert self._current is not None
        self.env_steps += 1
        self.train_seconds += float(step["seconds"])
        self.train_flops += float(step.get("train_flops", 0.0))
        self._current["steps"].append(step)
        if self.base.mode == "static" or step["terminated"] or step["truncated"]:
            self.child_trainings += 1
        self.tracker.on_segment_end(step, self.env_steps)  # tracking hook

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
        if self.store is not None:
            self.store.append_episode(record)  # one whole line, fsynced; NaN written as null
            record["run_id"] = self.store.run_id
        self._add_episode(record, new=True)
        self._current = {"start_val": {}, "child_seed": None, "steps": []}

    def _add_episode(self, record: dict[str, Any], new: bool) -> None:
        self.episodes.append(record)
        improved = not record["diverged"] and (self.best is None or _score(record) > _score(self.best))
        if improved:
            self.best = record
        best = _score(self.best) if self.best else float("nan")
        self.tracker.on_episode_end(record, {  # tracking hook
            "child_trainings": self.child_trainings, "env_steps": self.env_steps, "train_flops": self.train_flops,
            "train_seconds": self.train_seconds, "best_score": best})
        self._bar.update(1)  # an episode is one child training in both modes
        self._bar.set_postfix(ep=record["episode"], reward=f"{record['return']:.4f}", best=f"{best:.4f}")
        if new and self.on_episode is not None:
            self.on_episode(record)


def _score(record: dict[str, Any]) -> float:
    score = record["score"]
    return float("-inf") if score is None else float(score)  # strict JSON wrote -inf as null


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
    tensorboard: bool | str | Path = False,
    artefact_name: str = "policy.json",
    resume: bool = False,
    overwrite: bool = False,
    tracker: Tracker | None = None,
    objectives: str | Sequence[str | Objective] | None = None,
) -> SearchResult:
    """Search with `controller_name` on `env` until `budget` is spent and export the best episode.

    The run folder is a durable store (`policysearch.runstore`): every finished episode is appended
    at once, the best artefact and `summary.json` are rewritten whenever the best improves, and a
    killed search continues with `resume=True`, giving the same episodes and artefact as a run that
    was never stopped. SIGINT / SIGTERM stop the search after the current step, cleanly.

    Args:
        env: a policysearch env (Augment-v0, ...): its `unwrapped` implements
            `policysearch.search_env.SearchEnv`. Its `export_files` hook writes any further files
            (Schedule-v0: the closed-loop `controller.json`), listed in the summary's "files".
        controller_name: see `policysearch.controllers.CONTROLLERS`.
        budget: when to stop.
        out_dir: where to write the run (None: nothing is written).
        seed: seeds the controller and the env's episode stream.
        progress: progress bar on stderr.
        tensorboard: TensorBoard scalars of every child and episode (`policysearch.tracking`) in
            ``<folder>/search``, and an SB3 agent's own curves beside them; the folder is
            ``out_dir/tensorboard`` for True, or the path given (nothing without either).
        artefact_name: file name of the exported best policy.
        resume: continue the run in `out_dir` (see `policysearch.runstore.RunStore`).
        overwrite: replace the run in `out_dir`; without it (or `resume`) an existing run is refused.
        tracker: further tracking (e.g. `policysearch.tracking_mlflow.MLflowTracker`); the caller closes it.
        objectives: e.g. "accuracy,tflops" (`policysearch.pareto`): the Pareto front of the episodes
            goes into the summary's "pareto" (and pareto.json, pareto.png, pareto/ into `out_dir`);
            the `tpe` controller then searches a multi-objective study over them.

    Raises:
        ConfigError: The folder holds another run (see above) or is in use; no episode completed.
    """
    from policysearch.controllers import make_controller
    from policysearch.policies.artifact import provenance
    from policysearch.tracking import search_tracking

    base = as_search_env(env)
    out = Path(out_dir) if out_dir else None
    goals = as_objectives(objectives)
    tracker, sb3_log, own_tracker = search_tracking(tracker, tensorboard, out)  # tracking hook
    controller = make_controller(controller_name, base.episode_length, tensorboard_log=sb3_log, out_dir=out,
                                 objectives=goals)
    env_info = base.describe()
    store = RunStore(out, {"controller": controller_name, "seed": seed, "env": env_info,
                           "artefact": artefact_name}, resume=resume, overwrite=overwrite) if out else None

    def search_provenance(recorder: SearchRecorder) -> dict[str, Any]:
        return provenance(
            env_id=env_info.get("env_id"), dataset=env_info.get("dataset"),
            dataset_fingerprint=env_info.get("dataset_fingerprint"), model=env_info.get("model"),
            reward_metric=env_info.get("reward_metric"), controller=controller_name, seed=seed,
            budget=asdict(budget), episodes=len(recorder.episodes), child_trainings=recorder.child_trainings,
            run_id=store.run_id if store else None,
        )

    def export_best(recorder: SearchRecorder) -> Any:
        best = recorder.best
        assert best is not None
        return base.export(best["steps"], {**search_provenance(recorder), "best_episode": best["episode"],
                                           "best_val_metric": best["metric"]})

    def summary_of(recorder: SearchRecorder, files: dict[str, Any] | None = None) -> dict[str, Any]:
        best = recorder.best
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
            "diverged_episodes": sum(1 for e in recorder.episodes if e["diverged"]),
            "best": None if best is None else {"episode": best["episode"], "score": best["score"],
                                               "val_metric": best["metric"], "return": best["return"]},
            "stopped_by": recorder.stop_requested,
        }
        if store is not None:
            summary["run"] = store.record()
            summary["files"] = {"artefact": artefact_name if best else None, "episodes": "episodes.jsonl",
                                **(files or {})}
        return summary

    recorder: SearchRecorder

    def on_episode(record: dict[str, Any]) -> None:
        # Whatever happens next, the folder holds a usable artefact and a summary that describes
        # exactly the episodes in episodes.jsonl.
        if store is None:
            return
        if recorder.best is record:
            export_best(recorder).save(store.out / artefact_name)
        write_json(store.out / "summary.json", summary_of(recorder))

    recorder = SearchRecorder(env, budget, store, progress, controller_name, on_episode=on_episode, tracker=tracker)
    tracker.on_search_start({"controller": controller_name, "seed": seed, "budget": asdict(budget),
                             "objectives": ",".join(o.name for o in goals), "env": env_info})
    previous = _stop_on_signals(recorder)
    try:
        try:
            controller.run(recorder, seed)
        finally:
            _restore_signals(previous)
            recorder.close()
            own_tracker.close()
        if recorder.best is None:
            raise ConfigError(
                f"the search finished {len(recorder.episodes)} episode(s) and none completed without diverging; "
                "raise the budget or lower the learning rate"
            )
        artefact = export_best(recorder)
        summary = summary_of(recorder)
        if store is not None:
            artefact.save(store.out / artefact_name)
            saved = controller.save(store.out / "controller.zip")
            files: dict[str, Any] = {"controller": saved.name if saved else None}
            from policysearch.plots import plot_search

            png = plot_search(recorder.episodes, store.out / "search.png",
                              title=f"{controller_name} on {env_info.get('dataset')}")
            files["plot"] = png.name if png else None
            # The env's own exports from the search (Schedule-v0: the closed-loop controller.json).
            files.update(base.export_files(store.out, saved, controller_name, search_provenance(recorder)))
            if (store.out / "optuna.db").is_file():
                files["optuna"] = "optuna.db"
            summary = summary_of(recorder, files)
        if goals:  # the Pareto front of the logged episodes, with each front episode's artefact
            pareto = write_pareto(
                out, recorder.episodes, goals,
                lambda e: base.export(e["steps"], {**search_provenance(recorder), "episode": e["episode"]}),
                artefact_name, title=f"{controller_name} on {env_info.get('dataset')}")
            pareto_files = pareto.pop("files", None)
            summary["pareto"] = pareto
            if pareto_files:
                summary["files"].update(pareto_files)
        if store is not None:
            write_json(store.out / "summary.json", summary)
        tracker.on_search_end(summary)
    finally:
        if store is not None:
            store.close()  # the lock goes with the process anyway; release it now for this one
    if recorder.stop_requested:
        print(f"stopped by {recorder.stop_requested} after {len(recorder.episodes)} episode(s)"
              + (f"; continue with the same command and --resume (run folder {out})" if out else ""),
              file=sys.stderr)
    return SearchResult(artefact, recorder.episodes, summary, out)


def _stop_on_signals(recorder: SearchRecorder) -> dict[int, Any]:
    """SIGINT / SIGTERM ask the recorder to stop after the current step (main thread only)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: Any) -> None:
        if recorder.stop_requested:  # a second signal: stop now
            raise KeyboardInterrupt
        recorder.stop_requested = signal.Signals(signum).name
        print(f"\n{recorder.stop_requested}: finishing the current step, then writing the summary "
              "(send it again to stop at once)", file=sys.stderr)

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signals(previous: dict[int, Any]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)


def read_episodes(path: str | Path) -> list[dict[str, Any]]:
    """Load an episodes.jsonl file written by a search. A torn last line (a search killed in the
    middle of an append) is skipped with a warning; a bad line anywhere else is a PolicyFormatError."""
    from policysearch.files import read_jsonl

    records, torn = read_jsonl(path)
    if torn:
        warnings.warn(torn, stacklevel=2)
    return records
