"""Tests for envs/schedule.py (Schedule-v0) and policies/adaptive.py (the closed-loop controller)."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import policysearch  # noqa: F401  (registers the envs)
from policysearch.errors import ConfigError, PolicyFormatError, UnknownNameError
from policysearch.policies.adaptive import OBSERVATION_NAMES, AdaptiveLRCallback, AdaptiveSchedule, ScheduleSpace
from policysearch.policies.schedule import LearnedSchedule, ProgressLR
from policysearch.search import Budget, read_episodes, run_search

TINY = {"model": "mlp", "episode_length": 2, "steps_per_segment": 2, "batch_size": 32}
LOW, HIGH = np.array([-1.0], dtype=np.float32), np.array([1.0], dtype=np.float32)


@pytest.fixture
def make(digits):
    def _make(**kwargs):
        return gym.make("policysearch/Schedule-v0", data=digits, **{**TINY, **kwargs})

    return _make


@pytest.fixture(scope="module")
def ppo_run(digits, tmp_path_factory):
    """One tiny PPO search shared by the export and controller tests (SB3 is the slow part)."""
    out = tmp_path_factory.mktemp("ppo")
    env = gym.make("policysearch/Schedule-v0", data=digits, **TINY)
    result = run_search(env, "ppo", Budget(child_trainings=3), out, seed=0, progress=False,
                        artefact_name="schedule.json")
    return env, result, out


# ---------------------------------------------------------------------- env contract


def test_gymnasium_and_sb3_env_checkers_pass(make):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = make()
    assert env.unwrapped.mode == "schedule"
    assert env.observation_space.shape == (len(OBSERVATION_NAMES),) and env.action_space.shape == (1,)
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=True)


def _rollout(env, seed, actions):
    env.reset(seed=seed)
    return [env.step(a)[1] for a in actions]


def test_same_seed_and_actions_give_same_rewards(make):
    env = make(episode_length=3)
    actions = [np.array([a], dtype=np.float32) for a in (0.3, -0.6, 0.9)]
    first = _rollout(env, 7, actions)
    assert first == _rollout(make(episode_length=3), 7, actions)
    assert first != _rollout(env, 8, actions)


def test_extreme_actions_set_exactly_the_lr_bounds(make):
    env = make(lr_min=3e-3, lr_max=0.7)
    obs, _ = env.reset(seed=0)
    assert obs[OBSERVATION_NAMES.index("lr")] == 0.5  # no LR chosen yet
    obs, _, _, _, info = env.step(LOW)
    assert info["lr"] == 3e-3 and env.unwrapped.trainer.lr == 3e-3
    assert obs[OBSERVATION_NAMES.index("lr")] == 0.0
    obs, _, _, _, info = env.step(HIGH)
    assert info["lr"] == 0.7 and env.unwrapped.trainer.lr == 0.7
    assert obs[OBSERVATION_NAMES.index("lr")] == pytest.approx(1.0)
    space = env.unwrapped.space
    assert space.lr([0.0]) == pytest.approx(math.sqrt(3e-3 * 0.7))  # log-linear: the geometric mean
    assert space.lr([5.0]) == 0.7 and space.lr([-5.0]) == 3e-3  # clipped, not extrapolated


def test_rewards_telescope_to_final_minus_start(make):
    env = make(episode_length=3)
    _, info = env.reset(seed=1)
    start = info["val"]["accuracy"]
    total, done = 0.0, False
    for a in (0.2, -0.2, 0.0):
        _, reward, done, _, info = env.step(np.array([a], dtype=np.float32))
        total += reward
    assert done and total == pytest.approx(info["val"]["accuracy"] - start)
    assert info["metric"] == info["val"]["accuracy"] and info["segment"] == 3 and info["progress"] == 1.0


def test_observation_is_rebuilt_from_plain_numbers(make):
    """The closed-loop artefact rebuilds the env's observation from logged figures alone."""
    env = make()
    obs0, info0 = env.reset(seed=3)
    space = env.unwrapped.space
    start = {"progress": 0.0, "val_loss": info0["val"]["nll"], "val_metric": info0["val"]["accuracy"]}
    np.testing.assert_array_equal(space.observation(start), obs0)
    obs1, _, _, _, info = env.step(np.array([0.25], dtype=np.float32))
    stats = {"progress": info["progress"], "train_loss": info["train_loss"], "val_loss": info["val"]["nll"],
             "val_metric": info["metric"], "prev_val_loss": start["val_loss"], "prev_val_metric": start["val_metric"],
             "prev_train_loss": space.loss_scale,  # before any training the loss is taken as chance level
             "lr": info["lr"], "grad_norm_mean": info["grad_norm_mean"], "grad_norm_std": info["grad_norm_std"]}
    np.testing.assert_array_equal(space.observation(stats), obs1)
    assert obs1[OBSERVATION_NAMES.index("segments_left")] == 0.5
    assert obs1[OBSERVATION_NAMES.index("val_metric_trend")] == pytest.approx(info["metric"] - start["val_metric"])
    with pytest.raises(ConfigError, match="val_loss"):
        space.observation({"progress": 0.0, "val_metric": 0.1})


