"""The search driver: run a controller on an env within a budget, log every episode, export the best.

A run directory holds ``episodes.jsonl`` (every decision with its concrete values, so a search can
be replayed and plotted), ``summary.json``, the exported artefact, the controller (SB3 zip),
``search.png``, and whatever files the env exports besides (Schedule-v0: ``controller.json``).
What the driver may ask of an env is `policysearch.search_env.SearchEnv`.
"""

from __future__ import annotations

import logging
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
from stable_baselines3.common.vec_env import VecEnv

from policysearch.errors import ConfigError
from policysearch.files import write_json
from policysearch.pareto import Objective, as_objectives, write_pareto
from policysearch.runstore import RunStore
from policysearch.search_env import SearchEnv, as_search_env
from policysearch.tracking import Tracker
from policysearch.workers import InProcessPool, WorkerPool

log = logging.getLogger(__name__)


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


class SearchVecEnv(VecEnv):
    """The vectorised env every controller drives: N children at once on a worker pool; logs every
    step and episode, tracks the best episode, enforces the budget, and replays a logged run on resume.

    It is a stable-baselines3 `VecEnv` (SB3 agents take it as their env, with ``n_envs = N``), with
    SB3's semantics: `step` returns N results and resets a finished child's env at once (its last
    observation in ``info["terminal_observation"]``). All N children step in lockstep, so for a seed
    and N the episodes and their order are the same on every run. Episode records carry the worker
    index; with N = 1 the one worker is the env itself, in this process.

    Args:
        env: the template env (its `unwrapped` implements `policysearch.search_env.SearchEnv`): its
            spaces, `describe()`, `export()` and `suggest_episode()` are used here.
        pool: where the N children run (`policysearch.workers.make_pool`).
        budget: when to stop.
        store: the run folder (None: keep everything in memory only).
        progress: show a progress bar on stderr.
        controller: the controller's name, written into each record.
        on_episode: called with each new finished episode's record (not for replayed ones).
        tracker: told of every step and episode, replayed ones included (`policysearch.tracking`).
    """

    def __init__(self, env: gym.Env, pool: WorkerPool, budget: Budget, store: RunStore | None = None,
                 progress: bool = True, controller: str = "",
                 on_episode: Callable[[dict[str, Any]], None] | None = None, tracker: Tracker | None = None) -> None:
        from tqdm.auto import tqdm

        self.base: SearchEnv = as_search_env(env)  # before VecEnv's constructor, which reads render_mode
        super().__init__(pool.n, env.observation_space, env.action_space)
        self.env, self.pool, self.budget, self.controller = env, pool, budget, controller
        self.store, self.on_episode = store, on_episode
        self.tracker = tracker or Tracker()
        self.episodes: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.child_trainings = self.env_steps = 0
        self.train_seconds = self.train_flops = 0.0
        self.failed_workers = 0
        self.stop_requested: str | None = None  # set by a signal handler: stop after the current step
        n = pool.n
        self._current: list[dict[str, Any]] = [self._fresh({}, None) for _ in range(n)]
        # On resume: when the first child step not answered from the log began (wall clock, epoch s).
        self.first_live_step_at: float | None = None
        self._actions: np.ndarray | None = None
        # Child states after each step, for the in-flight file and to retry a child on a new worker.
        self._stateful = hasattr(self.base, "get_state") and (store is not None or not isinstance(pool, InProcessPool))
        self._states: list[Any] = [None] * n
        # Resume: each worker's logged episodes are answered from the log, then its in-flight steps.
        logged = store.episodes if store else []
        self._logged = [deque(e for e in logged if e.get("worker", 0) == i) for i in range(n)]
        inflight = (store.inflight or {}).get("workers", {}) if store else {}
        self._inflight = [inflight.get(i) for i in range(n)]
        self._replay: list[deque[dict[str, Any]]] = [deque() for _ in range(n)]
        self._restore: list[Any] = [None] * n
        self._from_log = [False] * n  # worker i is replaying a finished episode of the log
        offset = float(logged[-1].get("elapsed", 0.0)) if logged else 0.0
        self.started = time.perf_counter() - offset  # wall-clock budgets count the time before a resume
        self._bar = tqdm(total=budget.child_trainings, disable=not progress, unit="child", desc=f"search {controller}")

    @staticmethod
    def _fresh(info: dict[str, Any], obs: Any) -> dict[str, Any]:
        # "steps": the child's record (with a copied child's inherited steps); "lived": what this
        # slot itself stepped since its reset, which is what a resumed run replays.
        return {"start_val": info.get("val", {}), "child_seed": info.get("child_seed"), "steps": [], "lived": [],
                "start_obs": None if obs is None else [float(v) for v in np.ravel(obs)]}

    # ------------------------------------------------------------------ budget
    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    @property
    def replaying(self) -> bool:
        """True while steps are answered from the log of an interrupted run."""
        return any(self._replay) or any(self._logged) or any(x is not None for x in self._inflight)

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
            return (self.budget.child_trainings + self.num_envs) * per_training
        return 10**9

    # ------------------------------------------------------------------ VecEnv API
    def reset(self) -> np.ndarray:
        seeds = self._seeds
        results = self._reset_slots(list(range(self.num_envs)), seeds)
        self._reset_seeds()
        self._reset_options()
        obs = []
        self.reset_infos = []
        for i, (o, info) in enumerate(results):
            self._current[i] = self._fresh(info, o)
            self.reset_infos.append(info)
            obs.append(o)
        self._snapshot(list(range(self.num_envs)))
        return np.stack(obs)

    def _reset_slots(self, slots: list[int], seeds: list[int | None] | None = None) -> list[Any]:
        """Reset the children in `slots`. One whose next episode the log already holds is only
        advanced past its child seed (no child built, no validation pass: a resume's replay stays
        cheap); its first observation comes from the log."""
        seeds = seeds or [None] * self.num_envs
        kwargs = []
        for i in slots:
            logged = self._logged[i][0] if self._logged[i] else self._inflight[i]
            light = logged is not None and logged.get("start_obs") is not None
            kwargs.append({"seed": seeds[i], **({"options": {"advance_only": True}} if light else {})})
        out = self._call_with_retry(slots, "reset", kwargs=kwargs)
        for k, i in enumerate(slots):
            if "options" in kwargs[k]:
                logged = self._logged[i][0] if self._logged[i] else self._inflight[i]
                obs = np.asarray(logged["start_obs"], dtype=self.observation_space.dtype)
                out[k] = (obs.reshape(self.observation_space.shape),
                          {"val": logged.get("start_val", {}), "child_seed": out[k][1]["child_seed"]})
        return out

    def seed_each(self, seeds: Sequence[int | None]) -> None:
        """The seed of each slot's next reset (SB3's `seed(s)` gives slot i the seed s + i); controllers
        that compare policies on the same episodes (`es`) reset several slots with one seed."""
        if len(seeds) != self.num_envs:
            raise ConfigError(f"seed_each got {len(seeds)} seeds for {self.num_envs} slots")
        self._seeds = [None if s is None else int(s) for s in seeds]

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> Any:
        assert self._actions is not None, "step_async() first"
        n, actions = self.num_envs, self._actions
        results: list[Any] = [None] * n
        live: list[int] = []
        for i in range(n):
            taken = [round(float(a), 6) for a in np.ravel(np.asarray(actions[i], dtype=np.float64))]
            if not self._replay[i] and not self._current[i]["steps"]:
                self._start_replay(i)
            if self._replay[i]:
                results[i] = self._replayed_step(i, taken)
            else:
                live.append(i)
        if live and self.first_live_step_at is None:
            self.first_live_step_at = time.time()
        stepped = self.pool.call(live, "step", [(actions[i],) for i in live])
        seconds = self.pool.call(live, ".last_seconds")
        for i, result, secs in zip(live, stepped, seconds):
            if isinstance(result, Exception) or isinstance(secs, Exception):
                result, secs = self._retry(i, actions[i], result if isinstance(result, Exception) else secs)
            obs, reward, terminated, truncated, info = result
            taken = [round(float(a), 6) for a in np.ravel(np.asarray(actions[i], dtype=np.float64))]
            record = {**info, "reward": float(reward), "seconds": round(float(secs), 4), "controller_action": taken,
                      "obs": [float(v) for v in np.ravel(obs)], "terminated": bool(terminated),
                      "truncated": bool(truncated)}
            self._account(i, record)
            results[i] = (obs, float(reward), bool(terminated), bool(truncated), info)
        self._actions = None
        # Children that continue: keep their state (in-flight file, retries); restore replayed ones.
        self._snapshot([i for i in live if not (results[i][2] or results[i][3])])
        for i in range(n):
            if self._restore[i] is not None and not self._replay[i]:
                self.pool.call([i], "set_state", [(self._restore[i],)])
                self._states[i], self._restore[i] = self._restore[i], None
        # Finished children: record (in worker order, so the log's order is fixed), then reset.
        obs_out, rewards, dones, infos = [], np.zeros(n, dtype=np.float32), np.zeros(n, dtype=bool), []
        done = [i for i in range(n) if results[i][2] or results[i][3]]
        for i in done:
            self._finish_episode(i)
        self._save_inflight(skip=set(done))
        resets = self._reset_slots(done) if done else []
        fresh = dict(zip(done, resets))
        for i in range(n):
            obs, reward, terminated, truncated, info = results[i]
            info = dict(info)
            rewards[i], dones[i] = reward, terminated or truncated
            if dones[i]:
                info["terminal_observation"] = obs
                info["TimeLimit.truncated"] = truncated and not terminated
                obs, reset_info = fresh[i]
                self._current[i] = self._fresh(reset_info, obs)
            obs_out.append(obs)
            infos.append(info)
        if done:
            self._snapshot(done)
        return np.stack(obs_out), rewards, dones, infos

    def close(self) -> None:
        self._bar.close()
        self.pool.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self.base, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        raise ConfigError("SearchVecEnv: setting attributes of the children is not supported")

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
        slots = list(self._get_indices(indices))
        return self.pool.call(slots, method_name, [method_args] * len(slots), [method_kwargs] * len(slots))

    def env_is_wrapped(self, wrapper_class: Any, indices: Any = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    # ------------------------------------------------------------------ population
    def copy_child(self, src: int, dst: int) -> None:
        """Exploit: worker `dst`'s child becomes a copy of worker `src`'s (its whole state, and the
        steps so far, so `dst`'s record holds the schedule it inherited); `inherited` says when.
        While both replay a resumed run's log, only the records are copied: the states they reach
        are restored from the in-flight file when their replay ends."""
        replaying = [bool(self._replay[i]) or self._restore[i] is not None for i in (src, dst)]
        if any(replaying) and not all(replaying):
            raise ConfigError(f"--resume: member {src if replaying[0] else dst} is still replaying the log while "
                              f"member {dst if replaying[0] else src} trains: this run cannot resume; use --overwrite")
        if not any(replaying):
            self._copy_state(src, dst)
        current = self._current[src]
        self._current[dst] = {"start_val": current["start_val"], "child_seed": current["child_seed"],
                              "start_obs": current["start_obs"], "lived": self._current[dst]["lived"],
                              "steps": [dict(step) for step in current["steps"]],
                              "inherited": [*current.get("inherited", []),
                                            {"segment": len(current["steps"]), "from_worker": src}]}

    def _copy_state(self, src: int, dst: int) -> None:
        # The whole child, but not the slot's stream of child seeds (the env's own generator, drawn
        # at each reset): each slot keeps its own, so a resumed run that copies only the records
        # while it replays still draws the same seeds for the next generation.
        state, own, own_seed = (self.pool.call([i], m)[0] for i, m in
                                ((src, "get_state"), (dst, "._np_random"), (dst, "._np_random_seed")))
        for value in (state, own, own_seed):
            if isinstance(value, Exception):
                raise value
        state = {**state, "np_random": None if own is None else own.bit_generator.state, "np_random_seed": own_seed}
        done = self.pool.call([dst], "set_state", [(state,)])[0]
        if isinstance(done, Exception):
            raise done
        self._states[dst] = state

    # ------------------------------------------------------------------ workers
    def _call_with_retry(self, slots: list[int], method: str, kwargs: list[dict[str, Any]] | None = None) -> list[Any]:
        out = self.pool.call(slots, method, kwargs=kwargs)
        for k, (i, value) in enumerate(zip(slots, out)):
            if isinstance(value, Exception):
                self.pool.restart(i)
                out[k] = self.pool.call([i], method, kwargs=[kwargs[k]] if kwargs else None)[0]
                if isinstance(out[k], Exception):
                    raise out[k]
        return out

    def _retry(self, i: int, action: Any, error: Exception) -> tuple[Any, float]:
        """A worker died during a step: retry the child once on a fresh worker from its last state;
        a second failure ends the episode as failed (penalised like a diverged child)."""
        self.failed_workers += 1
        log.warning("worker %d: %s; retrying its child once", i, error)
        self.pool.restart(i)
        if self._states[i] is not None:
            self.pool.call([i], "reset")
            self.pool.call([i], "set_state", [(self._states[i],)])
            again = self.pool.call([i], "step", [(action,)])[0]
            secs = self.pool.call([i], ".last_seconds")[0]
            if not isinstance(again, Exception) and not isinstance(secs, Exception):
                return again, float(secs)
            error = again if isinstance(again, Exception) else secs
            self.pool.restart(i)
        self.failed_workers += 1
        message = f"worker died twice: {error}" if self._states[i] is not None else f"worker died: {error}"
        log.warning("worker %d: %s; the child is logged as failed", i, message)
        self.pool.call([i], "reset")
        penalty = float(getattr(self.base, "divergence_penalty", 1.0))
        obs = np.zeros(self.observation_space.shape, dtype=self.observation_space.dtype)
        return (obs, -penalty, True, False, {"failed": message, "diverged": message}), 0.0

    def _snapshot(self, slots: list[int]) -> None:
        if self._stateful and slots:
            for i, state in zip(slots, self.pool.call(slots, "get_state")):
                self._states[i] = None if isinstance(state, Exception) else state

    def _save_inflight(self, skip: set[int]) -> None:
        """Keep the children still in flight (not those in `skip`, which just finished) with their
        steps and state, so a resumed run continues them from their last segment."""
        if self.store is None or not self._stateful:
            return
        workers = {i: {"steps": self._current[i]["lived"], "state": self._states[i],
                       "start_obs": self._current[i]["start_obs"], "start_val": self._current[i]["start_val"]}
                   for i in range(self.num_envs) if i not in skip and self._current[i]["lived"]
                   and self._states[i] is not None and not self._replay[i]}
        self.store.save_inflight({"episodes": len(self.episodes), "workers": workers})

    # ------------------------------------------------------------------ replay
    def _start_replay(self, i: int) -> None:
        """At the first step of worker i's episode: queue its logged steps, if the log has them."""
        if self._logged[i]:
            logged = self._logged[i][0]
            if not logged.get("inherited"):  # a copied child (pbt) carries its source's seed
                self._check_replay(logged.get("child_seed") == self._current[i]["child_seed"], "child seed",
                                   logged.get("child_seed"), self._current[i]["child_seed"])
            self._replay[i] = deque(logged.get("lived_steps") or logged["steps"])
            self._from_log[i] = True
        elif self._inflight[i] is not None:
            self._replay[i] = deque(self._inflight[i]["steps"])
            self._restore[i] = self._inflight[i]["state"]  # set once its logged steps are answered
            self._inflight[i] = None

    def _replayed_step(self, i: int, taken: list[float]) -> Any:
        logged = self._replay[i].popleft()
        self._check_replay(logged.get("controller_action") == taken, "action", logged.get("controller_action"), taken)
        self._account(i, logged)
        obs = np.asarray(logged["obs"], dtype=self.observation_space.dtype).reshape(self.observation_space.shape)
        info = {k: v for k, v in logged.items()
                if k not in ("reward", "seconds", "controller_action", "obs", "terminated", "truncated")}
        return obs, float(logged["reward"]), bool(logged["terminated"]), bool(logged["truncated"]), info

    def _check_replay(self, ok: bool, what: str, logged: Any, now: Any) -> None:
        if not ok:
            raise ConfigError(
                f"--resume: the run no longer follows its log at episode {len(self.episodes)} ({what} {now!r}, "
                f"logged {logged!r}): the code, data or settings changed since; use --overwrite to start again"
            )

    # ------------------------------------------------------------------ records
    def _account(self, i: int, step: dict[str, Any]) -> None:
        self.env_steps += 1
        self.train_seconds += float(step["seconds"])
        self.train_flops += float(step.get("train_flops", 0.0))
        self._current[i]["steps"].append(step)
        self._current[i]["lived"].append(step)
        if self.base.mode == "static" or step["terminated"] or step["truncated"]:
            self.child_trainings += 1
        self.tracker.on_segment_end(step, self.env_steps)  # tracking hook

    def _finish_episode(self, i: int) -> None:
        if self._from_log[i]:
            self._from_log[i] = False
            logged = self._logged[i].popleft()  # a finished episode of the log: keep its record as it was
            self._check_replay(logged["episode"] == len(self.episodes), "episode", logged["episode"],
                               len(self.episodes))
            self._add_episode(logged, new=False)
            return
        current = self._current[i]
        steps = current["steps"]
        diverged = next((s["diverged"] for s in steps if s.get("diverged")), None)
        seconds = sum(s["seconds"] for s in steps)
        flops = sum(s.get("train_flops", 0.0) for s in steps)
        from policysearch.metrics import cost_units

        units = cost_units(self.base.cost_metric, seconds, flops)
        metric = float(steps[-1].get("metric", float("-inf"))) if not diverged else float("-inf")
        record = {
            "episode": len(self.episodes),
            "controller": self.controller,
            "worker": i,
            "child_seed": current["child_seed"],
            "return": sum(s["reward"] for s in steps),
            "metric": metric,
            "score": episode_score(metric, units, self.base.cost_weight),
            "seconds": round(seconds, 4),
            "train_flops": flops,
            "diverged": diverged,
            "failed": next((s["failed"] for s in steps if s.get("failed")), None),
            "elapsed": round(self.elapsed, 2),
            "start_val": current["start_val"],
            "start_obs": current["start_obs"],
            "inherited": current.get("inherited", []),
            "steps": steps,
        }
        if record["inherited"]:  # a copied child: what its slot stepped itself, for a resume to replay
            record["lived_steps"] = current["lived"]
        if self.store is not None:
            self.store.append_episode(record)  # one whole line, fsynced; NaN written as null
            record["run_id"] = self.store.run_id
        self._add_episode(record, new=True)

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
    workers: int = 1,
    backend: str = "local",
    threads_per_worker: int | None = 1,
    ray_address: str | None = None,
    env_fn: Callable[[], Any] | None = None,
    devices: list[str] | None = None,
    actor_resources: tuple[float, float] = (1.0, 0.0),
    tracker: Tracker | None = None,
    objectives: str | Sequence[str | Objective] | None = None,
    population: int | None = None,
    es_tasks: int | None = None,
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
        workers: children trained at once (`policysearch.workers`): N copies of `env` in worker
            processes (or Ray actors), built from its `gymnasium.make` spec or from `env_fn`.
        backend: "local" (processes on this machine) or "ray" (actors; `ray_address` for a cluster).
        threads_per_worker: torch threads in each worker (None: torch's default).
        env_fn: builds one copy of `env` in a worker (default: `gymnasium.make(env.spec)`).
        devices: spread the workers over these devices, round-robin (GPU hosts).
        actor_resources: (num_cpus, num_gpus) of each Ray actor (backend "ray").
        tracker: further tracking (e.g. `policysearch.tracking_mlflow.MLflowTracker`); the caller closes it.
        objectives: e.g. "accuracy,tflops" (`policysearch.pareto`): the Pareto front of the episodes
            goes into the summary's "pareto" (and pareto.json, pareto.png, pareto/ into `out_dir`);
            the `tpe` controller then searches a multi-objective study over them.
        population: children held at once, for `pbt` (its members). Default: `workers` when above
            1 (one member per worker), else 8, which then take turns in this process. For `es`: the
            candidates per CMA-ES generation (default 4 + 3 ln of the policy's size).
        es_tasks: for `es`, the episodes (task and child seed) every candidate of a generation runs.

    Raises:
        ConfigError: The folder holds another run (see above) or is in use; no episode completed.
    """
    from policysearch.controllers import check_controller_env, make_controller
    from policysearch.policies.artifact import provenance
    from policysearch.population import DEFAULT_POPULATION
    from policysearch.tracking import search_tracking

    # Settings only some controllers read: refused before anything is opened or written.
    if population is not None and controller_name not in ("pbt", "es"):
        raise ConfigError(f"population is {population}, but only controllers 'pbt' and 'es' have a population "
                          f"(controller {controller_name!r} trains --workers children at once)")
    if es_tasks is not None and controller_name != "es":
        raise ConfigError(f"es_tasks is {es_tasks}, but only controller 'es' runs shared episodes per generation")
    base = as_search_env(env)
    check_controller_env(controller_name, base)  # before anything is written
    out = Path(out_dir) if out_dir else None
    goals = as_objectives(objectives)
    tracker, sb3_log, own_tracker = search_tracking(tracker, tensorboard, out)  # tracking hook
    controller = make_controller(controller_name, base.episode_length, tensorboard_log=sb3_log, out_dir=out,
                                 objectives=goals, population=population if controller_name == "es" else None,
                                 es_tasks=es_tasks)
    from policysearch.workers import make_pool
    env_info = base.describe()
    store = RunStore(out, {"controller": controller_name, "seed": seed, "env": env_info,
                           "artefact": artefact_name}, resume=resume, overwrite=overwrite) if out else None

    def search_provenance(recorder: SearchVecEnv) -> dict[str, Any]:
        return provenance(
            env_id=env_info.get("env_id"), dataset=env_info.get("dataset"),
            dataset_fingerprint=env_info.get("dataset_fingerprint"), model=env_info.get("model"),
            reward_metric=env_info.get("reward_metric"), controller=controller_name, seed=seed,
            budget=asdict(budget), episodes=len(recorder.episodes), child_trainings=recorder.child_trainings,
            run_id=store.run_id if store else None,
        )

    def export_best(recorder: SearchVecEnv) -> Any:
        best = recorder.best
        assert best is not None
        return base.export(best["steps"], {**search_provenance(recorder), "best_episode": best["episode"],
                                           "best_val_metric": best["metric"]})

    def summary_of(recorder: SearchVecEnv, files: dict[str, Any] | None = None) -> dict[str, Any]:
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
            **energy,  # energy_kwh, co2e_kg, energy_source (measured / estimated), energy_basis
            "diverged_episodes": sum(1 for e in recorder.episodes if e["diverged"]),
            "best": None if best is None else {"episode": best["episode"], "score": best["score"],
                                               "val_metric": best["metric"], "return": best["return"]},
            "stopped_by": recorder.stop_requested,
            **controller.summary(),
            "workers": {"n": recorder.num_envs, "backend": backend, "threads_per_worker": threads_per_worker,
                        "failures": recorder.failed_workers},
        }
        if store is not None:
            summary["run"] = store.record()
            if store.episodes or store.inflight:  # a resumed run: what the replay cost
                summary["run"]["replayed_episodes"] = len(store.episodes)
                summary["run"]["first_live_step_at"] = recorder.first_live_step_at
            summary["files"] = {"artefact": artefact_name if best else None, "episodes": "episodes.jsonl",
                                **(files or {})}
        return summary

    recorder: SearchVecEnv
    energy: dict[str, Any] = {}  # known once the search has run

    def on_episode(record: dict[str, Any]) -> None:
        # Whatever happens next, the folder holds a usable artefact and a summary that describes
        # exactly the episodes in episodes.jsonl.
        if store is None:
            return
        if recorder.best is record:
            export_best(recorder).save(store.out / artefact_name)
        write_json(store.out / "summary.json", summary_of(recorder))

    if controller_name == "pbt" and population is None:
        population = workers if workers > 1 else DEFAULT_POPULATION
    try:
        pool = make_pool(env, workers, backend, env_fn=env_fn, threads=threads_per_worker, ray_address=ray_address,
                         devices=devices, num_cpus=actor_resources[0], num_gpus=actor_resources[1],
                         population=population if controller_name == "pbt" else None)
    except BaseException:
        if store is not None:
            store.close()
        raise
    recorder = SearchVecEnv(env, pool, budget, store, progress, controller_name, on_episode=on_episode,
                            tracker=tracker)
    tracker.on_search_start({"controller": controller_name, "seed": seed, "budget": asdict(budget),
                             "workers": recorder.num_envs, "objectives": ",".join(o.name for o in goals),
                             "env": env_info})
    previous = _stop_on_signals(recorder)
    try:
        from policysearch.energy import EnergyMeter

        try:
            with EnergyMeter(getattr(getattr(base, "data", None), "device", "cpu")) as meter:
                controller.run(recorder, seed)
        finally:
            _restore_signals(previous)
            recorder.close()
            own_tracker.close()
        energy = meter.stop()
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

            # Compress-v0's AMC reward is not a validation metric: name it as it is.
            reward = env_info.get("reward")
            metric_name = reward if reward not in (None, "acc") else env_info.get("reward_metric")
            png = plot_search(recorder.episodes, store.out / "search.png",
                              title=f"{controller_name} on {env_info.get('dataset')}", metric=metric_name,
                              val_size=(env_info.get("split") or {}).get("val_size"))
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


def _stop_on_signals(recorder: SearchVecEnv) -> dict[int, Any]:
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
