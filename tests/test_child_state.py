"""Tests for child-training state: `Trainer.state_dict` / `load_state_dict` (policysearch/trainer.py),
every env's `get_state` / `set_state` (envs/base.py and each env), and the state files
(`save_child_state` / `load_child_state` in policysearch/checkpoint.py).

The promise under test: a state taken from env A after k steps, written to a file, read back with
``torch.load(weights_only=True)`` and set into a fresh env B (same arguments, other seed) makes B
continue exactly as A does: bit-identical rewards, observations, infos and weights on the CPU.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

import policysearch  # noqa: F401  (registers the envs)
from policysearch.errors import ConfigError, PolicyFormatError
from policysearch.policies.augment import AugmentPolicy, trivial_augment
from policysearch.train.checkpoint import (
    CHILD_STATE_KIND,
    CHILD_STATE_VERSION,
    load_child_state,
    save_checkpoint,
    save_child_state,
)
from policysearch.train.trainer import TrainConfig, Trainer

# 400 training images / batch 32 = 12 steps an epoch: 3 segments of 5 steps cross an epoch boundary,
# so the saved batch order and cursor matter.
TINY = {"episode_length": 3, "steps_per_segment": 5, "batch_size": 32}
CASES = {
    "augment-schedule": ("policysearch/Augment-v0", {"model": "mlp", "mode": "schedule"}),
    "augment-static": ("policysearch/Augment-v0", {"model": "cnn", "mode": "static", "steps_per_segment": 2}),
    "schedule": ("policysearch/Schedule-v0", {"model": "cnn", "augment": "trivial"}),
    "schedule-v1": ("policysearch/Schedule-v1", {"model": "cnn", "augment": "trivial", "base": "linear"}),
}
# (case, k): k steps taken by A before its state is taken; the episodes have 3 segments (static: 1 step).
SPLITS = [("augment-schedule", 0), ("augment-schedule", 1), ("augment-schedule", 2), ("augment-static", 0),
          ("augment-static", 1), ("schedule", 0), ("schedule", 2), ("schedule-v1", 2)]


@pytest.fixture
def make(digits):
    def _make(case, **kwargs):
        env_id, extra = CASES[case]
        return gym.make(env_id, data=digits, **{**TINY, **extra, **kwargs})

    return _make


def _actions(env, n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, env.action_space.shape).astype(np.float32) for _ in range(n)]


def _run(env, actions):
    """Step through `actions`, starting a new episode (reset without a seed: the env's own RNG
    draws the next child) whenever one ends."""
    out = []
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append((obs, reward, terminated, truncated, info))
        if terminated and env.unwrapped.mode == "schedule":
            out.append(env.reset())
    return out


def _assert_same_steps(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert len(x) == len(y)
        assert x[0].tobytes() == y[0].tobytes()  # observations, bit for bit
        assert x[1:] == y[1:]  # rewards, flags and infos, exactly (no wall-clock time in infos)


def _assert_same_child(env_a, env_b):
    a, b = env_a.unwrapped.trainer, env_b.unwrapped.trainer
    assert a.config == b.config and a.step == b.step
    for (name, p), (_, q) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(p, q), name
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        assert all(torch.equal(sa[i][k], sb[i][k]) for k in sa[i])
    assert torch.equal(a.generator.get_state(), b.generator.get_state())


@pytest.mark.parametrize("case,k", SPLITS)
def test_state_through_a_file_continues_bit_identically(make, tmp_path, case, k):
    env_a, env_b = make(case), make(case)
    actions = _actions(env_a, k + 4)
    obs, _ = env_a.reset(seed=1)
    for a in actions[:k]:
        obs = env_a.step(a)[0]
    state = env_a.unwrapped.get_state()
    assert state["kind"] == CHILD_STATE_KIND and state["format_version"] == CHILD_STATE_VERSION
    assert state["env_id"] == CASES[case][0] and len(state["steps"]) == (k if case != "augment-static" else min(k, 1))
    assert np.array_equal(np.asarray(state["observation"], dtype=np.float32), obs)

    path = save_child_state(state, tmp_path / "child.pt")
    raw = torch.load(path, weights_only=True)  # plain tensors and values: no pickle needed
    assert raw["env_id"] == state["env_id"]
    env_b.reset(seed=2)  # another child, so the state has something to overwrite
    env_b.unwrapped.set_state(load_child_state(path))
    assert env_b.unwrapped.get_state()["steps"] == state["steps"]

    _assert_same_steps(_run(env_a, actions[k:]), _run(env_b, actions[k:]))
    _assert_same_child(env_a, env_b)


@pytest.mark.parametrize("case", ["augment-schedule", "schedule"])
def test_without_set_state_the_continuation_differs(make, case):
    env_a, env_b = make(case), make(case)
    actions = _actions(env_a, 3)
    env_a.reset(seed=1)
    env_a.step(actions[0])
    env_b.reset(seed=2)
    env_b.step(actions[0])
    a, b = _run(env_a, actions[1:]), _run(env_b, actions[1:])
    assert [s[1] for s in a] != [s[1] for s in b]
    weights = zip(env_a.unwrapped.trainer.model.parameters(), env_b.unwrapped.trainer.model.parameters())
    assert not all(torch.equal(p, q) for p, q in weights)


def test_a_population_copies_a_child_into_others_mid_episode(make):
    """PBT's exploit: the strong child's state goes into two envs in the middle of their own
    episodes; all three then continue identically, and no env's training changes the state."""
    strong, weak, other = make("augment-schedule"), make("augment-schedule"), make("augment-schedule")
    actions = _actions(strong, 6)
    strong.reset(seed=1)
    strong.step(actions[0])
    for env, seed in ((weak, 2), (other, 3)):
        env.reset(seed=seed)
        env.step(actions[1])
        env.step(actions[2])
    state = strong.unwrapped.get_state()
    snapshot = copy.deepcopy(state)
    weak.unwrapped.set_state(state)
    a = _run(strong, actions[3:])
    _assert_same_steps(a, _run(weak, actions[3:]))
    other.unwrapped.set_state(state)  # after `strong` and `weak` trained on: the state must be as taken
    _assert_same_steps(a, _run(other, actions[3:]))
    for p, q in zip(state["trainer"]["model"].values(), snapshot["trainer"]["model"].values()):
        assert torch.equal(p, q)
    for env in (weak, other):
        _assert_same_child(strong, env)


