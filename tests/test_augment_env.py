import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import policysearch  # noqa: F401  (registers the envs)
from policysearch.errors import ConfigError, UnknownNameError
from policysearch.policies.augment import AugmentPolicy
from policysearch.search import Budget, read_episodes, run_search

TINY = {"model": "mlp", "episode_length": 2, "steps_per_segment": 2, "batch_size": 32}
V0, V1 = "policysearch/Augment-v0", "policysearch/Augment-v1"
# Augment-v0 (kept as it was), and Augment-v1 in both of its spaces.
VARIANTS = {"v0": (V0, {}), "v1-full": (V1, {}), "v1-small": (V1, {"space": "small"})}


@pytest.fixture
def make(digits):
    """Augment-v1 by default; ``variant=`` picks one of VARIANTS."""
    def _make(variant="v1-full", **kwargs):
        env_id, extra = VARIANTS[variant]
        return gym.make(env_id, data=digits, **{**TINY, **extra, **kwargs})

    return _make


@pytest.mark.parametrize("variant", VARIANTS)
def test_gymnasium_and_sb3_env_checkers_pass(make, variant):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    for mode in ("schedule", "static"):
        env = make(variant, mode=mode)
        check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=True)


def _rollout(env, seed, actions):
    env.reset(seed=seed)
    return [env.step(a)[1] for a in actions]


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_seed_and_actions_give_same_rewards(make, variant):
    env = make(variant, episode_length=3)
    rng = np.random.default_rng(0)
    actions = [rng.uniform(-1, 1, env.action_space.shape).astype(np.float32) for _ in range(3)]
    assert _rollout(env, 7, actions) == _rollout(make(variant, episode_length=3), 7, actions)
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


def test_v0_action_mapping_bounds(make):
    env = make("v0")
    space = env.unwrapped.space
    assert env.unwrapped.ENV_ID == V0 and env.action_space.shape == (2 * len(space.ops) + 4,)
    assert not space.policy(space.decode(np.zeros(space.dim))).is_identity  # v0's centre: everything on
    low = space.decode(-np.ones(space.dim))
    high = space.decode(np.ones(space.dim))
    assert all(v == 0 for v in low["op_probability"].values()) and low["crop"] == 0 and low["mixup"] == 0
    assert all(v == 1 for v in high["op_probability"].values()) and high["crop"] == space.max_crop
    assert high["mixup"] + high["cutmix"] <= 1.0
    policy = space.policy(high)
    assert len(policy.sub_policies) == 2 * len(space.ops)
    with pytest.raises(ConfigError, match="expected"):
        space.decode(np.zeros(3))


@pytest.mark.parametrize("env_id", [V0, V1])
def test_bad_arguments_fail_at_construction(digits, env_id):
    with pytest.raises(UnknownNameError, match="Did you mean 'static'"):
        gym.make(env_id, data=digits, mode="statc")
    with pytest.raises(UnknownNameError, match="reward metric"):
        gym.make(env_id, data=digits, reward_metric="auc")
    with pytest.raises(UnknownNameError, match="augmentation op"):
        gym.make(env_id, data=digits, ops=["rotate", "blur"])
    with pytest.raises(ConfigError, match="ops_per_sample is 4, expected an int >= 1 and <= 3"):
        gym.make(env_id, data=digits, ops_per_sample=4)


def test_bad_space_arguments(digits):
    with pytest.raises(UnknownNameError, match="Did you mean 'small'"):
        gym.make(V1, data=digits, space="smal")
    with pytest.raises(ConfigError, match="Augment-v0 has only its full space"):
        gym.make(V0, data=digits, space="small")
    with pytest.raises(ConfigError, match="ops_per_sample is 2; space='small' searches the ops per sample"):
        gym.make(V1, data=digits, space="small", ops_per_sample=2)


def test_space_refuses_a_bad_mix_alpha_before_any_step():
    from policysearch.envs.augment_space import AugmentSpace

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
    assert prov["env_id"] == V1 and prov["controller"] == "ppo"
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


