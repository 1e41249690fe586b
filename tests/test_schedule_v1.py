"""Tests for Schedule-v1 (residual actions around a budget-aware base schedule, task distributions),
the `linear` schedule, the hypergradient baseline and the `zoo:` controller names."""

from __future__ import annotations

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import policysearch  # noqa: F401  (registers the envs)
from policysearch.envs.schedule_tasks import TASK_PRESETS, Task, TaskSampler
from policysearch.errors import ConfigError, UnknownNameError
from policysearch.policies.adaptive import (
    AdaptiveLRCallback,
    AdaptiveSchedule,
    ScheduleSpace,
    resolve_schedule,
    zoo_names,
)
from policysearch.policies.hypergradient import Hypergradient
from policysearch.policies.peak_rule import PeakRule
from policysearch.policies.schedule import ProgressLR, named_schedule
from policysearch.policies.schedule_space import RESIDUAL_OBSERVATION_NAMES
from policysearch.train.trainer import TrainConfig, Trainer

TINY = {"model": "mlp", "episode_length": 3, "steps_per_segment": 4, "batch_size": 32}
CENTRE = np.zeros(1, dtype=np.float32)


@pytest.fixture
def make(digits):
    def _make(**kwargs):
        return gym.make("policysearch/Schedule-v1", data=digits, **{**TINY, **kwargs})

    return _make


# ---------------------------------------------------------------------- residual mapping
@pytest.mark.parametrize("base", ["onecycle", "linear"])
def test_centre_action_is_the_base_schedule_and_the_ends_scale_it(base):
    space = ScheduleSpace(segments=4, base=base, scale=4.0)
    schedule = named_schedule(base, 0.05)
    for p in (0.0, 0.1, 0.3, 0.55, 0.9, 1.0):
        assert space.residual_lr([0.0], p, 0.05) == schedule.lr_at(p)
        assert space.residual_lr([1.0], p, 0.05) == pytest.approx(4.0 * schedule.lr_at(p))
        assert space.residual_lr([-3.0], p, 0.05) == pytest.approx(schedule.lr_at(p) / 4.0)  # clipped to -1
    with pytest.raises(ConfigError, match="residual"):
        space.lr([0.0])
    with pytest.raises(UnknownNameError, match="Did you mean"):
        ScheduleSpace(base="onecycel")


@pytest.mark.parametrize("base", ["onecycle", "linear"])
def test_env_with_centre_actions_trains_exactly_the_base_schedule(digits, make, base):
    env = make(base=base, child_seed=3)
    env.reset(seed=0)
    infos = [env.step(CENTRE)[-1] for _ in range(3)]
    unwrapped = env.unwrapped
    assert [i["factor"] for i in infos] == [1.0, 1.0, 1.0]
    # The same child trained with the plain base schedule, step for step, gives the same weights.
    config = dataclasses.replace(unwrapped.config, seed=3)
    reference = Trainer(digits, config, total_steps=12)
    schedule = named_schedule(base, config.lr)
    reference.train_segment(12, lr=schedule.lr_at)
    for a, b in zip(unwrapped.trainer.model.parameters(), reference.model.parameters()):
        assert torch.equal(a, b)
    assert infos[1]["lr"] == schedule.lr_at(4 / 12)


def test_observation_holds_the_remaining_budget_and_the_horizon(make):
    env = make()
    assert env.observation_space.shape == (len(RESIDUAL_OBSERVATION_NAMES),)
    i_left, i_horizon = RESIDUAL_OBSERVATION_NAMES.index("budget_left"), RESIDUAL_OBSERVATION_NAMES.index("horizon")
    i_action = RESIDUAL_OBSERVATION_NAMES.index("lr_factor")
    obs, _ = env.reset(seed=0)
    assert obs[i_left] == 1.0 and obs[i_horizon] == pytest.approx(math.log10(12) / 4) and obs[i_action] == 0.0
    obs = env.step(np.array([0.5], dtype=np.float32))[0]
    assert obs[i_left] == pytest.approx(2 / 3) and obs[i_action] == pytest.approx(0.5)
    # A longer run shows a longer horizon.
    obs, _ = make(steps_per_segment=40).reset(seed=0)
    assert obs[i_horizon] == pytest.approx(math.log10(120) / 4)


