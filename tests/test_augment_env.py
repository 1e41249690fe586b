import json

import gymnasium as gym
import numpy as np
import pytest

import policysearch  # noqa: F401  (registers the envs)
from policysearch.errors import ConfigError, UnknownNameError
from policysearch.policies.augment import AugmentPolicy
from policysearch.search import Budget, read_episodes, run_search

TINY = {"model": "mlp", "episode_length": 2, "steps_per_segment": 2, "batch_size": 32}


@pytest.fixture
def make(digits):
    def _make(**kwargs):
        return gym.make("policysearch/Augment-v0", data=digits, **{**TINY, **kwargs})

    return _make


def test_gymnasium_and_sb3_env_checkers_pass(make):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    for mode in ("schedule", "static"):
        env = make(mode=mode)
        check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=True)


def _rollout(env, seed, actions):
    env.reset(seed=seed)
    return [env.step(a)[1] for a in actions]


def test_same_seed_and_actions_give_same_rewards(make):
    env = make(episode_length=3)
    rng = np.random.default_rng(0)
    actions = [rng.uniform(-1, 1, env.action_space.shape).astype(np.float32) for _ in range(3)]
    assert _rollout(env, 7, actions) == _rollout(make(episode_length=3), 7, actions)
    assert _rollout(env, 7, actions) != _rollout(env, 8, actions)


def test_schedule_rewards_telescope_to_final_minus_start(make):
    env = make(episode_length=3)
    _, info = env.reset(seed=1)
    start = info["val"]["accuracy"]
    total, done = 0.0, False
    while not done:
        _, reward, done, _, info = env.step(env.action_space.sample())
        total += reward
    assert total == pytest.approx(info["val"]["accuracy"] - start)


@pytest.mark.parametrize("metric,key,sign", [("neg_nll", "nll", -1), ("macro_f1", "macro_f1", 1)])
def test_reward_metric_is_selectable(make, metric, key, sign):
    env = make(mode="static", reward_metric=metric)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(env.action_space.sample())
    assert terminated and reward == pytest.approx(sign * info["val"][key])


def test_cost_term_lowers_reward_by_flops(make):
    a = np.zeros(make().action_space.shape, dtype=np.float32)
    free, costly = make(mode="static"), make(mode="static", cost_weight=10.0, cost_metric="tflops")
    free.reset(seed=0)
    costly.reset(seed=0)
    r0, r1 = free.step(a)[1], costly.step(a)[1]
    info = costly.step(a)[4]
    assert r1 == pytest.approx(r0 - 10.0 * info["train_flops"] / 1e12)


def test_diverging_child_ends_episode_with_penalty(make, caplog):
    env = make(lr=1e3, episode_length=3, steps_per_segment=10, divergence_penalty=2.0)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(env.action_space.sample())
    assert terminated and reward == -2.0 and "loss became" in info["diverged"]
    assert any("diverged" in r.message for r in caplog.records)


def test_action_mapping_bounds(make):
    env = make()
    space = env.unwrapped.space
    low = space.decode(-np.ones(space.dim))
    high = space.decode(np.ones(space.dim))
    assert all(v == 0 for v in low["op_probability"].values()) and low["crop"] == 0 and low["mixup"] == 0
    assert all(v == 1 for v in high["op_probability"].values()) and high["crop"] == space.max_crop
    assert high["mixup"] + high["cutmix"] <= 1.0
    policy = space.policy(high)
    assert len(policy.sub_policies) == 2 * len(space.ops)
    with pytest.raises(ConfigError, match="expected"):
        space.decode(np.zeros(3))


def test_bad_arguments_fail_at_construction(digits):
    with pytest.raises(UnknownNameError, match="Did you mean 'static'"):
        gym.make("policysearch/Augment-v0", data=digits, mode="statc")
    with pytest.raises(UnknownNameError, match="reward metric"):
        gym.make("policysearch/Augment-v0", data=digits, reward_metric="auc")
    with pytest.raises(UnknownNameError, match="augmentation op"):
        gym.make("policysearch/Augment-v0", data=digits, ops=["rotate", "blur"])
    with pytest.raises(ConfigError, match="ops_per_sample is 4, expected an int >= 1 and <= 3"):
        gym.make("policysearch/Augment-v0", data=digits, ops_per_sample=4)


def test_space_refuses_a_bad_mix_alpha_before_any_step():
    from policysearch.envs.augment import AugmentSpace

    with pytest.raises(ConfigError, match="mixup_alpha is inf, expected a finite number > 0"):
        AugmentSpace(mixup_alpha=float("inf"))
    with pytest.raises(ConfigError, match="max_mix is 0.6, expected a finite number >= 0 and <= 0.5"):
        AugmentSpace(max_mix=0.6)


def test_random_controller_samples_within_bounds(make, tmp_path):
    env = make()
    result = run_search(env, "random", Budget(child_trainings=3), tmp_path, seed=0, progress=False)
    episodes = read_episodes(tmp_path / "episodes.jsonl")
    assert len(episodes) == 3 == result.summary["child_trainings"]
    actions = np.array([s["action"] for e in episodes for s in e["steps"]])
    assert actions.min() >= -1 and actions.max() <= 1 and actions.std() > 0.2


def test_tiny_ppo_search_writes_a_loadable_policy(make, tmp_path):
    env = make()
    result = run_search(env, "ppo", Budget(child_trainings=4), tmp_path, seed=0, progress=False)
    for name in ("policy.json", "summary.json", "episodes.jsonl", "controller.zip", "search.png"):
        assert (tmp_path / name).is_file(), name
    policy = AugmentPolicy.load(tmp_path / "policy.json")
    assert policy.to_dict() == result.artefact.to_dict()
    assert policy.starts == (0.0, 0.5)  # schedule mode: one piece per segment
    prov = policy.provenance
    assert prov["env_id"] == "policysearch/Augment-v0" and prov["controller"] == "ppo"
    assert len(prov["dataset_fingerprint"]) == 64
    summary = json.loads((tmp_path / "summary.json").read_text())
    best = max(e["score"] for e in read_episodes(tmp_path / "episodes.jsonl"))
    assert summary["best"]["score"] == best
    from stable_baselines3 import PPO

    assert PPO.load(tmp_path / "controller.zip").observation_space.shape == env.observation_space.shape


@pytest.mark.parametrize("controller", ["tpe", "cmaes"])
def test_optuna_controllers_in_static_mode(make, controller):
    pytest.importorskip("optuna")
    if controller == "cmaes":
        pytest.importorskip("cmaes")
    result = run_search(make(mode="static"), controller, Budget(child_trainings=3), None, seed=0, progress=False)
    assert len(result.episodes) == 3 and result.artefact.starts == ()
    with pytest.raises(ConfigError, match="static"):
        run_search(make(mode="schedule"), controller, Budget(child_trainings=1), None, progress=False)


def test_budget_validation():
    with pytest.raises(ConfigError, match="budget"):
        Budget()
    with pytest.raises(ConfigError, match="positive"):
        Budget(child_trainings=0)
