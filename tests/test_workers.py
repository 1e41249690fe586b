"""Parallel children: N workers (processes or Ray actors) behind one VecEnv; same seed and N give
the same episodes; a worker that dies does not end the search; resume works with N workers."""

from __future__ import annotations

import os
import signal
import time

import gymnasium as gym
import pytest
from search_helpers import stable as _stable

from policysearch.errors import ConfigError
from policysearch.search import Budget, SearchVecEnv, read_episodes, run_search
from policysearch.search.workers import ProcessPool, make_pool


class Sleeper(gym.Env):
    """A worker's env whose call takes as long as asked: a child still training."""

    observation_space = gym.spaces.Box(0, 1, (1,))
    action_space = gym.spaces.Discrete(2)

    def nap(self, seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()


def _env(digits, mode: str = "schedule"):
    return gym.make("policysearch/Augment-v0", data=digits, model="mlp", mode=mode,
                    episode_length=1 if mode == "static" else 2, steps_per_segment=2, batch_size=32)


@pytest.mark.parametrize(("controller", "mode"), [
    pytest.param("random", "schedule", marks=pytest.mark.slow),  # the ppo case covers the same schedule-mode path
    ("ppo", "schedule"), ("tpe", "static")])
def test_two_workers_are_deterministic_for_a_seed(digits, tmp_path, controller, mode) -> None:
    runs = [run_search(_env(digits, mode), controller, Budget(child_trainings=4), tmp_path / f"run{k}", seed=1,
                       progress=False, workers=2) for k in range(2)]
    assert len(runs[0].episodes) >= 4
    assert {e["worker"] for e in runs[0].episodes} == {0, 1}  # both workers trained children
    assert _stable(runs[0].episodes) == _stable(runs[1].episodes)
    assert runs[0].summary["workers"]["n"] == 2


def test_a_killed_worker_is_retried_and_the_search_goes_on(digits) -> None:
    env = _env(digits)
    pool = ProcessPool(lambda: gym.make(env.spec).unwrapped, 2)
    recorder = SearchVecEnv(env, pool, Budget(child_trainings=6), progress=False, controller="random")
    try:
        recorder.seed(0)
        recorder.action_space.seed(0)
        recorder.reset()
        recorder.step([recorder.action_space.sample() for _ in range(2)])
        os.kill(pool.pid(1), signal.SIGKILL)  # mid-episode: worker 1's child has one segment done
        while not recorder.exhausted:
            recorder.step([recorder.action_space.sample() for _ in range(2)])
    finally:
        recorder.close()
    assert recorder.failed_workers == 1  # retried once, from its last state, and it went through
    assert len(recorder.episodes) >= 6 and not any(e["failed"] for e in recorder.episodes)


def test_a_killed_shared_process_restores_every_member_it_held(digits) -> None:
    from policysearch.search.workers import SharedProcessPool

    env = _env(digits)
    pool = SharedProcessPool([lambda: gym.make(env.spec).unwrapped] * 2, 4)
    assert pool.pid(0) == pool.pid(2) != pool.pid(1)  # member i lives in process i % 2
    recorder = SearchVecEnv(env, pool, Budget(child_trainings=8), progress=False, controller="random")
    try:
        recorder.seed(0)
        recorder.action_space.seed(0)
        recorder.reset()
        recorder.step([recorder.action_space.sample() for _ in range(4)])
        os.kill(pool.pid(1), signal.SIGKILL)  # members 1 and 3, one segment done each
        while not recorder.exhausted:
            recorder.step([recorder.action_space.sample() for _ in range(4)])
    finally:
        recorder.close()
    assert recorder.failed_workers == 2  # both members retried from their last state, once each
    assert len(recorder.episodes) >= 8 and not any(e["failed"] for e in recorder.episodes)


def test_a_shared_pool_answers_each_member_whatever_the_order_asked(digits) -> None:
    from policysearch.search.workers import SharedProcessPool

    env = _env(digits)
    pool = SharedProcessPool([lambda: gym.make(env.spec).unwrapped] * 2, 5)
    try:
        for i in range(5):
            pool.submit(i, "reset", seed=i)
        first = {i: pool.result(i)[0] for i in (4, 0, 3, 1, 2)}  # out of the submission order
        again = [pool.call([i], "reset", [()], [{"seed": i}])[0][0] for i in range(5)]
    finally:
        pool.close()
    assert all((first[i] == again[i]).all() for i in range(5))
    with pytest.raises(ConfigError, match="more members"):
        SharedProcessPool([lambda: None] * 3, 3)


def test_a_worker_that_dies_twice_logs_its_child_as_failed(digits, monkeypatch) -> None:
    env = _env(digits)
    pool = ProcessPool(lambda: gym.make(env.spec).unwrapped, 2)
    recorder = SearchVecEnv(env, pool, Budget(child_trainings=4), progress=False, controller="random")
    restart = pool.restart

    def restart_into_a_dead_worker(i: int) -> None:
        restart(i)
        if recorder.failed_workers == 1:  # the retry's worker dies too
            os.kill(pool.pid(i), signal.SIGKILL)
            pool._slots[i].processes[0].join()

    monkeypatch.setattr(pool, "restart", restart_into_a_dead_worker)
    try:
        recorder.seed(0)
        recorder.action_space.seed(0)
        recorder.reset()
        os.kill(pool.pid(0), signal.SIGKILL)
        pool._slots[0].processes[0].join()
        while not recorder.exhausted:
            recorder.step([recorder.action_space.sample() for _ in range(2)])
    finally:
        recorder.close()
    failed = [e for e in recorder.episodes if e["failed"]]
    assert len(failed) == 1 and "died" in failed[0]["failed"] and failed[0]["worker"] == 0
    assert len(recorder.episodes) >= 4  # the search went on


class Crash(Exception):
    pass


def test_resume_with_two_workers_equals_an_uninterrupted_run(digits, tmp_path, monkeypatch) -> None:
    budget = Budget(child_trainings=6)
    whole = run_search(_env(digits), "random", budget, tmp_path / "whole", seed=2, progress=False, workers=2)
    calls = {"n": 0}
    original = SearchVecEnv.step_wait

    def crash_on_fourth(self):
        calls["n"] += 1
        if calls["n"] == 4:
            raise Crash
        return original(self)

    monkeypatch.setattr(SearchVecEnv, "step_wait", crash_on_fourth)
    with pytest.raises(Crash):
        run_search(_env(digits), "random", budget, tmp_path / "cut", seed=2, progress=False, workers=2)
    monkeypatch.setattr(SearchVecEnv, "step_wait", original)
    resumed = run_search(_env(digits), "random", budget, tmp_path / "cut", seed=2, progress=False, workers=2,
                         resume=True)
    assert _stable(resumed.episodes) == _stable(whole.episodes)
    assert _stable(read_episodes(tmp_path / "cut" / "episodes.jsonl")) == _stable(whole.episodes)


def test_workers_need_a_spec_or_a_factory(digits) -> None:
    from policysearch.envs.augment import AugmentEnv

    with pytest.raises(ConfigError, match="env_fn"):
        make_pool(AugmentEnv(data=digits, model="mlp"), workers=2)


@pytest.mark.slow  # 20 s; the default run reaches a local Ray in test_your_data.py (a user's model on Ray)
def test_ray_backend_on_a_local_ray(digits, tmp_path) -> None:
    ray = pytest.importorskip("ray")
    try:
        result = run_search(_env(digits), "random", Budget(child_trainings=4), tmp_path, seed=1, progress=False,
                            workers=2, backend="ray")
        local = run_search(_env(digits), "random", Budget(child_trainings=4), tmp_path / "local", seed=1,
                           progress=False, workers=2)
    finally:
        ray.shutdown()
    assert result.summary["workers"]["backend"] == "ray"
    assert _stable(result.episodes) == _stable(local.episodes)  # the backend does not change the search


def test_cli_search_and_evaluate_with_two_workers(tmp_path, capsys) -> None:
    import json

    from policysearch.cli import main

    tiny = ["--dataset", "digits", "--train-size", "300", "--model", "mlp", "--no-progress", "--workers", "2"]
    assert main(["augment", "--search-only", *tiny, "--controller", "random", "--budget", "2", "--episode-length", "1",
                 "--steps-per-segment", "2", "--out", str(tmp_path / "run"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["workers"]["n"] == 2 and summary["episodes"] >= 2
    results = {}
    for workers in ("1", "2"):
        argv = ["evaluate", *tiny[:-1], workers, "--epochs", "1", "--augment", "none,cropflip", "--seeds", "2",
                "--json"]
        assert main(argv) == 0
        results[workers] = json.loads(capsys.readouterr().out)["results"]
    for one, two in zip(results["1"], results["2"]):  # same seeds, same order, same figures
        assert one["augment"] == two["augment"]
        assert one["test"]["accuracy"]["mean"] == pytest.approx(two["test"]["accuracy"]["mean"], abs=1e-6)


@pytest.mark.slow  # 17 s; a lost local worker is retried the same way in the default run
def test_a_lost_ray_actor_is_replaced_and_its_child_retried(digits) -> None:
    ray = pytest.importorskip("ray")
    from policysearch.search.workers import RayPool

    env = _env(digits)
    spec = env.spec
    try:
        pool = RayPool(lambda: gym.make(spec).unwrapped, 2)
        recorder = SearchVecEnv(env, pool, Budget(child_trainings=4), progress=False, controller="random")
        recorder.seed(0)
        recorder.action_space.seed(0)
        recorder.reset()
        recorder.step([recorder.action_space.sample() for _ in range(2)])
        ray.kill(pool.actor(1))  # the actor is lost mid-episode
        while not recorder.exhausted:
            recorder.step([recorder.action_space.sample() for _ in range(2)])
        recorder.close()
    finally:
        ray.shutdown()
    assert recorder.failed_workers == 1 and not any(e["failed"] for e in recorder.episodes)


def test_workers_ignore_sigint_and_sigterm_and_finish_their_call() -> None:
    pool = ProcessPool(Sleeper, 1)
    try:
        pool.submit(0, "nap", 1.0)
        time.sleep(0.3)
        for sig in (signal.SIGINT, signal.SIGTERM):  # what a terminal or `timeout` sends the whole group
            os.kill(pool.pid(0), sig)
        assert pool.result(0) == pool.pid(0)
    finally:
        pool.close()


@pytest.mark.parametrize("shared", [False, True])
def test_closing_kills_a_worker_still_busy_with_a_call(shared) -> None:
    from policysearch.search.workers import SharedProcessPool

    pool = SharedProcessPool([Sleeper] * 2, 3) if shared else ProcessPool(Sleeper, 2)
    pids = {pool.pid(i) for i in range(pool.n)}
    pool.submit(1, "nap", 60.0)  # a stop at once, mid-child: nobody will read this call's result
    pool.submit(0, "nap", 0.0)
    pool.result(0)
    start = time.perf_counter()
    pool.close()
    assert time.perf_counter() - start < 20
    time.sleep(0.2)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_closing_after_an_interrupted_wait_kills_the_worker_that_still_owes_its_reply() -> None:
    # A second Ctrl-C raises KeyboardInterrupt while the driver waits for a result: the worker has
    # not answered yet, so closing must not wait for it.
    pool = ProcessPool(Sleeper, 1)
    pid = pool.pid(0)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        pool.submit(0, "nap", 60.0)
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(KeyboardInterrupt):
            pool.result(0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    start = time.perf_counter()
    pool.close()
    assert time.perf_counter() - start < 20
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
