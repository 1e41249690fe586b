"""Population-based search: truncation selection, explore in bounds, start at the centre, exploit
copies the whole child, the export replays the inherited schedule, deterministic for a seed."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from policysearch.errors import ConfigError
from policysearch.search import Budget, SearchVecEnv, run_search
from policysearch.search.controllers.pbt import PBTController, explore, truncation_pairs
from policysearch.search.workers import ProcessPool


def _env(digits, episode_length: int = 4):
    return gym.make("policysearch/Augment-v0", data=digits, model="mlp", episode_length=episode_length,
                    steps_per_segment=2, batch_size=32)


def test_truncation_pairs_copy_top_into_bottom() -> None:
    scores = np.array([0.5, 0.9, 0.1, 0.7, np.nan, 0.3, 0.8, 0.2])
    pairs = truncation_pairs(scores)  # 8 members: top 2 -> bottom 2, best into worst
    assert pairs == [(1, 4), (6, 2)]
    assert truncation_pairs(np.array([0.2, 0.4])) == [(1, 0)]
    assert truncation_pairs(np.array([0.5])) == []


def test_explore_stays_in_bounds_and_moves() -> None:
    rng = np.random.default_rng(0)
    base = np.array([-1.0, 0.0, 0.99, 1.0], dtype=np.float32)
    out = np.stack([explore(base, rng) for _ in range(500)])
    assert out.min() >= -1.0 and out.max() <= 1.0 and out.dtype == np.float32
    inner = np.array([-0.5, 0.0, 0.3, 0.5], dtype=np.float32)
    moved = np.stack([explore(inner, rng) for _ in range(500)])
    assert (np.abs(moved - inner) > 1e-6).mean() > 0.99  # every knob moves (inside the box)
    same = explore(base, np.random.default_rng(0), resample=0.0, shift=0.0)
    assert np.array_equal(same, base)


def test_exploit_copies_the_whole_child(digits) -> None:
    env = _env(digits)
    spec = env.spec
    pool = ProcessPool(lambda: gym.make(spec).unwrapped, 2)
    recorder = SearchVecEnv(env, pool, Budget(child_trainings=4), progress=False, controller="pbt")
    try:
        recorder.seed(0)
        recorder.reset()
        rng = np.random.default_rng(1)
        recorder.step(np.stack([rng.uniform(-1, 1, env.action_space.shape) for _ in range(2)]).astype(np.float32))
        recorder.copy_child(0, 1)
        same = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        obs, rewards, _, infos = recorder.step(np.stack([same, same]))
        assert np.array_equal(obs[0], obs[1]) and rewards[0] == rewards[1]
        assert infos[0]["val"] == infos[1]["val"]  # bit-identical continuation of the copied child
        states = recorder.env_method("get_state")
        for a, b in zip(states[0]["trainer"]["model"].values(), states[1]["trainer"]["model"].values()):
            assert torch.equal(a, b)
        assert recorder._current[1]["inherited"] == [{"segment": 1, "from_worker": 0}]
    finally:
        recorder.close()


def test_pbt_search_starts_at_the_centre_exports_the_inherited_schedule_and_is_deterministic(digits, tmp_path):
    # 4 members in 2 worker processes (2 each, taking turns): the processes and the copies between them
    runs = [run_search(_env(digits), "pbt", Budget(child_trainings=4), tmp_path / f"r{k}", seed=5, progress=False,
                       workers=2, population=4) for k in range(2)]
    first = runs[0]
    for record in first.episodes:
        assert record["steps"][0]["controller_action"] == [0.0] * len(record["steps"][0]["controller_action"])
    assert any(record["inherited"] for record in first.episodes)  # somebody copied somebody
    best = max(first.episodes, key=lambda e: e["score"])
    assert first.artefact.starts == tuple(i / 4 for i in range(4))  # one piece per segment, inherited ones too
    assert len(best["steps"]) == 4
    strip = lambda eps: [{k: v for k, v in e.items() if k not in ("seconds", "elapsed", "run_id")} for e in eps]  # noqa: E731
    assert [[s["controller_action"] for s in e["steps"]] for e in strip(runs[0].episodes)] == \
        [[s["controller_action"] for s in e["steps"]] for e in strip(runs[1].episodes)]
    assert [e["metric"] for e in runs[0].episodes] == [e["metric"] for e in runs[1].episodes]


def test_pbt_needs_a_population_and_segments(digits) -> None:
    with pytest.raises(ConfigError, match="population"):
        run_search(_env(digits), "pbt", Budget(child_trainings=2), None, progress=False, population=1)
    with pytest.raises(ConfigError, match="interval"):
        PBTController(interval=0)


def test_population_takes_turns_in_one_process(digits, tmp_path) -> None:
    from policysearch.search.workers import SerialPool

    result = run_search(_env(digits, episode_length=2), "pbt", Budget(child_trainings=4), tmp_path, seed=0,
                        progress=False, population=4)
    assert result.summary["workers"]["n"] == 4 and len(result.episodes) == 4
    again = run_search(_env(digits, episode_length=2), "pbt", Budget(child_trainings=4), None, seed=0,
                       progress=False, population=4)
    assert [e["score"] for e in again.episodes] == [e["score"] for e in result.episodes]
    pool = SerialPool(lambda: gym.make("policysearch/Augment-v0", data=digits, model="mlp").unwrapped, 2)
    assert pool.envs[0] is not pool.envs[1]  # copies, not one env twice


def test_population_is_refused_where_it_cannot_hold(digits) -> None:
    with pytest.raises(ConfigError, match="only controllers 'pbt' and 'es' have a population"):
        run_search(_env(digits), "random", Budget(child_trainings=2), None, progress=False, population=4)
    with pytest.raises(ConfigError, match="one member per worker"):
        run_search(_env(digits), "pbt", Budget(child_trainings=2), None, progress=False, workers=4, population=2)
    with pytest.raises(ConfigError, match="one member per worker"):
        run_search(_env(digits), "pbt", Budget(child_trainings=2), None, progress=False, workers=2, population=4,
                   backend="ray")


def test_a_population_over_fewer_processes_matches_the_one_in_this_process(digits) -> None:
    """4 members over 2 worker processes (2 each, taking turns) give the episodes of 4 members taking
    turns here: the same children, whatever process holds them (one torch thread in both)."""
    runs = [run_search(_env(digits, episode_length=3), "pbt", Budget(child_trainings=4), None, seed=2,
                       progress=False, population=4, workers=w) for w in (1, 2)]
    assert runs[1].summary["workers"]["n"] == 4
    assert [(e["score"], e.get("inherited")) for e in runs[0].episodes] == \
        [(e["score"], e.get("inherited")) for e in runs[1].episodes]
    assert any(e.get("inherited") for e in runs[0].episodes)  # exploit copied state across members


@pytest.mark.parametrize("env_id", ["policysearch/Schedule-v0", "policysearch/Schedule-v1"])
def test_pbt_searches_the_learning_rate(digits, env_id) -> None:
    env = gym.make(env_id, data=digits, model="mlp", episode_length=3, steps_per_segment=4, batch_size=32)
    result = run_search(env, "pbt", Budget(child_trainings=4), None, seed=0, progress=False, population=4)
    assert len(result.episodes) == 4 and all(len(e["steps"]) == 3 for e in result.episodes)
    first = {tuple(np.round(e["steps"][0]["action"], 6)) for e in result.episodes}
    assert first == {(0.0,)}  # every member starts at the centre: the base schedule's LR
    lrs = {round(s["lr"], 12) for e in result.episodes for s in e["steps"][1:]}
    assert len(lrs) > 1  # explore moved the copied LRs


class _Crash(Exception):
    pass


class _CrashAtSegment:
    """A tracker that raises at the n-th segment: what a kill leaves behind, in this process."""

    def __init__(self, at: int) -> None:
        from policysearch.tracking import Tracker

        self.__class__ = type("CrashTracker", (Tracker,), {"on_segment_end": self._segment})
        self.at = at

    def _segment(self, step, env_step) -> None:
        if env_step == self.at:
            raise _Crash(f"crash at segment {env_step}")


@pytest.mark.parametrize("crash_at", [7, 22])  # in the first generation's 2nd segment; in the second generation
def test_pbt_resumes_after_a_crash_as_if_never_stopped(digits, tmp_path, crash_at) -> None:
    from search_helpers import stable

    from policysearch.search import read_episodes

    def search(out, **kw):
        return run_search(_env(digits, episode_length=4), "pbt", Budget(child_trainings=8), out, seed=4,
                          progress=False, population=4, **kw)

    whole = search(tmp_path / "whole")
    assert any(e["inherited"] for e in whole.episodes) and len(whole.episodes) == 8
    with pytest.raises(_Crash):
        search(tmp_path / "cut", tracker=_CrashAtSegment(crash_at))
    assert len(read_episodes(tmp_path / "cut" / "episodes.jsonl")) == (0 if crash_at < 16 else 4)
    resumed = search(tmp_path / "cut", resume=True)
    assert stable(resumed.episodes) == stable(whole.episodes)
    assert stable(read_episodes(tmp_path / "cut" / "episodes.jsonl")) == stable(whole.episodes)
    policy = [json.loads((tmp_path / d / "policy.json").read_text()) for d in ("whole", "cut")]
    for p in policy:
        p["provenance"].pop("run_id", None)
    assert policy[0] == policy[1]