def test_diverging_child_ends_episode_with_penalty(make, caplog):
    env = make(lr_max=1e3, episode_length=3, steps_per_segment=10, divergence_penalty=2.0)
    env.reset(seed=0)
    obs, reward, terminated, _, info = env.step(HIGH)
    assert terminated and reward == -2.0 and "loss became" in info["diverged"] and info["lr"] == 1e3
    assert any("diverged" in r.message for r in caplog.records)
    assert env.observation_space.contains(obs)  # NaN figures are shown as the worst bound, not passed on
    assert obs[OBSERVATION_NAMES.index("val_loss")] == 10.0 and obs[OBSERVATION_NAMES.index("val_metric")] == -10.0


def test_bad_arguments_fail_at_construction(digits):
    with pytest.raises(ConfigError, match="lr_min"):
        gym.make("policysearch/Schedule-v0", data=digits, lr_min=0.1, lr_max=0.01)
    with pytest.raises(ConfigError, match="lr_min"):
        gym.make("policysearch/Schedule-v0", data=digits, lr_min=0.0)
    with pytest.raises(ConfigError, match="lr_max"):
        gym.make("policysearch/Schedule-v0", data=digits, lr_max=1e4)
    with pytest.raises(UnknownNameError, match="Did you mean 'accuracy'"):
        gym.make("policysearch/Schedule-v0", data=digits, reward_metric="acuracy")
    with pytest.raises(UnknownNameError, match="augmentation policy"):
        gym.make("policysearch/Schedule-v0", data=digits, augment="flipcrop")
    with pytest.raises(ConfigError, match="episode_length"):
        gym.make("policysearch/Schedule-v0", data=digits, episode_length=0)


# ---------------------------------------------------------------------- open-loop export


def test_export_round_trips_json_and_resumes_through_progress_lr(make, tmp_path):
    env = make(episode_length=3)
    env.reset(seed=0)
    steps = [env.step(np.array([a], dtype=np.float32))[4] for a in (1.0, 0.0, -1.0)]
    schedule = env.unwrapped.export(steps, {"seed": 0})
    assert schedule.progress == pytest.approx((0.0, 1 / 3, 2 / 3, 1.0)) and schedule.interpolation == "step"
    assert [schedule.lr_at(p) for p in (0.0, 0.4, 0.9)] == pytest.approx([s["lr"] for s in steps])
    loaded = LearnedSchedule.load(schedule.save(tmp_path / "schedule.json"))
    assert loaded == schedule and loaded.provenance == {"seed": 0}

    def optimizer():
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=123.0)

    full_opt = optimizer()
    full = ProgressLR(full_opt, loaded, total_steps=9)
    lrs = []
    for _ in range(9):
        lrs.append(full_opt.param_groups[0]["lr"])
        full_opt.step()
        full.step()
    part_opt = optimizer()
    part = ProgressLR(part_opt, loaded, total_steps=9)
    for _ in range(4):
        part_opt.step()
        part.step()
    state = json.loads(json.dumps(part.state_dict()))  # JSON-able, free of the optimizer
    resumed_opt = optimizer()
    resumed = ProgressLR(resumed_opt, LearnedSchedule.from_lrs([1.0]), total_steps=1)
    resumed.load_state_dict(state)
    rest = []
    for _ in range(5):
        rest.append(resumed_opt.param_groups[0]["lr"])
        resumed_opt.step()
        resumed.step()
    assert rest == lrs[4:]
    assert lrs[0] == pytest.approx(steps[0]["lr"]) and lrs[-1] == pytest.approx(steps[-1]["lr"])


def test_tiny_ppo_search_writes_a_loadable_schedule(ppo_run):
    env, result, out = ppo_run
    for name in ("schedule.json", "summary.json", "episodes.jsonl", "controller.zip"):
        assert (out / name).is_file(), name
    schedule = LearnedSchedule.load(out / "schedule.json")
    assert schedule == result.artefact and schedule.progress == (0.0, 0.5, 1.0)
    prov = schedule.provenance
    assert prov["env_id"] == "policysearch/Schedule-v0" and prov["controller"] == "ppo"
    episodes = read_episodes(out / "episodes.jsonl")
    assert len(episodes) == 3 == result.summary["child_trainings"]
    best = next(e for e in episodes if e["episode"] == result.summary["best"]["episode"])
    assert schedule.lrs([0.0, 0.5]) == pytest.approx([s["lr"] for s in best["steps"]])
    space = env.unwrapped.space
    all_lrs = [s["lr"] for e in episodes for s in e["steps"]]
    assert all(space.lr_min <= lr <= space.lr_max for lr in all_lrs) and len(set(all_lrs)) > 1


