"""The vectorised env every controller drives, and the budget it enforces.

`SearchVecEnv` is a stable-baselines3 `VecEnv` over N children on a worker pool: it logs every step
and episode, tracks the best, stops at the `Budget`, and on resume answers the logged steps from the
log before training anything. Its size (the module's one class, ~400 lines) is the replay and the
child-state bookkeeping that resume and a population's copies need; both must stay in one place.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from policysearch.envs.contract import SearchEnv, as_search_env
from policysearch.errors import ConfigError
from policysearch.metrics import cost_units
from policysearch.search.runstore import RunStore
from policysearch.search.workers import InProcessPool, WorkerPool
from policysearch.tracking import Tracker

__all__ = ["Budget", "SearchVecEnv", "episode_score"]

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
        env: the template env (its `unwrapped` implements `policysearch.envs.contract.SearchEnv`): its
            spaces, `describe()`, `export()` and `suggest_episode()` are used here.
        pool: where the N children run (`policysearch.search.workers.make_pool`).
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
                done = self.pool.call([i], "set_state", [(self._restore[i],)])[0]
                if isinstance(done, Exception):  # never go on silently from a child that is not the logged one
                    raise ConfigError(f"--resume: the child in flight on worker {i} cannot be restored from the run "
                                      f"folder's inflight.pt ({done}); use --overwrite to start again")
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