def test_trainer_state_round_trips_with_adamw_and_mixup(digits, tmp_path):
    policy = AugmentPolicy(trivial_augment(), magnitude_scale="wide", crop=0.125, flip=0.5, mixup=(0.3, 1.0),
                           cutmix=(0.3, 1.0))
    config = TrainConfig(model="mlp", optimizer="adamw", batch_size=32, device="cpu", seed=0)
    a = Trainer(digits, config, total_steps=30)
    a.train_segment(7, policy, lr=lambda p: 1e-3 * (1 - p))
    torch.save(a.state_dict(), tmp_path / "trainer.pt")
    b = Trainer(digits, TrainConfig(model="mlp", optimizer="adamw", batch_size=32, device="cpu", seed=5),
                total_steps=30)
    b.load_state_dict(torch.load(tmp_path / "trainer.pt", weights_only=True))
    assert b.config == a.config and b.step == 7 and b.cost == a.cost
    sa = a.train_segment(8, policy, lr=lambda p: 1e-3 * (1 - p))
    sb = b.train_segment(8, policy, lr=lambda p: 1e-3 * (1 - p))
    assert (sa.train_loss, sa.lr, sa.grad_norm_mean, sa.grad_norm_std) == (
        sb.train_loss, sb.lr, sb.grad_norm_mean, sb.grad_norm_std)
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    assert a.evaluate("val") == b.evaluate("val")


def test_trainer_refuses_a_state_of_another_model_and_stays_as_it_was(digits):
    mlp = Trainer(digits, TrainConfig(model="mlp", batch_size=32, device="cpu"), total_steps=10)
    cnn = Trainer(digits, TrainConfig(model="cnn", batch_size=32, device="cpu"), total_steps=10)
    before = copy.deepcopy(cnn.state_dict())
    with pytest.raises(ConfigError, match="trainer state is for model='mlp', this trainer has model='cnn'"):
        cnn.load_state_dict(mlp.state_dict())
    other = Trainer(digits, TrainConfig(model="cnn", batch_size=32, device="cpu"), total_steps=20)
    with pytest.raises(ConfigError, match="total_steps=20"):
        cnn.load_state_dict(other.state_dict())
    bad = cnn.state_dict()
    bad["model"]["fc.weight" if "fc.weight" in bad["model"] else next(iter(bad["model"]))] = torch.zeros(3)
    with pytest.raises(ConfigError, match="tensor .* is \\(3,\\) torch.float32, this model's is"):
        cnn.load_state_dict(bad)
    after = cnn.state_dict()
    assert all(torch.equal(p, q) for p, q in zip(before["model"].values(), after["model"].values()))