# ---------------------------------------------------------------------- closed-loop controller


def test_run_search_writes_the_closed_loop_export(ppo_run):
    """`run_search` itself (not only the CLI) writes controller.json next to controller.zip."""
    env, result, out = ppo_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files"]["closed_loop"] == "controller.json" == result.summary["files"]["closed_loop"]
    adaptive = AdaptiveSchedule.load(out / "controller.json")
    assert adaptive.algo == "ppo" and adaptive.space == env.unwrapped.space
    assert adaptive.provenance["controller"] == "ppo" and adaptive.provenance["seed"] == 0
    assert "best_episode" not in adaptive.provenance  # the controller is the final agent, not the best episode


STATS = {"progress": 0.5, "train_loss": 1.2, "val_loss": 1.4, "val_metric": 0.6, "prev_train_loss": 2.0,
         "prev_val_loss": 2.1, "prev_val_metric": 0.3, "lr": 0.05, "grad_norm_mean": 1.5, "grad_norm_std": 0.4,
         "segments_left": 1}


def test_controller_saves_loads_and_picks_lrs_in_bounds(ppo_run, tmp_path):
    env, _, out = ppo_run
    adaptive = AdaptiveSchedule.from_env(out / "controller.zip", env)
    assert adaptive.segments == 2 and adaptive.algo == "ppo" and adaptive.reward_metric == "accuracy"
    path = adaptive.save(tmp_path / "lr")
    assert path == tmp_path / "lr.json" and (tmp_path / "lr.zip").is_file()
    sidecar = json.loads(path.read_text())
    assert sidecar["kind"] == "adaptive_lr_controller" and sidecar["format_version"] == 1
    assert sidecar["observation"]["names"] == list(OBSERVATION_NAMES) and sidecar["segments"] == 2
    assert sidecar["controller_file"] == "lr.zip"
    assert sidecar["provenance"]["env_id"] == "policysearch/Schedule-v0"
    loaded = AdaptiveSchedule.load(path)
    assert loaded.space == adaptive.space and loaded.provenance == adaptive.provenance
    space = adaptive.space
    for stats in (STATS, {"progress": 0.0, "val_loss": 2.3, "val_metric": 0.1},
                  {**STATS, "train_loss": math.nan, "val_loss": math.inf}):
        lr = loaded.lr_for(stats)
        assert space.lr_min <= lr <= space.lr_max
        assert lr == adaptive.lr_for(stats) == loaded.lr_for(stats)  # deterministic, same weights
    # A directory gets controller.json + controller.zip.
    assert adaptive.save(tmp_path).name == "controller.json" and (tmp_path / "controller.zip").is_file()


def test_callback_drives_a_plain_torch_optimizer(ppo_run, digits):
    env, _, out = ppo_run
    adaptive = AdaptiveSchedule.from_env(out / "controller.zip", env)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=12.34)
    x_val, y_val = digits.x_val.float() / 255, digits.y_val
    calls = []

    def evaluate():
        calls.append(1)
        with torch.no_grad():
            logits = model(x_val)
        accuracy = (logits.argmax(1) == y_val).float().mean()
        return float(torch.nn.functional.cross_entropy(logits, y_val)), float(accuracy)

    callback = AdaptiveLRCallback(optimizer, adaptive, total_steps=7, evaluate_fn=evaluate)
    assert optimizer.param_groups[0]["lr"] == callback.lr != 12.34  # the first segment's LR is set at once
    seen = []
    for i in range(7):
        x = digits.x_train[i * 32:(i + 1) * 32].float() / 255
        loss = torch.nn.functional.cross_entropy(model(x), digits.y_train[i * 32:(i + 1) * 32])
        optimizer.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        optimizer.step()
        seen.append(callback.on_step(loss.item(), float(norm)))
        assert optimizer.param_groups[0]["lr"] == seen[-1]
    space = adaptive.space
    assert all(space.lr_min <= lr <= space.lr_max for lr in seen)
    assert [h["step"] for h in callback.history] == [0, 4] and len(calls) == 2  # round(7 / 2) = 4
    decision = callback.history[1]
    assert decision["stats"]["segments_left"] == 1 and decision["stats"]["progress"] == pytest.approx(4 / 7)
    assert decision["lr"] == adaptive.lr_for(decision["stats"]) == seen[3]  # set after step 4
    with pytest.raises(ConfigError, match="total_steps"):
        AdaptiveLRCallback(optimizer, adaptive, total_steps=0, evaluate_fn=evaluate)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda d: d.update(lr_max="big"), "'lr_max'"),
        (lambda d: d.update(lr_min=2.0), "lr_min"),
        (lambda d: d.pop("segments"), "'segments'"),
        (lambda d: d["observation"]["names"].reverse(), "observation.names"),
        (lambda d: d.update(algo="dqn"), "'algo'"),
        (lambda d: d.update(controller_file="missing.zip"), "'controller_file'"),
        (lambda d: d.update(kind="lr_schedule"), "'kind'"),
    ],
)
def test_corrupt_sidecar_names_the_field(ppo_run, tmp_path, edit, match):
    env, _, out = ppo_run
    path = AdaptiveSchedule.from_env(out / "controller.zip", env).save(tmp_path / "c.json")
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(PolicyFormatError, match=match):
        AdaptiveSchedule.load(path)