def test_open_loop_export_follows_base_times_factors_on_any_run_length(make):
    env = make(base="linear")
    env.reset(seed=0)
    actions = [0.0, 1.0, -0.5]
    steps = [env.step(np.array([a], dtype=np.float32))[-1] for a in actions]
    learned = env.unwrapped.export(steps)
    base = named_schedule("linear", env.unwrapped.config.lr)
    for i, a in enumerate(actions):
        for p in ((i + 0.25) / 3, (i + 0.5) / 3):
            assert learned.lr_at(p) == pytest.approx(base.lr_at(p) * 4.0 ** a, rel=0.05)
    for total in (7, 1000):  # progress-based: any number of steps / epochs
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        scheduler = ProgressLR(opt, learned, total)
        assert opt.param_groups[0]["lr"] == pytest.approx(learned.lr_at(0.0))
        for _ in range(total):
            opt.step()
            scheduler.step()
        assert opt.param_groups[0]["lr"] < 1e-9  # linear decay ends at zero


class _Fixed:
    """A stand-in SB3 model with a fixed action, to drive AdaptiveSchedule without training one."""

    def __init__(self, dim, action):
        from gymnasium import spaces

        self.observation_space = spaces.Box(-10, 10, (dim,), np.float32)
        self.action_space = spaces.Box(-1, 1, (1,), np.float32)
        self.action, self.seen = action, []

    def predict(self, obs, deterministic=True):
        self.seen.append(obs)
        return np.array([self.action], dtype=np.float32), None


def test_residual_callback_follows_the_base_schedule_at_every_step():
    space = ScheduleSpace(segments=2, base="onecycle")
    model = _Fixed(space.dim, 0.0)
    adaptive = AdaptiveSchedule(model, space, algo="ppo")
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=0.1)  # the peak LR of the base schedule
    callback = AdaptiveLRCallback(opt, adaptive, 10, evaluate_fn=lambda: (1.0, 0.5))
    base = named_schedule("onecycle", 0.1)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(9):
        callback.on_step(1.0, 1.0)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [base.lr_at(i / 10) for i in range(10)]
    assert len(callback.history) == 2 and model.seen[0][RESIDUAL_OBSERVATION_NAMES.index("budget_left")] == 1.0
    assert model.seen[1][RESIDUAL_OBSERVATION_NAMES.index("budget_left")] == pytest.approx(0.5)
    # A residual sidecar round-trips its base and scale.
    assert ScheduleSpace.from_dict(space.to_dict()) == space


# ---------------------------------------------------------------------- tasks
def test_task_sampler_is_deterministic_for_a_seed():
    sampler = TASK_PRESETS["default"]
    first, again, other = sampler.tasks(20, seed=5), sampler.tasks(20, seed=5), sampler.tasks(20, seed=6)
    assert first == again and first != other
    assert all(isinstance(t, Task) and 3 <= t.epochs <= 30 for t in first)
    assert {t.train_size for t in first if t.dataset == "digits"} <= {None}
    parsed = TaskSampler.parse("pairs=digits:mlp,fashion-mnist:cnn;train-sizes=1000;epochs=4-6;batch=32;wd=0")
    assert parsed.pairs == (("digits", "mlp"), ("fashion-mnist", "cnn")) and parsed.epochs == (4, 6)
    assert TaskSampler.parse("cheap") == TASK_PRESETS["cheap"]
    with pytest.raises(UnknownNameError, match="Did you mean"):
        TaskSampler.parse("cheep")
    with pytest.raises(UnknownNameError):
        TaskSampler.parse("pairs=digits:mpl")


