"""Tests for envs/contract.py (the search contract) and envs/base.py (ChildConfig, the shared env base)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import policysearch  # noqa: F401  (registers the envs)
from policysearch.envs.base import ChildConfig
from policysearch.envs.contract import SearchEnv, SuggestsEpisodes, as_search_env
from policysearch.errors import ConfigError, UnknownNameError
from policysearch.search import Budget, run_search

TINY = {"model": "mlp", "episode_length": 2, "steps_per_segment": 2, "batch_size": 32}


@pytest.mark.parametrize("env_id,suggests", [("policysearch/Augment-v0", True), ("policysearch/Schedule-v0", True)])
def test_envs_implement_the_contract(digits, env_id, suggests):
    env = gym.make(env_id, data=digits, **TINY)
    base = as_search_env(env)
    assert base is env.unwrapped and isinstance(base, SearchEnv)
    assert isinstance(base, SuggestsEpisodes) is suggests
    assert base.export_files is not None and base.describe()["env_id"] == env_id


class _Plain(gym.Env):
    observation_space = gym.spaces.Box(0.0, 1.0, (1,))
    action_space = gym.spaces.Box(-1.0, 1.0, (1,))
    mode, episode_length = "schedule", 1


def test_an_env_without_the_contract_is_refused_before_any_search(digits):
    lacks = ("reward_metric, cost_metric, cost_weight, last_seconds, export, describe, export_files, get_state, "
             "set_state")
    with pytest.raises(ConfigError, match=f"_Plain does not implement the search contract: it lacks {lacks};"):
        run_search(_Plain(), "random", Budget(child_trainings=1), None, progress=False)
    env = gym.make("policysearch/Augment-v0", data=digits, **TINY)
    env.unwrapped.mode = "online"
    with pytest.raises(ConfigError, match="mode is 'online', expected one of schedule, static"):
        as_search_env(env)


def test_child_config_object_and_flat_keywords_build_the_same_env(digits):
    flat = gym.make("policysearch/Augment-v0", data=digits, child_seed=3, **TINY).unwrapped
    child = ChildConfig(child_seed=3, **TINY)
    grouped = gym.make("policysearch/Augment-v0", child=child, data=digits).unwrapped
    assert grouped.describe() == flat.describe() and grouped.child_config == flat.child_config == child
    # Flat keywords override the object's fields.
    assert gym.make("policysearch/Augment-v0", child=child, data=digits, episode_length=3).unwrapped.episode_length == 3
    actions = [np.zeros(flat.action_space.shape, dtype=np.float32)] * 2
    for env in (flat, grouped):
        env.reset(seed=0)
    assert [flat.step(a)[1] for a in actions] == [grouped.step(a)[1] for a in actions]


def test_child_config_checks_on_construction():
    with pytest.raises(UnknownNameError, match="Did you mean 'accuracy'"):
        ChildConfig(reward_metric="acuracy")
    with pytest.raises(UnknownNameError, match="cost metric"):
        ChildConfig(cost_metric="joules")
    with pytest.raises(ConfigError, match="episode_length is 0, expected an int >= 1"):
        ChildConfig(episode_length=0)
    with pytest.raises(ConfigError, match="batch_size is True, expected an int >= 1"):
        ChildConfig(batch_size=True)
    with pytest.raises(ConfigError, match=r"steps_per_segment \(None: one epoch\) is 0, expected an int >= 1"):
        ChildConfig(steps_per_segment=0)
    with pytest.raises(ConfigError, match="divergence_penalty is -1, expected a finite number >= 0"):
        ChildConfig(divergence_penalty=-1)
    with pytest.raises(ConfigError, match="divergence_penalty is inf, expected a finite number >= 0"):
        ChildConfig(divergence_penalty=float("inf"))
    with pytest.raises(ConfigError, match="cost_weight is nan, expected a finite number >= 0"):
        ChildConfig(cost_weight=float("nan"))
    with pytest.raises(ConfigError, match=r"child_seed .* is -3, expected an int >= 0"):
        ChildConfig(child_seed=-3)


def test_envs_refuse_child_fields_they_do_not_use(digits):
    with pytest.raises(TypeError, match="unexpected keyword argument 'lr'"):
        gym.make("policysearch/Schedule-v0", data=digits, lr=0.1, **TINY)
    with pytest.raises(ConfigError, match=r"Schedule-v0 does not use ChildConfig.lr"):
        gym.make("policysearch/Schedule-v0", child=ChildConfig(lr=0.1, **TINY), data=digits)
    with pytest.raises(TypeError, match="unexpected keyword argument 'episode_lenght'"):
        gym.make("policysearch/Augment-v0", data=digits, episode_lenght=2)
    with pytest.raises(ConfigError, match="expected a ChildConfig"):
        gym.make("policysearch/Augment-v0", child={"model": "mlp"}, data=digits)