def test_space_validation():
    with pytest.raises(ConfigError, match="segments"):
        ScheduleSpace(segments=0)
    with pytest.raises(ConfigError, match="lr_min"):
        ScheduleSpace(lr_min=1.0, lr_max=1.0)
    with pytest.raises(ConfigError, match="one finite number"):
        ScheduleSpace().lr([0.1, 0.2])


def test_tpe_searches_the_cosine_onecycle_family(digits, tmp_path):
    pytest.importorskip("optuna")
    import gymnasium as gym

    from policysearch.policies.schedule import LearnedSchedule
    from policysearch.search import Budget, read_episodes, run_search

    env = gym.make("policysearch/Schedule-v0", data=digits, model="mlp", episode_length=3, steps_per_segment=2,
                   batch_size=32, lr_min=1e-3, lr_max=0.5)
    result = run_search(env, "tpe", Budget(child_trainings=3), tmp_path, seed=0, progress=False,
                        artefact_name="schedule.json")
    episodes = read_episodes(tmp_path / "episodes.jsonl")
    assert len(episodes) == 3 and all(len(e["steps"]) == 3 for e in episodes)
    for e in episodes:
        lrs = [s["lr"] for s in e["steps"]]
        assert all(1e-3 <= lr <= 0.5 for lr in lrs)
        assert lrs[-1] < max(lrs)  # both families anneal: the last segment is never the peak
    assert isinstance(LearnedSchedule.load(tmp_path / "schedule.json"), LearnedSchedule)
    assert result.summary["controller"] == "tpe" and "closed_loop" not in result.summary["files"]


def test_tpe_on_v1_tunes_the_peak_of_the_base_schedule(digits):
    pytest.importorskip("optuna")
    import gymnasium as gym

    from policysearch.search import Budget, run_search

    env = gym.make("policysearch/Schedule-v1", data=digits, model="mlp", episode_length=4, steps_per_segment=2,
                   batch_size=32, base="onecycle")
    result = run_search(env, "tpe", Budget(child_trainings=3), None, seed=0, progress=False)
    space = env.unwrapped.space
    factors = []
    for e in result.episodes:
        assert len({tuple(s["controller_action"]) for s in e["steps"]}) == 1  # one factor, every segment
        factors.append(float(space.factor(np.array(e["steps"][0]["controller_action"]))))
    assert len(set(factors)) == 3  # three trials, three peak LRs
    for k in range(4):  # each segment's LR over its factor is the base schedule's, whatever the trial
        base = [e["steps"][k]["lr"] / f for e, f in zip(result.episodes, factors)]
        assert max(base) == pytest.approx(min(base), rel=1e-5)


@pytest.mark.parametrize("controller", ["sac", "a2c"])
def test_other_sb3_controllers_run_and_save(digits, tmp_path, controller):
    from policysearch.search import Budget, run_search

    env = gym.make("policysearch/Schedule-v0", data=digits, model="mlp", episode_length=2, steps_per_segment=2,
                   batch_size=32)
    result = run_search(env, controller, Budget(child_trainings=3), tmp_path, seed=0, progress=False,
                        artefact_name="schedule.json")
    assert result.summary["child_trainings"] == 3 and (tmp_path / "controller.zip").is_file()
    assert AdaptiveSchedule.load(tmp_path / "controller.json").algo == controller
    assert AdaptiveSchedule.from_env(tmp_path / "controller.zip", env, algo=controller).lr_for(
        {"progress": 0.0, "val_loss": 2.0, "val_metric": 0.1}) > 0