def test_env_draws_a_task_every_episode(digits):
    tasks = TaskSampler(pairs=(("digits", "mlp"), ("digits", "vit")), epochs=(1, 2), batch_sizes=(32, 64),
                        val_size=100)
    env = gym.make("policysearch/Schedule-v1", tasks=tasks, episode_length=2)
    seen = set()
    for seed in range(4):
        _, info = env.reset(seed=seed)
        task = Task(**info["task"])
        seen.add(task)
        unwrapped = env.unwrapped
        assert unwrapped.config.model == task.model and unwrapped.config.batch_size == task.batch_size
        assert unwrapped.trainer.total_steps == 2 * max(1, round(task.epochs * (len(unwrapped.data.y_train)
                                                                             // task.batch_size) / 2))
    assert len(seen) > 1
    env.step(CENTRE)
    # The same seed draws the same task.
    assert gym.make("policysearch/Schedule-v1", tasks=tasks, episode_length=2).reset(seed=3)[1]["task"] == \
        env.reset(seed=3)[1]["task"]
    with pytest.raises(ConfigError, match="tasks"):
        gym.make("policysearch/Schedule-v1", tasks=tasks, data=digits)


def test_task_env_state_continues_on_the_saved_task():
    tasks = TaskSampler(pairs=(("digits", "mlp"), ("digits", "cnn")), epochs=(1, 1), batch_sizes=(32, 64),
                        val_size=100)

    def make():
        return gym.make("policysearch/Schedule-v1", tasks=tasks, episode_length=2)

    env_a, env_b = make(), make()
    env_a.reset(seed=1)
    env_a.step(CENTRE)
    state = env_a.unwrapped.get_state()
    for seed in range(2, 12):  # a child of the other task, so the state must switch it back
        if env_b.reset(seed=seed)[1]["task"] != state["episode"]["task"]:
            break
    env_b.unwrapped.set_state(state)
    assert env_b.unwrapped.task == env_a.unwrapped.task
    a, b = env_a.step(np.array([0.3], dtype=np.float32)), env_b.step(np.array([0.3], dtype=np.float32))
    assert a[0].tobytes() == b[0].tobytes() and a[1:] == b[1:]


# ---------------------------------------------------------------------- baselines
def test_linear_schedule_decays_to_zero():
    s = named_schedule("linear", 0.2)
    assert s.lr_at(0.0) == pytest.approx(0.2) and s.lr_at(0.5) == pytest.approx(0.1)
    assert s.lr_at(0.75) == pytest.approx(0.05) and s.lr_at(1.0) < 1e-11


def test_hypergradient_updates_the_lr_by_the_gradient_dot_product():
    # f(x) = 0.5 * x^T A x: plain SGD, so the rule is lr_t = lr_{t-1} + beta * g_t . g_{t-1}.
    a = torch.diag(torch.tensor([1.0, 3.0]))
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.1)
    hd = Hypergradient(0.1, hyper_lr=0.01)
    state = hd.attach(opt)
    lr, previous, expected = 0.1, None, []
    for _ in range(5):
        opt.zero_grad()
        (0.5 * x @ a @ x).backward()
        g = x.grad.detach().clone()
        if previous is not None:
            lr = lr + 0.01 * float(g @ previous)
        expected.append(lr)
        expected_x = x.detach() - lr * g
        opt.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(lr)
        assert torch.allclose(x.detach(), expected_x)
        previous = g
    assert state.history == pytest.approx(expected) and expected[1] != 0.1  # it moved


def test_hypergradient_trains_through_train_run(digits):
    from policysearch.train.recipe import train_run

    hd = resolve_schedule("hypergradient", base_lr=0.05)
    result = train_run(digits, TrainConfig(model="mlp", batch_size=64), 1, schedule=hd, progress=False)
    assert not result.diverged and hd.state is not None and len(hd.state.history) == len(digits.y_train) // 64
    assert result.test["accuracy"] > 0.3


# ---------------------------------------------------------------------- zoo
def test_zoo_names_resolve_and_load_offline(monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "create_connection", no_network)
    assert "adaptive" in zoo_names()
    adaptive = AdaptiveSchedule.load("zoo:adaptive")
    assert adaptive.space.residual and adaptive.provenance
    assert isinstance(resolve_schedule("zoo:adaptive", base_lr=0.1), AdaptiveSchedule)
    stats = {"progress": 0.0, "val_loss": 2.3, "val_metric": 0.1, "total_steps": 100}
    assert 0.0 < adaptive.lr_for(stats, base_lr=0.05) < 1.0
    with pytest.raises(UnknownNameError, match="Did you mean 'adaptive'"):
        AdaptiveSchedule.load("zoo:adaptiv")
    # Every shipped controller loads offline and sets a finite LR for a fresh run.
    assert "adaptive-linear" in zoo_names() and "peak-rule" in zoo_names()
    for name in zoo_names():
        controller = resolve_schedule(f"zoo:{name}", base_lr=0.05)
        assert controller.provenance["held_out_results"]
        if isinstance(controller, PeakRule):  # chooses one of its factors of the default peak
            values = {"log_lr_sharpness": -1.0, "log_steps": 2.5, "adaptive": 0.0}
            assert controller.choose(values) in controller.factors
        else:
            assert 0.0 < controller.lr_for(stats, base_lr=0.05) < 1.0
    assert AdaptiveSchedule.load("zoo:adaptive-linear").space.base == "linear"


def test_zoo_controller_drives_a_plain_loop_and_the_cli(capsys, tmp_path):
    import importlib.util
    from pathlib import Path

    from policysearch.cli import main

    path = Path(__file__).resolve().parent.parent / "examples" / "zoo_adaptive_loop.py"
    spec = importlib.util.spec_from_file_location("zoo_adaptive_loop", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert 0.0 <= module.main(epochs=1) <= 1.0
    code = main(["train", "--dataset", "digits", "--train-size", "300", "--epochs", "1", "--model", "mlp",
                 "--no-progress", "--schedule", "zoo:adaptive"])
    assert code == 0 and "zoo:adaptive" in capsys.readouterr().out


def _one_line_error(code, err, command):
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"policysearch {command}: error: ")
    return err


def test_cli_refuses_bad_zoo_names_and_task_specs_in_one_line(capsys, tmp_path):
    from policysearch.cli import main

    code = main(["train", "--dataset", "digits", "--no-progress", "--schedule", "zoo:adaptve"])
    assert "Did you mean 'adaptive'" in _one_line_error(code, capsys.readouterr().err, "train")
    code = main(["schedule", "--tasks", "pairs=digits:mlpp", "--out", str(tmp_path / "r"), "--no-progress"])
    assert "Did you mean" in _one_line_error(code, capsys.readouterr().err, "schedule")
    code = main(["schedule", "--tasks", "cheap", "--base", "none", "--out", str(tmp_path / "r"), "--no-progress"])
    assert "--base" in _one_line_error(code, capsys.readouterr().err, "schedule")
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_cli_schedule_over_tasks_writes_a_residual_controller(capsys, tmp_path):
    from policysearch.cli import main

    out = tmp_path / "run"
    code = main(["schedule", "--tasks", "pairs=digits:mlp;epochs=1-2;batch=64,128;val-size=100", "--episode-length",
                 "2", "--budget", "2", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    adaptive = AdaptiveSchedule.load(out / "controller.json")
    assert adaptive.space.residual and adaptive.space.base == "onecycle" and adaptive.segments == 2
    assert adaptive.provenance["env_id"] == "policysearch/Schedule-v1"


def test_vs_base_reward_is_the_gain_over_a_paired_base_child(make):
    env = make(reward="vs-base", child_seed=4)
    env.reset(seed=0)
    rewards, infos = [], []
    for a in (0.0, 0.0, 0.0):  # centre actions: the child is the base schedule, so no gain over it
        _, reward, _, _, info = env.step(np.array([a], dtype=np.float32))
        rewards.append(reward)
        infos.append(info)
    assert rewards == [0.0, 0.0, 0.0] and infos[-1]["base_metric"] == infos[-1]["metric"]
    env.reset(seed=0)
    returns = sum(env.step(np.array([1.0], dtype=np.float32))[1] for _ in range(3))
    last = env.unwrapped._stats
    assert returns == pytest.approx(last["val_metric"] - last["base_val_metric"])
    state = env.unwrapped.get_state()  # the shadow travels with the state
    assert state["shadow"] is not None
    other = make(reward="vs-base", child_seed=4)
    other.reset(seed=1)
    other.unwrapped.set_state(state)
    assert torch.equal(next(other.unwrapped._shadow.model.parameters()), next(env.unwrapped._shadow.model.parameters()))
    with pytest.raises(ConfigError, match="base"):
        make(reward="vs-base", base=None)
