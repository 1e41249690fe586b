"""The search driver: run a controller on an env within a budget, log every episode, export the best.

A run directory holds ``episodes.jsonl`` (every decision with its concrete values, so a search can
be replayed and plotted), ``summary.json``, the exported artefact, the controller (SB3 zip),
``search.png``, and whatever files the env exports besides (Schedule-v0: ``controller.json``).
What the driver may ask of an env is `policysearch.envs.contract.SearchEnv`.
"""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym

from policysearch.envs.contract import as_search_env
from policysearch.errors import ConfigError, SearchInterrupted
from policysearch.files import read_jsonl, write_json
from policysearch.policies.artifact import provenance
from policysearch.search.controllers.base import ControllerSettings
from policysearch.search.controllers.pbt import DEFAULT_POPULATION
from policysearch.search.controllers.registry import check_controller_env, check_settings, make_controller
from policysearch.search.pareto import Objective, as_objectives, write_pareto
from policysearch.search.plots import plot_search
from policysearch.search.runstore import RunStore
from policysearch.search.vecenv import Budget, SearchVecEnv
from policysearch.search.workers import make_pool
from policysearch.tracking import Tracker, search_tracking
from policysearch.train.energy import EnergyMeter

__all__ = ["SearchResult", "read_episodes", "run_search"]

log = logging.getLogger(__name__)


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

    The run folder is a durable store (`policysearch.search.runstore`): every finished episode is appended
    at once, the best artefact and `summary.json` are rewritten whenever the best improves, and a
    killed search continues with `resume=True`, giving the same episodes and artefact as a run that
    was never stopped. SIGINT / SIGTERM stop the search after the current step, cleanly.

    Args:
        env: a policysearch env (Augment-v0, ...): its `unwrapped` implements
            `policysearch.envs.contract.SearchEnv`. Its `export_files` hook writes any further files
            (Schedule-v0: the closed-loop `controller.json`), listed in the summary's "files".
        controller_name: see `policysearch.search.controllers.registry.CONTROLLERS`.
        budget: when to stop.
        out_dir: where to write the run (None: nothing is written).
        seed: seeds the controller and the env's episode stream.
        progress: progress bar on stderr.
        tensorboard: TensorBoard scalars of every child and episode (`policysearch.tracking`) in
            ``<folder>/search``, and an SB3 agent's own curves beside them; the folder is
            ``out_dir/tensorboard`` for True, or the path given (nothing without either).
        artefact_name: file name of the exported best policy.
        resume: continue the run in `out_dir` (see `policysearch.search.runstore.RunStore`).
        overwrite: replace the run in `out_dir`; without it (or `resume`) an existing run is refused.
        workers: children trained at once (`policysearch.search.workers`): N copies of `env` in worker
            processes (or Ray actors), built from its `gymnasium.make` spec or from `env_fn`.
        backend: "local" (processes on this machine) or "ray" (actors; `ray_address` for a cluster).
        threads_per_worker: torch threads in each worker (None: torch's default).
        env_fn: builds one copy of `env` in a worker (default: `gymnasium.make(env.spec)`).
        devices: spread the workers over these devices, round-robin (GPU hosts).
        actor_resources: (num_cpus, num_gpus) of each Ray actor (backend "ray").
        tracker: further tracking (e.g. `policysearch.tracking_mlflow.MLflowTracker`); the caller closes it.
        objectives: e.g. "accuracy,tflops" (`policysearch.search.pareto`): the Pareto front of the episodes
            goes into the summary's "pareto" (and pareto.json, pareto.png, pareto/ into `out_dir`);
            the `tpe` controller then searches a multi-objective study over them.
        population: children held at once, for `pbt` (its members). Default: `workers` when above
            1 (one member per worker), else 8, which then take turns in this process. For `es`: the
            candidates per CMA-ES generation (default 4 + 3 ln of the policy's size).
        es_tasks: for `es`, the episodes (task and child seed) every candidate of a generation runs.

    Raises:
        ConfigError: The folder holds another run (see above) or is in use; no episode completed.
    """
    # Settings only some controllers read: refused before anything is opened or written.
    check_settings(controller_name, population=population, es_tasks=es_tasks)
    base = as_search_env(env)
    check_controller_env(controller_name, base)  # before anything is written
    out = Path(out_dir) if out_dir else None
    goals = as_objectives(objectives)
    tracker, sb3_log, own_tracker = search_tracking(tracker, tensorboard, out)  # tracking hook
    controller = make_controller(controller_name, ControllerSettings(
        episode_length=base.episode_length, tensorboard_log=sb3_log, out_dir=out, objectives=goals,
        population=population if controller_name != "pbt" else None, es_tasks=es_tasks))
    env_info = base.describe()
    store = RunStore(out, {"controller": controller_name, "seed": seed, "env": env_info,
                           "artefact": artefact_name}, resume=resume, overwrite=overwrite) if out else None
    if store is not None and store.episodes:
        try:
            _check_budget_covers_log(budget, store)
        except BaseException:
            store.close()
            raise

    def search_provenance(recorder: SearchVecEnv) -> dict[str, Any]:
        return provenance(
            env_id=env_info.get("env_id"), dataset=env_info.get("dataset"),
            dataset_fingerprint=env_info.get("dataset_fingerprint"), model=env_info.get("model"),
            reward_metric=env_info.get("reward_metric"), controller=controller_name, seed=seed,
            # what a user needs to apply the artefact to their own data: its classes, label mapping, inputs
            classes=env_info.get("classes"), label_map=env_info.get("label_map"),
            normalization=env_info.get("normalization"),
            **({"task": env_info["task"]} if env_info.get("task") else {}),  # classification files stay as they were
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
        try:
            with EnergyMeter(getattr(getattr(base, "data", None), "device", "cpu")) as meter:
                controller.run(recorder, seed)
        finally:
            _restore_signals(previous)
            recorder.close()
            own_tracker.close()
        energy = meter.stop()
        if recorder.best is None and recorder.stop_requested:
            raise SearchInterrupted(_stopped_line(recorder, out, "before any episode finished"))
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
        print(_stopped_line(recorder, out, f"after {len(recorder.episodes)} episode(s)"), file=sys.stderr)
    return SearchResult(artefact, recorder.episodes, summary, out)


def _stopped_line(recorder: SearchVecEnv, out: Path | None, when: str) -> str:
    return (f"stopped by {recorder.stop_requested} {when}"
            + (f"; continue with the same command and --resume (run folder {out})" if out else ""))


def _check_budget_covers_log(budget: Budget, store: RunStore) -> None:
    """A resumed run's budget must cover the episodes its log already holds: a smaller one would
    leave a summary and an artefact that describe fewer episodes than the log."""
    logged = len(store.episodes)
    if budget.child_trainings is not None and budget.child_trainings < logged:
        raise ConfigError(f"--resume: --budget is {budget.child_trainings}, but the run in {store.out} has logged "
                          f"{logged} child trainings already; resume with --budget {logged} or more")
    steps = sum(len(e.get("lived_steps") or e.get("steps") or []) for e in store.episodes)
    if budget.env_steps is not None and budget.env_steps < steps:
        raise ConfigError(f"--resume: --budget-steps is {budget.env_steps}, but the run in {store.out} has logged "
                          f"{steps} env steps already; resume with --budget-steps {steps} or more")


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
    records, torn = read_jsonl(path)
    if torn:
        warnings.warn(torn, stacklevel=2)
    return records