def test_set_state_refuses_another_env_version_or_settings(make, digits):
    augment = make("augment-schedule")
    augment.reset(seed=0)
    state = augment.unwrapped.get_state()
    schedule = make("schedule")
    with pytest.raises(ConfigError, match="of env 'policysearch/Augment-v0', not 'policysearch/Schedule-v0'"):
        schedule.unwrapped.set_state(state)
    newer = {**state, "format_version": CHILD_STATE_VERSION + 1}
    with pytest.raises(ConfigError, match=f"format_version is {CHILD_STATE_VERSION + 1}; this policysearch reads"):
        augment.unwrapped.set_state(newer)
    with pytest.raises(ConfigError, match="not a child-training state"):
        augment.unwrapped.set_state({"kind": "policysearch_checkpoint"})
    longer = make("augment-schedule", episode_length=4)
    with pytest.raises(ConfigError, match="episode_length is 3 in the state, 4 here"):
        longer.unwrapped.set_state(state)
    with pytest.raises(ConfigError, match="lacks field 'trainer'"):
        augment.unwrapped.set_state({k: v for k, v in state.items() if k != "trainer"})


def test_a_refused_state_leaves_the_env_unchanged(make):
    env_a, env_b = make("augment-schedule"), make("augment-schedule")
    actions = _actions(env_a, 3)
    for env in (env_a, env_b):
        env.reset(seed=1)
    bad = env_a.unwrapped.get_state()
    env_a.step(actions[0])
    bad["episode"]["last_action"] = [0.0]  # checked only after the trainer state was
    with pytest.raises(ConfigError, match="last action has shape"):
        env_b.unwrapped.set_state(bad)
    env_b.step(actions[0])
    _assert_same_steps(_run(env_a, actions[1:]), _run(env_b, actions[1:]))


def test_state_before_any_reset_round_trips(make):
    fresh = make("schedule").unwrapped
    state = fresh.get_state()
    assert state["trainer"] is None and state["observation"] is None and state["np_random"] is None
    used = make("schedule")
    used.reset(seed=3)
    used.unwrapped.set_state(state)
    assert used.unwrapped.trainer is None


def test_state_files_are_checked(tmp_path, make, digits):
    with pytest.raises(PolicyFormatError, match="no such child-training state file"):
        load_child_state(tmp_path / "missing.pt")
    trainer = Trainer(digits, TrainConfig(model="mlp", batch_size=32, device="cpu"), total_steps=1)
    save_checkpoint(tmp_path / "model.pt", trainer.model, "mlp", digits.input_shape, digits.num_classes)
    with pytest.raises(PolicyFormatError, match="model.pt: not a child-training state"):
        load_child_state(tmp_path / "model.pt")
    torch.save({"kind": CHILD_STATE_KIND, "format_version": 99}, tmp_path / "newer.pt")
    with pytest.raises(PolicyFormatError, match="format_version is 99"):
        load_child_state(tmp_path / "newer.pt")
    torch.save({"kind": CHILD_STATE_KIND, "payload": _Payload()}, tmp_path / "pickled.pt")
    with pytest.raises(PolicyFormatError, match="holds pickled Python objects"):
        load_child_state(tmp_path / "pickled.pt")
    assert not _Payload.ran
    with pytest.raises(ConfigError, match="save_child_state: not a child-training state"):
        save_child_state({"kind": "other"}, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


class _Payload:
    """Would record that unpickling ran code; a weights_only load never builds it."""

    ran = False

    def __setstate__(self, state):
        type(self).ran = True


# ---------------------------------------------------------------------------------------------- Compress-v0
@pytest.fixture(scope="module")
def teacher(digits):
    trainer = Trainer(digits, TrainConfig(model="cnn", batch_size=64, device="cpu", seed=0), total_steps=5)
    trainer.train_segment(5)
    return trainer.model.eval()


@pytest.mark.parametrize("k", [0, 1])
def test_compress_state_continues_bit_identically(digits, teacher, tmp_path, k):
    def make():
        return gym.make("policysearch/Compress-v0", teacher=teacher, model_name="cnn", data=digits,
                        finetune_steps=2, batch_size=64)

    env_a, env_b = make(), make()
    n = env_a.unwrapped.episode_length
    actions = _actions(env_a, n + 2)
    env_a.reset(seed=1)
    for a in actions[:k]:
        env_a.step(a)
    path = save_child_state(env_a.unwrapped.get_state(), tmp_path / "compress.pt")
    env_b.reset(seed=2)
    env_b.unwrapped.set_state(load_child_state(path))
    a, b = _run(env_a, actions[k:]), _run(env_b, actions[k:])
    _assert_same_steps(a, b)
    assert any("plan" in step[-1] for step in a if len(step) == 5)  # an episode finished on the way
    student_a, student_b = env_a.unwrapped.student, env_b.unwrapped.student
    assert all(torch.equal(p, q) for p, q in zip(student_a.state_dict().values(), student_b.state_dict().values()))