@pytest.mark.parametrize("variant", ["v1-full", "v1-small"])
def test_tpe_in_schedule_mode_searches_a_final_policy_and_its_ramp(make, variant):
    pytest.importorskip("optuna")
    import optuna

    env = make(variant, mode="schedule")
    base = env.unwrapped
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        actions = base.suggest_episode(trial)
        assert len(actions) == base.episode_length
        assert all(a.shape == base.action_space.shape and np.all(np.abs(a) <= 1.0) for a in actions)
        final = np.array([trial.params[f"a{i}"] for i in range(base.space.dim)], dtype=np.float32)
        assert np.allclose(actions[-1], final)  # both ramps end at the suggested policy
        if trial.params["ramp"] == "linear":  # from no augmentation, in equal steps
            assert np.allclose(actions[0], final / base.episode_length)
        else:
            assert all(np.array_equal(a, final) for a in actions)
        seen.add(trial.params["ramp"])
        study.tell(trial, 0.0)
    assert seen == {"constant", "linear"}
    result = run_search(make(variant, mode="schedule"), "tpe", Budget(child_trainings=2), None, seed=0,
                        progress=False)
    assert len(result.episodes) == 2 and len(result.episodes[0]["steps"]) == base.episode_length


def test_budget_validation():
    with pytest.raises(ConfigError, match="budget"):
        Budget()
    with pytest.raises(ConfigError, match="positive"):
        Budget(child_trainings=0)


# ---------------------------------------------------------------------- Augment-v1's action spaces
def _unchanged(policy):
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out, target = policy(x, torch.arange(16) % 10, 10, generator=torch.Generator().manual_seed(0))
    return torch.equal(out, x) and torch.equal(target.argmax(1), torch.arange(16) % 10)


@pytest.mark.parametrize("variant", ["v1-full", "v1-small"])
def test_v1_centre_and_lower_half_of_the_box_are_no_augmentation(make, variant):
    env = make(variant)
    space = env.unwrapped.space
    for action in (np.zeros(space.dim), -np.ones(space.dim), np.full(space.dim, -0.3)):
        policy = space.policy(space.decode(action))
        assert policy.is_identity and policy.sub_policies == () and _unchanged(policy)
        assert policy.kornia_policy() == [[]]
    # the agent's first observation says "no augmentation" too: the last action is the centre
    obs, _ = env.reset(seed=0)
    assert np.all(obs[8:] == 0)


def test_v1_full_space_bounds_and_erasing_knobs(make):
    from policysearch.envs.augment_space import FullSpace

    env = make()
    space = env.unwrapped.space
    k = len(space.ops)
    assert isinstance(space, FullSpace) and env.action_space.shape == (2 * k + 6,) == (space.dim,)
    high = space.decode(np.ones(space.dim))
    assert all(v == 1 for v in high["op_probability"].values()) and high["crop"] == space.max_crop
    assert high["flip"] == 1 and high["erasing"] == 1 and high["erasing_area"] == space.max_erasing
    assert high["mixup"] + high["cutmix"] <= 1.0
    policy = space.policy(high)
    assert len(policy.sub_policies) == 2 * k and policy.erasing_scale == (0.02, space.max_erasing)
    # one knob at a time: p = max(0, a)^2, the erased area's centre is the usual (0.02, 0.33)
    a = np.zeros(space.dim)
    a[2 * k + 4] = 0.5
    knobs = space.decode(a)
    assert knobs["erasing"] == 0.25 and knobs["erasing_area"] == 0.33
    policy = space.policy(knobs)
    assert policy.erasing == 0.25 and policy.erasing_scale == (0.02, 0.33) and policy.erasing_ratio == (0.3, 3.3)
    a[:] = 0
    a[0] = 0.5  # the first op at probability 0.25: the uniform op draw keeps every op
    policy = space.policy(space.decode(a))
    assert len(policy.sub_policies) == 2 * k and not policy.is_identity
    with pytest.raises(ConfigError, match=f"expected {space.dim} finite numbers"):
        space.decode(np.zeros(2 * k + 4))


def test_v1_small_space_decode_and_bounds(make):
    from policysearch.envs.augment_space import SmallSpace

    env = make("v1-small")
    space = env.unwrapped.space
    k = len(space.ops)
    assert isinstance(space, SmallSpace) and env.action_space.shape == (5,)
    assert env.observation_space.shape == (8 + 5,)
    assert env.unwrapped.describe()["action_space"] == "small"
    low, high = space.decode(-np.ones(5)), space.decode(np.ones(5))
    assert low == {"ops_per_sample": 1, "magnitude": 0.0, "probability": 0.0, "erasing": 0.0, "mix": 0.0}
    assert high == {"ops_per_sample": 2, "magnitude": 1.0, "probability": 1.0, "erasing": 1.0, "mix": space.max_mix}
    for a, n in ((-0.01, 1), (0.01, 2)):
        assert space.decode(np.array([a, 0, 0, 0, 0]))["ops_per_sample"] == n
    rng = np.random.default_rng(0)
    for _ in range(50):
        knobs = space.decode(rng.uniform(-1, 1, 5))
        assert 1 <= knobs["ops_per_sample"] <= 2 and 0 <= knobs["magnitude"] <= 1
        assert 0 <= knobs["probability"] <= 1 and 0 <= knobs["erasing"] <= 1 and 0 <= knobs["mix"] <= space.max_mix
    policy = space.policy(space.decode(np.array([1.0, 1.0, 0.5, 0.5, 1.0])))
    assert len(policy.sub_policies) == (2 * k) ** 2 and all(len(sub) == 2 for sub in policy.sub_policies)
    assert {p for sub in policy.sub_policies for _, p, _ in sub} == {0.25}
    # one magnitude for every op: the strongest bins of each op's range
    bins = {name: b for sub in policy.sub_policies for name, _, b in sub}
    assert bins["rotate"] in (0, 9) and bins["brightness"] in (0, 9) and bins["equalize"] is None
    assert policy.erasing == 0.25 and policy.erasing_scale == (0.02, 0.33)
    assert policy.mixup == (space.max_mix / 2, 1.0) and policy.cutmix == (space.max_mix / 2, 1.0)
    assert policy.crop == 0 and policy.flip == 0
    with pytest.raises(ConfigError, match="max_ops_per_sample is 4"):
        SmallSpace(max_ops_per_sample=4)


def test_v1_small_space_exports_a_schedule_that_loads(make, tmp_path):
    env = make("v1-small")
    result = run_search(env, "random", Budget(child_trainings=2), tmp_path, seed=0, progress=False)
    policy = AugmentPolicy.load(tmp_path / "policy.json")
    assert policy.to_dict() == result.artefact.to_dict() and policy.starts == (0.0, 0.5)
    assert policy.provenance["env_id"] == V1
    episodes = read_episodes(tmp_path / "episodes.jsonl")
    assert set(episodes[0]["steps"][0]["knobs"]) == {"ops_per_sample", "magnitude", "probability", "erasing", "mix"}


@pytest.mark.parametrize("variant", ["v1-full", "v1-small"])
def test_v1_child_state_continues_bit_identically(make, variant):
    env_a, env_b = make(variant, episode_length=3), make(variant, episode_length=3)
    rng = np.random.default_rng(1)
    actions = [rng.uniform(0, 1, env_a.action_space.shape).astype(np.float32) for _ in range(3)]
    env_a.reset(seed=1)
    env_a.step(actions[0])
    env_b.reset(seed=2)
    env_b.unwrapped.set_state(env_a.unwrapped.get_state())
    for a in actions[1:]:
        ra, rb = env_a.step(a), env_b.step(a)
        assert ra[0].tobytes() == rb[0].tobytes() and ra[1:] == rb[1:]
    with pytest.raises(ConfigError, match="Augment-v1"):
        make("v0").unwrapped.set_state(env_a.unwrapped.get_state())


def test_cli_augment_searches_augment_v1_and_takes_space(capsys, tmp_path):
    from policysearch.cli import main

    argv = ["augment", "--search-only",
            "--dataset", "digits", "--train-size", "300", "--model", "mlp", "--controller", "random",
            "--budget", "1", "--episode-length", "1", "--steps-per-segment", "2", "--no-progress"]
    assert main([*argv, "--space", "small", "--out", str(tmp_path / "a")]) == 0
    policy = AugmentPolicy.load(tmp_path / "a" / "policy.json")
    assert policy.provenance["env_id"] == V1
    assert "mix" in read_episodes(tmp_path / "a" / "episodes.jsonl")[0]["steps"][0]["knobs"]
    capsys.readouterr()
    for bad, message in ((["--space", "smal"], "Did you mean 'small'"),
                         (["--space", "small", "--ops-per-sample", "2"], "ops_per_sample is 2")):
        assert main([*argv, *bad, "--out", str(tmp_path / "b")]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()  # refused before any work
